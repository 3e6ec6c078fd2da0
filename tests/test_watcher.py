"""The shared build watcher's reflector logic with a scripted API (pure asyncio logic).

The real API server is exercised end to end (tests/test_spawner_e2e.py); these tests drive
the cases a real server rarely produces on demand: 410 Gone, a broken watch, deletions.
"""

from __future__ import annotations

import asyncio

import pytest

from repo2dockerspawner.backends.kubernetes import KubernetesBuild
from repo2dockerspawner.backends.watcher import BuildWatcher, Gone
from support.waiting import until

pytestmark = pytest.mark.unit


def obj(name: str, rv: str, phase: str | None = None, uid: str = "u1") -> dict:
    body = {"metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv}}
    if phase:
        body["status"] = {"phase": phase}
    return body


class ScriptedWatcher(BuildWatcher):
    """Lists return `listing`; each watch replays the next script entry (events or an exception)."""

    def __init__(self, listings: list, scripts: list) -> None:
        super().__init__(resources=None, namespace="ns")  # type: ignore[arg-type]
        self.listings = listings
        self.scripts = scripts
        self.lists = 0
        self.watched_from: list[str] = []
        self.pauses: list[float] = []

    async def _pause(self, seconds: float) -> None:
        self.pauses.append(seconds)  # recorded, not slept
        await asyncio.sleep(0)

    async def _list(self) -> str:
        items = self.listings[min(self.lists, len(self.listings) - 1)]
        self.lists += 1
        if isinstance(items, BaseException):
            raise items
        self.objects = {i["metadata"]["name"]: i for i in items}
        self._synced.set()
        await self._notify()
        return f"list-{self.lists}"

    async def _watch(self, resource_version: str) -> str:
        self.watched_from.append(resource_version)
        script = self.scripts.pop(0) if self.scripts else None
        if script is None:
            await asyncio.sleep(3600)
        if isinstance(script, BaseException):
            raise script
        for event in script:
            resource_version = await self._apply(event, resource_version)
        return resource_version


async def test_resumes_from_the_last_version_and_relists_on_gone():
    watcher = ScriptedWatcher(
        listings=[[obj("a", "1", "Queued")], [obj("a", "9", "Succeeded")]],
        scripts=[
            [{"type": "MODIFIED", "object": obj("a", "2", "Building")}],  # stream ends normally
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "5"}}}],
            Gone(),  # too old: relist
            None,
        ],
    )
    await watcher.ready()
    await watcher.wait_for(lambda: watcher.lists == 2 and watcher.get("a")["status"]["phase"] == "Succeeded", timeout=2)
    assert watcher.watched_from == ["list-1", "2", "5", "list-2"]
    await watcher.stop()


async def test_errors_back_off_doubling_and_recover():
    down = RuntimeError("connection refused")
    watcher = ScriptedWatcher(
        listings=[down, down, down, [obj("a", "1", "Queued")]],
        scripts=[RuntimeError("connection reset"), [{"type": "ERROR", "object": {"code": 500}}], None],
    )
    await watcher.ready()
    await watcher.wait_for(lambda: watcher.lists == 6, timeout=2)
    # Three failed lists back off 1, 2, 4 s; a good list resets it, so each watch error waits 1 s.
    assert watcher.pauses == [1.0, 2.0, 4.0, 1.0, 1.0]
    await watcher.stop()


async def test_followers_see_changes_and_deletion_as_cancelled():
    watcher = ScriptedWatcher(listings=[[]], scripts=[None])
    await watcher.ready()
    build = KubernetesBuild(watcher, obj("b", "1"))  # created, not yet seen by the watch
    seen = []

    async def follow():
        async for status in build.statuses():
            seen.append(status.phase.value)

    task = asyncio.create_task(follow())
    for count, event in enumerate(
        (
            {"type": "ADDED", "object": obj("b", "2", "Queued")},
            {"type": "MODIFIED", "object": obj("b", "3", "Building")},
            {"type": "DELETED", "object": obj("b", "4", "Building")},
        ),
        start=1,
    ):
        await watcher._apply(event, "0")
        await until(lambda: len(seen) == count or task.done(), timeout=2, what="the follower to see the change")
    await asyncio.wait_for(task, 1)
    assert seen == ["Queued", "Building", "Cancelled"]
    await watcher.stop()


async def test_a_namesake_with_another_uid_is_not_our_build():
    watcher = ScriptedWatcher(listings=[[obj("c", "1", "Failed", uid="old")]], scripts=[None])
    await watcher.ready()
    build = KubernetesBuild(watcher, obj("c", "2", uid="new"))
    assert build.current().phase.value == "Pending"  # the old, failed one is not reported as ours
    await watcher._apply({"type": "MODIFIED", "object": obj("c", "3", "Building", uid="new")}, "0")
    assert build.current().phase.value == "Building"
    await watcher.stop()


async def test_a_build_deleted_before_the_watch_saw_it_is_not_waited_for_forever():
    from repo2docker_buildcore.kubeapi import ApiError

    class Gone404:
        async def get(self, namespace, name):
            raise ApiError(404, "Not Found")

    watcher = ScriptedWatcher(listings=[[]], scripts=[None])
    watcher.resources = Gone404()
    await watcher.ready()
    build = KubernetesBuild(watcher, obj("d", "1"))
    original = watcher.follow
    watcher.follow = lambda name, uid=None: original(name, uid, probe_after=0.05)
    statuses = [s async for s in build.statuses()]
    assert [s.phase.value for s in statuses] == ["Cancelled"]
    assert "deleted" in statuses[0].message
    await watcher.stop()
