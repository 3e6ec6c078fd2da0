"""KubernetesBackend.ensure with an in-memory API (pure logic): join a build that exists,
retry one that failed or was cancelled with a fresh resource, and never delete a success.
The real API server path is proven in test_spawner_e2e.py."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildSpec
from repo2dockerspawner.backends.kubernetes import KubernetesBackend, KubernetesBuild
from repo2dockerspawner.backends.watcher import Seen, Sighting
from support.waiting import until

pytestmark = pytest.mark.unit

SPEC = BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-x:" + "a" * 40)
_uids = itertools.count(1)


class FakeApi:
    """Resources by name, the way the API server and the shared watch would show them."""

    def __init__(self, existing_phase: str | None = None) -> None:
        self.objects: dict[str, dict] = {}
        self.created: list[dict] = []
        self.deleted: list[str] = []
        if existing_phase:
            obj = self._new(contract.build_manifest(SPEC, "ns"))
            obj["status"] = {"phase": existing_phase}

    def _new(self, manifest: dict) -> dict:
        obj = {**manifest, "metadata": {**manifest["metadata"], "uid": f"uid-{next(_uids)}"}}
        self.objects[obj["metadata"]["name"]] = obj
        return obj

    # BuildResources
    async def create(self, manifest):
        name = manifest["metadata"]["name"]
        if name in self.objects:
            return self.objects[name], False
        self.created.append(manifest)
        return self._new(manifest), True

    async def delete(self, namespace, name, uid=None):
        self.deleted.append(name)
        if uid is None or self.objects.get(name, {}).get("metadata", {}).get("uid") == uid:
            self.objects.pop(name, None)

    # BuildWatcher
    def start(self):
        pass

    async def ready(self):
        pass

    def get(self, name):
        return self.objects.get(name)

    async def wait_for(self, predicate, timeout=None):
        assert predicate(), "ensure() would wait for a change that never comes"


def backend(api: FakeApi) -> KubernetesBackend:
    b = KubernetesBackend(namespace="ns")
    b.resources = b.watcher = api  # as _connect() would have set them
    return b


async def test_a_new_build_is_created_with_who_asked():
    api = FakeApi()
    handle = await backend(api).ensure(SPEC, requested_by="alice")
    assert handle.name == contract.build_name(SPEC.repo_url, SPEC.commit)
    assert api.created[0]["metadata"]["annotations"] == {contract.ANNOTATION_REQUESTED_BY: "alice"}


@pytest.mark.parametrize("phase", ["Pending", "Queued", "Building", "Succeeded"])
async def test_a_build_that_exists_is_joined_not_restarted(phase):
    api = FakeApi(existing_phase=phase)
    uid = next(iter(api.objects.values()))["metadata"]["uid"]
    handle = await backend(api).ensure(SPEC, requested_by="bob")
    assert handle.uid == uid and api.deleted == [] and api.created == []


@pytest.mark.parametrize("phase", ["Failed", "Cancelled"])
async def test_a_finished_failure_is_retried_with_a_fresh_resource(phase):
    api = FakeApi(existing_phase=phase)
    old_uid = next(iter(api.objects.values()))["metadata"]["uid"]
    handle = await backend(api).ensure(SPEC, requested_by="bob")
    assert api.deleted == [handle.name] and len(api.created) == 1
    assert handle.uid != old_uid and handle.current().phase.value == "Pending"


async def test_a_success_whose_image_is_gone_is_replaced_and_a_successor_is_joined():
    api = FakeApi(existing_phase="Succeeded")
    old_uid = next(iter(api.objects.values()))["metadata"]["uid"]
    handle = await backend(api).ensure(SPEC, requested_by="bob", image_gone=True)
    assert api.deleted == [handle.name] and handle.uid != old_uid and handle.current().phase.value == "Pending"
    # Another spawn saw the same missing image a moment later: it joins the new build.
    again = await backend(api).ensure(SPEC, requested_by="carol", image_gone=True)
    assert again.uid == handle.uid and api.deleted == [handle.name]


# ---- KubernetesBuild.statuses: the resource and the live log, merged --------------------------


class ScriptedFollow:
    """The shared watch of one resource, moved on by the test: `show(status)` or `delete()`."""

    def __init__(self) -> None:
        self.sightings: asyncio.Queue = asyncio.Queue()
        self.resources = self  # KubernetesBuild asks `watcher.resources.get` whether it exists

    def get(self, name):
        return None

    def show(self, **status) -> None:
        self.sightings.put_nowait(
            Sighting(
                Seen.CHANGED,
                {
                    "metadata": {"name": "b", "namespace": "ns", "uid": "u", "resourceVersion": str(id(status))},
                    "status": status,
                },
            )
        )

    def delete(self) -> None:
        self.sightings.put_nowait(Sighting(Seen.GONE))

    async def follow(self, name, uid):
        while True:
            sighting = await self.sightings.get()
            yield sighting
            if sighting.seen is Seen.GONE:
                return


class ScriptedLog:
    """A build container's log on the hub's daemon, printed by the test with `print_line`."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def print_line(self, text: str | None) -> None:  # None: the container exited
        self.lines.put_nowait(None if text is None else json.dumps({"message": text}))

    async def logs(self, container_id):
        try:
            while (line := await self.lines.get()) is not None:
                yield line
        finally:
            self.closed = True


