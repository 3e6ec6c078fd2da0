"""Repo2DockerSpawner: DockerSpawner that first builds the user's repository with repo2docker.

The spawner itself stays small: it validates what the user asked for (``options``), resolves
the ref (``refs``), asks a backend for the build (``backends``) and turns the build's status
into JupyterHub progress events. Once the image exists, DockerSpawner starts it unchanged.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import inspect
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import docker.errors
from dockerspawner import DockerSpawner
from tornado import web
from traitlets import (
    Any as AnyTrait,
)
from traitlets import (
    Bool,
    CaselessStrEnum,
    Dict,
    Float,
    Int,
    List,
    TraitError,
    Type,
    Unicode,
    default,
    validate,
)
from traitlets.config import Config

from repo2docker_buildcore import contract, repourl
from repo2docker_buildcore.contract import BuildSpec, BuildStatus, Phase
from repo2docker_buildcore.gitcredentials import CloneCredentials, GitCredential
from repo2docker_buildcore.repourl import RepoUrl
from repo2docker_buildcore.settings import setting
from repo2docker_buildcore.status import parse_iso

from .backends import BuildBackend, BuildHandle, BuildRecord, ForeignBuild
from .backends.shared import shared_backend
from .backends.traits import RENAMED, current_names
from .credentials import check_user_hosts, credential_for, from_auth_state, hub_table
from .helpers import HELPER_TIMEOUT, ServerPolicy, UserIds, image_passwd, resolve_user, run_helper
from .homes import (
    VOLUME_IN_HELPER,
    CopyPlan,
    OwnerFix,
    default_repo_dir,
    landing_url,
    owner_fix,
    plan_copy,
    server_mounts,
)
from .options import RepoPolicy, RepoRequest, bad_request, conflict, first_value, parse_options
from .prebuilds import WatchedRepo, watched_repos
from .previous import asks_for_previous, offer_event
from .refs import LookupLimits, resolve_launch_ref

# Seconds a refused request's message waits for the form JupyterHub renders right after it.
REFUSAL_SHOWN_FOR = 60.0
# Seconds between looks at the clock while a build waits with an estimated start.
WAIT_TICK = 10.0

LINK_NOTICE = """
<div class="alert alert-info" id="r2d-link-notice" role="status">
  <p class="mb-1">A link asks to start your server from this repository:</p>
  <p class="mb-1"><strong><code>{repo}</code></strong> at <code>{ref}</code></p>
  <p class="mb-0">Its code will run as you, with your files. Check the repository below, then
  click <strong>Start</strong> to launch it.</p>
</div>
"""

FORM_TEMPLATE = """
{notice}<div class="form-group">
  <p>Build your own environment from a git repository, as on Binder: repo2docker reads its
  <code>Dockerfile</code>, <code>environment.yml</code> or <code>requirements.txt</code>.
  Leave the repository empty to start the default image (<code>{default_image}</code>).</p>
  <label for="r2d-repo">Git repository URL</label>
  <input class="form-control{invalid}" id="r2d-repo" name="repo" type="url" value="{repo}"
         placeholder="https://github.com/org/repo" maxlength="{max_url}" autofocus
         aria-describedby="r2d-form-error">
  <label for="r2d-ref">Branch, tag or commit</label>
  <input class="form-control{invalid}" id="r2d-ref" name="ref" type="text" value="{ref}"
         placeholder="{default_ref}" maxlength="{max_ref}" aria-describedby="r2d-form-error">
  {error}
  <p class="help-block">The first start of a new commit builds an image, which can take a few
  minutes; the build log is shown while you wait. Later starts of the same commit reuse it.</p>
</div>
"""


class LinkOpensForm(Exception):
    """Raised from `options_from_query` so that JupyterHub shows the form (filled in) instead
    of launching: a link can be sent by anyone, and a launch runs the repository's code as the
    user who clicked it. Both messages are None, so JupyterHub shows no error box."""

    jupyterhub_message = None
    jupyterhub_html_message = None


class _LinkFormLog(logging.Filter):
    """JupyterHub logs any exception from `options_from_query` as a failed spawn with a
    traceback. For LinkOpensForm that is the intended path: one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], LinkOpensForm):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "A link to the spawn page opened the form (filled in); nothing was launched.",
                (),
                None,
                None,
            )
        return True


