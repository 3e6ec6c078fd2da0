"""Polling with a deadline: the one way tests wait for asynchronous daemons."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class GiveUp(AssertionError):
    """Raised by a predicate when waiting longer cannot help (the process it waits for died)."""


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else "")
    )


async def until(predicate: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
    """For tests of one event loop: let the loop run (no fixed delay) until `predicate` holds.
    What is awaited is the condition itself, so a fast machine does not wait and a slow one
    is not cut short before `timeout`."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)  # a timer's turn: call_later callbacks run too
    return value
