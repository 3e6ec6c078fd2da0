"""Running repo2docker as a container through a Docker daemon.

Shared by the operator and the hub's embedded backend. Every blocking docker-py call runs in
a thread so neither kopf's event loop nor JupyterHub's ever waits on Docker. Build containers
carry labels naming their resource; after a restart those labels are the only way to find a
build that is still running, so the runner never starts a container without them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

import docker
import docker.errors

from . import contract
from .contract import BuildSpec

log = logging.getLogger(__name__)


class RunnerError(RuntimeError):
    """Docker could not do what a build needs; the message is meant for the user."""


@dataclass(frozen=True)
class BuildRef:
    """Which resource a build container belongs to."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class RunnerConfig:
    build_image: str
    # Path of the Docker socket *on the node*, bind-mounted into build containers so that
    # repo2docker builds with the same daemon that will run the image.
    docker_socket: str = "/var/run/docker.sock"
    user_id: int = 1000
    user_name: str = "jovyan"
    push: bool = False
    # A docker config.json (as the operator sees it, e.g. a mounted Secret) with registry
    # credentials for --push. It is copied into each build container before it starts,
    # so it needs no path on the node and no Secret access through the API.
    docker_config: str | None = None
    # Separates operators (or hubs) that share one daemon, so each counts only its builds.
    instance: str = "default"


@dataclass(frozen=True)
class BuildContainer:
    id: str
    name: str
    status: str  # docker's: created, running, exited, ...
    exit_code: int | None
    ref: BuildRef

    @property
    def running(self) -> bool:
        return self.status in ("created", "running", "restarting")


def docker_config_tar(data: bytes) -> bytes:
    """A tar of .docker/config.json for put_archive into /root (the build runs as root there;
    .docker itself may not exist, so the archive carries the directory too)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(".docker")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(directory)
        info = tarfile.TarInfo(".docker/config.json")
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def container_name(ref: BuildRef) -> str:
    return f"r2dbuild-{ref.name}-{ref.uid[:8]}"


def build_args(config: RunnerConfig, spec: BuildSpec) -> list[str]:
    """repo2docker's own flags. Every value comes from a validated BuildSpec."""
    args = [
        "--no-run", "--json-logs",
        "--user-id", str(int(config.user_id)),
        "--user-name", config.user_name,
        "--ref", spec.commit,
        "--image-name", spec.image,
    ]
    if config.push:
        args.append("--push")
    if spec.memory_limit:
        args += ["--build-memory-limit", str(spec.memory_limit)]
    # '--' so that nothing in the URL can ever be read as an option.
    return args + ["--", spec.repo_url]


def container_labels(config: RunnerConfig, ref: BuildRef, spec: BuildSpec) -> dict[str, str]:
    return {
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_INSTANCE: config.instance,
        contract.LABEL_BUILD_NAMESPACE: ref.namespace,
        contract.LABEL_BUILD_NAME: ref.name,
        contract.LABEL_BUILD_UID: ref.uid,
        contract.LABEL_COMMIT: spec.commit,
    }


