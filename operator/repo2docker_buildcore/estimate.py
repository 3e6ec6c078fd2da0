"""How long until a queued build starts: from how long builds took here before, and how long
the running ones have been at it.

Why the median and per repository: build times are skewed (a cached rebuild takes seconds,
a fresh one minutes), so a mean is dragged by the few long ones; and a repository's next
commit usually builds about as long as its last ones. Repositories never built here fall
back to the median of all builds; with no history at all there is no estimate (saying
"about 0 min" would be worse than saying nothing).

The simulation is what a person would do with the same facts: each slot frees when its
build is expected to end (never before now), and the waiters ahead of this one take the
earliest free slot in the queue's order, each for its own expected duration.
"""

from __future__ import annotations

import collections
import heapq
import statistics
from collections.abc import Iterable

KEEP = 20  # durations kept per repository, and x10 for all: recent ones tell the most


class DurationHistory:
    """Slot times of finished builds (grant to container exit), per repository and overall."""

    def __init__(self) -> None:
        self._by_repo: dict[str, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque(maxlen=KEEP * 10)
        self.recorded = 0  # durations recorded so far: estimates made before a new one are stale

    def record(self, repo: str, seconds: float) -> None:
        self._by_repo.setdefault(repo, collections.deque(maxlen=KEEP)).append(seconds)
        self._all.append(seconds)
        self.recorded += 1

    def expected(self, repo: str) -> float | None:
        """The median duration of this repository's builds, else of all, else None."""
        own = self._by_repo.get(repo)
        if own:
            return statistics.median(own)
        return statistics.median(self._all) if self._all else None


def start_delays(running: Iterable[tuple[float, float]], waiting: Iterable[float], slots: int) -> list[float]:
    """Seconds until each waiter starts, in queue order.

    `running`: (elapsed, expected) of each build holding a slot; `waiting`: the expected
    duration of each waiter, in order; `slots`: how many builds may run at once (>= 1)."""
    ends = sorted(max(expected - elapsed, 0.0) for elapsed, expected in running)
    # More running than slots (adopted after the cap was lowered): a slot frees only when
    # enough of them have ended, so the slots free at the last `slots` ends.
    free = ends[-slots:] if len(ends) >= slots else ends + [0.0] * (slots - len(ends))
    heapq.heapify(free)
    delays = []
    for duration in waiting:
        start = heapq.heappop(free)
        delays.append(start)
        heapq.heappush(free, start + duration)
    return delays
