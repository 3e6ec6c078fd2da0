"""Running repo2docker as a container through a Docker daemon.

Shared by the operator and the hub's embedded backend. Every blocking docker-py call runs in
a thread so neither kopf's event loop nor JupyterHub's ever waits on Docker. Build containers
carry labels naming their resource; after a restart those labels are the only way to find a
build that is still running, so the runner never starts a container without them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import logging
import re
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable, Mapping

import docker
import docker.auth
import docker.errors

from . import contract
from .contract import BuildSpec, registry_of
from .imagegc import DiskUsage
from .versions import Repo2DockerVersion, UnsupportedSetting, check_supported

log = logging.getLogger(__name__)


class RunnerError(RuntimeError):
    """Docker could not do what a build needs; the message is meant for the user."""


class RegistryError(RunnerError):
    """The image registry answered, but not with what a build needs (refused credentials, a
    refused push). Retrying will not help until someone changes the configuration."""


class RegistryUnavailable(RunnerError):
    """The image registry could not be reached; retrying later may help."""


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
    # Environment of build containers as (name, value) pairs: proxies (the official image's
    # entrypoint writes them into Docker's client config), R2D_DATAVERSE_INSTALLATIONS_URL
    # for hubs without internet access, and the like. Validated by `build_environment`.
    environment: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuildContainer:
    id: str
    name: str
    status: str  # docker's: created, running, exited, ...
    exit_code: int | None
    ref: BuildRef
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    started_at: str | None = None  # when Docker started it (ISO, UTC, seconds)

    @property
    def running(self) -> bool:
        return self.status in ("created", "running", "restarting")

    def spec(self) -> BuildSpec:
        """The build's spec from the container's labels, validated like any request."""
        return BuildSpec.from_spec({
            "repoUrl": self.labels.get(contract.LABEL_REPO_URL, ""), "ref": self.labels.get(contract.LABEL_REF, ""),
            "commit": self.labels.get(contract.LABEL_COMMIT, ""), "image": self.labels.get(contract.LABEL_IMAGE, ""),
        })


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def build_environment(values: Mapping[str, str] | Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Validated environment for build containers, from a mapping or 'NAME=VALUE' strings.

    Values go to Docker as environment entries, never through a shell, so only what Docker
    itself cannot carry (NUL) and what would bloat every container (huge values) is refused."""
    items = values.items() if isinstance(values, Mapping) else (str(v).partition("=")[::2] for v in values)
    pairs = []
    for name, value in items:
        if not _ENV_NAME_RE.match(str(name)):
            raise ValueError(f"build environment name {str(name)[:60]!r} must be letters, digits and _ (not first a digit)")
        if not isinstance(value, str) or "\0" in value or len(value) > 8192:
            raise ValueError(f"build environment value of {name} must be text without NUL, at most 8192 characters")
        pairs.append((str(name), value))
    return tuple(sorted(pairs))


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
    """Unique per attempt (a hash of its uid), stable for that attempt: Docker's 409 on a second
    create with the same name is what keeps one attempt from ever running twice."""
    return f"r2dbuild-{ref.name}-{hashlib.sha256(ref.uid.encode()).hexdigest()[:8]}"


def build_args(config: RunnerConfig, spec: BuildSpec, version: Repo2DockerVersion) -> list[str]:
    """The build container's command. Every value comes from a validated BuildSpec.

    It names the program: build images shaped like the official one have an entrypoint
    script that ends in `exec "$@"`, so flags alone would be run as a program."""
    check_supported(version, spec.build_image or config.build_image, spec.memory_limit)
    args = [
        "repo2docker", "--no-run", "--json-logs",
        "--user-id", str(int(config.user_id)),
        "--user-name", config.user_name,
        "--ref", spec.commit,
        "--image-name", spec.image,
    ]
    if config.push:
        args.append("--push")
    if spec.memory_limit:  # only reached for versions before buildx (check_supported)
        args += ["--build-memory-limit", str(spec.memory_limit)]
    # '--' so that nothing in the URL can ever be read as an option.
    return args + ["--", spec.repo_url]


# What a registry (through the daemon or a build's log) says when it refuses credentials.
_REFUSED_WORDS = ("unauthorized", "authentication required", "denied", "forbidden", "no basic auth")


def registry_refused(text: str) -> bool:
    """Whether a registry's message says it refused the credentials or the access."""
    lowered = text.lower()
    return any(word in lowered for word in _REFUSED_WORDS)


def _registry_error(image: str, text: str, doing: str) -> RunnerError:
    """A daemon's registry error, classified for the user. Never includes credentials: the
    daemon's messages name the registry and the repository, not the auth it was given."""
    registry = registry_of(image)
    if registry_refused(text):
        return RegistryError(f"The registry {registry} refused the push: {text.strip()[:300]} "
                             f"(check the registry credentials the builds are given)")
    return RegistryUnavailable(f"The registry {registry} could not be reached while {doing} it: {text.strip()[:300]}")


