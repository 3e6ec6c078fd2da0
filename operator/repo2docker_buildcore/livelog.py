"""A build's log as people read it, straight from its container.

The build job (``build.py``) reads the container's log this way to fill the status's tail;
a hub that shares the builder's Docker daemon reads it the same way to show lines the moment
they are printed, instead of waiting for the next throttled status write. Both go through
``readable_lines``, so both number and word every line identically, and a reader can switch
from the resource's tail to the live stream (or back) without repeating or losing a line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import docker.errors

from .docker_api import RunnerError
from .logtail import BuildOutput, LogTail, parse_line
from .runner import BuildRunner
from .settings import setting

log = logging.getLogger(__name__)


async def readable_lines(runner: BuildRunner, container_id: str, output: BuildOutput) -> AsyncIterator[list[str]]:
    """Batches of readable lines of the container's log, from its start until it exits."""
    async for raw in runner.logs(container_id):
        lines = output.feed(parse_line(raw).lines)
        if lines:
            yield lines


class LiveLog:
    """Follows one build container's log into a tail, counting lines as the build job does.

    ``available`` becomes False if this daemon does not have the container (the builder is
    another node's daemon, or the container is already gone): readers then keep using the
    resource's tail. ``ended`` is set when the stream ends either way.
    """

    def __init__(self, runner: BuildRunner, container_id: str, tail_lines: int = setting("tail_lines").default) -> None:
        self.runner = runner
        self.container_id = container_id
        self.tail = LogTail(tail_lines, max_bytes=1 << 20)
        self.available = True
        self.changed = asyncio.Event()
        self.ended = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> LiveLog:
        self._task = asyncio.ensure_future(self._follow())
        return self

    async def _follow(self) -> None:
        try:
            async for lines in readable_lines(self.runner, self.container_id, BuildOutput()):
                self.tail.add(lines)
                self.changed.set()
        except Exception as exc:  # noqa: BLE001 - the resource's tail is always there to fall back on
            expected = isinstance(exc, (RunnerError, docker.errors.NotFound))  # not this daemon's container
            log.log(
                logging.DEBUG if expected else logging.WARNING,
                "no live log for container %s: %s",
                self.container_id[:12],
                exc,
            )
            self.available = self.tail.total > 0
        finally:
            self.ended.set()
            self.changed.set()

    async def close(self) -> None:
        if self._task and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
