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
from repo2docker_buildcore.docker_api import RunnerError
from repo2docker_buildcore.queue import BuildQueue
from repo2docker_buildcore.runner import BuildContainer, BuildRef
from repo2docker_buildcore.status import now_iso
from support.fakes import FakeRunner, make_job, run_job
from support.waiting import until

pytestmark = pytest.mark.unit


async def test_an_existing_image_is_a_success_without_a_build():
    runner = FakeRunner(local=True)
    outcome, sent = await run_job(runner)
    assert (outcome.phase, outcome.message, outcome.cached, runner.started) == (
        Phase.SUCCEEDED,
        ALREADY_BUILT,
        True,
        [],
    )
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
        run_job(runner, timeout=60, recorded_start=started.isoformat().replace("+00:00", "Z")), 5
    )
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


async def _queued_behind_a_running_build(queue: BuildQueue, second: FakeRunner, **job):
    first = FakeRunner(hold=True)
    one = asyncio.create_task(make_job(first, [], queue=queue, uid="u1").run())
    await until(lambda: first.reading, what="the first build to run")
    job_two = make_job(second, [], queue=queue, uid="u2")
    for name, value in job.items():
        setattr(job_two, name, value)
    two = asyncio.create_task(job_two.run())
    await until(lambda: queue.waiting, what="the second build to queue")
    return first, one, job_two, two


async def test_the_next_build_s_container_is_created_ahead_and_a_freed_slot_only_starts_it():
    queue = BuildQueue(1)
    second = FakeRunner()
    first, one, _, two = await _queued_behind_a_running_build(queue, second)
    await until(lambda: second.prepared, what="the queued build's container to be created ahead")
    assert second.started == []  # created, not started: the slot is not free
    first.release.set()
    await asyncio.gather(one, two)
    assert [ref.uid for ref in second.prepared] == ["u2"] and len(second.started) == 1
    assert second.removed == [("p1", False)]  # the prepared container was the one that ran


async def test_only_the_builds_next_in_line_are_created_ahead():
    queue = BuildQueue(1)
    runners = [FakeRunner() for _ in range(3)]
    first, one, _, two = await _queued_behind_a_running_build(queue, runners[0])
    job_three = make_job(runners[1], [], queue=queue, uid="u3")
    three = asyncio.create_task(job_three.run())
    await until(lambda: queue.waiting == 2, what="a third build to queue")
    await until(lambda: runners[0].prepared, what="the head's container")
    await until(lambda: 2 in job_three.prepare_looks, what="the decision at position 2")
    assert not job_three.preparing_ahead and runners[1].prepared == []  # second in line at limit 1: not yet
    first.release.set()
    await asyncio.gather(one, two, three)
    assert len(runners[1].prepared) == 1  # once it was next


async def test_while_other_builders_are_alive_nothing_is_created_before_the_claim_won():
    """A container made ahead would exist on every node that queued the build."""

    async def claim():
        return "me"

    for alone in (False, True):
        queue = BuildQueue(1)
        second = FakeRunner()
        first, one, job_two, two = await _queued_behind_a_running_build(
            queue, second, claim=claim, me="me", claimed=False, alone=lambda: alone
        )
        await until(lambda: job_two.prepare_looks, what="the decision whether to create it ahead")
        first.release.set()
        await asyncio.gather(one, two)
        assert (len(second.prepared), len(second.started)) == (int(alone), 1), alone


async def test_a_builder_that_becomes_alone_while_a_build_waits_makes_its_container_then(monkeypatch):
    monkeypatch.setattr(build, "PREPARE_RECHECK", 0.02)

    async def claim():
        return "me"

    alone = [False]
    queue = BuildQueue(1)
    second = FakeRunner()
    first, one, job_two, two = await _queued_behind_a_running_build(
        queue, second, claim=claim, me="me", claimed=False, alone=lambda: alone[0]
    )
    await until(lambda: len(job_two.prepare_looks) >= 2, what="a look again while not alone")
    assert not job_two.preparing_ahead and second.prepared == []
    alone[0] = True  # the other builder's Lease expired (or this one has now read them all)
    await until(lambda: second.prepared, what="the container made ahead once alone")
    first.release.set()
    await asyncio.gather(one, two)
    assert second.removed == [("p1", False)]