def container_labels(config: RunnerConfig, ref: BuildRef, spec: BuildSpec) -> dict[str, str]:
    return {
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_INSTANCE: config.instance,
        contract.LABEL_BUILD_NAMESPACE: ref.namespace,
        contract.LABEL_BUILD_NAME: ref.name,
        contract.LABEL_BUILD_UID: ref.uid,
        contract.LABEL_COMMIT: spec.commit,
        contract.LABEL_REPO_URL: spec.repo_url,
        contract.LABEL_REF: spec.ref,
        contract.LABEL_IMAGE: spec.image,
    }


# statvfs of argv[1]: fragment size, blocks, blocks available to unprivileged users.
_STATVFS = "import os, sys; s = os.statvfs(sys.argv[1]); print(s.f_frsize, s.f_blocks, s.f_bavail)"


async def _in_own_thread(fn: Callable):
    """Run a call that may block for a whole build in a thread of its own, not the pool."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            # Bound now: Python unbinds `exc` when the except block ends, before the loop runs this.
            loop.call_soon_threadsafe(lambda error=exc: future.done() or future.set_exception(error))
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
        labels=dict(labels),
        started_at=_docker_time(state.get("StartedAt")),
    )


def _docker_time(value: str | None) -> str | None:
    """Docker's '2026-11-26T07:09:10.123456789Z' as ISO seconds; its zero time '0001-…' is None."""
    if not value or value.startswith("0001-"):
        return None
    return value[:19] + "Z"


