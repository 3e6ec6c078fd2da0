"""Waiting between attempts: one back-off for every retry in the project.

Whatever goes away for a while (the Docker daemon, a registry, the API server) is asked again
later, sooner at first and then less often, so an outage does not turn into a request storm
and a short hiccup costs little. kopf retries its own handlers; this is for what runs outside
them: the build job's registry checks and clean-ups, the image collector's event stream, the
hub's watch and the operator's listing of finished builds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Backoff:
    """Delays in seconds: `delays` in turn, the last one repeating; `reset()` starts over
    (after something worked)."""

    def __init__(self, delays: Sequence[float]) -> None:
        if not delays:
            raise ValueError("a back-off needs at least one delay")
        self.delays = tuple(delays)
        self._next = 0

    @classmethod
    def doubling(cls, first: float, cap: float) -> Backoff:
        delays, delay = [], min(first, cap)
        while delay < cap:
            delays.append(delay)
            delay *= 2
        return cls([*delays, cap])

    def next(self) -> float:
        delay = self.delays[min(self._next, len(self.delays) - 1)]
        self._next += 1
        return delay

    def reset(self) -> None:
        self._next = 0


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    backoff: Backoff,
    within: float | None = None,
    when: Callable[[BaseException], bool] | None = None,
    on_retry: Callable[[BaseException, float], Awaitable[None] | None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`attempt()`'s result, asked again after each `retry_on` error (only those `when` says
    are worth it, if given; the rest are raised as they came), waiting `backoff`'s delays;
    `on_retry(error, delay)` is told before each wait. Past `within` seconds of waiting in
    all, the error is raised (None: no limit)."""
    waited = 0.0
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            if when is not None and not when(exc):
                raise
            delay = backoff.next()
            if within is not None and waited + delay > within:
                raise
            waited += delay
            if on_retry is not None:
                outcome = on_retry(exc, delay)
                if outcome is not None:
                    await outcome
            await sleep(delay)
