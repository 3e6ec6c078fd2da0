"""LocalBackend's bookkeeping with a fake runner (pure logic); its builds on the real daemon
are in test_spawner_e2e.py and test_restarts.py."""

from __future__ import annotations

import asyncio

import pytest
from traitlets.config import Config

from repo2docker_buildcore.contract import BuildSpec, Phase
from repo2dockerspawner.backends.local import LocalBackend
from support.fakes import SHA, FakeRunner
from support.waiting import until

pytestmark = pytest.mark.unit
SPEC = BuildSpec("https://h/a/b", "main", SHA, "r2d-x:" + SHA)


def backend(runner: FakeRunner, **settings) -> LocalBackend:
    b = LocalBackend(config=Config({"LocalBackend": settings}))
    b.runner = runner
    b._adopted = True  # nothing survived: no earlier hub process
    return b


async def test_finished_builds_are_forgotten_after_keep_finished():
    b = backend(FakeRunner(), keep_finished=0.05)
    build = await b.ensure(SPEC)
    await build.task
    assert build.current().phase == Phase.SUCCEEDED and b.builds == {build.name: build}  # late joiners see it
    await until(lambda: b.builds == {}, what="the build to be forgotten after keep_finished")


async def test_a_retry_is_a_new_attempt_with_its_own_uid():
    runner = FakeRunner(exit_code=1, image_after=False)
    b = backend(runner)
    first = await b.ensure(SPEC)
    await first.task
    assert first.current().phase == Phase.FAILED
    runner.exit, runner.image_after = 0, True
    retry = await b.ensure(SPEC)
    await retry.task
    assert retry.current().phase == Phase.SUCCEEDED
    assert retry.name == first.name and retry.uid != first.uid
    assert [ref.uid for ref in runner.started] == [first.uid, retry.uid]


async def test_identical_requests_join_one_build():
    runner = FakeRunner(hold=True)
    b = backend(runner)
    one, two = await asyncio.gather(b.ensure(SPEC), b.ensure(SPEC))
    assert one is two
    runner.release.set()
    await one.task
    assert len(runner.started) == 1


async def test_the_embedded_queue_is_fair_between_users():
    runner = FakeRunner(hold=True, image_after=False)  # each build really runs (no image appears meanwhile)
    b = backend(runner, concurrency=1)
    specs = [BuildSpec(f"https://h/a/r{i}", "main", SHA, f"r2d-x{i}:" + SHA) for i in range(5)]
    anns = [await b.ensure(spec, requested_by="ann") for spec in specs[:4]]
    await until(lambda: len(runner.started) == 1, what="Ann's first build to start")
    bob = await b.ensure(specs[4], requested_by="bob")
    await until(lambda: bob.current().queue_position == 1, what="Bob's build to be first in the queue")
    runner.release.set()
    await asyncio.gather(*(build.task for build in [*anns, bob]))
    assert len(runner.started) == 5
    assert [ref.uid for ref in runner.started][1] == bob.uid


async def test_a_queued_build_nobody_waits_for_is_withdrawn_and_a_running_one_is_not():
    runner = FakeRunner(hold=True, image_after=False)
    b = backend(runner, concurrency=1, abandoned_after=0.05)
    running, queued, rejoined = [
        await b.ensure(BuildSpec(f"https://h/a/r{i}", "main", SHA, f"r2d-x{i}:" + SHA)) for i in range(3)
    ]
    await until(lambda: queued.current().phase == Phase.QUEUED, what="the second build to queue")
    for build in (running, queued, rejoined):
        async with b.waiting_for(build):
            pass  # the launch that asked for it stops waiting
    async with b.waiting_for(rejoined):  # another launch joins within the grace period
        await until(lambda: queued.current().phase == Phase.CANCELLED, what="the abandoned queued build to go")
        assert rejoined.current().phase == Phase.QUEUED
        assert running.current().phase == Phase.BUILDING  # running builds always finish
        assert [ref.uid for ref in runner.started] == [running.uid]
        runner.release.set()
        await until(lambda: len(runner.started) == 2, what="the joined build to start")
    assert [ref.uid for ref in runner.started] == [running.uid, rejoined.uid]


async def test_a_prebuild_waits_behind_launches_until_a_launch_joins_it():
    from repo2docker_buildcore.contract import PREBUILD_REQUESTER

    runner = FakeRunner(hold=True, image_after=False)
    b = backend(runner, concurrency=1)
    specs = [BuildSpec(f"https://h/a/r{i}", "main", SHA, f"r2d-x{i}:" + SHA) for i in range(3)]
    running = await b.ensure(specs[0], requested_by="ann")
    await until(lambda: len(runner.started) == 1, what="Ann's build to start")
    prebuild = await b.ensure(specs[1], requested_by=PREBUILD_REQUESTER)
    bob = await b.ensure(specs[2], requested_by="bob")
    await until(
        lambda: (prebuild.current().queue_position, bob.current().queue_position) == (2, 1),
        what="the older prebuild to queue behind Bob's launch",
    )
    joined = await b.ensure(specs[1], requested_by="carol")  # Carol launches the prebuilt commit
    assert joined is prebuild and prebuild.requested_by == "carol"
    await until(
        lambda: (prebuild.current().queue_position, bob.current().queue_position) == (1, 2),
        what="Carol's joined build to go first (it is older)",
    )
    runner.release.set()
    await asyncio.gather(running.task, prebuild.task, bob.task)
