"""One list+watch of build resources per hub process, shared by every spawner.

A watch per pending spawn would open as many long-lived connections to the API server as
there are users waiting, which is exactly when a hub is busiest. Instead one task keeps a
local copy of every build resource in the namespace, and spawners wait on that copy.

The loop is the usual reflector: list (which gives a resourceVersion), watch from that
version, resume from the last version seen when a watch ends, relist when the server says
the version is too old (410 Gone), and back off (capped) on errors so an API outage does
not turn into a request storm.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from repo2docker_buildcore.backoff import Backoff
from repo2docker_buildcore.kubeapi import ApiError
from repo2docker_buildcore.resources import BuildResources

log = logging.getLogger(__name__)


class Gone(Exception):
    """The resourceVersion we watch from has been compacted away: relist."""


class Seen(enum.Enum):
    CHANGED = "changed"  # the object (new, or a new resourceVersion of it)
    GONE = "gone"  # deleted, or replaced by a namesake with another uid
    NOT_SEEN = "not seen"  # not in the watch yet: ask the API server whether it exists


@dataclass(frozen=True)
class Sighting:
    """What `BuildWatcher.follow` saw of one object; `obj` is set for CHANGED only."""

    seen: Seen
    obj: dict[str, Any] | None = None


class BuildWatcher:
    def __init__(
        self, resources: BuildResources, namespace: str, watch_timeout: int = 300, max_backoff: float = 30.0
    ) -> None:
        self.resources = resources
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.objects: dict[str, dict[str, Any]] = {}
        self._version = 0
        self._changed = asyncio.Condition()
        self._synced = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"r2dbuild watcher {self.namespace}")

    async def ready(self, timeout: float = 30.0) -> None:
        self.start()
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _notify(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    async def _run(self) -> None:
        backoff = Backoff.doubling(1.0, self.max_backoff)
        while True:
            try:
                resource_version = await self._list()
                backoff.reset()
                while True:
                    resource_version = await self._watch(resource_version)
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("build watch expired (410); relisting")
            except Exception as exc:  # noqa: BLE001 - keep the hub's view alive whatever happens
                delay = backoff.next()
                log.warning("build watch failed (%s); retrying in %.0fs", exc, delay)
                await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _list(self) -> str:
        listing = await self.resources.list(self.namespace)
        self.objects = {item["metadata"]["name"]: item for item in listing.get("items", [])}
        self._synced.set()
        await self._notify()
        return listing["metadata"]["resourceVersion"]

    async def _watch(self, resource_version: str) -> str:
        """Watch until the server ends the stream; return the version to resume from."""
        try:
            async for event in self.resources.watch(self.namespace, resource_version, self.watch_timeout):
                resource_version = await self._apply(event, resource_version)
        except ApiError as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        return resource_version

    async def _apply(self, event: dict[str, Any], resource_version: str) -> str:
        kind, obj = event.get("type"), event.get("object")
        if kind == "ERROR":
            if isinstance(obj, dict) and obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error: {obj}")
        if not isinstance(obj, dict):
            return resource_version
        resource_version = obj.get("metadata", {}).get("resourceVersion") or resource_version
        if kind == "BOOKMARK":
            return resource_version
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj
        await self._notify()
        return resource_version

    def get(self, name: str) -> dict[str, Any] | None:
        return self.objects.get(name)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        async def waiter() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(waiter(), timeout)

    async def follow(self, name: str, uid: str | None = None, probe_after: float = 10.0) -> AsyncIterator[Sighting]:
        """CHANGED with the object as soon as the watch has it, then after each change; GONE
        once it is deleted (or replaced by a namesake), which ends the stream. A resource just
        created may not have reached the watch yet, so absence only means deletion after the
        object has been seen; until then NOT_SEEN comes every `probe_after` seconds so the
        caller can ask the API server whether it exists at all."""
        seen_version = -1
        seen_rv = None
        while True:
            timed_out = False
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._version != seen_version),
                        timeout=probe_after if seen_rv is None else None,
                    )
                except asyncio.TimeoutError:
                    timed_out = True
                seen_version = self._version
            obj = self.objects.get(name)
            if obj is not None and uid and obj["metadata"]["uid"] != uid:
                obj = None
            rv = obj["metadata"].get("resourceVersion") if obj else None
            if obj is None:
                if seen_rv is None:
                    if timed_out:
                        yield Sighting(Seen.NOT_SEEN)
                    continue
                yield Sighting(Seen.GONE)
                return
            if rv != seen_rv:
                seen_rv = rv
                yield Sighting(Seen.CHANGED, obj)