def building(lines: list[str], count: int | None = None) -> dict:
    return {
        "phase": "Building",
        "containerId": "c1",
        "logTail": lines,
        "logLineCount": len(lines) if count is None else count,
    }


async def reader(build: KubernetesBuild, seen: list) -> list:
    """What a pending page shows: each status, and each line once (as progress_events reads)."""
    lines_seen = 0
    async for status in build.statuses():
        new = status.new_lines(lines_seen)
        lines_seen = max(lines_seen, status.log_line_count)
        seen.append((status.phase.value, new))
    return seen


async def test_without_a_live_log_the_resource_alone_is_followed_to_its_end():
    follow = ScriptedFollow()
    build = KubernetesBuild(follow, {"metadata": {"name": "b", "namespace": "ns", "uid": "u"}})
    seen: list = []
    task = asyncio.create_task(reader(build, seen))
    follow.show(phase="Queued", queuePosition=1)
    follow.show(**building(["a", "b"]))
    follow.show(phase="Succeeded", logTail=["a", "b", "c"], logLineCount=3)
    assert await asyncio.wait_for(task, 2) == [("Queued", []), ("Building", ["a", "b"]), ("Succeeded", ["c"])]


async def test_the_resource_ahead_of_a_slow_live_log_gives_its_lines():
    follow, log = ScriptedFollow(), ScriptedLog()
    build = KubernetesBuild(follow, {"metadata": {"name": "b", "namespace": "ns", "uid": "u"}}, runner=log)
    seen: list = []
    task = asyncio.create_task(reader(build, seen))
    follow.show(**building(["one", "two", "three"]))
    await until(lambda: seen, what="the first status")
    log.print_line("one")  # the live stream starts from the container's first line, behind
    await until(lambda: len(seen) == 2, what="the status again, with the live line")
    assert seen[1] == ("Building", []), "the live stream behind the resource repeats nothing"
    follow.show(phase="Failed", message="exit 1", logTail=["one", "two", "three"], logLineCount=3)
    log.print_line(None)
    await asyncio.wait_for(task, 2)
    assert [line for _, new in seen for line in new] == ["one", "two", "three"] and seen[-1][0] == "Failed"


async def test_a_build_whose_resource_is_deleted_ends_as_cancelled():
    follow, log = ScriptedFollow(), ScriptedLog()
    build = KubernetesBuild(follow, {"metadata": {"name": "b", "namespace": "ns", "uid": "u"}}, runner=log)
    seen: list = []
    task = asyncio.create_task(reader(build, seen))
    follow.show(**building(["one"]))
    await until(lambda: seen, what="the first status")
    log.print_line(None)  # the operator kills the container of a deleted build ...
    follow.delete()  # ... and lets the resource go
    assert (await asyncio.wait_for(task, 2))[-1][0] == "Cancelled" and log.closed


async def test_a_reader_that_stops_early_leaves_no_task_and_no_stream():
    follow, log = ScriptedFollow(), ScriptedLog()
    build = KubernetesBuild(follow, {"metadata": {"name": "b", "namespace": "ns", "uid": "u"}}, runner=log)
    statuses = build.statuses()
    follow.show(**building([]))
    assert (await asyncio.wait_for(statuses.__anext__(), 2)).phase.value == "Building"
    relays = [t for t in asyncio.all_tasks() if t.get_name() in ("status of b", "log of b")]
    assert len(relays) == 2
    await statuses.aclose()
    await until(lambda: log.closed, what="the live log stream to be closed")
    assert all(t.done() for t in relays)


async def test_a_live_log_keeps_as_many_lines_as_the_operator_does():
    """The chart's build.logTailLines, not the default 100 (KubernetesBackend.tail_lines), and
    never fewer than the resource's own tail shows."""
    for tail_lines, resource_tail, kept in ((150, 3, 150), (100, 120, 120)):
        follow, log = ScriptedFollow(), ScriptedLog()
        meta = {"metadata": {"name": "b", "namespace": "ns", "uid": "u"}}
        build = KubernetesBuild(follow, meta, runner=log, tail_lines=tail_lines)
        statuses: list = []

        async def read(build=build, statuses=statuses):
            async for status in build.statuses():
                statuses.append(status)

        task = asyncio.create_task(read())
        follow.show(**building([f"r{i}" for i in range(resource_tail)]))
        await until(lambda statuses=statuses: statuses, what="the first status")
        for i in range(200):
            log.print_line(f"line {i}")
        log.print_line(None)
        await until(lambda statuses=statuses: statuses[-1].log_line_count == 200, what="the live lines")
        assert len(statuses[-1].log_tail) == kept, (tail_lines, resource_tail)
        follow.show(phase="Failed", message="exit 1", logTail=["line 199"], logLineCount=200)
        await asyncio.wait_for(task, 2)
