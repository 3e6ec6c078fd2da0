"""Throttled, coalesced status publishing (pure asyncio logic with a recording sender)."""

from __future__ import annotations

import pytest

from repo2docker_buildcore.status import StatusPublisher, failure_message
from support.waiting import until

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list[dict] = []
        self.fail = fail

    async def __call__(self, fields: dict) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("api down")
        self.sent.append(dict(fields))


async def test_log_updates_are_coalesced_and_phase_changes_are_immediate():
    rec = Recorder()
    pub = StatusPublisher(rec, interval=0.2)
    await pub.update({"phase": "Building"})
    for i in range(50):
        await pub.update({"logLineCount": i})
    assert rec.sent == [{"phase": "Building"}]  # the rest waits for the interval
    await until(lambda: len(rec.sent) > 1, what="the interval's one write")
    assert rec.sent[-1] == {"logLineCount": 49} and len(rec.sent) == 2
    await pub.update({"phase": "Succeeded"})
    assert rec.sent[-1] == {"phase": "Succeeded"}
    await pub.close()


async def test_failed_log_update_is_retried_with_the_next_one():
    rec = Recorder(fail=1)
    pub = StatusPublisher(rec, interval=0)
    pub._last_sent = -1
    await pub.update({"logLineCount": 1}, urgent=True)
    assert rec.sent == [] and pub.failures == 1
    await pub.update({"message": "x"}, urgent=True)
    assert rec.sent == [{"logLineCount": 1, "message": "x"}]


async def test_failed_phase_change_raises():
    pub = StatusPublisher(Recorder(fail=1))
    with pytest.raises(RuntimeError):
        await pub.update({"phase": "Failed"})


def test_failure_message_shows_the_lines_it_is_given():
    message = failure_message("repo2docker exited with code 1.", ["b", "c"])
    assert message == "repo2docker exited with code 1.\nLast log lines:\nb\nc"
    assert failure_message("x", []) == "x"
