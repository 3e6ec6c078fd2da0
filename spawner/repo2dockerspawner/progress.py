"""What the spawn-pending page shows while a build runs: JupyterHub progress events.

Phase changes, the queue position with an estimated start, each log line once, and the offer of
the previous version. A new page load gets a new generator that starts from the shared status,
so it catches up with the log tail instead of starting blank.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from repo2docker_buildcore.contract import BuildStatus, Phase
from repo2docker_buildcore.status import parse_iso

from .backends.records import BuildHandle, BuildRecord
from .humanize import human_age

# Seconds between looks at the clock while a build waits with an estimated start.
WAIT_TICK = 10.0


def built_ago(record: BuildRecord) -> str:
    return f"built {human_age(time.time() - record.completed)} ago" if record.completed else "built earlier"


def offer_event(record: BuildRecord, action: str) -> dict[str, Any]:
    """The pending page's offer, as a progress event (the page turns its link into a button)."""
    text = (
        f"The previous version (commit {record.commit[:7]}, {built_ago(record)}) can start now, while this one builds."
    )
    link = (
        f' <a class="r2d-previous" href="{html.escape(action, quote=True)}" data-commit="{record.commit[:7]}">'
        f"Start the previous version now</a>"
    )
    return {"progress": 5, "message": text, "html_message": html.escape(text) + link}


async def progress_events(handle: BuildHandle) -> AsyncIterator[dict[str, Any]]:
    """JupyterHub progress events from a build's status: phase changes, queue position, and
    each log line once. A new page load gets a new generator, which starts from the shared
    status, so it catches up with the tail instead of starting blank."""
    seen_lines = 0
    last_phase: Phase | None = None
    last_position: int | None = None
    last_wait: int | None = None
    async for status in _ticking(handle.statuses(), WAIT_TICK):
        percent = _percent(status)
        if status.phase != last_phase:
            if last_phase == Phase.BUILDING and status.phase in (Phase.PENDING, Phase.QUEUED):
                # Requeued (its builder's node was lost): the next build's log starts from line 1.
                seen_lines, last_position = 0, None
                yield {"progress": percent, "message": status.message or "The build went back to the queue."}
            last_phase = status.phase
            yield {"progress": percent, "message": _phase_message(status)}
        wait = _minutes_until(status.estimated_start) if status.phase == Phase.QUEUED else None
        if (
            status.phase == Phase.QUEUED
            and status.queue_position
            and (status.queue_position, wait) != (last_position, last_wait)
        ):
            last_position, last_wait = status.queue_position, wait
            ahead = status.queue_position - 1
            text = "Your build is next in line." if not ahead else f"{ahead} build{'s' * (ahead != 1)} ahead of yours."
            if wait is not None:
                text += f" About {wait} min until it starts." if wait else " It should start within a minute."
            yield {"progress": percent, "message": text}
        for line in status.new_lines(seen_lines):
            yield {"progress": percent, "message": line}
        seen_lines = max(seen_lines, status.log_line_count)
    if last_phase == Phase.SUCCEEDED:
        yield {"progress": 90, "message": "Image ready; starting your server."}


async def _ticking(statuses: AsyncIterator[BuildStatus], every: float) -> AsyncIterator[BuildStatus]:
    """The statuses, and the last one again every `every` seconds while it is queued with an
    estimated start: the minutes until it change with the clock, not only with the status."""
    iterator = statuses.__aiter__()
    pending = asyncio.ensure_future(iterator.__anext__())
    last: BuildStatus | None = None
    try:
        while True:
            waiting = last is not None and last.phase == Phase.QUEUED and last.estimated_start
            done, _ = await asyncio.wait({pending}, timeout=every if waiting else None)
            if not done:
                yield last
                continue
            try:
                last = pending.result()
            except StopAsyncIteration:
                return
            yield last
            pending = asyncio.ensure_future(iterator.__anext__())
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await iterator.aclose()


def _minutes_until(when: str | None) -> int | None:
    """Whole minutes from now until an RFC 3339 time (rounded up), None if there is none."""
    moment = parse_iso(when)
    if moment is None:
        return None
    seconds = (moment - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return max(0, math.ceil(seconds / 60)) if seconds > 30 else 0


def _percent(status: BuildStatus) -> int:
    if status.phase in (Phase.PENDING, Phase.QUEUED):
        return 5
    if status.phase == Phase.BUILDING:
        # Log lines are the only measure of progress a build has; approach 80% asymptotically.
        return 10 + int(70 * (1 - 1 / (1 + status.log_line_count / 50)))
    return 85


def _phase_message(status: BuildStatus) -> str:
    return {
        Phase.PENDING: "Build requested.",
        Phase.QUEUED: "Waiting for a free build slot.",
        Phase.BUILDING: "Building your image with repo2docker…",
        Phase.SUCCEEDED: status.message or "Image built.",
        Phase.FAILED: f"Build failed: {status.message}",
        Phase.CANCELLED: f"Build cancelled: {status.message}",
    }[status.phase]