async def _in_own_thread(fn: Callable):
    """Run a call that may block for a whole build in a thread of its own, not the pool."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(exc))
        else:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

    threading.Thread(target=target, daemon=True).start()
    return await future


def _describe(container) -> BuildContainer:
    labels = container.labels or {}
    state = container.attrs.get("State", {})
    return BuildContainer(
        id=container.id,
        name=container.name,
        status=container.status,
        exit_code=state.get("ExitCode") if container.status in ("exited", "dead") else None,
        ref=BuildRef(
            namespace=labels.get(contract.LABEL_BUILD_NAMESPACE, ""),
            name=labels.get(contract.LABEL_BUILD_NAME, ""),
            uid=labels.get(contract.LABEL_BUILD_UID, ""),
        ),
    )


class BuildRunner:
    def __init__(self, config: RunnerConfig, client_factory: Callable[[], docker.DockerClient] | None = None) -> None:
        contract.validate_image(config.build_image, "build image")
        self.config = config
        self._client_factory = client_factory or (lambda: docker.from_env(max_pool_size=32))
        self._client: docker.DockerClient | None = None
        # Short calls only; log streams get threads of their own (they last a whole build).
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker")

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = self._client_factory()
            except (docker.errors.DockerException, OSError) as exc:
                raise RunnerError(f"the Docker daemon did not answer as expected: {exc}") from exc
        return self._client

    async def _docker(self) -> docker.DockerClient:
        """The client, created in a thread: creating it negotiates the API version over the wire."""
        if self._client is None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, lambda: self.client)
        return self.client

    async def _call(self, fn: Callable, *args, **kwargs):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except docker.errors.APIError:
            raise  # the daemon answered; callers decide what its answer means
        except (docker.errors.DockerException, OSError) as exc:
            raise RunnerError(f"the Docker daemon did not answer as expected: {exc}") from exc

    def _selector(self, **extra: str) -> dict:
        labels = [f"{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}", f"{contract.LABEL_INSTANCE}={self.config.instance}"]
        labels += [f"{k}={v}" for k, v in extra.items()]
        return {"label": labels}

    async def ping(self) -> None:
        await self._call((await self._docker()).ping)

    async def image_exists(self, image: str) -> bool:
        try:
            await self._call((await self._docker()).images.get, image)
            return True
        except docker.errors.ImageNotFound:
            return False

    async def find(self, uid: str) -> BuildContainer | None:
        """The build container of the resource with this uid, running or not."""
        found = await self._call(
            (await self._docker()).containers.list, all=True, filters=self._selector(**{contract.LABEL_BUILD_UID: uid})
        )
        return _describe(found[0]) if found else None

    async def list_builds(self, running_only: bool = True) -> list[BuildContainer]:
        filters = self._selector()
        if running_only:
            filters["status"] = ["created", "running", "restarting"]
        found = await self._call((await self._docker()).containers.list, all=not running_only, filters=filters)
        return [_describe(c) for c in found]

    async def start(self, ref: BuildRef, spec: BuildSpec) -> BuildContainer:
        """Start the build container; if one for this resource exists already, return it.

        The container's name is derived from the resource, so Docker itself refuses a
        second one (409) and that answer, not an extra lookup first, is the dedup."""
        volumes = {self.config.docker_socket: {"bind": "/var/run/docker.sock", "mode": "rw"}}
        kwargs = dict(
            image=spec.build_image or self.config.build_image,
            command=build_args(self.config, spec),
            name=container_name(ref),
            labels=container_labels(self.config, ref, spec),
            volumes=volumes,
        )
        if spec.memory_limit:
            kwargs["mem_limit"] = spec.memory_limit
        if spec.cpu_limit:
            kwargs["nano_cpus"] = int(spec.cpu_limit * 1e9)
        try:
            container = await self._call((await self._docker()).containers.create, **kwargs)
            if self.config.push and self.config.docker_config:
                archive = docker_config_tar(Path(self.config.docker_config).read_bytes())
                await self._call(container.put_archive, "/root", archive)
            await self._call(container.start)
        except docker.errors.ImageNotFound as exc:
            raise RunnerError(f"the build image {kwargs['image']} is not available on the Docker daemon") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a concurrent start won the name: join it
                existing = await self.find(ref.uid)
                if existing:
                    return existing
            raise RunnerError(f"Docker refused to start the build container: {exc.explanation or exc}") from exc
        await self._call(container.reload)
        return _describe(container)

    async def logs(self, container_id: str) -> AsyncIterator[str]:
        """Every line the container printed, from its start, following until it exits.

        The blocking stream is read in a dedicated thread; closing this iterator closes the
        HTTP stream, so a cancelled follower does not leave a thread behind.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        container = await self._call((await self._docker()).containers.get, container_id)
        stream = await self._call(container.logs, stream=True, follow=True, stdout=True, stderr=True)
        done = object()

        def pump() -> None:
            buffer = b""
            try:
                for chunk in stream:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        loop.call_soon_threadsafe(queue.put_nowait, line.decode(errors="replace"))
                if buffer:
                    loop.call_soon_threadsafe(queue.put_nowait, buffer.decode(errors="replace"))
            except Exception as exc:  # the stream was closed under us, or the daemon went away
                log.debug("log stream of %s ended: %s", container_id[:12], exc)
            finally:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, done)
                except RuntimeError:
                    pass  # the loop is closed: nobody is listening any more

        thread = threading.Thread(target=pump, name=f"logs-{container_id[:12]}", daemon=True)
        thread.start()
        try:
            while (item := await queue.get()) is not done:
                yield item
        finally:
            stream.close()

    async def wait(self, container_id: str) -> int:
        """Block (in a thread) until the container exits; return its exit code."""
        container = await self._call((await self._docker()).containers.get, container_id)
        result = await _in_own_thread(container.wait)
        return int(result.get("StatusCode", -1))

    async def exit_code(self, container_id: str) -> int | None:
        container = await self._call((await self._docker()).containers.get, container_id)
        if container.status in ("exited", "dead"):
            return int(container.attrs.get("State", {}).get("ExitCode", -1))
        return None

    async def remove(self, container_id: str, kill: bool = False) -> None:
        """Remove the container (killing it first if asked); a missing one is already gone."""
        try:
            container = await self._call((await self._docker()).containers.get, container_id)
            if kill and container.status in ("created", "running", "restarting"):
                await self._call(container.kill)
            await self._call(container.remove, force=True)
        except docker.errors.NotFound:
            pass
        except RunnerError:
            raise
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise RunnerError(f"could not remove build container {container_id[:12]}: {exc}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
