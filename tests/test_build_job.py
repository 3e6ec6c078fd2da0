"""Every rule in the build job's docstring, one test each, with a fake runner (pure logic).

Each test fails when its rule's code is removed; the note of the change that added them says
how that was checked. Real-daemon behaviour is proven in test_operator.py and test_restarts.py.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from repo2docker_buildcore import build
from repo2docker_buildcore.build import ALREADY_BUILT
from repo2docker_buildcore.contract import Phase
from repo2docker_buildcore.queue import BuildQueue
from repo2docker_buildcore.docker_api import RunnerError
from repo2docker_buildcore.runner import BuildContainer, BuildRef
from repo2docker_buildcore.status import now_iso
from support.fakes import FakeRunner, make_job, run_job
from support.waiting import until

pytestmark = pytest.mark.unit


async def test_an_existing_image_is_a_success_without_a_build():
    runner = FakeRunner(local=True)
    outcome, sent = await run_job(runner)
    assert (outcome.phase, outcome.message, outcome.cached, runner.started) == (Phase.SUCCEEDED, ALREADY_BUILT, True, [])
    assert sent[-1]["image"] == "r2d-x:" + "a" * 40


async def test_a_surviving_container_is_re_attached_never_started_again():
    survivor = BuildContainer("old", "n", "running", None, BuildRef("ns", "b", "uid-1"), started_at=now_iso())
    queue = BuildQueue(1)
    runner = FakeRunner(existing=survivor)
    outcome, _ = await run_job(runner, queue=queue)
    assert outcome.phase == Phase.SUCCEEDED and runner.started == []
    assert runner.removed == [("old", False)]  # followed to its end, then removed


async def test_a_survivor_holds_its_slot_while_it_runs():
    survivor = BuildContainer("old", "n", "running", None, BuildRef("ns", "b", "uid-1"))
    queue = BuildQueue(1)
    runner = FakeRunner(existing=survivor, hold=True)
    task = asyncio.create_task(make_job(runner, [], queue=queue).run())
    await until(lambda: runner.reading, what="the job to follow the survivor's log")
    assert queue.running == 1  # adopted: a new build would wait
    runner.release.set()
    await task
    assert queue.running == 0


async def test_success_needs_exit_code_zero():
    outcome, _ = await run_job(FakeRunner(exit_code=2, image_after=True))
    assert outcome.phase == Phase.FAILED and "exited with code 2" in outcome.message


async def test_success_needs_the_image():
    outcome, _ = await run_job(FakeRunner(exit_code=0, image_after=False))
    assert outcome.phase == Phase.FAILED and "does not exist" in outcome.message


async def test_the_timeout_counts_from_the_recorded_start():
    started = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=59)).replace(microsecond=0)
    survivor = BuildContainer("old", "n", "running", None, BuildRef("ns", "b", "uid-1"))
    runner = FakeRunner(existing=survivor, hold=True)
    outcome, _ = await asyncio.wait_for(
        run_job(runner, timeout=60, recorded_start=started.isoformat().replace("+00:00", "Z")), 5)
    assert outcome.phase == Phase.FAILED and "longer than the 60 s limit" in outcome.message
    assert runner.removed == [("old", True)]  # killed


async def test_cancelling_kills_only_when_the_build_itself_is_cancelled():
    for kill in (False, True):
        runner = FakeRunner(hold=True)
        job = make_job(runner, [])
        task = asyncio.create_task(job.run())
        await until(lambda: runner.reading, what="the build to run")
        job.kill_on_cancel = kill
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # An operator that merely exits leaves the container for its successor.
        assert runner.removed == ([("c1", True)] if kill else []), kill


async def test_a_build_that_lost_docker_removes_its_container_when_docker_is_back(monkeypatch):
    monkeypatch.setattr(build, "CLEANUP_BACKOFF", (0.01,))

    class DockerGoesAway(FakeRunner):
        down = True

        async def exit_code(self, container_id):
            raise RunnerError("the Docker daemon did not answer as expected: connection refused")

        async def remove(self, container_id, kill=False):
            if self.down:
                self.down = False  # back after one failed attempt
                raise RunnerError("the Docker daemon did not answer as expected: connection refused")
            await super().remove(container_id, kill)

    runner = DockerGoesAway()
    outcome, _ = await run_job(runner)
    assert outcome.phase == Phase.FAILED and "Docker daemon" in outcome.message
    assert await until(lambda: runner.removed, what="the container's removal") == [("c1", True)]


async def test_builds_wait_for_a_slot_in_order():
    queue = BuildQueue(1)
    first = FakeRunner(hold=True)
    second = FakeRunner()
    one = asyncio.create_task(make_job(first, [], queue=queue, uid="u1").run())
    await until(lambda: first.reading, what="the first build to run")
    sent: list[dict] = []
    two = asyncio.create_task(make_job(second, sent, queue=queue, uid="u2").run())
    await until(lambda: queue.waiting, what="the second build to queue")
    assert second.started == []
    assert any(f.get("phase") == "Queued" for f in sent) and any(f.get("queuePosition") == 1 for f in sent), sent
    first.release.set()
    await asyncio.gather(one, two)
    assert len(second.started) == 1


async def test_the_slot_is_free_once_the_container_exits_before_the_wrap_up():
    """The next build starts while this one's container is removed and its image checked."""
    queue = BuildQueue(1)
    runner = FakeRunner()
    slot_during_wrap_up: list[int] = []

    async def slow_remove(container_id, kill=False):
        slot_during_wrap_up.append(queue.running)
        await asyncio.sleep(0.05)

    runner.remove = slow_remove
    outcome, _ = await run_job(runner, queue=queue)
    assert outcome.phase == Phase.SUCCEEDED
    assert slot_during_wrap_up == [0], "the slot was still held while the exited container was removed"
