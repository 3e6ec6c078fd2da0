"""Repo2DockerSpawner.start/stop around a build, with a scripted backend and DockerSpawner's
own start/stop replaced (pure logic; the real thing runs in test_spawner_e2e.py)."""

from __future__ import annotations

import asyncio

import pytest
from dockerspawner import DockerSpawner

from repo2docker_buildcore.contract import BuildStatus, Phase
from repo2dockerspawner import Repo2DockerSpawner
from repo2dockerspawner.backends import BuildBackend, shared
from repo2dockerspawner.errors import BuildFailed
from support.spawners import make_spawner
from support.waiting import until

pytestmark = pytest.mark.unit
SHA = "b" * 40


class ScriptedBuild:
    name, namespace, uid = "build-1", "ns", "build-1-uid"

    def __init__(self) -> None:
        self.updates: asyncio.Queue = asyncio.Queue()
        self.last = BuildStatus(Phase.BUILDING)
        self.followers = 0

    def current(self) -> BuildStatus:
        return self.last

    async def statuses(self):
        self.followers += 1
        yield self.last
        while not self.last.phase.terminal:
            self.last = await self.updates.get()
            yield self.last


class ScriptedBackend(BuildBackend):
    build = None
    replacement = None
    specs: list = []
    image_gone: list = []

    async def ensure(self, spec, requested_by="", image_gone=False, credential=None, replaces=""):
        ScriptedBackend.specs.append((spec, requested_by))
        ScriptedBackend.image_gone.append(image_gone)
        return ScriptedBackend.replacement if image_gone else ScriptedBackend.build


@pytest.fixture
def spawner(monkeypatch):
    started: list[str] = []

    async def docker_start(self):
        started.append(self.image)
        return ("127.0.0.1", 8888)

    async def docker_stop(self, now=False):
        pass

    async def resolve(repo, ref, policy, limits, credentials, git="git"):
        return SHA, credentials

    async def image_on_daemon(self, image):
        self.asked_daemon.append(image)
        return False  # no image on the daemon: every launch here builds (or joins) one

    monkeypatch.setattr(Repo2DockerSpawner, "_image_on_daemon", image_on_daemon)
    monkeypatch.setattr(DockerSpawner, "start", docker_start)
    monkeypatch.setattr(DockerSpawner, "stop", docker_stop)
    monkeypatch.setattr("repo2dockerspawner.spawner.resolve_launch_ref", resolve)
    shared.clear()
    ScriptedBackend.build, ScriptedBackend.specs, ScriptedBackend.image_gone = ScriptedBuild(), [], []
    ScriptedBackend.replacement = ScriptedBuild()
    s = make_spawner({"Repo2DockerSpawner": {"backend_class": ScriptedBackend}})
    s.started, s.asked_daemon = started, []
    s.user_options = {"repo": "https://github.com/a/b", "ref": "main"}
    return s


async def following(build: ScriptedBuild) -> None:
    """Until the spawner follows `build`'s statuses (it has asked for it and waits)."""
    await until(lambda: build.followers, what="the spawner to follow the build")


async def test_a_built_image_is_what_the_server_starts_from(spawner):
    task = asyncio.create_task(spawner.start())
    await following(ScriptedBackend.build)
    spec, requested_by = ScriptedBackend.specs[0]
    assert (spec.commit, requested_by) == (SHA, "alice")
    # Whatever a status says (anyone who can create a resource under the name can have it say
    # anything): the server starts from the image the hub derived.
    await ScriptedBackend.build.updates.put(BuildStatus(Phase.SUCCEEDED, image="r2d-someone-else:1"))
    assert await asyncio.wait_for(task, 2) == ("127.0.0.1", 8888)
    assert spawner.started == [spec.image] and spawner.get_state()["repo2docker"]["image"] == spec.image


async def test_stopping_a_pending_spawn_stops_waiting_not_the_build(spawner):
    build = ScriptedBackend.build
    task = asyncio.create_task(spawner.start())
    await following(build)
    await spawner.stop()
    with pytest.raises(BuildFailed, match="the build continues"):
        await asyncio.wait_for(task, 2)
    assert spawner.started == []  # no server from a build nobody waits for any more
    # The build itself goes on: others can still follow it to its end.
    follower = build.statuses()
    assert (await follower.__anext__()).phase == Phase.BUILDING
    await build.updates.put(BuildStatus(Phase.SUCCEEDED, image="r2d-x:1"))
    assert (await follower.__anext__()).phase == Phase.SUCCEEDED


async def test_a_failed_build_fails_the_spawn_with_its_message(spawner):
    task = asyncio.create_task(spawner.start())
    await following(ScriptedBackend.build)
    await ScriptedBackend.build.updates.put(BuildStatus(Phase.FAILED, message="repo2docker exited with code 1."))
    with pytest.raises(BuildFailed, match="The image build failed: repo2docker exited with code 1"):
        await asyncio.wait_for(task, 2)
    assert spawner.started == []


async def test_no_repository_starts_the_configured_image_without_a_build(spawner):
    spawner.user_options = {}
    await spawner.start()
    assert spawner.started == [spawner._configured_image] and ScriptedBackend.specs == []


async def test_a_succeeded_build_whose_image_is_gone_is_built_again(spawner):
    ScriptedBackend.build.last = BuildStatus(Phase.SUCCEEDED, image="r2d-gone:1")
    task = asyncio.create_task(spawner.start())
    await following(ScriptedBackend.replacement)
    assert ScriptedBackend.image_gone == [False, True]  # joined, found no image, asked again
    assert spawner.launch.build is ScriptedBackend.replacement  # progress follows the new build
    spec = ScriptedBackend.specs[0][0]
    await ScriptedBackend.replacement.updates.put(BuildStatus(Phase.SUCCEEDED, image=spec.image))
    await asyncio.wait_for(task, 2)
    # asked before the build (for the previous version) and after it succeeded (image gone?)
    assert spawner.asked_daemon == [spec.image, spec.image] and spawner.started == [spec.image]


async def test_a_running_build_is_joined_without_asking_the_daemon_again(spawner):
    task = asyncio.create_task(spawner.start())
    await following(ScriptedBackend.build)
    await ScriptedBackend.build.updates.put(BuildStatus(Phase.SUCCEEDED, image=ScriptedBackend.specs[0][0].image))
    await asyncio.wait_for(task, 2)
    assert ScriptedBackend.image_gone == [False]
    # once, before the build; only a build that already succeeded can have lost its image
    assert spawner.asked_daemon == [ScriptedBackend.specs[0][0].image]
