"""Prebuilds: the hub builds the new commits of watched branches before anybody launches them.

A course repository pushed the night before a lecture is built by the morning, so its first
student does not wait for the build. Each watched repository is resolved every
`Repo2DockerHub.prebuild_interval` seconds (one ref listing for all its refs) and on a signed webhook; a new
commit is asked of the backend exactly as a launch would ask (same resource, same dedup, same
queue), with the hub itself (PREBUILD_REQUESTER) as requester, so it waits behind every
user's launch and a launch that joins it takes its place in the queue.

Why the hub rather than the operator: the hub owns the allow-lists, the credentials its
lookups use and the naming of images (prefix, repository directory); a prebuild must name
the very image a launch will ask for, or it would build something nobody starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tornado import web

from repo2docker_buildcore import contract, repourl
from repo2docker_buildcore.contract import PREBUILD_REQUESTER, Phase

from ..credentials import credential_for, hub_table
from ..options import RepoRequest
from ..prebuilds import WatchedRepo
from ..refs import LookupLimits, resolve_refs

if TYPE_CHECKING:
    from ..spawner import Repo2DockerSpawner

log = logging.getLogger(__name__)
# Seconds from the start of one resolution of a repository to the next: what arrives in
# between (a flood of webhook deliveries, a timer tick) is one more resolution at its end.
COALESCE = 2.0


@dataclass
class RefState:
    """What the builds page shows of one watched ref."""

    commit: str | None = None
    handle: Any = None  # the BuildHandle of `commit`'s build
    resolved_at: float | None = None
    error: str = ""

    @property
    def build(self) -> str | None:
        return f"{self.handle.namespace}/{self.handle.name}" if self.handle is not None else None

    @property
    def phase(self) -> Phase | None:
        return self.handle.current().phase if self.handle is not None else None


@dataclass
class RepoState:
    refs: dict[str, RefState] = field(default_factory=dict)
    resolutions: int = 0  # ref listings made for this repository
    error: str = ""


# What the prebuilder calls to resolve one repository and ask for its builds (PrebuildResolver).
Resolve = Callable[[WatchedRepo, "RepoState"], Awaitable[None]]


class Prebuilder:
    """Resolves the watched repositories on a timer and on webhooks; asks for their builds.

    A burst of webhook deliveries for one repository costs at most two resolutions: the first
    at once, and one COALESCE seconds after it for everything that arrived meanwhile (a push
    may have landed after the first listing began)."""

    def __init__(self, watched: tuple[WatchedRepo, ...], interval: float, resolve: Resolve) -> None:
        self.resolve = resolve
        self.watched = {repo.key: repo for repo in watched}
        self.interval = interval
        self.state = {key: RepoState({ref: RefState() for ref in repo.refs}) for key, repo in self.watched.items()}
        self._running: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()
        self._last: dict[str, float] = {}  # repository -> when its last resolution began (monotonic)
        self._poller: asyncio.Task | None = None

    def find(self, url: str) -> WatchedRepo | None:
        try:
            return self.watched.get(contract.normalize_repo_url(url))
        except ValueError:
            return None

    def start(self) -> None:
        if self._poller is None and self.watched:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="prebuild watched repositories")
            log.info(
                "prebuilds: watching %s every %.0f s",
                ", ".join(f"{r.repo} ({', '.join(r.refs)})" for r in self.watched.values()),
                self.interval,
            )

    async def _poll(self) -> None:
        while True:
            for repo in self.watched.values():
                self.trigger(repo)
            await asyncio.sleep(self.interval)

    def trigger(self, repo: WatchedRepo) -> asyncio.Task:
        """Resolve `repo` now, or once more after the resolution under way."""
        running = self._running.get(repo.key)
        if running is not None and not running.done():
            self._again.add(repo.key)
            return running
        task = self._running[repo.key] = asyncio.get_running_loop().create_task(
            self._resolve_until_settled(repo), name=f"prebuild {repo.repo}"
        )
        return task

    async def _resolve_until_settled(self, repo: WatchedRepo) -> None:
        while True:
            wait = self._last.get(repo.key, float("-inf")) + COALESCE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._again.discard(repo.key)
            self._last[repo.key] = time.monotonic()
            try:
                await self.resolve(repo, self.state[repo.key])
            except Exception:  # noqa: BLE001 - the next trigger tries again
                log.exception("prebuilds: resolving %s failed", repo.repo)
            if repo.key not in self._again:
                return


class PrebuildResolver:
    """Resolves a watched repository through the hub's own spawner: its allow-lists, the hub's
    credentials (a prebuild is nobody's launch), its image naming and `ensure_build`, so a
    prebuild names the very build a launch of that commit joins."""

    def __init__(self, spawner: Repo2DockerSpawner) -> None:
        self.spawner = spawner

    async def __call__(self, repo: WatchedRepo, state: RepoState) -> None:
        """List the refs of `repo` once; ask for the build of each ref's new commit."""
        spawner = self.spawner
        # The hub's own credentials only: a prebuild is nobody's launch.
        table = hub_table(spawner.repo_credentials, spawner.repo_credentials_file)
        credential = await credential_for(repo.repo, hub=table, user=None, user_hosts=[])
        state.resolutions += 1
        try:
            commits = await resolve_refs(
                repo.repo,
                repo.refs,
                spawner.policy,
                LookupLimits(timeout=spawner.ref_resolve_timeout),
                credential=credential.host,
            )
        except web.HTTPError as exc:
            state.error = getattr(exc, "jupyterhub_message", None) or str(exc)
            log.warning("prebuilds: %s", state.error)
            return
        state.error = ""
        for ref, commit in commits.items():
            try:
                await self._build(repo, ref, commit, state.refs[ref], credential)
            except Exception as exc:  # noqa: BLE001 - the other refs go ahead; the builds page says why
                state.refs[ref].error = f"could not start its build: {spawner.build_backend.describe_error(exc)}"
                log.warning("prebuilds: %s %s: %s", repo.repo, ref, state.refs[ref].error)

    async def _build(self, repo: WatchedRepo, ref: str, commit: str | None, ref_state: RefState, credential) -> None:
        ref_state.resolved_at = time.time()
        if commit is None:
            ref_state.error = f"{ref} was not found in the repository"
            return
        ref_state.error = ""
        if commit == ref_state.commit:
            return  # asked for already (a broken commit is not retried here: a launch retries it)
        spec = self.spawner.build_spec(RepoRequest(repourl.parse(repo.repo), ref), commit)
        handle, _previous = await self.spawner.ensure_build(spec, PREBUILD_REQUESTER, credential)
        log.info(
            "prebuilds: %s %s is at %s: build %s/%s (%s)",
            repo.repo,
            ref,
            commit[:12],
            handle.namespace,
            handle.name,
            handle.current().phase.value.lower(),
        )
        ref_state.commit, ref_state.handle = commit, handle