async def test_a_container_made_ahead_is_removed_when_another_builder_wins_the_claim():
    claims = []

    async def claim():
        claims.append(1)
        return "other-node"

    queue = BuildQueue(1)
    second = FakeRunner()
    first, one, job_two, two = await _queued_behind_a_running_build(
        queue, second, claim=claim, me="me", claimed=False, alone=lambda: True
    )
    await until(lambda: second.prepared and claims, what="the container made and the claim tried ahead")
    assert not job_two.claimed  # lost ahead: the claim at the slot asks again and stops the build
    first.release.set()
    await one
    with pytest.raises(build.ClaimLost):
        await two
    assert second.removed == [("p1", False)] and second.started == []


async def test_alone_the_build_next_in_line_is_claimed_ahead_so_a_freed_slot_only_starts_it():
    """The claim's read and write would otherwise stand between the exit and the next start."""
    for alone in (True, False):
        claims_at: list[bool] = []  # was the first build still running when the claim was made?
        queue = BuildQueue(1)
        second = FakeRunner()

        async def claim():
            claims_at.append(queue.running == 1 and bool(queue.waiting))  # the slot not yet freed
            return "me"

        first, one, job_two, two = await _queued_behind_a_running_build(
            queue, second, claim=claim, me="me", claimed=False, alone=lambda: alone
        )
        if alone:
            await until(lambda: job_two.claimed, what="the claim ahead")
        await asyncio.sleep(0.05)
        first.release.set()
        await asyncio.gather(one, two)
        assert claims_at == [alone], alone  # one claim: ahead when alone, at the slot otherwise


async def test_off_with_prepare_next_false():
    queue = BuildQueue(1)
    second = FakeRunner()
    first, one, job_two, two = await _queued_behind_a_running_build(
        queue, second, settings=build.BuildSettings(prepare_next=False)
    )
    await until(lambda: job_two.prepare_looks, what="the decision whether to create it ahead")
    first.release.set()
    await asyncio.gather(one, two)
    assert second.prepared == [] and len(second.started) == 1


async def test_a_cancelled_queued_build_removes_the_container_made_ahead():
    queue = BuildQueue(1)
    second = FakeRunner()
    first, one, job_two, two = await _queued_behind_a_running_build(queue, second)
    await until(lambda: second.prepared, what="the container made ahead")
    job_two.kill_on_cancel = True
    two.cancel()
    with pytest.raises(asyncio.CancelledError):
        await two
    assert second.removed == [("p1", True)] and second.started == []
    first.release.set()
    await one


async def test_a_container_made_ahead_by_an_earlier_process_queues_and_is_the_one_started():
    """Found after a restart in Docker's 'created' state: it never ran, so it holds no slot."""
    made_ahead = BuildContainer("ahead", "n", "created", None, BuildRef("ns", "b", "u2"))
    queue = BuildQueue(1)
    second = FakeRunner(existing=made_ahead)
    first, one, _, two = await _queued_behind_a_running_build(queue, second)
    assert queue.running == 1 and second.started == []
    first.release.set()
    await asyncio.gather(one, two)
    assert second.prepared == [] and second.removed == [("ahead", False)]


async def test_a_built_image_s_provenance_says_what_made_it_and_a_cached_one_claims_none():
    base = "docker.io/library/python:3.11@sha256:" + "b" * 64
    runner = FakeRunner(log=("Building conda environment", f"#4 [1/2] FROM {base}", "#5 [2/2] RUN true"))
    sent: list[dict] = []
    job = make_job(runner, sent)
    job.me = "node-7"
    outcome = await job.run()
    assert outcome.phase == Phase.SUCCEEDED
    provenance = sent[-1]["provenance"]
    assert provenance.pop("durationSeconds") >= 0
    assert provenance == {
        "repo2dockerVersion": "2026.4.0",
        "buildImageDigest": "sha256:" + "d" * 64,
        "baseImageDigest": base,
        "builder": "node-7",
    }
    _, sent = await run_job(FakeRunner(local=True))
    assert "provenance" not in sent[-1]  # not built here: nothing to tell


async def test_a_base_image_the_daemon_cannot_resolve_is_left_out_not_guessed():
    runner = FakeRunner(log=("Step 1/3 : FROM some/base:1",))
    _, sent = await run_job(runner)
    assert "baseImageDigest" not in sent[-1]["provenance"] and sent[-1]["provenance"]["repo2dockerVersion"]
