"""A FIFO queue of builds in front of a fixed number of build slots.

Why not a plain ``asyncio.Semaphore``: waiters need to know their position (users are told
"2 builds ahead of yours"), the order must follow the resources' creation rather than which
daemon happened to wake first after a restart, and builds that were already running when the
operator started must occupy slots without having queued for them (``adopt``), even if that
momentarily exceeds a lowered limit: those containers exist, and starting more would break
the cap. kopf's ``worker_limit`` cannot do this: it is per watch stream, and it would also
queue deletions behind builds.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field
from typing import Callable, Hashable

PositionCallback = Callable[[int], None]


@dataclass(order=True)
class _Waiter:
    order: tuple
    key: Hashable = field(compare=False)
    granted: asyncio.Future = field(compare=False)
    on_position: PositionCallback | None = field(compare=False, default=None)
    last_position: int | None = field(compare=False, default=None)


class BuildQueue:
    """``limit`` concurrent holders; ``limit <= 0`` means no limit (nothing ever waits)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: set[Hashable] = set()
        self._waiting: list[_Waiter] = []

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def position(self, key: Hashable) -> int | None:
        """1-based position among the waiting builds, or None if `key` is not waiting."""
        for index, waiter in enumerate(self._waiting):
            if waiter.key == key:
                return index + 1
        return None

    def adopt(self, key: Hashable) -> None:
        """Count a build that is already running (found after a restart) as holding a slot."""
        self._running.add(key)

    async def acquire(self, key: Hashable, order: tuple = (), on_position: PositionCallback | None = None) -> None:
        """Wait for a slot. `order` sorts waiters (creation time, name); ties keep arrival order.

        `on_position` is called with the waiter's position whenever it changes. Cancelling
        the wait (the resource was deleted) leaves the queue cleanly.
        """
        if key in self._running:
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(order=(*order, loop.time()), key=key, granted=loop.create_future(), on_position=on_position)
        bisect.insort(self._waiting, waiter)
        self._dispatch()
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self._running.discard(key)  # granted in the same tick as the cancel
            self._dispatch()
            raise

    def release(self, key: Hashable) -> None:
        self._running.discard(key)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiting and (self.limit <= 0 or len(self._running) < self.limit):
            waiter = self._waiting.pop(0)
            self._running.add(waiter.key)
            waiter.granted.set_result(None)
        for index, waiter in enumerate(self._waiting):
            if waiter.on_position and waiter.last_position != index + 1:
                waiter.last_position = index + 1
                waiter.on_position(index + 1)
