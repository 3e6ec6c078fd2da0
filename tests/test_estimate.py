"""The wait estimate of queued builds (pure logic) and how the pending page says it."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from test_spawner_options import FakeHandle

from repo2docker_buildcore.contract import BuildStatus, Phase
from repo2docker_buildcore.estimate import DurationHistory, start_delays
from repo2docker_buildcore.queue import BuildQueue
from repo2dockerspawner.progress import progress_events

pytestmark = pytest.mark.unit


def test_the_expected_duration_is_the_repositorys_median_else_everyones_else_unknown():
    history = DurationHistory()
    assert history.expected("r") is None
    for seconds in (10, 12, 300):  # one slow outlier does not drag the median
        history.record("r", seconds)
    history.record("other", 40)
    assert history.expected("r") == 12
    assert history.expected("never-built") == 26  # median of 10, 12, 40, 300


def test_waiters_take_the_earliest_free_slot_in_order():
    # Two slots: running builds end in 5 s and 20 s; waiters of 10 s each.
    assert start_delays([(25, 30), (10, 30)], [10, 10, 10], slots=2) == [5, 15, 20]
    # An overdue build is expected to end now, not in the past.
    assert start_delays([(50, 30)], [10], slots=1) == [0]
    # More running than slots (a lowered cap): a slot frees only when enough have ended.
    assert start_delays([(0, 10), (0, 20), (0, 30)], [5], slots=2) == [20]
    # A free slot starts the first waiter at once.
    assert start_delays([], [10, 10], slots=1) == [0, 10]


async def test_the_queue_estimates_from_what_it_has_seen_built():
    queue = BuildQueue(limit=1)
    await queue.acquire("first", repo="r")
    waiter = asyncio.create_task(queue.acquire("second", repo="r"))
    await asyncio.sleep(0)
    assert queue.estimate("second") is None  # nothing built yet: no estimate
    queue.history.record("r", 60)
    assert 59 <= queue.estimate("second") <= 60
    assert queue.estimate("first") is None  # not waiting
    queue.release("first")
    await waiter


async def test_the_pending_page_says_about_how_many_minutes_and_updates_it():
    def soon(seconds: float) -> str:
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
        return when.isoformat().replace("+00:00", "Z")

    handle = FakeHandle(
        [
            BuildStatus(Phase.QUEUED, queue_position=3, estimated_start=soon(170)),
            BuildStatus(Phase.QUEUED, queue_position=3, estimated_start=soon(170)),  # same: said once
            BuildStatus(Phase.QUEUED, queue_position=2, estimated_start=soon(100)),
            BuildStatus(Phase.QUEUED, queue_position=1, estimated_start=soon(10)),
            BuildStatus(Phase.QUEUED, queue_position=1),
        ]
    )
    messages = [e["message"] async for e in progress_events(handle)]
    assert messages == [
        "Waiting for a free build slot.",
        "2 builds ahead of yours. About 3 min until it starts.",
        "1 build ahead of yours. About 2 min until it starts.",
        "Your build is next in line. It should start within a minute.",
        "Your build is next in line.",
    ]


async def test_the_minutes_count_down_with_the_clock_while_the_status_stays_the_same(monkeypatch):
    from repo2dockerspawner import progress

    monkeypatch.setattr(progress, "WAIT_TICK", 0.2)
    start = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=31.5)
    queued = BuildStatus(Phase.QUEUED, queue_position=1, estimated_start=start.isoformat().replace("+00:00", "Z"))

    class StillQueued(FakeHandle):
        async def statuses(self):
            yield queued
            await asyncio.sleep(3)  # no new status for a while
            yield BuildStatus(Phase.FAILED, message="gave up")

    messages = [e["message"] async for e in progress_events(StillQueued([queued]))]
    assert messages[:3] == [
        "Waiting for a free build slot.",
        "Your build is next in line. About 1 min until it starts.",
        "Your build is next in line. It should start within a minute.",
    ], messages


async def test_a_queued_build_s_estimate_moves_when_the_running_build_overruns(monkeypatch):
    from repo2docker_buildcore import build
    from support.fakes import FakeRunner, make_job
    from support.waiting import until

    monkeypatch.setattr(build, "ESTIMATE_REFRESH", 0.5)
    queue = BuildQueue(1)
    queue.history.record("https://h/a/b", 1.0)  # builds take a second, as far as the queue knows
    first = FakeRunner(hold=True)
    one = asyncio.create_task(make_job(first, [], queue=queue, uid="u1").run())
    await until(lambda: first.reading, what="the first build to run")
    sent: list[dict] = []
    two = asyncio.create_task(make_job(FakeRunner(), sent, queue=queue, uid="u2").run())
    estimates = lambda: [f["estimatedStart"] for f in sent if f.get("estimatedStart")]  # noqa: E731
    await until(lambda: len(set(estimates())) >= 3, timeout=10, what="the estimate to move on as the build overruns")
    assert estimates() == sorted(estimates())  # later each time
    first.release.set()
    await asyncio.gather(one, two)
