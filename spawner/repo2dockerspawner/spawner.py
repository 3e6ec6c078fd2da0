"""Repo2DockerSpawner: DockerSpawner that first builds the user's repository with repo2docker.

The spawner itself stays small: it validates what the user asked for (``options``), resolves
the ref (``refs``), asks a backend for the build (``backends``) and turns the build's status
into JupyterHub progress events. Once the image exists, DockerSpawner starts it unchanged.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from typing import Any, AsyncIterator

from dockerspawner import DockerSpawner
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, TraitError, Unicode, default, validate

from repo2docker_operator import contract
from repo2docker_operator.build import BuildSettings
from repo2docker_operator.config import DEFAULT_BUILD_IMAGE
from repo2docker_operator.contract import BuildSpec, BuildStatus, Phase
from repo2docker_operator.runner import RunnerConfig, build_environment

from .backends import BuildBackend, BuildHandle, registry
from .options import RepoPolicy, RepoRequest, bad_request, parse_options
from .refs import resolve_ref

FORM_TEMPLATE = """
<div class="form-group">
  <p>Build your own environment from a git repository, as on Binder: repo2docker reads its
  <code>Dockerfile</code>, <code>environment.yml</code> or <code>requirements.txt</code>.
  Leave the repository empty to start the default image (<code>{default_image}</code>).</p>
  <label for="r2d-repo">Git repository URL</label>
  <input class="form-control" id="r2d-repo" name="repo" type="url" value="{repo}"
         placeholder="https://github.com/org/repo" maxlength="{max_url}" autofocus>
  <label for="r2d-ref">Branch, tag or commit</label>
  <input class="form-control" id="r2d-ref" name="ref" type="text" value="{ref}"
         placeholder="{default_ref}" maxlength="{max_ref}">
  <p class="help-block">The first start of a new commit builds an image, which can take a few
  minutes; the build log is shown while you wait. Later starts of the same commit reuse it.</p>
</div>
"""


class BuildFailed(Exception):
    """The build did not produce an image. The message is what users see on the pending page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


