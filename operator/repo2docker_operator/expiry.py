"""Deleting finished build resources when their TTL ends: one task for all of them.

Why not a daemon per finished resource (what the operator did first): a busy hub finishes
thousands of builds a day and keeps each for a day, and every daemon is a task, a kopf
memory and a timer that sleeps for hours: hundreds of megabytes at a few thousand resources,
and seconds of replay after every restart. Here a finished resource is one heap entry: the
operator adds it when it marks a build finished (contract.LABEL_FINISHED_AT), and after a
restart from one metadata-only listing of the marked ones; one task sleeps until the
earliest expiry.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
Delete = Callable[[str, str, str], Awaitable[None]]  # namespace, name, uid
RETRY_AFTER = 30.0  # seconds before a deletion that failed (API trouble) is tried again


class Expiries:
    def __init__(self, delete: Delete, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._delete = delete
        self.ttl = ttl
        self._clock = clock
        self._due: dict[tuple[str, str], tuple[float, str]] = {}  # (namespace, name) -> (due, uid)
        self._heap: list[tuple[float, str, str]] = []  # (due, namespace, name); stale entries are skipped
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def finished(self, namespace: str, name: str, uid: str, finished_at: float | None) -> None:
        """Remember a finished resource; it is deleted `ttl` seconds after it finished (unix time)."""
        if self.ttl <= 0:
            return
        due = (finished_at if finished_at is not None else self._clock()) + self.ttl
        key = (namespace, name)
        if self._due.get(key) == (due, uid):
            return  # the same resource seen again (a relist): nothing changes
        self._due[key] = (due, uid)
        heapq.heappush(self._heap, (due, namespace, name))
        if self._heap[0][0] == due:
            self._changed.set()  # a new earliest expiry: the sleeper must wake sooner

    def next_due(self) -> float | None:
        while self._heap:
            due, namespace, name = self._heap[0]
            if self._due.get((namespace, name), (None,))[0] == due:
                return due
            heapq.heappop(self._heap)  # deleted or rescheduled since
        return None

    async def expire_due(self) -> int:
        """Delete every resource whose TTL has ended; returns how many were deleted."""
        deleted = 0
        while (due := self.next_due()) is not None and due <= self._clock():
            _, namespace, name = heapq.heappop(self._heap)
            _, uid = self._due.pop((namespace, name))
            try:
                await self._delete(namespace, name, uid)
                deleted += 1
                log.info("deleted finished build resource %s/%s after its TTL of %ss", namespace, name, self.ttl)
            except Exception as exc:  # noqa: BLE001 - API trouble: try again later, never stop sweeping
                if getattr(exc, "status", None) == 404:
                    continue
                log.warning(
                    "could not delete expired build resource %s/%s (%s); retrying in %ss",
                    namespace,
                    name,
                    exc,
                    RETRY_AFTER,
                )
                self._due[(namespace, name)] = (self._clock() + RETRY_AFTER, uid)
                heapq.heappush(self._heap, (self._clock() + RETRY_AFTER, namespace, name))
        return deleted

    async def run(self) -> None:
        """Sleep until the earliest expiry (or an earlier one arrives), delete, repeat."""
        while True:
            await self.expire_due()
            due = self.next_due()
            self._changed.clear()
            timeout = None if due is None else max(due - self._clock(), 0.0)
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass
