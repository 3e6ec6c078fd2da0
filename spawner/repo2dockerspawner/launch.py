"""One start's build: ref → spec → limit → ensure → wait, and what the user may choose meanwhile.

A `Launch` is made for each `start()` of a server, so nothing of a previous start (its build,
its offer of the previous version, a stop that ended its wait) can leak into the next one, and
no field is reset by hand. `ensure_build` is the one way a build is asked for: a launch and a
prebuild (hub/prebuilder.py) take it alike, so a prebuild names the very build a launch joins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildSpec, BuildStatus, Phase
from repo2docker_buildcore.gitcredentials import CloneCredentials

from .backends import BuildBackend, BuildHandle, BuildRecord, ForeignBuild
from .errors import BuildFailed
from .options import RepoRequest, bad_request, conflict
from .progress import offer_event, progress_events

# Whether an image is on the daemon that starts servers.
OnDaemon = Callable[[str], Awaitable[bool]]


async def ensure_build(
    backend: BuildBackend,
    spec: BuildSpec,
    requested_by: str,
    credential: CloneCredentials | None,
    on_daemon: OnDaemon,
    log: logging.Logger | logging.LoggerAdapter,
) -> tuple[BuildHandle, BuildRecord | None]:
    """The build of `spec` (started, joined or done), as a launch and a prebuild ask for it,
    and the previous build of its repository and ref: what it replaces (recorded on a new
    build) and may be offered while it builds. The previous one is not looked up for a
    commit whose image is on the daemon already, the common launch."""
    previous = (
        None if await on_daemon(spec.image) else await backend.previous_build(spec.repo_url, spec.ref, spec.commit)
    )
    replaces = previous.commit if previous else ""
    handle = await backend.ensure(spec, requested_by=requested_by, credential=credential, replaces=replaces)
    if handle.current().phase == Phase.SUCCEEDED and not (
        await on_daemon(spec.image) or contract.prefix_names_registry(spec.image)
    ):
        # The build's record outlived its image (garbage-collected, or removed by hand on the
        # daemon): build it again rather than fail the server's start. An image under a prefix
        # that names a registry was pushed there, and DockerSpawner pulls it.
        log.info("image %s of build %s is gone; building it again", spec.image, handle.name)
        handle = await backend.ensure(
            spec, requested_by=requested_by, image_gone=True, credential=credential, replaces=replaces
        )
    return handle, previous


@dataclass(frozen=True)
class LaunchRules:
    """The spawner's settings a launch follows."""

    per_user_build_limit: int
    offer_previous: bool