class Repo2DockerSpawner(DockerSpawner):
    """Spawn servers from images that repo2docker builds from a git repository and ref."""

    backend = CaselessStrEnum(
        ["local", "kubernetes"], default_value="local", config=True,
        help="""Where builds run. 'local': inside the hub, through its Docker daemon (no
        Kubernetes needed). 'kubernetes': as Repo2DockerBuild resources that the
        repo2docker-operator builds on the node's Docker daemon.""",
    )
    build_image = Unicode(
        DEFAULT_BUILD_IMAGE, config=True,
        help="repo2docker image that runs builds (local backend; the operator has its own setting).",
    )
    concurrent_builds_limit = Int(
        2, config=True,
        help="""Builds running at once (local backend). 0 means no limit. Further builds wait
        in a FIFO queue and users see their position.""",
    )
    build_timeout = Float(3600.0, config=True, help="Seconds before a local build is stopped and failed.")
    build_instance = Unicode(
        "hub-local", config=True,
        help="Label value on local build containers; separates hubs that share a Docker daemon.",
    )
    namespace = Unicode(
        config=True, help="Namespace of the build resources (kubernetes backend). Default: the pod's, else 'default'.",
    )
    kubeconfig = Unicode(
        None, allow_none=True, config=True,
        help="Path of a kubeconfig for the kubernetes backend. Default: in-cluster, else ~/.kube/config.",
    )
    image_prefix = Unicode(
        "r2d-", config=True,
        help="""Built images are named <prefix><repo-slug>-<hash>:<commit>. Include a registry
        ('registry.example.org/binder/r2d-') when builds are pushed. Must match the operator's.""",
    )
    allowed_repo_schemes = List(
        Unicode(), default_value=["https"], config=True,
        help="URL schemes users may give (of https, http, git, ssh).",
    )
    allowed_repo_hosts = List(
        Unicode(), default_value=["*"], config=True,
        help="Host patterns users may build from, fnmatch style: ['github.com', '*.gitlab.example.org'].",
    )
    default_ref = Unicode("HEAD", config=True, help="The ref built when the user gives none.")
    ref_resolve_timeout = Float(30.0, config=True, help="Seconds to wait for `git ls-remote` when resolving a ref.")
    log_tail_lines = Int(100, config=True, help="Build log lines kept (local backend).")
    build_memory_limit = Unicode(
        None, allow_none=True, config=True, help="Memory limit of build containers, e.g. '4Gi' (local backend).",
    )
    build_cpu_limit = Float(
        None, allow_none=True, config=True,
        help="""CPUs of the repo2docker container (local backend). It bounds cloning and build
        preparation; the build steps run in the Docker daemon and are not bounded by it.""",
    )
    build_push = Bool(
        False, config=True,
        help="""Push built images to the registry named in image_prefix (local backend; the
        operator has --push). An image counts as built only once it is in the registry, and
        servers pull it from there, so several Docker hosts can share builds. DockerSpawner
        pulls with the hub's Docker client configuration ($DOCKER_CONFIG or ~/.docker).""",
    )
    build_env = Dict(
        Unicode(), config=True,
        help="""Environment of local build containers: proxies (HTTP_PROXY, HTTPS_PROXY,
        NO_PROXY, which the official build image also writes into Docker's client config), or
        R2D_DATAVERSE_INSTALLATIONS_URL for hubs without internet access (repo2docker 2025.08
        and later download that list before every build).""",
    )
    build_docker_config = Unicode(
        None, allow_none=True, config=True,
        help="""A docker config.json with the credentials that builds push with (local backend).
        It is copied into each build container; nothing else reads it.""",
    )
    docker_socket = Unicode(
        "/var/run/docker.sock", config=True,
        help="Host path of the Docker socket mounted into local build containers.",
    )

    @validate("build_memory_limit")
    def _validate_memory(self, proposal: Any) -> Any:
        try:
            contract.parse_quantity(proposal["value"])
        except contract.InvalidBuildRequest as exc:
            raise TraitError(f"Repo2DockerSpawner.build_memory_limit: {exc}") from None
        return proposal["value"]

    @validate("allowed_repo_schemes")
    def _validate_schemes(self, proposal: Any) -> Any:
        schemes = [s.lower() for s in proposal["value"]]
        unknown = sorted(set(schemes) - set(contract.ALLOWED_URL_SCHEMES))
        if unknown:
            raise TraitError(f"Repo2DockerSpawner.allowed_repo_schemes: {unknown} not among {list(contract.ALLOWED_URL_SCHEMES)}")
        return schemes

    @validate("image_prefix")
    def _validate_prefix(self, proposal: Any) -> Any:
        try:
            return contract.validate_image_prefix(proposal["value"])
        except contract.InvalidBuildRequest as exc:
            raise TraitError(f"Repo2DockerSpawner.image_prefix: {exc}") from None

    @validate("build_env")
    def _validate_build_env(self, proposal: Any) -> Any:
        try:
            build_environment(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"Repo2DockerSpawner.build_env: {exc}") from None
        return proposal["value"]

    @validate("build_docker_config")
    def _validate_docker_config(self, proposal: Any) -> Any:
        path = proposal["value"]
        if path and not os.path.isfile(path):
            raise TraitError(f"Repo2DockerSpawner.build_docker_config: {path} is not a file")
        return path

    @default("namespace")
    def _default_namespace(self) -> str:
        return os.environ.get("POD_NAMESPACE", "default")

    # Builds take minutes; JupyterHub cancels start() after start_timeout (default 60 s).
    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        return int(self.build_timeout) + 300

    # Each spawn may use another image: never resume a stopped container of an older one.
    @default("remove")
    def _default_remove(self) -> bool:
        return True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.backend == "local" and self.build_push and not contract.prefix_names_registry(self.image_prefix):
            raise TraitError(f"Repo2DockerSpawner.build_push needs an image_prefix that names a registry "
                             f"(e.g. 'registry.example.org/binder/r2d-'), not {self.image_prefix!r}")
        self._configured_image = self.image
        self._build: BuildHandle | None = None
        self._build_ready = asyncio.Event()
        self._build_state: dict[str, Any] = {}
        self._stop_waiting = asyncio.Event()

    # ---- user options -------------------------------------------------------------------

    @property
    def policy(self) -> RepoPolicy:
        return RepoPolicy(tuple(s.lower() for s in self.allowed_repo_schemes), tuple(self.allowed_repo_hosts),
                          self.default_ref)

    @default("options_form")
    def _default_options_form(self) -> Any:
        def form(spawner: "Repo2DockerSpawner") -> str:
            previous = spawner.user_options or {}
            return FORM_TEMPLATE.format(
                default_image=html.escape(spawner._configured_image),
                repo=html.escape(str(previous.get("repo", "")), quote=True),
                ref=html.escape(str(previous.get("ref", "")), quote=True),
                default_ref=html.escape(spawner.default_ref), max_url=contract.MAX_URL_LENGTH,
                max_ref=contract.MAX_REF_LENGTH,
            )
        return form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        def options_from_form(formdata: dict[str, list[str]], spawner: "Repo2DockerSpawner") -> dict[str, str]:
            request = parse_options(formdata, spawner.policy)
            return request.as_user_options() if request else {}
        return options_from_form

    def options_from_query(self, query_data: dict[str, Any]) -> dict[str, str]:
        request = parse_options(query_data, self.policy)
        return request.as_user_options() if request else {}

    def repo_request(self) -> RepoRequest | None:
        """The validated request in user_options (REST options arrive here unvalidated)."""
        options = self.user_options or {}
        request = parse_options(options, self.policy)
        if request and options.get("image"):
            raise bad_request("Give either a repository or an image, not both.")
        return request

    # ---- backends -----------------------------------------------------------------------

    def get_backend(self) -> BuildBackend:
        if self.backend == "kubernetes":
            from .backends.kubernetes import KubernetesBackend

            key = ("kubernetes", self.namespace, self.kubeconfig)
            return registry.shared(key, lambda: KubernetesBackend(self.namespace, self.kubeconfig))
        from .backends.local import LocalBackend

        runner_config = RunnerConfig(build_image=self.build_image, docker_socket=self.docker_socket,
                                     instance=self.build_instance, push=self.build_push,
                                     docker_config=self.build_docker_config,
                                     environment=build_environment(self.build_env))
        settings = BuildSettings(timeout=self.build_timeout, tail_lines=self.log_tail_lines)
        key = ("local", runner_config, self.concurrent_builds_limit, settings)
        return registry.shared(key, lambda: LocalBackend(runner_config, self.concurrent_builds_limit, settings))

    def build_spec(self, request: RepoRequest, commit: str) -> BuildSpec:
        resources = {}
        if self.backend == "local":
            resources = {"memory_limit": contract.parse_quantity(self.build_memory_limit), "cpu_limit": self.build_cpu_limit}
        return BuildSpec(request.repo, request.ref, commit, contract.image_name(self.image_prefix, request.repo, commit),
                         **resources)

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Any:
        self._build = None
        self._build_ready = asyncio.Event()
        self._stop_waiting = asyncio.Event()
        try:
            request = self.repo_request()
            if request is None:
                self.image = self._configured_image
                self._build_state = {}
            else:
                self.image = await self.build_for(request)
        finally:
            self._build_ready.set()  # progress() must never wait for a start that failed early
        return await super().start()

    async def build_for(self, request: RepoRequest) -> str:
        """Resolve, build (or join, or reuse) and return the image for `request`."""
        commit = await resolve_ref(request.repo, request.ref, self.ref_resolve_timeout)
        spec = self.build_spec(request, commit)
        try:
            handle = await self.get_backend().ensure(spec, requested_by=self.user.name)
        except Exception as exc:
            self.log.exception("%s: could not start a build of %s", self._log_name, request.repo)
            raise BuildFailed(f"Could not start the image build: {describe_error(exc)}") from exc
        self._build = handle
        self._build_state = {"build": handle.name, "namespace": handle.namespace, "repo": request.repo,
                             "ref": request.ref, "commit": commit, "image": spec.image}
        self._build_ready.set()
        self.log.info("%s: build %s/%s for %s@%s", self._log_name, handle.namespace, handle.name, request.repo, commit[:12])
        status = await self._wait_for_build(handle)
        if status.phase != Phase.SUCCEEDED:
            raise BuildFailed(f"The image build {status.phase.value.lower()}: {status.message or 'no details'}")
        return status.image or spec.image

    async def _wait_for_build(self, handle: BuildHandle) -> BuildStatus:
        async def last_status() -> BuildStatus:
            status = handle.current()
            async for status in handle.statuses():
                pass
            return status

        waiting = asyncio.ensure_future(last_status())
        stopping = asyncio.ensure_future(self._stop_waiting.wait())
        try:
            done, _ = await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if waiting in done:
                return waiting.result()
            # The user stopped the pending spawn. The build itself goes on: others may be
            # waiting for it, and the next start of this commit will find it done or running.
            raise BuildFailed("The spawn was stopped while the image was building; the build continues.")
        finally:
            for task in (waiting, stopping):
                task.cancel()

    async def stop(self, now: bool = False) -> None:
        self._stop_waiting.set()
        await super().stop(now=now)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        await self._build_ready.wait()
        if self._build is None:
            return
        async for event in progress_events(self._build):
            yield event

    # ---- state --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._build_state:
            state["repo2docker"] = dict(self._build_state)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._build_state = dict(state.get("repo2docker") or {})
        if self._build_state.get("image"):
            # A server that is still running after a hub restart runs the built image.
            self.image = self._build_state["image"]

    def clear_state(self) -> None:
        super().clear_state()
        self._build_state = {}