_LINK_FORM_LOG = _LinkFormLog()


class BuildFailed(Exception):
    """The build did not produce an image. The message is what users see on the pending page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


class Repo2DockerSpawner(DockerSpawner):
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

    # The first release's names for backend settings. They keep working (a value set here
    # becomes the backend's setting, unless that is set too), with a deprecation line.
    build_image = Unicode(None, allow_none=True, config=True, help="Deprecated: LocalBackend.build_image.")
    concurrent_builds_limit = Int(None, allow_none=True, config=True, help="Deprecated: LocalBackend.concurrency.")
    build_timeout = Float(None, allow_none=True, config=True, help="Deprecated: LocalBackend.build_timeout.")
    build_memory_limit = Unicode(None, allow_none=True, config=True, help="Deprecated: LocalBackend.memory_limit.")
    build_cpu_limit = Float(None, allow_none=True, config=True, help="Deprecated: LocalBackend.cpu_limit.")
    build_instance = Unicode(None, allow_none=True, config=True, help="Deprecated: LocalBackend.instance.")
    docker_socket = Unicode(None, allow_none=True, config=True, help="Deprecated: LocalBackend.docker_socket.")
    log_tail_lines = Int(None, allow_none=True, config=True, help="Deprecated: LocalBackend.tail_lines.")
    namespace = Unicode(None, allow_none=True, config=True, help="Deprecated: KubernetesBackend.namespace.")
    kubeconfig = Unicode(None, allow_none=True, config=True, help="Deprecated: KubernetesBackend.kubeconfig.")

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
    repo_credentials = Dict(
        config=True,
        help="""Credentials for private repositories, for every user of this hub: pattern →
        {"username": …, and one of "token", "token_env" (a variable of the hub's environment),
        "token_file"}. A pattern is a host pattern ('git.example.org', '*.example.org': https
        repositories of those hosts, submodules included) or a URL pattern
        ('http://git.internal/org/*': plain http only when written so); a catch-all ('*',
        '*.*') is refused. Used by the hub's ref lookups and by the embedded backend's builds,
        through a git credential helper (never in a URL, the build resource, labels, logs or
        `docker inspect`). The operator has its own: the chart's build.gitCredentials.""",
    )
    repo_credentials_file = Unicode(
        "",
        config=True,
        help="A JSON file of the same shape as repo_credentials (e.g. a mounted Secret), read at each launch.",
    )
    user_credentials_from_auth_state = AnyTrait(
        "",
        config=True,
        help="""Where a user's own token is in their auth_state (an OAuth authenticator's, with
        enable_auth_state): a key path such as 'access_token', or a callable of auth_state
        returning {"username": …, "token": …} or None. Used only for user_credentials_hosts.""",
    )
    user_credentials_hosts = List(
        Unicode(),
        config=True,
        help="""Where users' own tokens are for: host patterns, e.g. ['github.com'] (https
        repositories of that host), or URL patterns ('https://git.example.org/course/*'; plain
        http only when written so). A catch-all ('*') is refused. A token is never sent
        elsewhere, whatever URL a user (or a link) gives; within those, it is sent only for
        the launched repository (never for its submodules), and a build gets it only when the
        repository refuses an anonymous lookup (a private one).""",
    )

    @validate("user_credentials_hosts")
    def _validate_user_hosts(self, proposal: Any) -> Any:
        try:
            return check_user_hosts(list(proposal["value"]))
        except ValueError as exc:
            raise TraitError(str(exc)) from None

    user_credentials_username = Unicode(
        "oauth2",
        config=True,
        help="The git username sent with a token from a key path (GitLab, GitHub and Gitea accept 'oauth2').",
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
    prebuild_repos = List(
        Dict(),
        config=True,
        help="""Repositories whose refs this hub builds before anybody launches them:
        [{"repo": URL, "refs": ["main", ...]}, ...], validated as a user's request (allow-lists
        included). Each is resolved every prebuild_interval seconds (one listing for all its
        refs) and on a push webhook; a new commit is built as a launch would build it, behind
        every user's launch in the queue. Needs repo2dockerspawner.buildspage.setup(c).""",
    )
    prebuild_interval = Float(300.0, config=True, help="Seconds between resolutions of the prebuild_repos.")
    webhook_secret = Unicode(
        config=True,
        help="""The secret of push webhooks at /hub/repo2docker/webhook (GitHub, Gitea, Forgejo:
        the HMAC key; GitLab: the token). Default: $R2D_WEBHOOK_SECRET. Empty: every delivery is
        refused.""",
    )

    @default("webhook_secret")
    def _default_webhook_secret(self) -> str:
        return os.environ.get("R2D_WEBHOOK_SECRET", "")

    @validate("prebuild_interval")
    def _validate_prebuild_interval(self, proposal: Any) -> Any:
        if proposal["value"] < 5:
            raise TraitError("Repo2DockerSpawner.prebuild_interval: at least 5 seconds (each one lists refs)")
        return proposal["value"]

    def watched_repos(self) -> tuple[WatchedRepo, ...]:
        """`prebuild_repos`, validated against this hub's allow-lists (a TraitError otherwise)."""
        try:
            return watched_repos(self.prebuild_repos, self.policy)
        except ValueError as exc:
            raise TraitError(f"Repo2DockerSpawner.{exc}") from None

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

    @validate("repo_credentials")
    def _validate_credentials(self, proposal: Any) -> Any:
        try:
            hub_table(proposal["value"], "")
        except (ValueError, OSError) as exc:
            raise TraitError(str(exc)) from None
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
        self.watched_repos()  # a bad entry is refused when the configuration is loaded
        self.build_backend.start_image_gc(self.image_prefix)
        self._configured_image = self.image
        self._build: BuildHandle | None = None
        self._build_ready = asyncio.Event()
        self._build_state: dict[str, Any] = {}
        self._stop_waiting = asyncio.Event()
        self._previous: BuildRecord | None = None  # what this launch may start instead (previous.py)
        self._use_previous = asyncio.Event()
        self._refused_form: dict[str, str] | None = None
        self._refused_at = 0.0
        self._link: dict[str, str] | None = None  # what the link being shown asked for
        self._landing: dict[str, str] = {}  # JUPYTERHUB_ROOT_DIR / _DEFAULT_URL of this launch

    # ---- user options -------------------------------------------------------------------

    @property
    def policy(self) -> RepoPolicy:
        return RepoPolicy(
            tuple(s.lower() for s in self.allowed_repo_schemes), tuple(self.allowed_repo_hosts), self.default_ref
        )

    @default("options_form")
    def _default_options_form(self) -> Any:
        def form(spawner: Repo2DockerSpawner) -> str:
            # After a refused submission: what the user typed, and why it was refused, once.
            # After a link: what it asks for, with a notice saying so, once.
            refused = spawner._take_refusal()
            link, spawner._link = spawner._link, None
            previous = refused or link or spawner.user_options or {}
            message = (refused or {}).get("error")
            error = (
                f'<div class="invalid-feedback d-block" id="r2d-form-error" role="alert">{html.escape(message)}</div>'
                if message
                else ""
            )
            notice = LINK_NOTICE.format(repo=html.escape(link["repo"]), ref=html.escape(link["ref"])) if link else ""
            return FORM_TEMPLATE.format(
                notice=notice,
                default_image=html.escape(spawner._configured_image),
                invalid=" is-invalid" if message else "",
                error=error,
                repo=html.escape(str(previous.get("repo", "")), quote=True),
                ref=html.escape(str(previous.get("ref", "")), quote=True),
                default_ref=html.escape(spawner.default_ref),
                max_url=contract.MAX_URL_LENGTH,
                max_ref=contract.MAX_REF_LENGTH,
            )

        return form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        def options_from_form(formdata: dict[str, list[str]], spawner: Repo2DockerSpawner) -> dict[str, str]:
            try:
                request = parse_options(formdata, spawner.policy)
            except web.HTTPError as exc:
                spawner._remember_refusal({key: (formdata.get(key) or [""])[0] for key in ("repo", "ref")}, exc)
                raise
            spawner._refused_form = None
            return request.as_user_options() if request else {}

        return options_from_form

    def _remember_refusal(self, typed: dict[str, Any], exc: web.HTTPError) -> None:
        """For the form JupyterHub renders again after a refusal: the fields as typed, the reason."""
        self._refused_form = {key: str(typed.get(key) or "")[: contract.MAX_URL_LENGTH] for key in ("repo", "ref")}
        self._refused_form["error"] = getattr(exc, "jupyterhub_message", None) or exc.log_message or str(exc)
        self._refused_at = time.monotonic()

    def _take_refusal(self) -> dict[str, str] | None:
        """The refusal the form is being rendered for, once. An older one (of a REST request,
        which renders no form) is not this form's."""
        refused, self._refused_form = self._refused_form, None
        return refused if refused and time.monotonic() - self._refused_at < REFUSAL_SHOWN_FOR else None

    def options_from_query(self, query_data: dict[str, Any]) -> dict[str, str]:
        """A link's options: launched at once only for a repository in `autolaunch_repos`;
        otherwise LinkOpensForm, and JupyterHub renders the form, filled in from the link."""
        try:
            request = parse_options(query_data, self.policy)
        except web.HTTPError as exc:
            self._remember_refusal({key: first_value(query_data.get(key)) for key in ("repo", "ref")}, exc)
            raise
        if request and self.autolaunches(request.url):
            return request.as_user_options()
        self._link = request.as_user_options() if request else None
        handler = getattr(self, "handler", None)  # JupyterHub's SpawnHandler, which logs what we raise
        if handler is not None and _LINK_FORM_LOG not in handler.log.filters:
            handler.log.addFilter(_LINK_FORM_LOG)
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

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Any:
        self._build = None
        self._landing = {}
        self._build_ready = asyncio.Event()
        self._stop_waiting = asyncio.Event()
        self._previous, self._use_previous = None, asyncio.Event()
        try:
            request = self.repo_request()
            if request is None:
                self.image = self._configured_image
                self._build_state = {}
            else:
                self.image = await self.build_for(request)
        except web.HTTPError as exc:
            if exc.status_code == 400:  # e.g. a ref the repository does not have: the form shows it
                self._remember_refusal(self.user_options or {}, exc)
            raise
        finally:
            self._build_ready.set()  # progress() must never wait for a start that failed early
        return await super().start()

    async def credential(self, repo: str | RepoUrl) -> CloneCredentials:
        """What this user reads `repo` with: their own token where user_credentials_hosts
        covers it, and the hub's credential for the host (credentials.py)."""

        async def own() -> GitCredential | None:
            return await from_auth_state(
                await self.user.get_auth_state(), self.user_credentials_from_auth_state, self.user_credentials_username
            )

        try:
            table = hub_table(self.repo_credentials, self.repo_credentials_file)
        except (ValueError, OSError) as exc:
            self.log.error("repository credentials: %s", exc)
            raise BuildFailed("This hub's repository credentials could not be read; the admin has been told.") from None
        user = own if self.user_credentials_from_auth_state else None
        return await credential_for(repo, hub=table, user=user, user_hosts=list(self.user_credentials_hosts))

    async def build_for(self, request: RepoRequest) -> str:
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
        spec = self.build_spec(request, commit)
        async with self.build_backend.launch_lock(self.user.name):  # the check and the create as one
            await self._check_build_limit(spec)
            try:
                handle, previous = await self.ensure_build(spec, self.user.name, credential)
            except ForeignBuild as exc:  # the backend logged it for the admin
                raise conflict(str(exc)) from None
            except Exception as exc:
                self.log.exception("%s: could not start a build of %s", self._log_name, request.repo)
                raise BuildFailed(f"Could not start the image build: {self.build_backend.describe_error(exc)}") from exc
        self._build_state = {
            "build": handle.name,
            "namespace": handle.namespace,
            "repo": request.repo,
            "ref": request.ref,
            "commit": commit,
            "image": spec.image,
        }
        self.log.info(
            "%s: build %s/%s for %s@%s", self._log_name, handle.namespace, handle.name, request.repo, commit[:12]
        )
        if handle.current().phase != Phase.SUCCEEDED and self.offer_previous_build:
            self._previous = previous
        if self._previous is not None and asks_for_previous(self.user_options):
            return self._start_previous("asked for with previous_ok")  # the build goes on, for the next launch
        self._build = handle
        self._build_ready.set()
        async with self.build_backend.waiting_for(handle):
            status = await self._wait_for_build(handle)
        if status is None:
            return self._start_previous("chosen on the pending page")
        if status.phase != Phase.SUCCEEDED:
            instead = (
                (
                    f"\nThe previous version (commit {self._previous.commit[:7]}) can start instead: "
                    f"'Start the previous version now' above, or previous_ok."
                )
                if self._previous
                else ""
            )
            raise BuildFailed(
                f"The image build {status.phase.value.lower()}: {status.message or 'no details'}{instead}"
            )
        return spec.image  # the image this hub derived, never a name read back from a status

    async def ensure_build(
        self, spec: BuildSpec, requested_by: str, credential: CloneCredentials | None
    ) -> tuple[BuildHandle, BuildRecord | None]:
        """The build of `spec` (started, joined or done), as a launch and a prebuild ask for it,
        and the previous build of its repository and ref: what it replaces (recorded on a new
        build) and may be offered while it builds. The previous one is not looked up for a
        commit whose image is on the daemon already, the common launch."""
        backend = self.build_backend
        previous = (
            None
            if await self._image_on_daemon(spec.image)
            else await backend.previous_build(spec.repo_url, spec.ref, spec.commit)
        )
        replaces = previous.commit if previous else ""
        handle = await backend.ensure(spec, requested_by=requested_by, credential=credential, replaces=replaces)
        if handle.current().phase == Phase.SUCCEEDED and not await self._image_available(spec.image):
            # The build's record outlived its image (garbage-collected, or removed by hand on
            # the daemon): build it again rather than fail the server's start.
            self.log.info("image %s of build %s is gone; building it again", spec.image, handle.name)
            handle = await backend.ensure(
                spec, requested_by=requested_by, image_gone=True, credential=credential, replaces=replaces
            )
        return handle, previous

    def _start_previous(self, why: str) -> str:
        previous = self._previous
        self.log.info(
            "%s: starting the previous build %s of %s (%s) while %s builds",
            self._log_name,
            previous.name,
            previous.repo_url,
            why,
            self._build_state["commit"][:12],
        )
        self._build_state.update(
            {"image": previous.image, "commit": previous.commit, "building": self._build_state["commit"]}
        )
        self._build_ready.set()
        return previous.image  # derived by this hub when it was built: a record of its own backend

    async def _check_build_limit(self, spec: BuildSpec) -> None:
        """Refuse (429) a launch that would start a build beyond per_user_build_limit. Joining
        a build under way (anyone's) starts nothing and is never refused."""
        if self.per_user_build_limit <= 0 or await self.build_backend.under_way(spec.name):
            return
        mine = [r for r in await self.build_backend.unfinished_of(self.user.name) if r.name != spec.name]
        if len(mine) < self.per_user_build_limit:
            return
        listed = ", ".join(f"{r.repo_url} at {r.commit[:7]} ({r.phase.value.lower()})" for r in mine)
        raise bad_request(
            f"You already have {len(mine)} builds waiting or running: {listed}. Launch one of "
            f"these, or try again once one has finished.",
            429,
        )

    async def _image_on_daemon(self, image: str) -> bool:
        try:
            await self.docker("inspect_image", image)
            return True
        except docker.errors.ImageNotFound:
            return False

    async def _image_available(self, image: str) -> bool:
        """Whether DockerSpawner can start `image`: on its daemon, or in a registry to pull from
        (images under a prefix that names one were pushed there)."""
        return await self._image_on_daemon(image) or contract.prefix_names_registry(image)

    async def _wait_for_build(self, handle: BuildHandle) -> BuildStatus | None:
        """The build's last status, or None when the user chose the previous build instead."""

        async def last_status() -> BuildStatus:
            status = handle.current()
            async for status in handle.statuses():  # noqa: B007 - the last one is the answer
                pass
            return status

        waiting = asyncio.ensure_future(last_status())
        stopping = asyncio.ensure_future(self._stop_waiting.wait())
        previous = asyncio.ensure_future(self._use_previous.wait())
        try:
            done, _ = await asyncio.wait({waiting, stopping, previous}, return_when=asyncio.FIRST_COMPLETED)
            if waiting in done:
                return waiting.result()
            if previous in done:
                return None
            # The user stopped the pending spawn. The build itself goes on: others may be
            # waiting for it, and the next start of this commit will find it done or running.
            raise BuildFailed("The spawn was stopped while the image was building; the build continues.")
        finally:
            for task in (waiting, stopping, previous):
                task.cancel()

    # ---- the repository in a persistent home (homes.py) ---------------------------------

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env.update(self._landing)
        return env

    async def create_object(self) -> Any:
        """DockerSpawner's create (which fills a new volume from the image, as Docker does),
        then the volumes made usable: new ones inside the home given to the user, and, when a
        volume holds the home, the repository's files copied into it."""
        if not self._build_state.get("repo"):
            return await super().create_object()
        config = (await self.docker("inspect_image", self.image))["Config"]
        mounted = server_mounts(self.volume_binds, self.mount_binds)
        new = [m for m in mounted if not m.source.startswith("/") and not await self._volume_exists(m.source)]
        plan = plan_copy(config, mounted, self._build_state["repo"])
        if plan is not None:
            self._land_in(plan)
        created = await super().create_object()
        ids = await self._server_ids(config)
        fix = owner_fix(config, new, ids.uid, ids.gid) if ids is not None else None
        if fix is not None:
            await self._give_to_user(fix)
        if plan is None or ids is None:
            return created
        if ids.root:
            self.log.warning(
                "%s: %s is not copied into the home: its server runs as root, and helpers never run "
                "a launched image as root",
                self._log_name,
                plan.repo_url,
            )
            return created
        chosen = await self.copy_repository(plan, ids)
        if chosen is not None and chosen != plan.name:
            # The folder named after the repository holds other files: the copy went to the
            # other name, and the server must open that one (its environment is set at create).
            self._land_in(plan, chosen)
            await self.docker("remove_container", created["Id"], v=True, force=True)
            created = await super().create_object()
        return created

    async def _volume_exists(self, name: str) -> bool:
        try:
            await self.docker("inspect_volume", name)
            return True
        except docker.errors.NotFound:
            return False

    async def _server_ids(self, image_config: dict[str, Any]) -> UserIds | None:
        """The uid and gid the server runs as: the admin's `extra_create_kwargs["user"]`, else
        the image's USER, resolved as Docker resolves it (the image's /etc/passwd, read
        without running the image). None when the image does not know the user."""
        extra = self._eval_if_callable(self.extra_create_kwargs)
        if inspect.isawaitable(extra):
            extra = await extra
        spec = str((extra or {}).get("user") or image_config.get("User") or "")
        uid, _, gid = spec.partition(":")
        numbers = uid.isdigit() and gid.isdigit()  # anything else is looked up as Docker would
        ids = resolve_user(spec, {} if numbers else await image_passwd(self.docker, self.image))
        if ids is None:
            self.log.warning(
                "%s: the image %s has no user %r; its volumes are left as they are", self._log_name, self.image, spec
            )
        return ids

    def _land_in(self, plan: CopyPlan, chosen: str | None = None) -> None:
        """Open JupyterLab in the copied folder, with the home as its root (unless the admin
        chose either): buildpack images start in their repository directory otherwise."""
        root = self.format_string(self.notebook_dir) if self.notebook_dir else plan.parent
        self._landing = {} if self.notebook_dir else {"JUPYTERHUB_ROOT_DIR": root}
        url = landing_url(plan.folder(chosen), root)
        if url and not self.default_url:
            self._landing["JUPYTERHUB_DEFAULT_URL"] = url

    async def _give_to_user(self, fix: OwnerFix) -> None:
        """The one step that needs root: in the trusted helper image, never the launched one."""
        exit_code, output = await self.run_helper(
            "owner",
            fix.helper_command(),
            fix.helper_binds(),
            UserIds(0, 0),
            image=self.helper_image or self._configured_image,
            privileged_step=True,
        )
        if exit_code != 0:
            self.log.warning(
                "%s: could not give the new volumes %s to %s (exit %s): %s",
                self._log_name,
                [m.source for m in fix.volumes],
                fix.owner,
                exit_code,
                output.strip()[-500:],
            )

    async def copy_repository(self, plan: CopyPlan, ids: UserIds) -> str | None:
        """Copy the repository into the volume, as the server's user; return the folder the
        copy chose (None if it copied nothing). A failed copy is logged and the server starts
        anyway: the repository is still in the image, at its directory."""
        exit_code, output = await self.run_helper(
            "copy", plan.helper_command(), {plan.mount.source: VOLUME_IN_HELPER}, ids, image=self.image
        )
        if exit_code != 0:
            self.log.warning(
                "%s: copying %s into the home failed (exit %s): %s",
                self._log_name,
                plan.repo_url,
                exit_code,
                output.strip()[-500:],
            )
            return None
        into = [line for line in output.splitlines() if line.startswith("r2d-copy: into ")]
        if not into:
            return None
        chosen = into[-1].rsplit("/", 1)[-1]
        self.log.info("%s: %s copied into %s", self._log_name, plan.repo_url, plan.folder(chosen))
        return chosen

    async def run_helper(
        self,
        role: str,
        argv: list[str],
        binds: dict[str, str],
        user: UserIds,
        *,
        image: str,
        privileged_step: bool = False,
    ) -> tuple[int, str]:
        """Run `argv` in a short-lived helper container (helpers.py) under this server's
        container policy, without network, with `binds` ({volume: path})."""
        if user.root and not privileged_step:
            raise ValueError("a helper of the launched image never runs as root")
        extra = self._eval_if_callable(self.extra_host_config)
        if inspect.isawaitable(extra):
            extra = await extra
        policy = ServerPolicy(
            extra_host_config=self._render_templates(extra or {}),
            mem_limit=self.mem_limit,
            cpu_limit=self.cpu_limit,
            timeout=self.helper_timeout,
        )
        return await run_helper(
            self.docker,
            self.client,
            name=f"{self.container_name}-{role}",
            image=image,
            argv=argv,
            binds=binds,
            user=user,
            policy=policy,
            role=role,
            privileged_step=privileged_step,
        )

    async def stop(self, now: bool = False) -> None:
        self._stop_waiting.set()
        await super().stop(now=now)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        await self._build_ready.wait()
        if self._build is None:
            return
        if self._previous is not None:
            yield offer_event(
                self._previous, f"{self.hub.base_url}repo2docker/previous/{quote(self.user.name)}/{quote(self.name)}"
            )
        async for event in progress_events(self._build):
            yield event

    def use_previous(self) -> bool:
        """The user chose the offered previous build (previous.py): start it; whether one was offered."""
        if self._previous is None or self._build is None:
            return False
        self._use_previous.set()
        return True

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


# Packages whose module loggers write what the backends do: build outcomes, adopted builds,
# image removals. JupyterHub configures only its own logger (and hooks tornado's into it).
LOGGED_PACKAGES = ("repo2dockerspawner", "repo2docker_buildcore")


def join_hub_log(hub_log: logging.Logger) -> None:
    """Send our packages' log lines through the hub's logger, its handlers, format and level,
    as JupyterHub does with tornado's: without it an INFO line such as 'removed image …' goes
    nowhere (Python's last-resort handler prints warnings only, unformatted)."""
    for name in LOGGED_PACKAGES:
        logger = logging.getLogger(name)
        if logger.parent is not hub_log and hub_log.name != name:
            logger.parent = hub_log
            logger.propagate = True


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
