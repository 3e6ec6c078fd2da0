"""Publishing a build's status: coalesced, throttled, phase changes first.

A build prints hundreds of lines a second at times; writing each into the resource would
hammer the API server and every watcher. Updates are merged and sent at most once per
``interval``, except phase changes, which go out at once because users and the spawner act on
them. Sends are serialised, so status never goes backwards on the wire.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .contract import Phase

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def unix_time(value: str | None) -> float | None:
    """An ISO time from a status as unix seconds, None if absent or unreadable."""
    parsed = parse_iso(value)
    return parsed.timestamp() if parsed else None


def parse_iso(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def failure_message(reason: str, lines: list[str]) -> str:
    """A message that says what failed and shows the lines that explain it, so nobody has to dig."""
    return reason if not lines else reason + "\nLast log lines:\n" + "\n".join(lines)


class StatusPublisher:
    def __init__(self, send: Send, interval: float = 1.0) -> None:
        self._send = send
        self.interval = interval
        self._pending: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._last_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task | None = None
        self.current: dict[str, Any] = {}
        self.failures = 0

    @property
    def phase(self) -> Phase | None:
        value = self.current.get("phase") or self._pending.get("phase")
        return Phase(value) if value else None

    async def update(self, fields: dict[str, Any], urgent: bool = False) -> None:
        """Merge `fields` into the next write. A phase change is always urgent.

        A value may be a callable: it is called when the write goes out, so a field that
        changes with every log line (the tail) is copied once per write, not once per line."""
        if "phase" in fields and fields["phase"] != self.current.get("phase"):
            urgent = True
        self._pending.update(fields)
        loop = asyncio.get_running_loop()
        if urgent or loop.time() - self._last_sent >= self.interval:
            await self.flush()
        elif self._timer is None:
            delay = self.interval - (loop.time() - self._last_sent)
            self._timer = loop.call_later(max(delay, 0.0), self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        self._flush_task = asyncio.ensure_future(self.flush())

    async def flush(self) -> None:
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._pending:
                return
            fields = {key: value() if callable(value) else value for key, value in self._pending.items()}
            self._pending = {}
            try:
                await self._send(fields)
            except Exception as exc:  # noqa: BLE001 - a lost log update must not kill a build
                self.failures += 1
                log.warning("status update failed (%s); will retry with the next one", exc)
                self._pending = {**fields, **self._pending}
                if "phase" in fields:
                    raise
                return
            self.current.update(fields)
            self._last_sent = asyncio.get_running_loop().time()

    async def close(self, flush: bool = True) -> None:
        """Send what is pending (or, with `flush=False`, drop it: the status is no longer
        this writer's); after this no timer is left behind."""
        if not flush:
            self._pending = {}
        await self.flush()
        if self._flush_task is not None and not self._flush_task.done():
            await self._flush_task
