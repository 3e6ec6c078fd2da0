"""One build from request to image: queue, container, logs, outcome.

The same job runs in the operator (status goes to the resource) and in the hub's embedded
backend (status goes to memory); only the ``StatusPublisher`` behind it differs. The rules
live here once:

* an image that already exists is a success without a build; with push on, "exists" means
  in the registry: a local image that is missing there is pushed, not rebuilt, and one in the
  registry needs no local copy (servers pull it);
* a build container found for the resource is re-attached, never started twice;
* a success needs exit code 0 *and* the image in the daemon (with push: in the registry);
* a setting the build image's repo2docker cannot honour fails the build before it queues;
* the timeout counts from the recorded start, so a restart does not reset it;
* cancelling kills the container only when the build itself is cancelled (``kill=True``);
  an operator that merely exits leaves it running for its successor to re-attach;
* a build that failed because Docker went away still removes its container once Docker
  answers again, so exited build containers do not pile up;
* the slot is free the moment the build container has exited, before the wrap-up;
* a build that waits among the next ones to get a slot has its container created ahead
  (``prepare_next``) and, nobody else being able to take it, is claimed then too, so a freed
  slot only starts it; only while no other builder is alive: with several, a container is
  made only on the node whose claim won (one made ahead before another builder appeared is
  removed if that one wins the claim).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .backoff import Backoff, retry
from .contract import BuildSpec, Phase, registry_of
from .daemon_images import registry_refused
from .docker_api import RegistryUnavailable, RunnerError
from .gitcredentials import CloneCredentials
from .livelog import readable_lines
from .logtail import BuildOutput, LogTail
from .queue import BuildQueue
from .runner import BuildContainer, BuildRef, BuildRunner
from .settings import setting
from .status import StatusPublisher, failure_message, now_iso, parse_iso

log = logging.getLogger(__name__)
ALREADY_BUILT = "The image already exists; no build was needed."
ALREADY_PUSHED = "The image is already in the registry; no build was needed."
PUSHED_EXISTING = "The image existed locally and was pushed to the registry; no build was needed."
# Seconds between checks of a registry that cannot be reached (the last one repeats).
REGISTRY_BACKOFF = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
# Seconds between attempts to remove the container of a build that failed because Docker did
# not answer (the last one repeats), and how long to keep trying.
CLEANUP_BACKOFF = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
CLEANUP_FOR = 3600.0
# Seconds between looks at a queued build's wait estimate: running builds that take longer
# than expected push it back, and nothing else would say so. Written when it moved this much.
ESTIMATE_REFRESH = 20.0
# Seconds between looks at whether a build next in line may have its container made ahead now
# (with claims: once this builder is alone, which it cannot tell in its first moments).
PREPARE_RECHECK = 1.0
# Clean-ups under way: a task nobody references may be collected before it runs.
_cleanups: set[asyncio.Task] = set()


async def no_build_needed(runner: BuildRunner, image: str, burst: bool = False) -> str | None:
    """Why a build of `image` is not needed, from one look (the daemon's image, or with push
    the registry's tag), else None. For a new resource, before anything is queued: most
    requests name an image that exists, and those must cost no more than this look. What
    takes longer (pushing a local image the registry lacks, a registry that does not answer)
    is left to the build's own job, which says so in its status. `burst`: one of many
    questions at once (new resources), answered from a shared listing of the daemon's tags."""
    if not runner.config.push:
        images = runner.images
        exists = await (images.image_exists_in_burst(image) if burst else images.image_exists(image))
        return ALREADY_BUILT if exists else None
    try:
        return ALREADY_PUSHED if await runner.images.registry_has(image) else None
    except RunnerError:
        return None


class ClaimLost(Exception):
    """Another builder holds this build: this one stops wanting it and writes nothing more."""

    def __init__(self, holder: str | None) -> None:
        super().__init__(f"the build is held by {holder or 'nobody'}")
        self.holder = holder


@dataclass(frozen=True)
class BuildSettings:
    build_timeout: float = setting("build_timeout").default
    tail_lines: int = setting("tail_lines").default
    tail_bytes: int = setting("tail_bytes").default
    prepare_next: bool = setting("prepare_next").default


@dataclass
class BuildOutcome:
    phase: Phase
    message: str
    image: str | None = None
    duration: float | None = None
    cached: bool = False


@dataclass
class BuildJob:
    runner: BuildRunner
    queue: BuildQueue
    ref: BuildRef
    spec: BuildSpec
    publisher: StatusPublisher
    settings: BuildSettings = field(default_factory=BuildSettings)
    order: tuple = ()
    # Whose build it is (the user recorded on the resource): the queue is fair between them.
    requester: str = ""
    # From the resource's status when re-attaching after a restart.
    recorded_start: str | None = None
    on_phase: Callable[[Phase, str], None] | None = None
    # For a private repository: what git in the build container clones with (never logged).
    credential: CloneCredentials | None = field(default=None, repr=False)
    # With several builders: claims the build once a slot is free here, returning the builder
    # that holds it afterwards (this one's name, `me`, when the claim won).
    claim: Callable[[], Awaitable[str | None]] | None = None
    me: str = ""
    # Seconds the build is not given a slot here (another builder has its repository's layers),
    # asked only when the build has to queue: a build whose image exists never pays for it.
    hold: Callable[[], Awaitable[float]] | None = None
    # With claims: whether this builder is the only one alive now (then it may prepare ahead).
    alone: Callable[[], bool] = lambda: False

    def __post_init__(self) -> None:
        self.tail = LogTail(self.settings.tail_lines, self.settings.tail_bytes)
        self.output = BuildOutput()
        self.kill_on_cancel = False
        # A cancelled build records "Cancelled", unless another builder holds it now.
        self.record_cancel = True
        self.claimed = self.claim is None
        self.container: BuildContainer | None = None
        # The container created ahead of the slot (or found so after a restart), not started.
        self.prepared: BuildContainer | None = None
        self._preparing: asyncio.Future | None = None
        self._position: int | None = None  # in the queue, as last told
        # The queue positions at which it was decided whether to create the container ahead:
        # what the bookkeeping of a build that did *not* prepare can be read from (tests, logs).
        self.prepare_looks: list[int] = []

    async def run(self) -> BuildOutcome:
        try:
            return await self._run()
        except asyncio.CancelledError:
            if self.kill_on_cancel:
                await asyncio.shield(self._cancelled())
            elif not self.record_cancel:  # another builder holds it: nothing of it stays here
                await asyncio.shield(self._discard_prepared())
            raise
        except ClaimLost:
            await self._discard_prepared()
            await self.publisher.close(flush=False)
            raise
        finally:
            self.queue.release(self.ref.uid, record=False)  # a slot still held here: the build did not run to its end

    async def _run(self) -> BuildOutcome:
        try:
            container = await self.runner.find(self.ref.uid)
            if container is not None and container.prepared:  # made ahead by an earlier process: it queues again
                self.prepared, container = container, None
            if container is None:
                if done := await self._already_built(retrying=True):
                    await self._discard_prepared()
                    return await self._finish(Phase.SUCCEEDED, done, cached=True)
                # Asked before queueing, so an unsupported setting fails the build at once.
                command = await self.runner.command(self.spec)
                container = await self._queue_and_start(command)
                if isinstance(container, str):  # the image appeared while we queued (another build made it)
                    return await self._finish(Phase.SUCCEEDED, container, cached=True)
            else:
                await self._claim(container)
                # After a restart with no recorded start (the hub keeps none): Docker's own.
                self.recorded_start = self.recorded_start or container.started_at
                self.queue.adopt(
                    self.ref.uid,
                    self.requester,
                    self.spec.repo_url,
                    elapsed=self.settings.build_timeout - self._remaining(),
                )
                log.info(
                    "re-attaching to build container %s of %s/%s", container.id[:12], self.ref.namespace, self.ref.name
                )
            self.container = container
            return await self._follow(container)
        except RunnerError as exc:
            if self.container is not None or self.prepared is not None:
                self._remove_later((self.container or self.prepared).id)
            return await self._finish(Phase.FAILED, failure_message(str(exc), self._failure_lines()))

    def _remove_later(self, container_id: str) -> None:
        """Docker failed mid-build: remove the container as soon as Docker answers again."""

        async def remove() -> None:
            backoff = Backoff(CLEANUP_BACKOFF)
            await asyncio.sleep(backoff.next())
            try:
                await retry(
                    lambda: self.runner.remove(container_id, kill=True),
                    retry_on=RunnerError,
                    backoff=backoff,
                    within=CLEANUP_FOR,
                )
                log.info("removed build container %s of a build that failed", container_id[:12])
            except RunnerError:
                log.warning("gave up removing build container %s: Docker did not answer", container_id[:12])

        task = asyncio.ensure_future(remove())
        _cleanups.add(task)
        task.add_done_callback(_cleanups.discard)

    async def _already_built(self, retrying: bool) -> str | None:
        """Why no build is needed, or None. With push on, the registry decides."""
        if not self.runner.config.push:
            return await no_build_needed(self.runner, self.spec.image)
        in_registry = await self._in_registry(retrying)
        if in_registry:
            return ALREADY_PUSHED
        if in_registry is not None and await self.runner.images.image_exists(self.spec.image):
            await self.publisher.update({"message": f"Pushing the existing image {self.spec.image}."})
            await self.runner.images.push(self.spec.image)
            return PUSHED_EXISTING
        return None

    async def _in_registry(self, retrying: bool) -> bool | None:
        """Whether the registry has the image. An unreachable registry is asked again with
        back-off (saying so in the status) within the build timeout when `retrying`;
        otherwise the answer is None, "unknown", and the build's own push will tell."""

        async def tell(exc: BaseException, delay: float) -> None:
            log.warning("%s; retrying in %.0f s", exc, delay)
            await self.publisher.update({"message": f"{exc} Retrying in {delay:.0f} s."})

        def ask():
            return self.runner.images.registry_has(self.spec.image)

        if not retrying:
            try:
                return await ask()
            except RegistryUnavailable:
                return None
        return await retry(
            ask,
            retry_on=RegistryUnavailable,
            backoff=Backoff(REGISTRY_BACKOFF),
            within=self.settings.build_timeout,
            on_retry=tell,
        )

    def _failure_lines(self) -> list[str]:
        return self.output.failure_lines(self.tail.lines())

    async def _queue_and_start(self, command: list[str]) -> BuildContainer | str:
        def on_position(position: int) -> None:
            self._position = position
            asyncio.ensure_future(self._publish_position(position))
            self._prepare_if_next(position, command)

        await self.publisher.update(
            {
                "phase": Phase.QUEUED.value,
                "queuePosition": self.queue.position(self.ref.uid),
                "estimatedStart": self._estimated_start(),
                "message": "Waiting for a free build slot.",
            }
        )
        self._notify(Phase.QUEUED, "waiting for a free build slot")
        looks = [asyncio.ensure_future(self._refresh_estimate()), asyncio.ensure_future(self._prepare_later(command))]
        try:
            hold = await self.hold() if self.hold is not None else 0.0
            await self.queue.acquire(
                self.ref.uid, self.order, on_position, requester=self.requester, repo=self.spec.repo_url, hold=hold
            )
        finally:
            for look in looks:
                look.cancel()
        if self._preparing is not None:  # under way: finishing it (and its claim) is quicker than starting over
            await asyncio.gather(self._preparing, return_exceptions=True)
        await self._claim()
        if done := await self._already_built(retrying=False):
            await self._discard_prepared()
            return done
        self.container = self.prepared
        container = self.container = await self.runner.start(
            self.ref, self.spec, command, self.credential, prepared=self.prepared
        )
        self.prepared = None
        self.recorded_start = now_iso()
        await self.publisher.update(
            {
                "phase": Phase.BUILDING.value,
                "queuePosition": None,
                "estimatedStart": None,
                "containerId": container.id,
                "startTime": self.recorded_start,
                "message": f"Building {self.spec.repo_url} at {self.spec.commit[:12]}.",
            }
        )
        self._notify(Phase.BUILDING, "build container started")
        return container

    @property
    def preparing_ahead(self) -> bool:
        """Whether its container is being (or was) created ahead of its slot."""
        return self._preparing is not None

    def _prepare_if_next(self, position: int, command: list[str]) -> None:
        """Create the container ahead while the build is among the next to get a slot."""
        self.prepare_looks.append(position)
        if (
            not self.settings.prepare_next
            or (self.claim is not None and not self.alone())
            or self.prepared is not None
            or self._preparing is not None
            or position > max(self.queue.limit, 1)
        ):
            return

        async def prepare() -> None:
            try:
                self.prepared = await self.runner.prepare(self.ref, self.spec, command, self.credential)
            except RunnerError as exc:  # the start will try again, and tell
                log.info("could not create the container of %s ahead: %s", self.ref.name, exc)
            await self._claim_ahead()

        self._preparing = asyncio.ensure_future(prepare())

    async def _claim_ahead(self) -> None:
        """Claim the build while it waits among the next ones, if no other builder is alive:
        nobody else could take it, and the claim's read and write then no longer stand
        between a freed slot and the start. Anything but a won claim is left to the claim at
        the slot (which raises ClaimLost, or asks again)."""
        if self.claimed or self.claim is None or not self.alone():
            return
        try:
            self.claimed = await self.claim() == self.me
        except Exception as exc:  # noqa: BLE001 - the claim at the slot asks again, and tells
            log.info("could not claim %s ahead: %s", self.ref.name, exc)

    async def _discard_prepared(self) -> None:
        """Remove the container made ahead for a build that will not start here."""
        if self._preparing is not None:
            await asyncio.gather(self._preparing, return_exceptions=True)
        if self.prepared is not None:
            await self.runner.remove(self.prepared.id)
            self.prepared = None

    async def _claim(self, found: BuildContainer | None = None) -> None:
        """Hold the build before running it: raises ClaimLost if another builder does. A
        container found for a build another builder holds (a lost node that came back) is
        removed: the build runs there."""
        if self.claimed:
            return
        holder = await self.claim()
        if holder != self.me:
            if found is not None:
                await self.runner.remove(found.id, kill=True)
                log.info(
                    "removed build container %s of %s/%s: %s builds it now",
                    found.id[:12],
                    self.ref.namespace,
                    self.ref.name,
                    holder or "nobody",
                )
            raise ClaimLost(holder)
        self.claimed = True

    async def _publish_position(self, position: int) -> None:
        if self.publisher.phase == Phase.QUEUED:
            ahead = position - 1
            message = (
                "Waiting for a free build slot."
                if ahead == 0
                else f"{ahead} build{'s' * (ahead != 1)} ahead of this one."
            )
            await self.publisher.update(
                {"queuePosition": position, "message": message, "estimatedStart": self._estimated_start()}
            )

    async def _prepare_later(self, command: list[str]) -> None:
        """Next in line but not made ahead (another builder may have been alive): look again."""
        while self.prepared is None and self._preparing is None and self.settings.prepare_next:
            await asyncio.sleep(PREPARE_RECHECK)
            if self._position is not None:
                self._prepare_if_next(self._position, command)

    async def _refresh_estimate(self) -> None:
        while True:
            await asyncio.sleep(ESTIMATE_REFRESH)
            new, old = self._estimated_start(), self.publisher.current.get("estimatedStart")
            if self.publisher.phase == Phase.QUEUED and new != old and _apart(new, old) >= ESTIMATE_REFRESH:
                await self.publisher.update({"estimatedStart": new})

    def _estimated_start(self) -> str | None:
        """When this queued build should start (estimate.py), or None when it cannot be told."""
        delay = self.queue.estimate(self.ref.uid)
        if delay is None:
            return None
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delay)
        return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")

    def _remaining(self) -> float:
        started = parse_iso(self.recorded_start) or datetime.datetime.now(datetime.timezone.utc)
        elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        return self.settings.build_timeout - elapsed

    async def _follow(self, container: BuildContainer) -> BuildOutcome:
        if self.publisher.phase != Phase.BUILDING:
            self.recorded_start = self.recorded_start or now_iso()
            await self.publisher.update(
                {
                    "phase": Phase.BUILDING.value,
                    "queuePosition": None,
                    "containerId": container.id,
                    "startTime": self.recorded_start,
                }
            )
        try:
            await asyncio.wait_for(self._read_logs(container), timeout=max(self._remaining(), 0.001))
        except asyncio.TimeoutError:
            await self.runner.remove(container.id, kill=True)
            reason = f"The build took longer than the {self._human(self.settings.build_timeout)} limit and was stopped."
            return await self._finish(Phase.FAILED, failure_message(reason, self._failure_lines()))
        code = await self.runner.exit_code(container.id)
        if code is None:  # the log stream broke but the container runs on: wait for it
            code = await asyncio.wait_for(self.runner.wait(container.id), timeout=max(self._remaining(), 0.001))
        # The container has exited: its slot is free now. Removing it, checking the image and
        # recording the outcome take a few Docker and API calls, and the next build in the
        # queue must not wait for them; the cap counts running builds, and this one is not.
        self.queue.release(self.ref.uid)
        await self.runner.remove(container.id)
        if code != 0:
            return await self._finish(
                Phase.FAILED, failure_message(await self._exit_reason(code), self._failure_lines())
            )
        if self.runner.config.push:
            if not await self.runner.images.registry_has(self.spec.image):
                reason = f"repo2docker exited successfully but the image {self.spec.image} is not in the registry."
                return await self._finish(Phase.FAILED, failure_message(reason, self._failure_lines()))
            return await self._finish(Phase.SUCCEEDED, f"Built and pushed {self.spec.image}.")
        if not await self.runner.images.image_exists(self.spec.image):
            reason = f"repo2docker exited successfully but the image {self.spec.image} does not exist."
            return await self._finish(Phase.FAILED, failure_message(reason, self._failure_lines()))
        return await self._finish(Phase.SUCCEEDED, f"Built {self.spec.image}.")

    async def _exit_reason(self, code: int) -> str:
        """Why repo2docker failed, in the user's terms where that can be told: with push on, a
        tagged image in the daemon means the build worked and the push did not, which is a
        registry or credentials problem, not a broken repository."""
        if self.runner.config.push and await self.runner.images.image_exists(self.spec.image):
            registry = registry_of(self.spec.image)
            lines = [*self.output.failed_step, *self.tail.lines()[-10:]]
            if any(registry_refused(line) for line in lines):
                return (
                    f"The registry {registry} refused the push: authentication failed or access was "
                    f"denied (check the registry credentials the builds are given)."
                )
            return f"The image was built, but pushing it to the registry {registry} failed."
        if submodule_refused(self.tail.lines()):
            return SUBMODULE_REFUSED
        return f"repo2docker exited with code {code}."

    async def _read_logs(self, container: BuildContainer) -> None:
        async for lines in readable_lines(self.runner, container.id, self.output):
            self.tail.add(lines)
            await self.publisher.update({"logTail": self.tail.lines, "logLineCount": self.tail.total})

    async def _finish(self, phase: Phase, message: str, cached: bool = False) -> BuildOutcome:
        started = parse_iso(self.recorded_start)
        duration = None
        if started and not cached:
            duration = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        fields = {
            "phase": phase.value,
            "queuePosition": None,
            "estimatedStart": None,
            "message": message[:8000],
            "completionTime": now_iso(),
            "logTail": self.tail.lines(),
            "logLineCount": self.tail.total,
        }
        if phase == Phase.SUCCEEDED:
            fields["image"] = self.spec.image
            if not cached:
                fields["provenance"] = await self._provenance(duration)
        if cached and not self.recorded_start:
            fields["startTime"] = fields["completionTime"]
        await self.publisher.update(fields, urgent=True)
        await self.publisher.close()
        self._notify(phase, message)
        return BuildOutcome(phase, message, self.spec.image if phase == Phase.SUCCEEDED else None, duration, cached)

    async def _provenance(self, duration: float | None) -> dict[str, object]:
        """What made the image (contract.PROVENANCE_FIELDS): repo2docker's version and build
        image, the base image the build named in its first FROM (resolved on this daemon
        unless the build printed its digest), how long it took and where it ran. What cannot
        be told is left out, never guessed."""
        build_image = self.spec.build_image or self.runner.config.build_image
        try:
            version: str | None = str(await self.runner.repo2docker_version(build_image))
        except RunnerError:
            version = None
        base = self.output.base_image
        base_digest = None
        if base:
            base_digest = base if "@sha256:" in base else await self.runner.images.digest(base)
        values = {
            "repo2dockerVersion": version,
            "buildImageDigest": await self.runner.images.digest(build_image),
            "baseImageDigest": base_digest,
            "durationSeconds": round(duration, 1) if duration is not None else None,
            "builder": self.me or None,
        }
        return {key: value for key, value in values.items() if value is not None}

    async def _cancelled(self) -> None:
        if self._preparing is not None:  # its create runs on in Docker's thread: let it end, then remove it
            await asyncio.gather(self._preparing, return_exceptions=True)
        container = self.container or self.prepared or await self.runner.find(self.ref.uid)
        if container is not None:
            await self.runner.remove(container.id, kill=True)
        if not self.record_cancel:
            await self.publisher.close(flush=False)
            return
        try:
            await self._finish(Phase.CANCELLED, "The build was cancelled.")
        except Exception as exc:  # noqa: BLE001 - the resource may be gone already
            log.debug("could not record cancellation of %s: %s", self.ref.name, exc)

    def _notify(self, phase: Phase, message: str) -> None:
        if self.on_phase:
            self.on_phase(phase, message)

    @staticmethod
    def _human(seconds: float) -> str:
        return f"{int(seconds // 60)} min" if seconds >= 120 else f"{int(seconds)} s"


SUBMODULE_REFUSED = (
    "A submodule of this repository could not be fetched: it needs credentials this build does not have. "
    "A private submodule needs the hub's credentials (Repo2DockerSpawner.repo_credentials, or the chart's "
    "build.gitCredentials); a user's own token is sent for the launched repository only."
)
_SUBMODULE_AUTH = re.compile(
    r"could not read (Username|Password)|Authentication failed|terminal prompts disabled"
    r"|returned error: 40[134]|not found",
    re.I,
)


def submodule_refused(lines: list[str]) -> bool:
    """Whether repo2docker's output says git failed a submodule ("clone of '<url>' into
    submodule path … failed") because it was refused (asked for a username it had no answer
    for, or told 401/403/404)."""
    failed = any("submodule" in line.lower() and "failed" in line.lower() for line in lines)
    return failed and any(_SUBMODULE_AUTH.search(line) for line in lines)


def _apart(one: str | None, other: str | None) -> float:
    """Seconds between two RFC 3339 times; infinite when either is missing (a change worth saying)."""
    first, second = parse_iso(one), parse_iso(other)
    return abs((first - second).total_seconds()) if first and second else float("inf")
