"""repo2docker log parsing and the bounded tail (pure logic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repo2docker_buildcore.logtail import MAX_LINE_CHARS, BuildOutput, LogTail, parse_line

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


OUTPUT = Path(__file__).parent / "data" / "repo2docker-output"


def readable(name: str) -> tuple[list[str], BuildOutput]:
    """A real repo2docker 2026.4.0 --json-logs capture, through parse_line and BuildOutput."""
    output = BuildOutput()
    lines: list[str] = []
    for raw in (OUTPUT / name).read_text().splitlines():
        lines += output.feed(parse_line(raw).lines)
    return lines, output


def test_buildkit_progress_becomes_the_lines_a_person_reads():
    lines, output = readable("buildx-failing-step.jsonl")
    assert lines[:10] == [
        "Picked Local content provider.",
        "Using local repo /repo.",
        "Using DockerBuildPack builder",
        'building with "default" instance using docker driver',
        "[1/3] FROM docker.io/r2d-testenv/singleuser:jupyterhub-6.1.1",
        "[2/3] RUN echo hello-build && echo second line",
        "hello-build",
        "second line",
        "[3/3] RUN echo about to fail && exit 3",
        "about to fail",
    ]
    # Bookkeeping vertices, end markers and vertex numbers never reach the reader.
    assert not any(line.startswith("#") or "[internal]" in line or line.startswith("DONE") for line in lines)


def test_a_failing_step_is_what_the_failure_message_shows():
    lines, output = readable("buildx-failing-step.jsonl")
    assert output.failure_lines(lines) == [
        "[3/3] RUN echo about to fail && exit 3",
        "about to fail",
        "ERROR: executor failed running [/bin/sh -c echo about to fail && exit 3]: exit code: 3",
    ]


def test_push_progress_keeps_only_finished_layers():
    lines, output = readable("buildx-push.jsonl")
    assert "pushing 127.0.0.1:5000/binder/r2d-exp:1 with docker" in lines
    assert not [line for line in lines if " / " in line and "MB" in line]
    assert sum(line.startswith("pushing layer") and line.endswith("done") for line in lines) == 6
    assert output.failed_step == []
    # Without a failing BuildKit step, the failure message falls back to the last lines.
    assert output.failure_lines(["a", "", "b", "c"], lines=2) == ["b", "c"]


def test_a_failing_classic_builder_step_is_what_the_failure_message_shows():
    lines, output = readable("classic-failing-step.jsonl")
    assert "Step 2/6 : RUN echo hello-build && echo second line" in lines
    assert output.failure_lines(lines) == [
        "Step 3/6 : RUN echo about to fail && exit 3",
        "about to fail",
        "The command '/bin/sh -c echo about to fail && exit 3' returned a non-zero code: 3",
    ]


def test_classic_builder_output_passes_through_unchanged():
    output = BuildOutput()
    classic = ["Step 2/3 : RUN echo hi", " ---> Running in 0a1b2c", "hi", "Successfully tagged r2d-x:1"]
    assert output.feed(classic) == classic
    assert output.failure_lines(classic, lines=1) == ["Successfully tagged r2d-x:1"]


def test_the_base_image_is_the_final_stage_s_first_from_as_either_builder_names_it():
    cases = {
        (
            "#3 [builder 1/2] FROM docker.io/library/golang:1.22",
            "#4 [1/3] FROM docker.io/r2d/base:1@sha256:" + "a" * 64,
            "#5 [2/3] RUN echo FROM x",
        ): "docker.io/r2d/base:1@sha256:" + "a" * 64,
        (
            "Step 1/6 : FROM r2d-testenv/singleuser:jupyterhub-6.1.1 AS final",
            "Step 2/6 : FROM other",
        ): "r2d-testenv/singleuser:jupyterhub-6.1.1",
        ("#4 [2/2] RUN true",): None,
    }
    for lines, base in cases.items():
        output = BuildOutput()
        output.feed(lines)
        assert output.base_image == base, lines
