"""The embedded backend: the build core's job, run inside the hub, for hubs without Kubernetes.

Same runner, same FIFO queue and cap, same log tail and status fields as the operator, with
status kept in memory instead of a resource. Build containers carry the same labels
(instance ``hub-local`` by default) plus their spec, so a restarted hub adopts every build
container it finds before it starts anything (the core's ``adopt``, as the operator does):
running ones hold their slots, and each gets a job that follows it to its end, records the
outcome and removes it, whether or not anybody asks for that build again.

Each attempt at a build has its own uid (the build's name plus a random suffix): a retry
after a failure never mistakes the failed attempt's exited container for its own outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from traitlets import Float, TraitError, validate

from repo2docker_buildcore import contract
from repo2docker_buildcore.adoption import adopt
from repo2docker_buildcore.build import BuildJob, BuildSettings
from repo2docker_buildcore.collector import ImageCollector
from repo2docker_buildcore.contract import PREBUILD_REQUESTER, BuildSpec, BuildStatus, Phase
from repo2docker_buildcore.docker_api import RunnerError
from repo2docker_buildcore.gcmetrics import GCMetrics
from repo2docker_buildcore.gitcredentials import CloneCredentials
from repo2docker_buildcore.imagegc import GCPolicy
from repo2docker_buildcore.imageuse import FileStore, UseLedger
from repo2docker_buildcore.queue import BuildQueue
from repo2docker_buildcore.runner import BuildContainer, BuildRef, BuildRunner, RunnerConfig, build_environment
from repo2docker_buildcore.settings import derive
from repo2docker_buildcore.status import StatusPublisher, unix_time

from .base import BuildBackend
from .images import ImageFacts, add_image_facts, newest_first, succeeded_images
from .records import BuildRecord, Known, redo_phases
from .traits import hub_trait

log = logging.getLogger(__name__)
NAMESPACE = "local"
# Where the embedded backend's builds ran, as their provenance says (an operator names its node).
BUILDER = "hub"
# Status lives in memory here: a write is a dict update and a wake-up of the waiting
# progress streams, so lines can go out almost as printed. The short window only batches
# the bursts (hundreds of lines a second) into one wake-up.
STATUS_INTERVAL = 0.05


class LocalBuild:
    """One attempt at a build: its status in memory, and the task that runs it."""

    def __init__(self, name: str, uid: str, spec: BuildSpec, requested_by: str = "") -> None:
        self.name = name
        self.uid = uid
        self.spec = spec
        self.image = spec.image
        self.requested_by = requested_by
        self.replaces = ""  # the commit the ref pointed to before
        self.created = time.time()
        self.events: list[tuple[float, str, str]] = []  # (time, phase, first line of its message)
        self.job: BuildJob | None = None
        self.namespace = NAMESPACE
        self.fields: dict[str, Any] = {}
        self.version = 0
        self._changed = asyncio.Condition()
        self.task: asyncio.Task | None = None

    async def publish(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                self.fields.pop(key, None)  # merge-patch semantics, as on a resource
            else:
                self.fields[key] = value
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    def current(self) -> BuildStatus:
        return BuildStatus.from_status(self.fields)

    async def statuses(self) -> AsyncIterator[BuildStatus]:
        seen = -1
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self.version != seen)
                seen = self.version
            status = self.current()
            yield status
            if status.phase.terminal:
                return


class LocalBackend(BuildBackend):
    """Builds run inside the hub, through the hub's Docker daemon (no Kubernetes needed)."""

    # The build settings: rows of repo2docker_buildcore.settings (the operator's, by name).
    build_image = hub_trait("build_image")
    concurrency = hub_trait("concurrency")
    prepare_next = hub_trait("prepare_next")
    build_timeout = hub_trait("build_timeout")
    memory_limit = hub_trait("memory_limit")
    cpu_limit = hub_trait("cpu_limit")
    tail_lines = hub_trait("tail_lines")
    tail_bytes = hub_trait("tail_bytes")
    push = hub_trait("push")
    docker_config = hub_trait("docker_config")
    docker_socket = hub_trait("docker_socket")
    instance = hub_trait("instance")
    user_id = hub_trait("user_id")
    user_name = hub_trait("user_name")
    build_env = hub_trait("build_env")
    gc_interval = hub_trait("gc_interval")
    gc_high_watermark = hub_trait("gc_high_watermark")
    gc_low_watermark = hub_trait("gc_low_watermark")
    gc_max_age = hub_trait("gc_max_age")
    gc_grace = hub_trait("gc_grace")
    gc_use_record = hub_trait("gc_use_record")

    # The hub's own.
    keep_finished = Float(
        600.0,
        config=True,
        help="""Seconds a finished build stays in memory, for late joiners to see its outcome.
        After that a request for the same commit finds the image (or builds again after a failure).""",
    )

    def gc_policy(self, prefix: str) -> GCPolicy:
        try:
            return GCPolicy.from_settings(
                prefix, self.gc_high_watermark, self.gc_low_watermark, self.gc_max_age, self.gc_grace
            )
        except ValueError as exc:
            raise TraitError(f"LocalBackend.gc_*: {exc}") from None

    @validate("memory_limit")
    def _validate_memory(self, proposal: Any) -> Any:
        try:
            contract.parse_quantity(proposal["value"])
        except contract.InvalidBuildRequest as exc:
            raise TraitError(f"LocalBackend.memory_limit: {exc}") from None
        return proposal["value"]

    @validate("build_env")
    def _validate_build_env(self, proposal: Any) -> Any:
        try:
            build_environment(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"LocalBackend.build_env: {exc}") from None
        return proposal["value"]

    @validate("docker_config")
    def _validate_docker_config(self, proposal: Any) -> Any:
        if proposal["value"] and not os.path.isfile(proposal["value"]):
            raise TraitError(f"LocalBackend.docker_config: {proposal['value']} is not a file")
        return proposal["value"]

    @validate("gc_use_record")
    def _validate_use_record(self, proposal: Any) -> Any:
        if (proposal["value"] or "").startswith("configmap:"):
            raise TraitError("LocalBackend.gc_use_record: the hub keeps it in a file (a path, or '' for memory only)")
        return proposal["value"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runner = BuildRunner(derive(RunnerConfig, self, environment=build_environment(self.build_env)))
        self.queue = BuildQueue(self.concurrency)
        self.settings = derive(BuildSettings, self)
        self.builds: dict[str, LocalBuild] = {}
        self.collector: ImageCollector | None = None
        self.image_store = self.runner.images
        self.image_facts = ImageFacts(self.image_store)
        self._adopted = False
        self._lock = asyncio.Lock()
        # JupyterHub creates its spawners (and so this backend) at start-up, inside its loop:
        # adopt surviving builds now, not only when somebody asks for a build again.
        try:
            asyncio.get_running_loop().create_task(self._adopt_at_start(), name="adopt surviving builds")
        except RuntimeError:
            pass  # no loop yet: the first ensure() adopts

    def check_image_prefix(self, prefix: str) -> None:
        if self.push and not contract.prefix_names_registry(prefix):
            raise TraitError(
                f"LocalBackend.push needs a Repo2DockerSpawner.image_prefix that names a registry "
                f"(e.g. 'registry.example.org/binder/r2d-'), not {prefix!r}"
            )

    def start_image_gc(self, prefix: str) -> None:
        """Collect images under `prefix` (the spawner's), once per backend."""
        policy = self.gc_policy(prefix)  # refuses bad settings at configuration time
        if self.collector is not None:
            if self.collector.policy.prefix != prefix:
                log.warning("image GC keeps collecting under %r, not also %r", self.collector.policy.prefix, prefix)
            return
        self.collector = ImageCollector(
            self.runner.images,
            policy,
            UseLedger(FileStore(self.gc_use_record) if self.gc_use_record else None),
            wanted=self.wanted_images,
            interval=self.gc_interval,
            on_removed=self._image_removed,
            on_usage=_hub_gc_metrics().usage,
            where="hub: ",
        )
        log.info("image GC (every %s s): %s", self.gc_interval, policy.describe() if self.gc_interval else "off")
        try:
            asyncio.get_running_loop().create_task(self.collector.start(), name="start image GC")
        except RuntimeError:
            pass  # no loop (configuration checks): the first ensure() starts it

    def _image_removed(self, image, reason: str) -> None:
        _hub_gc_metrics().removed(image, reason)
        self._forget_image(image.tags)

    def _forget_image(self, tags) -> None:
        """A succeeded build whose image is gone must not be joined: the next request builds.
        (With push the registry still has it, and servers pull it.)"""
        self.image_facts.invalidate()
        if self.push:
            return
        for build in list(self.builds.values()):
            if build.image in tags and build.current().phase == Phase.SUCCEEDED:
                self._forget(build)

    # ---- the admin builds page --------------------------------------------------------------

    def _record(self, build: LocalBuild) -> BuildRecord:
        status, fields = build.current(), build.fields
        return BuildRecord(
            namespace=NAMESPACE,
            name=build.name,
            repo_url=build.spec.repo_url,
            ref=build.spec.ref,
            commit=build.spec.commit,
            phase=status.phase,
            image=build.image,
            queue_position=status.queue_position,
            requested_by=build.requested_by,
            created=build.created,
            started=unix_time(fields.get("startTime")),
            completed=unix_time(fields.get("completionTime")),
            message=status.message,
            log_tail=status.log_tail,
            events=list(build.events),
            provenance=status.provenance,
            replaces=build.replaces,
        )

    def _image_records(self, facts: dict) -> list[BuildRecord]:
        """Images under the prefix whose builds this hub has forgotten (earlier hubs' included):
        repo2docker labels each image with its repository and the commit it built."""
        prefix = self.collector.policy.prefix if self.collector else None
        records = []
        for tag, info in facts.items():
            repo = info.labels.get("repo2docker.repo", "")
            if not prefix or not tag.startswith(prefix) or not repo:
                continue
            commit = tag.rpartition(":")[2]
            try:
                name = contract.build_name(repo, commit)
            except contract.InvalidBuildRequest:
                continue
            records.append(
                BuildRecord(
                    namespace=NAMESPACE,
                    name=name,
                    repo_url=repo,
                    ref=commit,
                    commit=commit,
                    phase=Phase.SUCCEEDED,
                    image=tag,
                    created=info.created,
                    completed=info.created,
                    message="Built earlier; this hub keeps no other record of it.",
                )
            )
        return records

    async def list_builds(self) -> list[BuildRecord]:
        records = {b.name: self._record(b) for b in self.builds.values()}
        facts = await self.image_facts.get(succeeded_images(records.values()))
        for record in self._image_records(facts):
            records.setdefault(record.name, record)
        uses = self.collector.ledger.uses if self.collector else {}
        return newest_first(add_image_facts(records.values(), facts, uses))

    async def unfinished_of(self, requested_by: str) -> list[BuildRecord]:
        return [
            self._record(b)
            for b in self.builds.values()
            if b.requested_by == requested_by and not b.current().phase.terminal
        ]

    async def under_way(self, name: str) -> bool:
        build = self.builds.get(name)
        return build is not None and not build.current().phase.terminal

    async def get_build(self, namespace: str, name: str, details: bool = True) -> BuildRecord | None:
        if namespace != NAMESPACE:
            return None
        if not details and name in self.builds:
            return self._record(self.builds[name])
        return next((r for r in await self.list_builds() if r.name == name), None)

    async def _known(self, namespace: str, name: str) -> Known | None:
        if namespace != NAMESPACE:
            return None
        if name in self.builds:
            build = self.builds[name]
            return Known(build.spec, build.current().phase)
        record = await self.get_build(namespace, name, details=False)  # a forgotten build's image
        return (
            Known(BuildSpec(record.repo_url, record.ref, record.commit, record.image), record.phase) if record else None
        )

    async def _stop(self, namespace: str, name: str) -> None:
        build = self.builds[name]
        build.job.kill_on_cancel = True  # the job kills its container and records Cancelled
        build.task.cancel()
        await asyncio.gather(build.task, return_exceptions=True)  # _run keeps it for keep_finished

    async def _forget_built(self, namespace: str, name: str, tags: tuple[str, ...]) -> None:
        self._forget_image(tags)

    async def _withdraw_if_queued(self, handle: LocalBuild) -> bool:
        # Checked and cancelled without an await between: the queue cannot start it meanwhile.
        if self.builds.get(handle.name) is not handle or handle.current().phase not in (Phase.PENDING, Phase.QUEUED):
            return False
        await self._stop(NAMESPACE, handle.name)
        return True

    def wanted_images(self) -> set[str]:
        """Images that builds still under way will produce."""
        return {b.image for b in self.builds.values() if b.image and not b.current().phase.terminal}

    def longest_build(self) -> float:
        return self.build_timeout

    def build_resources(self) -> dict[str, Any]:
        return {"memory_limit": contract.parse_quantity(self.memory_limit), "cpu_limit": self.cpu_limit}

    async def ensure(
        self,
        spec: BuildSpec,
        requested_by: str = "",
        image_gone: bool = False,
        credential: CloneCredentials | None = None,
        replaces: str = "",
    ) -> LocalBuild:
        name = spec.name
        await self._adopt_once()
        if self.collector is not None and not self.collector.started:
            await self.collector.start()
        redo = redo_phases(image_gone)
        async with self._lock:
            build = self.builds.get(name)
            if build is not None and build.current().phase not in redo:
                self._promote(build, requested_by)
                return build  # running, queued or done: join it
            # New, or a retry after a failure: a new attempt, with a uid of its own.
            build = self._start(
                name,
                f"{name}-{uuid.uuid4().hex[:8]}",
                spec,
                order=(asyncio.get_running_loop().time(), name),
                requested_by=requested_by,
                credential=credential,
            )
            build.replaces = replaces
            await build.publish({"phase": Phase.PENDING.value, "shortCommit": spec.commit[:7]})
            return build

    def _promote(self, build: LocalBuild, requested_by: str) -> None:
        """A user's launch joined a prebuild: it is that user's build now, and queues as one."""
        if build.requested_by == PREBUILD_REQUESTER and requested_by not in ("", PREBUILD_REQUESTER):
            build.requested_by = requested_by
            if build.job is not None:
                build.job.requester = requested_by
            self.queue.set_requester(build.uid, requested_by)

    async def _adopt_once(self) -> None:
        """Before this backend starts anything: adopt what an earlier hub process left."""
        async with self._lock:
            if self._adopted:
                return
            try:
                await self._adopt_survivors()
            except RunnerError as exc:  # Docker is away: the next ensure() tries again
                log.warning("could not look for surviving builds: %s", exc)
                raise

    async def _adopt_at_start(self) -> None:
        try:
            await self._adopt_once()
        except RunnerError:
            pass  # said in _adopt_once; the first ensure() tries again

    async def _adopt_survivors(self) -> None:
        """After a hub restart: follow every build container of this instance to its end."""
        specs: dict[str, BuildSpec] = {}

        async def wanted(container: BuildContainer) -> bool:
            try:
                specs[container.id] = container.spec()
            except contract.InvalidBuildRequest:
                return False  # not followable (e.g. from an older version): remove it
            return True

        for container in await adopt(self.runner, self.queue, wanted):
            name = container.ref.name
            if name not in self.builds:
                self._start(name, container.ref.uid, specs[container.id], order=(0.0, name))
        self._adopted = True

    def _start(
        self,
        name: str,
        uid: str,
        spec: BuildSpec,
        order: tuple,
        requested_by: str = "",
        credential: CloneCredentials | None = None,
    ) -> LocalBuild:
        build = LocalBuild(name, uid, spec, requested_by)
        self.builds[name] = build
        job = BuildJob(
            runner=self.runner,
            queue=self.queue,
            ref=BuildRef(NAMESPACE, name, uid),
            spec=spec,
            publisher=StatusPublisher(build.publish, interval=STATUS_INTERVAL),
            settings=self.settings,
            order=order,
            requester=requested_by,
            on_phase=lambda phase, message: build.events.append(
                (time.time(), phase.value, message.splitlines()[0] if message else "")
            ),
            credential=credential,
            me=BUILDER,
        )
        build.job = job
        # Not tied to any spawner: a user who stops waiting does not cancel it for others.
        build.task = asyncio.create_task(self._run(job, build), name=f"build {name}")
        return build

    async def _run(self, job: BuildJob, build: LocalBuild) -> None:
        try:
            outcome = await job.run()
            log.info("build %s: %s", build.name, outcome.phase.value)
            if outcome.phase == Phase.SUCCEEDED and self.collector:  # its server starts next: a use
                self.collector.touch(outcome.image or build.image)
        except asyncio.CancelledError:
            if not job.kill_on_cancel:
                raise  # the hub is stopping: the container goes on for the next hub to adopt
            log.info("build %s: cancelled by an admin", build.name)  # recorded as Cancelled by the job
        except Exception as exc:  # noqa: BLE001 - reported to every waiting user
            log.exception("build %s crashed", build.name)
            await build.publish({"phase": Phase.FAILED.value, "message": f"The build crashed: {exc}"})
        asyncio.get_running_loop().call_later(self.keep_finished, self._forget, build)

    def _forget(self, build: LocalBuild) -> None:
        if self.builds.get(build.name) is build:
            del self.builds[build.name]

    async def close(self) -> None:
        await super().close()
        if self.collector is not None:
            await self.collector.stop()
        for build in self.builds.values():
            if build.task and not build.task.done():
                build.task.cancel()  # detach: the container keeps running for the next hub
        self.runner.close()


_gc_metrics: GCMetrics | None = None


def _hub_gc_metrics() -> GCMetrics:
    """The collector's metrics in the hub's registry (served at /hub/metrics), registered once."""
    global _gc_metrics
    if _gc_metrics is None:
        from prometheus_client import REGISTRY

        _gc_metrics = GCMetrics(REGISTRY)
    return _gc_metrics