class BuildRunner:
    def __init__(self, config: RunnerConfig, client_factory: Callable[[], docker.DockerClient] | None = None) -> None:
        contract.validate_image(config.build_image, "build image")
        self.config = config
        self._client_factory = client_factory or (lambda: docker.from_env(max_pool_size=32))
        self._client: docker.DockerClient | None = None
        # repo2docker version per build image *id*: a tag can move to another release.
        self._versions: dict[str, Repo2DockerVersion] = {}
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

    async def repo2docker_version(self, image: str) -> Repo2DockerVersion:
        """The repo2docker release inside a build image, read once per image id.

        Asked of the program itself (`repo2docker --version`, through the image's own
        entrypoint) rather than of a label: labels are optional and tags are reused."""
        client = await self._docker()
        try:
            image_id = (await self._call(client.images.get, image)).id
        except docker.errors.ImageNotFound as exc:
            raise RunnerError(f"the build image {image} is not available on the Docker daemon") from exc
        if image_id not in self._versions:
            try:
                output = await self._run_probe(image, ["repo2docker", "--version"])
                self._versions[image_id] = Repo2DockerVersion.parse(output.decode(errors="replace"))
            except (docker.errors.ContainerError, ValueError) as exc:
                raise RunnerError(f"the build image {image} did not report a repo2docker version: {exc}") from exc
            log.info("build image %s has repo2docker %s", image, self._versions[image_id])
        return self._versions[image_id]

    async def command(self, spec: BuildSpec) -> list[str]:
        """The build container's command for this spec; refuses what its repo2docker cannot do."""
        version = await self.repo2docker_version(spec.build_image or self.config.build_image)
        try:
            return build_args(self.config, spec, version)
        except UnsupportedSetting as exc:
            raise RunnerError(f"This build cannot run as configured: {exc}") from None

    # ---- the registry, through the daemon ---------------------------------------------------
    # The daemon already reaches the registry (it pushes and pulls), with the same network,
    # proxies and TLS trust as the servers that will pull, so it is asked rather than the
    # registry's HTTP API: the operator pod needs no route to the registry of its own.

    def _auth(self, image: str) -> dict | None:
        """Credentials for the image's registry from the configured docker config.json, or None
        (docker-py then uses this process's own Docker client configuration)."""
        if not self.config.docker_config:
            return None
        registry = registry_of(image)
        auths = docker.auth.load_config(config_path=self.config.docker_config)
        found = auths.resolve_authconfig(registry)
        return dict(found) if found else None

    async def registry_has(self, image: str) -> bool:
        """Whether the registry holds this tag (Docker's distribution inspect)."""
        client = await self._docker()
        try:
            await self._call(client.api.inspect_distribution, image, auth_config=self._auth(image))
            return True
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if exc.status_code == 404 or "manifest unknown" in text or "not found" in text.lower():
                return False
            raise _registry_error(image, text, "reading from") from None

    async def push(self, image: str) -> None:
        """Push a local image (e.g. one built before push was switched on)."""
        repository, _, tag = image.rpartition(":")
        client = await self._docker()
        stream = await self._call(client.api.push, repository, tag, stream=True, decode=True,
                                  auth_config=self._auth(image))
        for item in await self._call(list, stream):
            if isinstance(item, dict) and item.get("error"):
                raise _registry_error(image, str(item["error"]), "pushing to")

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

    async def start(self, ref: BuildRef, spec: BuildSpec, command: list[str] | None = None) -> BuildContainer:
        """Start the build container (`command` as `command()` gave it, else asked for now);
        if one for this resource exists already, return it.

        The container's name is derived from the resource, so Docker itself refuses a
        second one (409) and that answer, not an extra lookup first, is the dedup."""
        volumes = {self.config.docker_socket: {"bind": "/var/run/docker.sock", "mode": "rw"}}
        kwargs = dict(
            image=spec.build_image or self.config.build_image,
            command=command or await self.command(spec),
            name=container_name(ref),
            labels=container_labels(self.config, ref, spec),
            volumes=volumes,
            environment=dict(self.config.environment),
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

    # ---- images: what the garbage collector needs ------------------------------------------

    async def disk_usage(self) -> dict:
        """The daemon's own accounting (`docker system df`): images with their unique sizes
        and container counts, the total image layer bytes, and the build cache."""
        return await self._call((await self._docker()).api.df)

    async def data_root_usage(self) -> DiskUsage:
        """The filesystem that holds the daemon's data root, measured by a short container of
        the build image with that directory mounted read-only.

        The daemon names its own data root (`docker info`), so the answer is right wherever this
        process runs, in a pod or a hub in a container, with no host path or mount of its own.
        The build image is on the daemon once anything was built, and it has Python (repo2docker
        is a Python program); before the first build there is nothing to remove anyway."""
        client = await self._docker()
        image = self.config.build_image
        try:
            root = (await self._call(client.info)).get("DockerRootDir") or "/var/lib/docker"
            await self._call(client.images.get, image)  # containers.run would pull a missing one
            output = await self._run_probe(image, ["python3", "-c", _STATVFS, "/data-root"],
                                           volumes={root: {"bind": "/data-root", "mode": "ro"}})
            frsize, blocks, available = (int(n) for n in output.decode().split()[:3])
        except docker.errors.ImageNotFound:
            raise RunnerError(f"the build image {image} is not on the daemon yet") from None
        except (docker.errors.DockerException, ValueError) as exc:
            raise RunnerError(f"could not measure the disk of Docker's data root: {exc}") from exc
        return DiskUsage(size=frsize * blocks, available=frsize * available)

    async def _run_probe(self, image: str, command: list[str], **kwargs) -> bytes:
        """Output of a short helper container (a version check, a disk measurement), labelled
        as this instance's probe, after sweeping the probes a killed process left behind."""
        # Not the instance label: listings of build containers select on that one.
        labels = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY, contract.LABEL_PROBE: self.config.instance}
        await self._remove_left_probes(labels)
        return await self._call((await self._docker()).containers.run, image, command, remove=True,
                                network_disabled=True, stdout=True, stderr=True, labels=labels, **kwargs)

    async def _remove_left_probes(self, labels: dict[str, str]) -> None:
        """Remove this instance's probes that a process killed mid-run left behind.

        `containers.run(remove=True)` removes a probe only after reading its output, so a
        hub or operator stopped in between leaves an exited container each time. Only exited
        ones go: a running probe belongs to a sibling process of the same instance."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()], "status": "exited"}
        for container in await self._call((await self._docker()).containers.list, all=True, filters=filters):
            await self.remove(container.id)

    async def remove_image(self, image_id: str) -> bool:
        """Remove an image by id, every tag of it. False when Docker refuses because a container
        started using it meanwhile (409), or it is already gone."""
        try:
            await self._call((await self._docker()).api.remove_image, image_id, force=False, noprune=False)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return False
            raise RunnerError(f"could not remove image {image_id[:19]}: {exc.explanation or exc}") from exc

    async def prune_build_cache(self, keep_storage: int) -> int:
        """Shrink BuildKit's cache in the daemon to `keep_storage` bytes; returns bytes freed."""
        result = await self._call((await self._docker()).api.prune_builds, keep_storage=keep_storage)
        return int((result or {}).get("SpaceReclaimed") or 0)

    async def container_uses(self, on_image: Callable[[str, float], None], since: float | None = None,
                             on_subscribed: Callable[[], None] | None = None) -> None:
        """Call `on_image(image reference, unix time)` for every container created or started,
        until the stream ends (the daemon went away) or this task is cancelled. `since` replays
        what the daemon still remembers from that time on; `on_subscribed` is called once the
        daemon has accepted the subscription (it answers before the first event)."""
        client = await self._docker()
        filters = {"type": "container", "event": ["create", "start"]}
        stream = await self._call(client.events, decode=True, filters=filters, since=int(since) if since else None)
        if on_subscribed:
            on_subscribed()
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def pump() -> None:
            try:
                for event in stream:
                    image = event.get("from") or event.get("Actor", {}).get("Attributes", {}).get("image")
                    if image:
                        when = float(event.get("timeNano", 0)) / 1e9 or float(event.get("time", 0))
                        loop.call_soon_threadsafe(on_image, image, when)
            except Exception as exc:  # noqa: BLE001 - closed under us, or the daemon went away
                log.debug("container event stream ended: %s", exc)
            finally:
                try:
                    loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None))
                except RuntimeError:
                    pass  # the loop is closed

        threading.Thread(target=pump, name="container-events", daemon=True).start()
        try:
            await ended
        finally:
            stream.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
