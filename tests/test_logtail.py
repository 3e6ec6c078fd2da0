"""repo2docker log parsing and the bounded tail (pure logic)."""

from __future__ import annotations

import json

import pytest

from repo2docker_operator.logtail import MAX_LINE_CHARS, LogTail, parse_line

pytestmark = pytest.mark.unit


def test_json_lines_give_their_message_lines_and_phase():
    event = parse_line(json.dumps({"message": "Step 1/3 : FROM x\n\n", "phase": "building"}))
    assert event.lines == ("Step 1/3 : FROM x",) and event.phase == "building"
    assert parse_line(json.dumps({"message": "a\nb\r\nc"})).lines == ("a", "b", "c")


def test_docker_aux_objects_are_reduced_to_text_or_dropped():
    aux = json.dumps({"message": json.dumps({"aux": {"ID": "sha256:abc"}}), "phase": "building"})
    assert parse_line(aux).lines == ()
    err = json.dumps({"message": json.dumps({"error": "boom"})})
    assert parse_line(err).lines == ("error: boom",)


def test_plain_text_and_broken_json_pass_through():
    assert parse_line("Traceback (most recent call last):").lines == ("Traceback (most recent call last):",)
    assert parse_line('{"message": broken').lines == ('{"message": broken',)
    assert parse_line("   ").lines == ()
    assert len(parse_line("x" * 5000).lines[0]) == MAX_LINE_CHARS


def test_tail_is_bounded_by_lines_and_bytes_and_counts_everything():
    tail = LogTail(max_lines=3, max_bytes=1000)
    tail.add(["1", "2", "3", "4", "5"])
    assert tail.lines() == ["3", "4", "5"] and tail.total == 5
    tail = LogTail(max_lines=100, max_bytes=10)
    tail.add(["aaaa", "bbbb", "cccc"])
    assert tail.lines() == ["bbbb", "cccc"]
    tail.add(["é" * 20])  # one line larger than the whole budget is cut, not dropped
    assert len(tail) == 1 and len(tail.lines()[0].encode()) <= 10
    assert tail.total == 4


def test_tail_rejects_zero_bounds():
    with pytest.raises(ValueError):
        LogTail(max_lines=0)