def describe_error(exc: Exception) -> str:
    """One line for a user: the API server's message rather than a dump of its response."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(exc)
        except (TypeError, ValueError):
            pass
    reason = getattr(exc, "reason", None)
    return f"{reason}" if reason else str(exc).splitlines()[0]


async def progress_events(handle: BuildHandle) -> AsyncIterator[dict[str, Any]]:
    """JupyterHub progress events from a build's status: phase changes, queue position, and
    each log line once. A new page load gets a new generator, which starts from the shared
    status, so it catches up with the tail instead of starting blank."""
    seen_lines = 0
    last_phase: Phase | None = None
    last_position: int | None = None
    async for status in handle.statuses():
        percent = _percent(status)
        if status.phase != last_phase:
            last_phase = status.phase
            yield {"progress": percent, "message": _phase_message(status)}
        if status.phase == Phase.QUEUED and status.queue_position != last_position and status.queue_position:
            last_position = status.queue_position
            ahead = status.queue_position - 1
            text = "Your build is next in line." if not ahead else f"{ahead} build{'s' * (ahead != 1)} ahead of yours."
            yield {"progress": percent, "message": text}
        for line in status.new_lines(seen_lines):
            yield {"progress": percent, "message": line}
        seen_lines = max(seen_lines, status.log_line_count)
    if last_phase == Phase.SUCCEEDED:
        yield {"progress": 90, "message": "Image ready; starting your server."}


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
