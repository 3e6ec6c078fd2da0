"""The interface every build backend implements, and the builds page's actions, once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from traitlets import Float
from traitlets.config import LoggingConfigurable

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildSpec, Phase
from repo2docker_buildcore.gitcredentials import CloneCredentials
from repo2docker_buildcore.settings import setting

from .records import ActionRefused, BuildHandle, BuildRecord, Known


class BuildBackend(LoggingConfigurable):
    """The interface the spawner uses; subclasses add their settings as traits.

    The builds page's actions are here, once; a backend supplies three hooks: `_known` (a
    build's spec and phase), `_stop` (end a queued or running build, as a deleted resource
    would) and `_forget_built` (a succeeded build whose image was removed: the next request
    must build again), and its Docker daemon's `image_store` with `image_facts`."""

    image_store = None  # ImageStore of the hub's Docker daemon, where it has one
    image_facts = None  # ImageFacts over it, for the builds page

    abandoned_after = Float(
        60.0,
        config=True,
        help="""Seconds a queued build may wait once nobody waits for it (every launch that asked
        for it was stopped, and no other joined) before this hub withdraws it, freeing the queue
        for builds somebody wants. Running builds always finish: their image and cache are
        worth it. Negative: never withdraw.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Launches of this hub process waiting for each build, by (namespace, name, uid).
        self._waiters: collections.Counter = collections.Counter()
        self._abandoned: set[asyncio.Task] = set()
        self._launch_locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    def launch_lock(self, user: str) -> asyncio.Lock:
        """Held while one of `user`'s launches checks their build limit and asks for its build:
        their other launches (named servers) wait, so N at once cannot all pass the check."""
        return self._launch_locks[user]

    @contextlib.asynccontextmanager
    async def waiting_for(self, handle: BuildHandle) -> AsyncIterator[None]:
        """A launch waits for `handle` while in this block; the last to leave a build that is
        still queued leaves it to be withdrawn after `abandoned_after` seconds."""
        key = (handle.namespace, handle.name, handle.uid)
        self._waiters[key] += 1
        try:
            yield
        finally:
            self._waiters[key] -= 1
            if self._waiters[key] <= 0:
                del self._waiters[key]
                if self.abandoned_after >= 0 and not handle.current().phase.terminal:
                    task = asyncio.ensure_future(self._withdraw_later(handle, key))
                    self._abandoned.add(task)
                    task.add_done_callback(self._abandoned.discard)

    async def _withdraw_later(self, handle: BuildHandle, key: tuple[str, str, str]) -> None:
        await asyncio.sleep(self.abandoned_after)
        if key in self._waiters:  # somebody joined meanwhile
            return
        try:
            if await self._withdraw_if_queued(handle):
                self.log.info(
                    "withdrew build %s/%s: still queued %.0f s after the last launch waiting for it stopped",
                    handle.namespace,
                    handle.name,
                    self.abandoned_after,
                )
        except Exception as exc:  # noqa: BLE001 - it then simply runs when its turn comes
            self.log.warning("could not withdraw build %s/%s: %s", handle.namespace, handle.name, exc)

    async def _withdraw_if_queued(self, handle: BuildHandle) -> bool:
        """End `handle`'s build if it has not started (a running one is left alone); whether it did."""
        return False

    def longest_build(self) -> float:
        """Seconds a build may take here; the spawner waits that long (and a little more)."""
        return setting("build_timeout").default

    def build_resources(self) -> dict[str, Any]:
        """BuildSpec fields this backend sets itself (e.g. memory and CPU limits)."""
        return {}

    async def ensure(
        self,
        spec: BuildSpec,
        requested_by: str = "",
        image_gone: bool = False,
        credential: CloneCredentials | None = None,
        replaces: str = "",
    ) -> BuildHandle:
        """Start the build for `spec`, or join the one that exists. With `image_gone` (the
        caller found a succeeded build's image missing) a succeeded build is replaced too.
        `replaces`: the commit the ref pointed to before, recorded on a build this call starts.
        `credential`: what a build this call starts clones with (a user's own token for the
        repository only, where it is private; the hub's for its host)."""
        raise NotImplementedError

    def check_image_prefix(self, prefix: str) -> None:
        """Refuse (TraitError) an image prefix this backend cannot build under."""

    def start_image_gc(self, prefix: str) -> None:
        """Remove unused built images under `prefix` when storage runs high, where this backend
        is the one that builds (the operator does it for its own node)."""

    # ---- the admin builds page --------------------------------------------------------------

    async def list_builds(self) -> list[BuildRecord]:
        """Every build this backend knows, newest first."""
        return []

    async def get_build(self, namespace: str, name: str, details: bool = True) -> BuildRecord | None:
        """One build with its log tail; with `details` also its events, image size and last use
        (which ask the Docker daemon and the API: not for a page polling every second)."""
        return None

    async def previous_build(self, repo: str, ref: str, commit: str) -> BuildRecord | None:
        """The newest succeeded build of `repo` at `ref` other than `commit` whose image is still
        there (on this hub's daemon, or in the registry its name points to): what a launch may
        start while `commit` builds."""
        key = contract.normalize_repo_url(repo)
        candidates = [
            r
            for r in await self.list_builds()
            if r.phase == Phase.SUCCEEDED
            and r.ref == ref
            and r.commit != commit
            and contract.normalize_repo_url(r.repo_url) == key
            and (r.image_size is not None or contract.prefix_names_registry(r.image))
        ]
        return max(candidates, key=lambda r: r.completed or 0, default=None)

    async def unfinished_of(self, requested_by: str) -> list[BuildRecord]:
        """The queued or running builds `requested_by` asked for (without image facts: cheap)."""
        return []

    async def under_way(self, name: str) -> bool:
        """Whether a queued or running build of this name exists, whoever asked for it: a
        launch joins it and starts nothing."""
        return False

    async def _known(self, namespace: str, name: str) -> Known | None:
        return None

    async def _stop(self, namespace: str, name: str) -> None:
        raise ActionRefused("this backend cannot cancel builds")

    async def _forget_built(self, namespace: str, name: str, tags: tuple[str, ...]) -> None:
        """Forget what a succeeded build of a removed image left (nothing, by default)."""

    async def _require(self, namespace: str, name: str) -> Known:
        known = await self._known(namespace, name)
        if known is None:
            raise ActionRefused(f"There is no build {namespace}/{name}.")
        return known

    async def cancel(self, namespace: str, name: str) -> None:
        """Stop a queued or running build (its container is killed)."""
        if (await self._require(namespace, name)).phase.terminal:
            raise ActionRefused("Only a queued or running build can be cancelled.")
        await self._stop(namespace, name)

    async def rebuild(self, namespace: str, name: str, requested_by: str) -> None:
        """Build a failed or cancelled build again (as a request would: it replaces it)."""
        known = await self._require(namespace, name)
        if known.phase not in (Phase.FAILED, Phase.CANCELLED):
            raise ActionRefused("Only a failed or cancelled build can be built again.")
        await self.ensure(known.spec, requested_by=requested_by)

    async def delete_image(self, namespace: str, name: str) -> None:
        """Remove a succeeded build's image, under the rules of `remove_built_image`, and
        forget the build, so that its next request builds again."""
        from .images import remove_built_image

        known = await self._require(namespace, name)
        info = await remove_built_image(self.image_store, known.spec.image, known.phase)
        self.log.info("image %s of build %s/%s removed by an admin", known.spec.image, namespace, name)
        if self.image_facts is not None:
            self.image_facts.invalidate()
        await self._forget_built(namespace, name, info.tags)

    def describe_error(self, exc: Exception) -> str:
        """One line for a user about a failure to start a build."""
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    async def close(self) -> None:
        """Stop following builds; builds themselves go on (subclasses call this first)."""
        for task in list(self._abandoned):
            task.cancel()  # those builds run when their turn comes
