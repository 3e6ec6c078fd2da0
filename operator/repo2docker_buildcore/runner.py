"""Running repo2docker as a container through a Docker daemon: build containers only.

Shared by the operator and the hub's embedded backend. Calls go through ``DockerAPI``, so
neither kopf's event loop nor JupyterHub's ever waits on Docker; images and the registry are
``ImageStore``'s (``runner.images``, on the same client). Build containers carry labels
naming their resource; after a restart those labels are the only way to find a build that is
still running, so the runner never starts a container without them.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
import tarfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from . import contract
from .contract import BuildSpec
from .daemon_images import ImageStore
from .docker_api import DockerAPI, RunnerError
from .gitcredentials import CloneCredentials, store_archive, store_environment
from .versions import Repo2DockerVersion, UnsupportedSetting, check_supported

log = logging.getLogger(__name__)


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
        return self.status in ("running", "restarting")

    @property
    def prepared(self) -> bool:
        """Created but never started: made ahead of its slot (or a start that was cut short)."""
        return self.status == "created"

    def spec(self) -> BuildSpec:
        """The build's spec from the container's labels, validated like any request."""
        return BuildSpec.from_spec(
            {
                "repoUrl": self.labels.get(contract.LABEL_REPO_URL, ""),
                "ref": self.labels.get(contract.LABEL_REF, ""),
                "commit": self.labels.get(contract.LABEL_COMMIT, ""),
                "image": self.labels.get(contract.LABEL_IMAGE, ""),
                "repoDir": self.labels.get(contract.LABEL_REPO_DIR, ""),
            }
        )


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def build_environment(values: Mapping[str, str] | Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Validated environment for build containers, from a mapping or 'NAME=VALUE' strings.

    Values go to Docker as environment entries, never through a shell, so only what Docker
    itself cannot carry (NUL) and what would bloat every container (huge values) is refused."""
    items = values.items() if isinstance(values, Mapping) else (str(v).partition("=")[::2] for v in values)
    pairs = []
    for name, value in items:
        if not _ENV_NAME_RE.match(str(name)):
            raise ValueError(
                f"build environment name {str(name)[:60]!r} must be letters, digits and _ (not first a digit)"
            )
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
        "repo2docker",
        "--no-run",
        "--json-logs",
        "--user-id",
        str(int(config.user_id)),
        "--user-name",
        config.user_name,
        "--ref",
        spec.commit,
        "--image-name",
        spec.image,
    ]
    if spec.repo_dir:
        args += ["--target-repo-dir", spec.repo_dir]
    if config.push:
        args.append("--push")
    if spec.memory_limit:  # only reached for versions before buildx (check_supported)
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
        contract.LABEL_REPO_URL: spec.repo_url,
        contract.LABEL_REF: spec.ref,
        contract.LABEL_IMAGE: spec.image,
        **({contract.LABEL_REPO_DIR: spec.repo_dir} if spec.repo_dir else {}),
    }


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
        self.api = DockerAPI(client_factory)
        self.images = ImageStore(self.api, config.build_image, config.instance, config.docker_config)
        # repo2docker version per build image *id*: a tag can move to another release.
        self._versions: dict[str, Repo2DockerVersion] = {}
        self._probes: dict[str, asyncio.Future] = {}  # image id -> the probe under way

    async def _client(self) -> docker.DockerClient:
        return await self.api.client()

    def _selector(self, **extra: str) -> dict:
        labels = [
            f"{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}",
            f"{contract.LABEL_INSTANCE}={self.config.instance}",
        ]
        labels += [f"{k}={v}" for k, v in extra.items()]
        return {"label": labels}

    async def ping(self) -> None:
        await self.api.call((await self._client()).ping)

    async def repo2docker_version(self, image: str) -> Repo2DockerVersion:
        """The repo2docker release inside a build image, read once per image id.

        Asked of the program itself (`repo2docker --version`, through the image's own
        entrypoint) rather than of a label: labels are optional and tags are reused. Callers
        that ask while the probe runs share it: a burst of first builds would otherwise start
        one probe container each, and wait seconds for them on a busy daemon."""
        client = await self._client()
        try:
            image_id = (await self.api.call(client.images.get, image)).id
        except docker.errors.ImageNotFound as exc:
            raise RunnerError(f"the build image {image} is not available on the Docker daemon") from exc
        if image_id not in self._versions:
            probe = self._probes.get(image_id)
            if probe is None:
                probe = self._probes[image_id] = asyncio.ensure_future(self._probe(image, image_id))
                probe.add_done_callback(lambda _: self._probes.pop(image_id, None))
            await asyncio.shield(probe)
        return self._versions[image_id]

    async def _probe(self, image: str, image_id: str) -> None:
        try:
            output = await self.api.run_probe(image, ["repo2docker", "--version"], self.config.instance)
            self._versions[image_id] = Repo2DockerVersion.parse(output.decode(errors="replace"))
        except (docker.errors.ContainerError, ValueError) as exc:
            raise RunnerError(f"the build image {image} did not report a repo2docker version: {exc}") from exc
        log.info("build image %s has repo2docker %s", image, self._versions[image_id])

    async def command(self, spec: BuildSpec) -> list[str]:
        """The build container's command for this spec; refuses what its repo2docker cannot do."""
        version = await self.repo2docker_version(spec.build_image or self.config.build_image)
        try:
            return build_args(self.config, spec, version)
        except UnsupportedSetting as exc:
            raise RunnerError(f"This build cannot run as configured: {exc}") from None

    async def find(self, uid: str) -> BuildContainer | None:
        """The build container of the resource with this uid, running or not."""
        found = await self.api.call(
            (await self._client()).containers.list, all=True, filters=self._selector(**{contract.LABEL_BUILD_UID: uid})
        )
        return _describe(found[0]) if found else None

    async def list_builds(self, running_only: bool = True) -> list[BuildContainer]:
        filters = self._selector()
        if running_only:
            filters["status"] = ["running", "restarting"]
        found = await self.api.call((await self._client()).containers.list, all=not running_only, filters=filters)
        return [_describe(c) for c in found]

    async def prepare(
        self,
        ref: BuildRef,
        spec: BuildSpec,
        command: list[str] | None = None,
        credential: CloneCredentials | None = None,
    ) -> BuildContainer:
        """Create the build container without starting it, so that a freed slot only has to
        start it (Docker's create, with the archives copied in, is most of a hand-off). With
        a `credential`, git in the container clones with it: a store file written in before
        the start, which neither the container's configuration nor its labels show
        (gitcredentials.py). If one for this resource exists already, return it.

        The container's name is derived from the resource, so Docker itself refuses a
        second one (409) and that answer, not an extra lookup first, is the dedup."""
        volumes = {self.config.docker_socket: {"bind": "/var/run/docker.sock", "mode": "rw"}}
        kwargs = dict(
            image=spec.build_image or self.config.build_image,
            command=command or await self.command(spec),
            name=container_name(ref),
            labels=container_labels(self.config, ref, spec),
            volumes=volumes,
            environment={
                **dict(self.config.environment),
                **(store_environment(spec.repo_url, credential) if credential else {}),
            },
        )
        if spec.memory_limit:
            kwargs["mem_limit"] = spec.memory_limit
        if spec.cpu_limit:
            kwargs["nano_cpus"] = int(spec.cpu_limit * 1e9)
        try:
            container = await self.api.call((await self._client()).containers.create, **kwargs)
            if self.config.push and self.config.docker_config:
                archive = docker_config_tar(Path(self.config.docker_config).read_bytes())
                await self.api.call(container.put_archive, "/root", archive)
            if credential:
                await self.api.call(container.put_archive, "/", store_archive(spec.repo_url, credential))
        except docker.errors.ImageNotFound as exc:
            raise RunnerError(f"the build image {kwargs['image']} is not available on the Docker daemon") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a concurrent create won the name: join it
                existing = await self.find(ref.uid)
                if existing:
                    return existing
            raise RunnerError(f"Docker refused to create the build container: {exc.explanation or exc}") from exc
        return _describe(container)

    async def start(
        self,
        ref: BuildRef,
        spec: BuildSpec,
        command: list[str] | None = None,
        credential: CloneCredentials | None = None,
        prepared: BuildContainer | None = None,
    ) -> BuildContainer:
        """Start the build container: the `prepared` one, else one created now (`prepare`).
        One that is running already (a concurrent start) is returned as it is."""
        container = prepared or await self.prepare(ref, spec, command, credential)
        if not container.prepared:  # a concurrent start won: it runs already
            return container
        try:
            handle = await self.api.call((await self._client()).containers.get, container.id)
            await self.api.call(handle.start)
            await self.api.call(handle.reload)
        except docker.errors.NotFound:
            if prepared is None:
                raise RunnerError("the build container was removed before it started") from None
            # Removed while it waited (by hand, or a prune): create it again.
            return await self.start(ref, spec, command, credential)
        except docker.errors.APIError as exc:
            raise RunnerError(f"Docker refused to start the build container: {exc.explanation or exc}") from exc
        return _describe(handle)

    async def logs(self, container_id: str) -> AsyncIterator[str]:
        """Every line the container printed, from its start, following until it exits."""
        container = await self.api.call((await self._client()).containers.get, container_id)
        stream = await self.api.call(container.logs, stream=True, follow=True, stdout=True, stderr=True)
        buffer = b""
        async for chunk in self.api.iterate(lambda: stream, close=stream.close):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if buffer:
            yield buffer.decode(errors="replace")

    async def wait(self, container_id: str) -> int:
        """Until the container exits (in a thread of its own: it may take a whole build); its exit code."""
        container = await self.api.call((await self._client()).containers.get, container_id)
        result = await self.api.in_own_thread(container.wait)
        return int(result.get("StatusCode", -1))

    async def exit_code(self, container_id: str) -> int | None:
        container = await self.api.call((await self._client()).containers.get, container_id)
        if container.status in ("exited", "dead"):
            return int(container.attrs.get("State", {}).get("ExitCode", -1))
        return None

    async def remove(self, container_id: str, kill: bool = False) -> None:
        """Remove the container (killing it first if asked); a missing one is already gone."""
        try:
            container = await self.api.call((await self._client()).containers.get, container_id)
            if kill and container.status in ("running", "restarting"):  # a created one has nothing to kill (409)
                await self.api.call(container.kill)
            await self.api.call(container.remove, force=True)
        except docker.errors.NotFound:
            pass
        except RunnerError:
            raise
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise RunnerError(f"could not remove build container {container_id[:12]}: {exc}") from exc

    def close(self) -> None:
        self.api.close()