class Launch:
    """The build of one start of one server, and the pending page's view of it."""

    def __init__(
        self,
        backend: BuildBackend,
        user: str,
        rules: LaunchRules,
        on_daemon: OnDaemon,
        log: logging.Logger | logging.LoggerAdapter,
        log_name: str,
    ) -> None:
        self.backend, self.user, self.rules = backend, user, rules
        self.on_daemon, self.log, self.log_name = on_daemon, log, log_name
        self.build: BuildHandle | None = None  # what the pending page follows
        self.ready = asyncio.Event()  # set once `build` is known, or the start ended without one
        self.previous: BuildRecord | None = None  # what this launch may start instead
        self.state: dict[str, Any] = {}  # the spawner's state of this launch's build
        self._stopped = asyncio.Event()
        self._previous_chosen = asyncio.Event()

    async def run(self, request: RepoRequest, spec: BuildSpec, credential: CloneCredentials, previous_ok: bool) -> str:
        """Build (or join, or reuse) `spec` and return the image to start: the one this hub
        derived, never a name read back from a status; or the previous version's, when the
        user asked for it up front (`previous_ok`) or chose it on the pending page."""
        async with self.backend.launch_lock(self.user):  # the check and the create as one
            await self.check_build_limit(spec)
            try:
                handle, previous = await ensure_build(
                    self.backend, spec, self.user, credential, self.on_daemon, self.log
                )
            except ForeignBuild as exc:  # the backend logged it for the admin
                raise conflict(str(exc)) from None
            except Exception as exc:
                self.log.exception("%s: could not start a build of %s", self.log_name, request.repo)
                raise BuildFailed(f"Could not start the image build: {self.backend.describe_error(exc)}") from exc
        self.state = {
            "build": handle.name,
            "namespace": handle.namespace,
            "repo": request.repo,
            "ref": request.ref,
            "commit": spec.commit,
            "image": spec.image,
        }
        self.log.info(
            "%s: build %s/%s for %s@%s", self.log_name, handle.namespace, handle.name, request.repo, spec.commit[:12]
        )
        if handle.current().phase != Phase.SUCCEEDED and self.rules.offer_previous:
            self.previous = previous
        if self.previous is not None and previous_ok:
            return self._start_previous("asked for with previous_ok")  # the build goes on, for the next launch
        self.build = handle
        self.ready.set()
        async with self.backend.waiting_for(handle):
            status = await self._wait(handle)
        if status is None:
            return self._start_previous("chosen on the pending page")
        if status.phase != Phase.SUCCEEDED:
            instead = (
                f"\nThe previous version (commit {self.previous.commit[:7]}) can start instead: "
                f"'Start the previous version now' above, or previous_ok."
                if self.previous
                else ""
            )
            raise BuildFailed(
                f"The image build {status.phase.value.lower()}: {status.message or 'no details'}{instead}"
            )
        return spec.image

    async def check_build_limit(self, spec: BuildSpec) -> None:
        """Refuse (429) a launch that would start a build beyond per_user_build_limit. Joining
        a build under way (anyone's) starts nothing and is never refused."""
        limit = self.rules.per_user_build_limit
        if limit <= 0 or await self.backend.under_way(spec.name):
            return
        mine = [r for r in await self.backend.unfinished_of(self.user) if r.name != spec.name]
        if len(mine) < limit:
            return
        listed = ", ".join(f"{r.repo_url} at {r.commit[:7]} ({r.phase.value.lower()})" for r in mine)
        raise bad_request(
            f"You already have {len(mine)} builds waiting or running: {listed}. Launch one of "
            f"these, or try again once one has finished.",
            429,
        )

    def choose_previous(self) -> bool:
        """The user chose the offered previous build: start it; whether one was offered to a
        launch that is waiting for its build."""
        if self.previous is None or self.build is None:
            return False
        self._previous_chosen.set()
        return True

    def stop(self) -> None:
        """The user stopped the pending spawn: end the wait (the build itself goes on)."""
        self._stopped.set()

    def finished(self) -> None:
        """The start ended (with or without a build): the pending page must never wait for it."""
        self.ready.set()

    async def events(self, offer_url: str) -> AsyncIterator[dict[str, Any]]:
        """The pending page's progress events: the offer of the previous version, then the build's."""
        await self.ready.wait()
        if self.build is None:
            return
        if self.previous is not None:
            yield offer_event(self.previous, offer_url)
        async for event in progress_events(self.build):
            yield event

    def _start_previous(self, why: str) -> str:
        previous = self.previous
        self.log.info(
            "%s: starting the previous build %s of %s (%s) while %s builds",
            self.log_name,
            previous.name,
            previous.repo_url,
            why,
            self.state["commit"][:12],
        )
        self.state.update({"image": previous.image, "commit": previous.commit, "building": self.state["commit"]})
        self.ready.set()
        return previous.image  # derived by this hub when it was built: a record of its own backend

    async def _wait(self, handle: BuildHandle) -> BuildStatus | None:
        """The build's last status, or None when the user chose the previous build instead."""

        async def last_status() -> BuildStatus:
            status = handle.current()
            async for status in handle.statuses():  # noqa: B007 - the last one is the answer
                pass
            return status

        waiting = asyncio.ensure_future(last_status())
        stopping = asyncio.ensure_future(self._stopped.wait())
        previous = asyncio.ensure_future(self._previous_chosen.wait())
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
