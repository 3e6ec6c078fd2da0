"""A fair queue of builds in front of a fixed number of build slots.

Why not a plain ``asyncio.Semaphore``: waiters need to know their position (users are told
"2 builds ahead of yours"), the order must follow the resources' creation rather than which
daemon happened to wake first after a restart, and builds that were already running when the
operator started must occupy slots without having queued for them (``adopt``), even if that
momentarily exceeds a lowered limit: those containers exist, and starting more would break
the cap. kopf's ``worker_limit`` cannot do this: it is per watch stream, and it would also
queue deletions behind builds.

Why not first come, first served: one user's five builds would all go before another user's
first. Waiters are served in ``fair_order``: round-robin across requesters (whose last build
started longest ago goes next), oldest first within each; a hub's prebuilds (nobody waits for
them yet) after every launch. It is a function of what every reader of the resources can see
(requester, creation order, start times), so whoever computes it gets the same order and the
same positions.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .contract import PREBUILD_REQUESTER
from .estimate import DurationHistory, start_delays

PositionCallback = Callable[[int], None]
# Seconds an estimate simulation is reused while nothing in the queue changes.
ESTIMATE_KEEP = 1.0


@dataclass
class _Waiter:
    order: tuple
    key: Hashable = field(compare=False)
    granted: asyncio.Future = field(compare=False)
    on_position: PositionCallback | None = field(compare=False, default=None)
    last_position: int | None = field(compare=False, default=None)
    requester: str = field(compare=False, default="")
    repo: str = field(compare=False, default="")
    # Monotonic time before which this waiter is not given a slot (cache affinity: another
    # builder has this repository's layers); it keeps its position meanwhile.
    not_before: float = field(compare=False, default=0.0)


W = TypeVar("W")


def fair_order(waiting: Iterable[tuple[str, tuple, W]], last_start: Mapping[str, float]) -> list[W]:
    """Waiting items, given as (requester, order, item), in the order they get slots.

    Round-robin across requesters: next is the requester whose last build started longest
    ago (or never), with their oldest waiting build (by `order`, which also breaks ties).
    So a user whose build just started waits behind everyone else's next, and one user's five
    builds never all go before another user's first. Items without a requester ("") share
    one turn. Prebuilds (PREBUILD_REQUESTER) go after everyone else's.

    A heap of requesters keyed by their next turn: W waiters of R requesters cost
    W log R, not W * R (a thousand waiters of one hub's prebuilds is an ordinary morning)."""
    queues: dict[str, list[tuple[tuple, W]]] = {}
    for requester, order, item in waiting:
        queues.setdefault(requester, []).append((order, item))
    heap = []
    for requester, items in queues.items():
        items.sort(key=lambda pair: pair[0], reverse=True)  # popped from the end: oldest first
        heap.append(
            (requester == PREBUILD_REQUESTER, last_start.get(requester, float("-inf")), items[-1][0], requester)
        )
    heapq.heapify(heap)
    later = max(last_start.values(), default=0.0)  # a turn taken here is after every recorded one
    ordered: list[W] = []
    while heap:
        prebuild, _turn, _oldest, requester = heapq.heappop(heap)
        items = queues[requester]
        ordered.append(items.pop()[1])
        later += 1.0
        if items:
            heapq.heappush(heap, (prebuild, later, items[-1][0], requester))
    return ordered


class BuildQueue:
    """``limit`` concurrent holders; ``limit <= 0`` means no limit (nothing ever waits).

    With several builders (the operator's DaemonSet), each has its own queue of the builds
    nobody has claimed yet, and two things come from the others through ``elsewhere``
    (builds they hold, counted against ``cluster_limit``) and ``note_start`` (when a
    requester's build was last claimed anywhere, so each builder's fair order is the same).
    Times are unix seconds, comparable with what other builders record."""

    def __init__(self, limit: int, cluster_limit: int = 0) -> None:
        self.limit = limit
        self.cluster_limit = cluster_limit
        self._running: dict[Hashable, str] = {}  # key -> requester
        self._waiting: dict[Hashable, _Waiter] = {}  # by key, in arrival order
        self._last_start: dict[str, float] = {}  # requester -> when their last build got a slot
        self._elsewhere = 0
        self._granted: dict[Hashable, tuple[float, str]] = {}  # key -> (monotonic grant time, repository)
        self.history = DurationHistory()
        self._recheck: asyncio.TimerHandle | None = None
        # The fair order and every waiter's index in it, computed when first asked after a
        # change (`_changed`): one freed slot moves every waiter, and each of them then asks
        # its position and estimate; sorting once per asker made that O(W^2) per event.
        self._order: list[_Waiter] | None = None
        self._index: dict[Hashable, int] = {}
        # When each waiter is expected to start (monotonic), from one simulation for all of
        # them, with the history count it was made from (see `_expected_starts`).
        self._starts: tuple[float, int, dict[Hashable, float]] | None = None

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _changed(self) -> None:
        """Something the order or the estimates depend on changed: both are made anew when asked."""
        self._order = None
        self._starts = None

    def _ordered(self) -> list[_Waiter]:
        if self._order is None:
            self._order = fair_order(((w.requester, w.order, w) for w in self._waiting.values()), self._last_start)
            self._index = {w.key: i for i, w in enumerate(self._order)}
        return self._order

    def position(self, key: Hashable) -> int | None:
        """1-based position among the waiting builds, or None if `key` is not waiting."""
        self._ordered()
        index = self._index.get(key)
        return None if index is None else index + 1

    def adopt(self, key: Hashable, requester: str = "", repo: str = "", elapsed: float = 0.0) -> None:
        """Count a build that is already running (found after a restart) as holding a slot."""
        self._running[key] = requester
        self._granted.setdefault(key, (time.monotonic() - elapsed, repo))
        self._last_start.setdefault(requester, time.time())
        self._changed()

    def estimate(self, key: Hashable) -> float | None:
        """Seconds until the waiter `key` is expected to start (see estimate.py), or None
        when it is not waiting or nothing has been built here yet to tell."""
        if self.limit <= 0:
            return None
        start = (self._expected_starts() or {}).get(key)
        return None if start is None else max(start - time.monotonic(), 0.0)

    def _expected_starts(self) -> dict[Hashable, float] | None:
        """Every waiter's expected start, as a monotonic time, from one simulation; None when
        a duration cannot be told yet. Kept as absolute times until the queue changes, a
        build is recorded, or ESTIMATE_KEEP passes (running builds that overrun push the
        waiters back): an estimate asked again in between moves with the clock, not with
        the asking."""
        now = time.monotonic()
        if self._starts is not None:
            made, recorded, starts = self._starts
            if now - made < ESTIMATE_KEEP and recorded == self.history.recorded:
                return starts
        ordered = self._ordered()
        running = []
        for granted, repo in self._granted.values():
            expected = self.history.expected(repo)
            if expected is None:
                return None
            running.append((now - granted, expected))
        durations = [self.history.expected(w.repo) for w in ordered]
        if None in durations:
            return None
        delays = start_delays(running, durations, self.limit)
        starts = {w.key: now + delay for w, delay in zip(ordered, delays, strict=True)}
        self._starts = (now, self.history.recorded, starts)
        return starts

    def set_requester(self, key: Hashable, requester: str) -> None:
        """A waiting build's requester changed (a user's launch joined a prebuild)."""
        waiter = self._waiting.get(key)
        if waiter is not None and waiter.requester != requester:
            waiter.requester = requester
            self._changed()
            self._dispatch()

    def note_start(self, requester: str, when: float) -> None:
        """A build of `requester` was claimed at `when` (by any builder): their turn was then."""
        if when > self._last_start.get(requester, float("-inf")):
            self._last_start[requester] = when
            self._changed()
            self._dispatch()

    def set_elsewhere(self, count: int) -> None:
        """Builds other builders hold now, counted against ``cluster_limit``."""
        if count != self._elsewhere:
            self._elsewhere = count
            self._dispatch()

    def _free(self) -> bool:
        held = len(self._running)
        return (self.limit <= 0 or held < self.limit) and (
            self.cluster_limit <= 0 or held + self._elsewhere < self.cluster_limit
        )

    async def acquire(
        self,
        key: Hashable,
        order: tuple = (),
        on_position: PositionCallback | None = None,
        requester: str = "",
        repo: str = "",
        hold: float = 0.0,
    ) -> None:
        """Wait for a slot. `order` sorts a requester's waiters (creation time, name); ties
        keep arrival order. `requester` is whose build it is, for fairness between them.
        `hold`: seconds during which the build is not given a slot here but keeps its place
        (the ones behind it may go first).

        `on_position` is called with the waiter's position whenever it changes. Cancelling
        the wait (the resource was deleted) leaves the queue cleanly.
        """
        if key in self._running:
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            order=(*order, loop.time()),
            key=key,
            granted=loop.create_future(),
            on_position=on_position,
            requester=requester,
            repo=repo,
            not_before=time.monotonic() + hold if hold > 0 else 0.0,
        )
        self._waiting[key] = waiter
        self._changed()
        self._dispatch()
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if self._waiting.get(key) is waiter:
                del self._waiting[key]
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self._running.pop(key, None)  # granted in the same tick as the cancel
                self._granted.pop(key, None)
            self._changed()
            self._dispatch()
            raise

    def _recheck_at(self, when: float) -> None:
        """Dispatch again at `when` (monotonic, which is also the event loop's clock)."""
        when += 0.01
        if self._recheck is not None and self._recheck.when() <= when:
            return
        if self._recheck is not None:
            self._recheck.cancel()
        self._recheck = asyncio.get_running_loop().call_at(when, self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        self._dispatch()

    def release(self, key: Hashable, record: bool = True) -> None:
        """Free the slot; `record` the time it was held as a build's duration (a build that
        ran to its end; not one that was cancelled or found already built)."""
        self._running.pop(key, None)
        granted = self._granted.pop(key, None)
        if granted is not None:
            self._changed()
            if record:
                self.history.record(granted[1], time.monotonic() - granted[0])
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiting and self._free():
            now = time.monotonic()
            waiter = next((w for w in self._ordered() if w.not_before <= now), None)
            if waiter is None:  # every waiter is held back: look again when the first hold ends
                self._recheck_at(min(w.not_before for w in self._waiting.values()))
                break
            del self._waiting[waiter.key]
            self._running[waiter.key] = waiter.requester
            self._granted[waiter.key] = (time.monotonic(), waiter.repo)
            self._last_start[waiter.requester] = time.time()
            self._changed()
            waiter.granted.set_result(None)
        for index, waiter in enumerate(self._ordered()):
            if waiter.on_position and waiter.last_position != index + 1:
                waiter.last_position = index + 1
                waiter.on_position(index + 1)
