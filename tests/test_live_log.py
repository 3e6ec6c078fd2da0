"""Live build logs in the Kubernetes backend (pure logic, fakes for the watch and Docker):
lines come from the container as printed when this daemon has it, from the resource when it
does not, never twice, and the outcome always from the resource. The real daemons are in
test_spawner_e2e.py."""

from __future__ import annotations

import asyncio
import json

import docker.errors
import pytest

from repo2dockerspawner.backends.kubernetes import KubernetesBuild
from repo2dockerspawner.backends.watcher import Seen, Sighting
from repo2dockerspawner.progress import progress_events
from support.waiting import until

pytestmark = pytest.mark.unit
OBJ = {"metadata": {"name": "b", "namespace": "ns", "uid": "u1"}}


def obj(**status) -> dict:
    return {**OBJ, "status": status}


class FakeWatcher:
    """Sightings of one resource, released one at a time by the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def get(self, name):
        return None

    async def follow(self, name, uid=None):
        while True:
            item = await self.queue.get()
            yield Sighting(Seen.CHANGED, item)


class FakeRunner:
    """A Docker daemon with one container whose log the test feeds line by line."""

    def __init__(self, has_container: bool = True) -> None:
        self.has = has_container
        self.lines: asyncio.Queue = asyncio.Queue()

    async def logs(self, container_id):
        if not self.has:
            raise docker.errors.NotFound("no such container")
        while (line := await self.lines.get()) is not None:
            yield json.dumps({"message": line})


async def collect(build: KubernetesBuild, into: list[str]) -> None:
    async for event in progress_events(build):
        into.append(event["message"])


async def test_lines_come_live_from_the_container_once_each_and_the_outcome_from_the_resource():
    watcher, runner, messages = FakeWatcher(), FakeRunner(), []
    task = asyncio.create_task(collect(KubernetesBuild(watcher, obj(), runner), messages))
    watcher.queue.put_nowait(obj(phase="Building", containerId="c1", logTail=[], logLineCount=0))
    await until(lambda: any("Building your image" in m for m in messages), what="the build to show")
    await runner.lines.put("Step 1/2 : FROM base")
    # Shown with no further status from the resource: a printed line does not wait for it.
    await until(lambda: "Step 1/2 : FROM base" in messages, what="the printed line")
    # The resource catches up with the same line: not shown again.
    watcher.queue.put_nowait(obj(phase="Building", containerId="c1", logTail=["Step 1/2 : FROM base"], logLineCount=1))
    await runner.lines.put("Step 2/2 : COPY x")
    await runner.lines.put(None)  # the container exits
    watcher.queue.put_nowait(
        obj(
            phase="Succeeded",
            containerId="c1",
            image="r2d-x:1",
            message="Built r2d-x:1.",
            logTail=["Step 1/2 : FROM base", "Step 2/2 : COPY x"],
            logLineCount=2,
        )
    )
    await asyncio.wait_for(task, 5)
    assert messages.count("Step 1/2 : FROM base") == 1 and messages.count("Step 2/2 : COPY x") == 1, messages
    assert messages[-2:] == ["Built r2d-x:1.", "Image ready; starting your server."], messages


async def test_without_the_container_on_this_daemon_lines_come_from_the_resource():
    watcher, runner, messages = FakeWatcher(), FakeRunner(has_container=False), []
    task = asyncio.create_task(collect(KubernetesBuild(watcher, obj(), runner), messages))
    watcher.queue.put_nowait(obj(phase="Building", containerId="elsewhere", logTail=["a"], logLineCount=1))
    watcher.queue.put_nowait(obj(phase="Building", containerId="elsewhere", logTail=["a", "b"], logLineCount=2))
    watcher.queue.put_nowait(
        obj(phase="Failed", message="repo2docker exited with code 1.", logTail=["a", "b", "c"], logLineCount=3)
    )
    await asyncio.wait_for(task, 5)
    assert [m for m in messages if m in ("a", "b", "c")] == ["a", "b", "c"]
    assert "Build failed: repo2docker exited with code 1." in messages
