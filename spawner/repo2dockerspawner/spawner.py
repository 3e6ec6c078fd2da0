"""Repo2DockerSpawner: DockerSpawner that first builds the user's repository with repo2docker.

This class holds the spawner's settings, DockerSpawner's hooks and the server's state. What
it delegates: the form (`form.py`), one start's build (`launch.py`), the pending page's events
(`progress.py`), the repository in a persistent home (`home_setup.py`), which credential a
launch uses (`credentials.py`). Once the image exists, DockerSpawner starts it unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import docker.errors
from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Bool, CaselessStrEnum, Float, Int, List, TraitError, Type, Unicode, default, validate
from traitlets.config import Config

from repo2docker_buildcore import contract, repourl
from repo2docker_buildcore.contract import BuildSpec
from repo2docker_buildcore.gitcredentials import CloneCredentials
from repo2docker_buildcore.repourl import RepoUrl
from repo2docker_buildcore.settings import setting

from .backends import BuildBackend, BuildHandle, BuildRecord
from .backends.shared import shared_backend
from .backends.traits import RENAMED, current_names, old_names
from .credentials import CredentialSettings
from .errors import BuildFailed
from .form import LaunchForm, LinkOpensForm, quiet_link_log
from .helpers import HELPER_TIMEOUT
from .home_setup import HomeSetupMixin
from .homes import default_repo_dir, server_mounts
from .hublog import join_hub_log
from .launch import Launch, LaunchRules, ensure_build
from .options import RepoPolicy, RepoRequest, asks_for_previous, bad_request, first_value, parse_options
from .refs import LookupLimits, resolve_launch_ref
from .servicename import service_prefix

__all__ = ["BuildFailed", "LinkOpensForm", "Repo2DockerSpawner"]


OldNames = old_names("Repo2DockerSpawner")


class Repo2DockerSpawner(OldNames, CredentialSettings, HomeSetupMixin, DockerSpawner):
    """Spawn servers from images that repo2docker builds from a git repository and ref."""

    backend = CaselessStrEnum(
        ["local", "kubernetes"],
        default_value="local",
        config=True,
        help="""Where builds run, short form of backend_class. 'local': inside the hub, through
        its Docker daemon (LocalBackend, no Kubernetes needed). 'kubernetes': as
        Repo2DockerBuild resources that repo2docker-operator builds (KubernetesBackend).""",
    )
    backend_class = Type(
        klass=BuildBackend,
        config=True,
        help="""The build backend class (a BuildBackend); its settings are its own traits, e.g.
        c.LocalBackend.concurrent_builds_limit or c.KubernetesBackend.namespace. Default: the
        class that `backend` names.""",
    )

    # The first release's names for backend settings (OldNames, made from traits.RENAMED) keep
    # working: a value set there becomes the backend's setting, unless that is set too.

    image_prefix = Unicode(
        setting("image_prefix").default,
        config=True,
        help="""Built images are named <prefix><repo-slug>-<hash>:<commit>. Include a registry
        ('registry.example.org/binder/r2d-') when builds are pushed. Must match the operator's.""",
    )
    allowed_repo_schemes = List(
        Unicode(),
        default_value=["https"],
        config=True,
        help="URL schemes users may give (of https, http, git, ssh).",
    )
    allowed_repo_hosts = List(
        Unicode(),
        default_value=["*"],
        config=True,
        help="""Host patterns users may build from, fnmatch style: ['github.com', '*.gitlab.example.org'].
        A pattern that names hosts (no wildcard, or a literal domain after the last one) also
        admits hosts on private networks; catch-alls ('*', '*.*', '?*', '*.org') admit only
        hosts whose every address is public.""",
    )
    autolaunch_repos = List(
        Unicode(),
        default_value=[],
        config=True,
        help="""Repositories that a link (/hub/spawn?repo=…&ref=…) launches at once, as on Binder:
        patterns of whole URLs, e.g. ['https://github.com/my-course/*'], matched on the
        canonical URL (lower-case scheme and host, no trailing '.git' or '/') segment by
        segment: '*' and '?' never cross a '/', a whole segment '**' matches any number of
        segments, and URLs with '.', '..' or empty segments are refused before any match. Any other link only fills in the form,
        and the user's click on Start launches it: a link can come from anyone, and launching
        runs the repository's code as the user, with their files.""",
    )
    repo_dir = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""Where builds put the repository in the image (repo2docker's --target-repo-dir),
        e.g. '/srv/repo'; '' keeps repo2docker's default, the home directory. Default: '/srv/repo'
        when a volume is mounted on the home directory (/home or /home/<user>), else ''. It
        is part of an image's identity: changing it means new builds. With a volume holding
        the home, each launch copies the repository into ~/<repository> (never overwriting a
        file there) and JupyterLab opens that folder; see the README, "Persistent homes".""",
    )
    default_ref = Unicode("HEAD", config=True, help="The ref built when the user gives none.")
    helper_image = Unicode(
        "",
        config=True,
        help="""A trusted image for the one helper step that needs root (giving a volume this
        launch created to the server's user): it needs /bin/sh, /bin/chown and /usr/bin/stat.
        Never a launched image: a repository's Dockerfile owns every binary in its image.
        Default: the default server image (`image`), which the admin chose.""",
    )
    helper_timeout = Float(
        HELPER_TIMEOUT,
        config=True,
        help="""Seconds a helper before the server's start (a repository's copy into a
        persistent home) may take; it is stopped then, and the server starts without the copy.""",
    )
    ref_resolve_timeout = Float(30.0, config=True, help="Seconds to wait for `git ls-remote` when resolving a ref.")
    per_user_build_limit = Int(
        3,
        config=True,
        help="""Unfinished builds (queued or running) one user may have asked for; a launch that
        would start one more is refused with a message naming them (joining a build that is
        already under way is always allowed). A stopped launch leaves its build running, so
        without a limit one user could fill the queue. 0: no limit.""",
    )
    offer_previous_build = Bool(
        True,
        config=True,
        help="""While a launch waits for a new commit's build (or after that build failed), offer
        to start the newest earlier build of the same repository and ref whose image is still
        there: a button on the pending page, or user_options.previous_ok = true for REST
        clients. The new build goes on either way.""",
    )

    @validate("allowed_repo_schemes")
    def _validate_schemes(self, proposal: Any) -> Any:
        schemes = [s.lower() for s in proposal["value"]]
        unknown = sorted(set(schemes) - set(contract.ALLOWED_URL_SCHEMES))
        if unknown:
            raise TraitError(
                f"Repo2DockerSpawner.allowed_repo_schemes: {unknown} not among {list(contract.ALLOWED_URL_SCHEMES)}"
            )
        return schemes

    @validate("autolaunch_repos")
    def _validate_autolaunch(self, proposal: Any) -> Any:
        for pattern in proposal["value"]:
            try:
                repourl.parse_pattern(pattern)
            except ValueError as exc:
                raise TraitError(f"Repo2DockerSpawner.autolaunch_repos: {exc}") from None
        return proposal["value"]

    @validate("repo_dir")
    def _validate_repo_dir(self, proposal: Any) -> Any:
        if proposal["value"] is None:
            return None
        try:
            return contract.validate_repo_dir(proposal["value"])
        except contract.InvalidBuildRequest as exc:
            raise TraitError(f"Repo2DockerSpawner.repo_dir: {exc}") from None

    @validate("image_prefix")
    def _validate_prefix(self, proposal: Any) -> Any:
        try:
            return contract.validate_image_prefix(proposal["value"])
        except contract.InvalidBuildRequest as exc:
            raise TraitError(f"Repo2DockerSpawner.image_prefix: {exc}") from None

    @default("backend_class")
    def _default_backend_class(self) -> type:
        from .backends.kubernetes import KubernetesBackend
        from .backends.local import LocalBackend

        return {"local": LocalBackend, "kubernetes": KubernetesBackend}[self.backend]

    # Builds take minutes; JupyterHub cancels start() after start_timeout (default 60 s).
    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        return int(self.build_backend.longest_build()) + 300

    # Each spawn may use another image: never resume a stopped container of an older one.
    @default("remove")
    def _default_remove(self) -> bool:
        return True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        join_hub_log(self.log)
        # Created (or found) now, so that a bad backend setting is refused when the
        # configuration is loaded, not at the first spawn.
        self.build_backend: BuildBackend = shared_backend(self.backend_class, self.backend_config())
        self.build_backend.check_image_prefix(self.image_prefix)
        self.build_backend.start_image_gc(self.image_prefix)
        self._configured_image = self.image
        self.form = LaunchForm()
        self.launch = self.new_launch()  # replaced at each start
        self.launch.finished()
        self._build_state: dict[str, Any] = {}
        self._landing: dict[str, str] = {}

    # ---- user options -------------------------------------------------------------------

    @property
    def policy(self) -> RepoPolicy:
        return RepoPolicy(
            tuple(s.lower() for s in self.allowed_repo_schemes), tuple(self.allowed_repo_hosts), self.default_ref
        )

    @default("options_form")
    def _default_options_form(self) -> Any:
        def form(spawner: Repo2DockerSpawner) -> str:
            return spawner.form.render(spawner.user_options, spawner._configured_image, spawner.default_ref)

        return form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        def options_from_form(formdata: dict[str, list[str]], spawner: Repo2DockerSpawner) -> dict[str, str]:
            try:
                request = parse_options(formdata, spawner.policy)
            except web.HTTPError as exc:
                spawner.form.remember_refusal({key: (formdata.get(key) or [""])[0] for key in ("repo", "ref")}, exc)
                raise
            spawner.form.refused = None
            return request.as_user_options() if request else {}

        return options_from_form

    def options_from_query(self, query_data: dict[str, Any]) -> dict[str, str]:
        """A link's options: launched at once only for a repository in `autolaunch_repos`;
        otherwise LinkOpensForm, and JupyterHub renders the form, filled in from the link."""
        try:
            request = parse_options(query_data, self.policy)
        except web.HTTPError as exc:
            self.form.remember_refusal({key: first_value(query_data.get(key)) for key in ("repo", "ref")}, exc)
            raise
        if request and self.autolaunches(request.url):
            return request.as_user_options()
        self.form.link = request.as_user_options() if request else None
        quiet_link_log(getattr(self, "handler", None))  # JupyterHub's SpawnHandler logs what we raise
        raise LinkOpensForm()

    def autolaunches(self, url: RepoUrl) -> bool:
        """Whether `autolaunch_repos` trusts this repository: matched on the parsed URL, segment by
        segment, so no spelling of another repository's path ('trusted-x/../other') passes."""
        return any(repourl.parse_pattern(pattern).matches(url) for pattern in self.autolaunch_repos)

    def repo_request(self) -> RepoRequest | None:
        """The validated request in user_options (REST options arrive here unvalidated)."""
        options = self.user_options or {}
        request = parse_options(options, self.policy)
        if request and options.get("image"):
            raise bad_request("Give either a repository or an image, not both.")
        return request

    # ---- backends -----------------------------------------------------------------------

    def backend_config(self) -> Config:
        """The hub's configuration with every older name moved to the backend's current one."""
        old_names = [old for section, old in RENAMED if section == "Repo2DockerSpawner"]
        return current_names(self.config, {name: getattr(self, name) for name in old_names})

    def effective_repo_dir(self) -> str:
        """`repo_dir`, or its default for this hub's volumes."""
        if self.repo_dir is not None:
            return self.repo_dir
        return default_repo_dir([m.target for m in server_mounts(self.volume_binds, self.mount_binds)])

    def build_spec(self, request: RepoRequest, commit: str) -> BuildSpec:
        repo_dir = self.effective_repo_dir()
        return BuildSpec(
            request.repo,
            request.ref,
            commit,
            contract.image_name(self.image_prefix, request.repo, commit, repo_dir),
            **self.build_backend.build_resources(),
            repo_dir=repo_dir,
        )

    async def ensure_build(
        self, spec: BuildSpec, requested_by: str, credential: CloneCredentials | None
    ) -> tuple[BuildHandle, BuildRecord | None]:
        """The build of `spec` as a launch asks for it (launch.ensure_build), on this hub's daemon."""
        return await ensure_build(self.build_backend, spec, requested_by, credential, self._image_on_daemon, self.log)

    async def _image_on_daemon(self, image: str) -> bool:
        try:
            await self.docker("inspect_image", image)
            return True
        except docker.errors.ImageNotFound:
            return False

    # ---- lifecycle ----------------------------------------------------------------------

    def new_launch(self) -> Launch:
        rules = LaunchRules(self.per_user_build_limit, self.offer_previous_build)
        return Launch(self.build_backend, self.user.name, rules, self._image_on_daemon, self.log, self._log_name)

    async def start(self) -> Any:
        launch = self.launch = self.new_launch()
        self._landing = {}
        try:
            request = self.repo_request()
            if request is None:
                self.image = self._configured_image
                self._build_state = {}
            else:
                self.image = await self.build_for(request, launch)
        except web.HTTPError as exc:
            if exc.status_code == 400:  # e.g. a ref the repository does not have: the form shows it
                self.form.remember_refusal(self.user_options or {}, exc)
            raise
        finally:
            launch.finished()  # progress() must never wait for a start that failed early
        return await super().start()

    async def build_for(self, request: RepoRequest, launch: Launch) -> str:
        """Resolve, build (or join, or reuse) and return the image for `request`.

        The ref is resolved on every launch, also for a commit SHA, before any build is joined
        or image served, with this user's credential where the repository needs one: only a
        user who can read a private repository gets its image."""
        commit, credential = await resolve_launch_ref(
            request.repo,
            request.ref,
            self.policy,
            LookupLimits(timeout=self.ref_resolve_timeout),
            await self.credential(request.url),
        )
        try:
            return await launch.run(
                request, self.build_spec(request, commit), credential, asks_for_previous(self.user_options)
            )
        finally:
            if launch.state:
                self._build_state = dict(launch.state)

    async def stop(self, now: bool = False) -> None:
        self.launch.stop()
        await super().stop(now=now)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        offer = (
            f"{service_prefix(self.hub.base_url)}previous/{quote(self.user.name, safe='')}/{quote(self.name, safe='')}"
        )
        async for event in self.launch.events(offer):
            yield event

    def use_previous(self) -> bool:
        """The user chose the offered previous build (through the hub service): start it; whether one was offered."""
        return self.launch.choose_previous()

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
