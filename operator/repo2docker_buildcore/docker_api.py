"""The Docker API as the build core uses it: from an event loop, never blocking it.

docker-py is blocking. Short calls go to a small thread pool (`call`); anything that lasts
(a log stream, the daemon's event stream, waiting for a container to exit) goes through one
bridge, `iterate`: a thread of its own reads the blocking iterable and hands each item to
the loop, and closing the async iterator closes the stream, so a cancelled reader leaves no
thread behind. The runner (build containers) and the image store (images, registry) share
one instance, hence one client and one pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import docker
import docker.errors

from . import contract

log = logging.getLogger(__name__)


class RunnerError(RuntimeError):
    """Docker could not do what a build needs; the message is meant for the user."""


class RegistryError(RunnerError):
    """The image registry answered, but not with what a build needs (refused credentials, a
    refused push). Retrying will not help until someone changes the configuration."""


class RegistryUnavailable(RunnerError):
    """The image registry could not be reached; retrying later may help."""


_END = object()


class DockerAPI:
    def __init__(self, client_factory: Callable[[], docker.DockerClient] | None = None) -> None:
        self._client_factory = client_factory or (lambda: docker.from_env(max_pool_size=32))
        self._client: docker.DockerClient | None = None
        # Short calls only; streams get threads of their own (they last a whole build).
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker")

    def _make_client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = self._client_factory()
            except (docker.errors.DockerException, OSError) as exc:
                raise RunnerError(f"the Docker daemon did not answer as expected: {exc}") from exc
        return self._client

    async def client(self) -> docker.DockerClient:
        """The client, created in a thread: creating it negotiates the API version over the wire."""
        if self._client is None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._make_client)
        return self._make_client()

    async def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in the pool. The daemon's own answers (APIError) are the
        caller's to read; anything else (no daemon, a broken connection) is a RunnerError."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except docker.errors.APIError:
            raise
        except (docker.errors.DockerException, OSError) as exc:
            raise RunnerError(f"the Docker daemon did not answer as expected: {exc}") from exc

    async def iterate(
        self, open_stream: Callable[[], Iterable], close: Callable[[], None] | None = None
    ) -> AsyncIterator[Any]:
        """The items of a blocking iterable, read in a thread of its own. `open_stream` runs in
        that thread too; `close` (e.g. the HTTP stream's) runs when the reader stops early.
        A stream that breaks (the daemon went away) just ends."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def pump() -> None:
            try:
                for item in open_stream():
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except Exception as exc:  # noqa: BLE001 - closed under us, or the daemon went away
                log.debug("a Docker stream ended: %s", exc)
            finally:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, _END)
                except RuntimeError:
                    pass  # the loop is closed: nobody is listening any more

        threading.Thread(target=pump, name="docker-stream", daemon=True).start()
        try:
            while (item := await queue.get()) is not _END:
                yield item
        finally:
            if close is not None:
                close()

    async def in_own_thread(self, fn: Callable[[], Any]) -> Any:
        """A call that may block for a whole build (waiting for a container), through `iterate`.
        Its exception, if any, is raised here."""
        outcome: list = []

        def run() -> Iterable:
            try:
                yield ("value", fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                yield ("error", exc)

        async for outcome_item in self.iterate(run):
            outcome.append(outcome_item)
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return value

    async def run_probe(self, image: str, command: list[str], instance: str, **kwargs: Any) -> bytes:
        """Output of a short helper container (a version check, a disk measurement), labelled as
        this instance's probe, after sweeping the probes a killed process left behind."""
        # Not the instance label: listings of build containers select on that one.
        labels = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY, contract.LABEL_PROBE: instance}
        await self.remove_left_probes(labels)
        return await self.call(
            (await self.client()).containers.run,
            image,
            command,
            remove=True,
            network_disabled=True,
            stdout=True,
            stderr=True,
            labels=labels,
            **kwargs,
        )

    async def remove_left_probes(self, labels: dict[str, str]) -> None:
        """Remove this instance's probes that a process killed mid-run left behind.

        `containers.run(remove=True)` removes a probe only after reading its output, so a
        hub or operator stopped in between leaves an exited container each time. Only exited
        ones go: a running probe belongs to a sibling process of the same instance."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()], "status": "exited"}
        for container in await self.call((await self.client()).containers.list, all=True, filters=filters):
            try:
                await self.call(container.remove, force=True)
            except docker.errors.NotFound:
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
