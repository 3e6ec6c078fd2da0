"""The Kubernetes backend: builds are Repo2DockerBuild resources that the operator runs.

Creating the resource is the dedup: the name is a function of (repository, commit), so a
second user gets AlreadyExists and joins the first user's build. A build that failed or was
cancelled is retried by deleting and recreating its resource; one that succeeded is reused
as long as it exists (after its TTL the operator finds the image and succeeds at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from traitlets import Bool, Float, Int, Unicode, default

from repo2docker_buildcore import contract, gitcredentials
from repo2docker_buildcore.contract import BuildSpec, BuildStatus, Phase
from repo2docker_buildcore.gitcredentials import CloneCredentials, GitCredential
from repo2docker_buildcore.imageuse import store_from_setting
from repo2docker_buildcore.kubeapi import ApiError, connect, core_path
from repo2docker_buildcore.livelog import LiveLog
from repo2docker_buildcore.resources import BuildResources, BuildSecrets
from repo2docker_buildcore.runner import BuildRunner, RunnerConfig
from repo2docker_buildcore.settings import setting
from repo2docker_buildcore.status import unix_time
from repo2docker_buildcore.versions import DEFAULT_BUILD_IMAGE

from .base import BuildBackend
from .images import ImageFacts, add_image_facts, newest_first, succeeded_images
from .records import BuildRecord, ForeignBuild, Known, redo_phases
from .watcher import BuildWatcher, Seen

log = logging.getLogger(__name__)


class KubernetesBuild:
    """A handle on one build resource, read from the shared watcher.

    With `runner` (a client of the hub's Docker daemon, usually the builder's too), log lines
    come straight from the build container as it prints them, keeping `tail_lines` of them
    (or as many as the resource's tail holds, if more); phase, queue and outcome always come
    from the resource, and so do the lines when the container is not on this daemon.
    """

    def __init__(
        self,
        watcher: BuildWatcher,
        obj: dict[str, Any],
        runner: BuildRunner | None = None,
        tail_lines: int = setting("tail_lines").default,
    ) -> None:
        self.watcher = watcher
        self.runner = runner
        self.tail_lines = tail_lines
        self.name = obj["metadata"]["name"]
        self.namespace = obj["metadata"]["namespace"]
        self.uid = obj["metadata"]["uid"]
        self._last = obj

    def current(self) -> BuildStatus:
        obj = self.watcher.get(self.name)
        if obj is not None and obj["metadata"]["uid"] == self.uid:
            self._last = obj
        return BuildStatus.from_status(self._last.get("status"))

    async def _exists(self) -> bool:
        try:
            obj = await self.watcher.resources.get(self.namespace, self.name)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return obj["metadata"]["uid"] == self.uid

    async def _resource_statuses(self) -> AsyncIterator[BuildStatus]:
        async for sighting in self.watcher.follow(self.name, self.uid):
            if sighting.seen is Seen.NOT_SEEN and await self._exists():
                continue  # the watch is only slow
            obj = sighting.obj  # None: deleted, perhaps before the watch ever showed it to us
            if obj is None:
                status = BuildStatus.from_status(self._last.get("status"))
                if not status.phase.terminal:
                    status.phase = contract.Phase.CANCELLED
                    status.message = "The build resource was deleted before the build finished."
                yield status
                return
            self._last = obj
            status = BuildStatus.from_status(obj.get("status"))
            yield status
            if status.phase.terminal:
                return

    async def ended(self) -> None:
        """Return once the build has ended, or its resource is gone."""
        async for _status in self._resource_statuses():
            pass

    async def statuses(self) -> AsyncIterator[BuildStatus]:
        """The resource's status, then one on every change of either of two sources, ending
        after a terminal phase. The sources feed one queue:

        * the resource, through the shared watch: phase, queue position, outcome, and the
          log tail the operator writes (about once a second);
        * with `runner`, the build container's own log on the hub's Docker daemon, followed
          from the moment the resource names the container: lines as the build prints them.

        Each status is the resource's newest, with the log lines of whichever source is ahead
        (both number lines alike, so a reader never sees a line twice)."""
        updates: asyncio.Queue = asyncio.Queue()
        relays = [asyncio.create_task(self._relay_resource(updates), name=f"status of {self.name}")]
        live: LiveLog | None = None
        latest: BuildStatus | None = None
        try:
            while (update := await updates.get()) is not _RESOURCE_ENDED:
                if isinstance(update, BuildStatus):
                    latest = update
                    if live is None and self.runner and latest.phase == Phase.BUILDING and latest.container_id:
                        keep = max(self.tail_lines, len(latest.log_tail))
                        live = LiveLog(self.runner, latest.container_id, keep).start()
                        relays.append(asyncio.create_task(_relay_lines(live, updates), name=f"log of {self.name}"))
                    if latest.phase.terminal:
                        if live is not None:  # its container has exited: the stream's last lines are close
                            await _at_most(live.ended.wait(), LIVE_LOG_GRACE)
                        yield _with_live_lines(latest, live)
                        return
                if latest is not None:  # a status, or new live lines for the newest one
                    yield _with_live_lines(latest, live)
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            if live is not None:
                await live.close()

    async def _relay_resource(self, updates: asyncio.Queue) -> None:
        try:
            async for status in self._resource_statuses():
                updates.put_nowait(status)
        finally:
            updates.put_nowait(_RESOURCE_ENDED)


_RESOURCE_ENDED = object()  # the resource's stream ended (after a terminal phase, or deleted)
_NEW_LINES = object()  # the live log has lines the last status did not


async def _relay_lines(live: LiveLog, updates: asyncio.Queue) -> None:
    while not live.ended.is_set():
        await live.changed.wait()
        live.changed.clear()
        updates.put_nowait(_NEW_LINES)


async def _at_most(awaitable: Any, seconds: float) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout=seconds)
    except asyncio.TimeoutError:
        pass


# Seconds to wait, once the resource says the build ended, for the live stream's last lines.
LIVE_LOG_GRACE = 2.0


def _with_live_lines(status: BuildStatus, live: LiveLog | None) -> BuildStatus:
    """The resource's status with the live stream's lines when that stream is ahead (both
    number lines the same way, so the reader's count of lines seen stays valid either way)."""
    if live is None or not live.available or live.tail.total <= status.log_line_count:
        return status
    return dataclasses.replace(status, log_tail=live.tail.lines(), log_line_count=live.tail.total)


class KubernetesBackend(BuildBackend):
    """Builds are Repo2DockerBuild resources in one namespace, built by repo2docker-operator."""

    namespace = Unicode(config=True, help="Namespace of the build resources. Default: the pod's, else 'default'.")
    kubeconfig = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Path of a kubeconfig. Default: in-cluster configuration, else $KUBECONFIG, else ~/.kube/config.",
    )

    follow_build_logs = Bool(
        True,
        config=True,
        help="""Read build logs straight from the build container when the hub's Docker daemon
        (DockerSpawner's) is the builder's, as with one node: lines reach users as they are
        printed. Otherwise, and when False, they come from the build resource, which the
        operator updates about once a second.""",
    )

    build_timeout = Float(
        setting("build_timeout").default,
        config=True,
        help="""Seconds the operator's builds may take: the operator's --build-timeout, the chart's
        build.timeout (the same default). The spawner waits that long, and a little more,
        before JupyterHub gives up on a start (start_timeout follows it).""",
    )

    tail_lines = Int(
        setting("tail_lines").default,
        config=True,
        help="""Build log lines kept per build: the operator's --tail-lines, the chart's
        build.logTailLines (the same default). A build log followed straight from the build
        container keeps as many (and never fewer than the resource's tail holds).""",
    )

    image_use_record = Unicode(
        "",
        config=True,
        help="""Where the operator keeps images' last use, for the builds page: 'configmap:NAMESPACE/NAME'
        (the chart's is <release>-repo2docker-operator-image-use in its namespace; the chart's hub
        identity may read it). Empty: the page shows no last use.""",
    )

    @default("namespace")
    def _default_namespace(self) -> str:
        return os.environ.get("POD_NAMESPACE", "default")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api = None
        self.resources: BuildResources | None = None
        self.watcher: BuildWatcher | None = None
        self._lock = asyncio.Lock()
        self._withdrawals: set[asyncio.Task] = set()
        # The hub's Docker daemon (DockerSpawner's): image sizes and removal for the builds page,
        # and live logs. It never starts a container, so the build settings are the defaults.
        self.docker = BuildRunner(RunnerConfig(build_image=DEFAULT_BUILD_IMAGE))
        self.image_store = self.docker.images
        self.image_facts = ImageFacts(self.image_store)
        self.log_runner = self.docker if self.follow_build_logs else None

    async def _connect(self) -> tuple[BuildResources, BuildWatcher]:
        async with self._lock:
            if self.watcher is None:
                self._api = await connect(self.kubeconfig)
                self.resources = BuildResources(self._api)
                self.watcher = BuildWatcher(self.resources, self.namespace)
        self.watcher.start()
        await self.watcher.ready()
        return self.resources, self.watcher

    def longest_build(self) -> float:
        return self.build_timeout

    def describe_error(self, exc: Exception) -> str:
        """The API server's message rather than a dump of its response."""
        body = getattr(exc, "body", None)
        if body:
            try:
                return json.loads(body).get("message") or str(exc)
            except (TypeError, ValueError):
                pass
        reason = getattr(exc, "reason", None)
        return f"{reason}" if reason else super().describe_error(exc)

    async def ensure(
        self,
        spec: BuildSpec,
        requested_by: str = "",
        image_gone: bool = False,
        credential: CloneCredentials | None = None,
        replaces: str = "",
    ) -> KubernetesBuild:
        # The operator clones with its own credentials (build.gitCredentials in the chart), and
        # the hub's are for its lookups; a user's own token (for a private repository: the
        # spawner hands none for a public one) goes to the build this user creates.
        resources, watcher = await self._connect()
        own = credential.repository if credential is not None else None
        handover = own if own is not None and own.personal else None
        if handover is not None:
            spec = dataclasses.replace(spec, user_credentials=True)
        manifest = contract.build_manifest(spec, self.namespace, requested_by, replaces)
        redo = redo_phases(image_gone)
        for _attempt in range(3):
            obj, created = await resources.create(manifest)
            if not created:
                self._check_same_build(spec, obj)
            phase = contract.BuildStatus.from_status(obj.get("status")).phase
            if created or phase not in redo:
                log.info(
                    "%s build %s for %s", "created" if created else "joined", obj["metadata"]["name"], requested_by
                )
                if not created and not phase.terminal and requested_by not in ("", contract.PREBUILD_REQUESTER):
                    await self._take_over_prebuild(obj, requested_by)
                if created and handover is not None:
                    await self._hand_over(obj, handover)
                if created:
                    await self._until_watched(watcher, obj)
                return KubernetesBuild(watcher, obj, self.log_runner, self.tail_lines)
            # Finished, and of no use: start over with a fresh resource. The uid precondition
            # leaves alone a successor that another spawn created meanwhile (it is joined next).
            name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
            log.info("replacing %s build %s%s", phase.value.lower(), name, " (its image is gone)" * image_gone)
            await resources.delete(self.namespace, name, uid)
            await watcher.wait_for(
                lambda: watcher.get(name) is None or watcher.get(name)["metadata"]["uid"] != uid, timeout=60
            )
        raise RuntimeError("could not start a new build: the previous one keeps coming back")

    @staticmethod
    async def _until_watched(watcher: Any, obj: dict[str, Any]) -> None:
        """Until the shared watch shows the resource just created: a user's next launch checks
        their build limit against what the watch shows (under the same per-user lock), and must
        count this one."""
        name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
        try:
            await watcher.wait_for(lambda: (watcher.get(name) or {}).get("metadata", {}).get("uid") == uid, timeout=10)
        except asyncio.TimeoutError:
            log.warning("the watch has not shown build %s within 10 s", name)

    async def _take_over_prebuild(self, obj: dict[str, Any], requested_by: str) -> None:
        meta = obj["metadata"]
        if (meta.get("annotations") or {}).get(contract.ANNOTATION_REQUESTED_BY) != contract.PREBUILD_REQUESTER:
            return
        try:
            if await self.resources.take_over_prebuild(meta["namespace"], meta["name"], meta["uid"], requested_by):
                log.info("prebuild %s is %s's launch now", meta["name"], requested_by)
        except ApiError as exc:  # it still builds, behind the launches
            log.warning(
                "could not record %s as the requester of prebuild %s: %s",
                requested_by,
                meta["name"],
                self.describe_error(exc),
            )

    async def _hand_over(self, obj: dict[str, Any], credential: GitCredential) -> None:
        """Give the build this hub just created its user's credential, in the Secret the build
        owns (the operator waits for it). A Secret of that name is left from an earlier build of
        the same name, or planted: it is replaced. Without it the build could only fail, so a
        refusal deletes the build and says what the admin must allow."""
        secrets = BuildSecrets(self._api)
        manifest = gitcredentials.secret_manifest(obj, credential)
        namespace, name, uid = obj["metadata"]["namespace"], obj["metadata"]["name"], obj["metadata"]["uid"]
        try:
            try:
                await secrets.create(manifest)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                await secrets.delete(namespace, manifest["metadata"]["name"])
                await secrets.create(manifest)
        except ApiError as exc:
            await self.resources.delete(namespace, name, uid)
            raise RuntimeError(
                f"could not hand the build its user's credential ({self.describe_error(exc)}); "
                f"with the chart, set build.userCredentials=true"
            ) from None
        task = asyncio.create_task(
            self._withdraw(secrets, KubernetesBuild(self.watcher, obj)), name=f"withdraw {name}'s credential"
        )
        self._withdrawals.add(task)
        task.add_done_callback(self._withdrawals.discard)

    async def _withdraw(self, secrets: BuildSecrets, build: KubernetesBuild) -> None:
        """Delete the Secret once its build has ended (the token is of no further use); if the
        hub goes first, the API server deletes it with the build resource."""
        try:
            await build.ended()
            await secrets.delete(build.namespace, gitcredentials.secret_name(build.name))
        except Exception as exc:  # noqa: BLE001 - the resource's deletion takes it along
            log.warning("could not delete the credential Secret of build %s: %s", build.name, exc)

    def _check_same_build(self, ours: BuildSpec, obj: dict[str, Any]) -> None:
        """Join an existing resource only if it builds what we asked for (ForeignBuild if not)."""
        name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        try:
            theirs = BuildSpec.from_spec(obj.get("spec") or {})
        except contract.InvalidBuildRequest as exc:
            theirs, why = None, f"its spec is invalid ({exc})"
        else:
            why = (
                f"it builds {theirs.repo_url} at {theirs.commit} into {theirs.image} with build image "
                f"{theirs.build_image or 'the default'}, memory {theirs.memory_limit}, cpu {theirs.cpu_limit}"
            )
        if theirs is not None and contract.same_build(ours, theirs):
            return
        log.warning(
            "build resource %s is not the build this hub asked for: %s, not %s at %s into %s. "
            "Someone who may create build resources made it (creator: %s); delete it once looked at.",
            name,
            why,
            ours.repo_url,
            ours.commit,
            ours.image,
            (obj["metadata"].get("annotations") or {}).get(contract.ANNOTATION_REQUESTED_BY, "unknown"),
        )
        raise ForeignBuild(
            f"The build resource {name} is not the build this hub asked for: it was made for "
            f"another repository, commit, image, build image or limits. Ask an administrator to "
            f"remove it."
        )

    # ---- the admin builds page --------------------------------------------------------------

    def _record(self, obj: dict[str, Any]) -> BuildRecord:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        status = BuildStatus.from_status(obj.get("status"))
        raw = obj.get("status") or {}
        return BuildRecord(
            namespace=meta["namespace"],
            name=meta["name"],
            repo_url=str(spec.get("repoUrl", "")),
            ref=str(spec.get("ref", "")),
            commit=str(spec.get("commit", "")),
            phase=status.phase,
            image=str(spec.get("image", "")),
            queue_position=status.queue_position,
            requested_by=(meta.get("annotations") or {}).get(contract.ANNOTATION_REQUESTED_BY, ""),
            created=unix_time(meta.get("creationTimestamp")),
            started=unix_time(raw.get("startTime")),
            completed=unix_time(raw.get("completionTime")),
            message=status.message,
            log_tail=status.log_tail,
            provenance=status.provenance,
            replaces=(meta.get("annotations") or {}).get(contract.ANNOTATION_REPLACES, ""),
        )

    async def _last_uses(self) -> dict[str, float]:
        if not self.image_use_record:
            return {}
        try:
            return await store_from_setting(self.image_use_record, self._api).load()
        except Exception as exc:  # noqa: BLE001 - the page shows no last use rather than failing
            log.warning("cannot read the images' last use from %s: %s", self.image_use_record, exc)
            return {}

    async def list_builds(self) -> list[BuildRecord]:
        _resources, watcher = await self._connect()
        records = [self._record(obj) for obj in list(watcher.objects.values())]
        facts, uses = await asyncio.gather(self.image_facts.get(succeeded_images(records)), self._last_uses())
        return newest_first(add_image_facts(records, facts, uses))

    async def unfinished_of(self, requested_by: str) -> list[BuildRecord]:
        _resources, watcher = await self._connect()
        records = [self._record(obj) for obj in list(watcher.objects.values())]
        return [r for r in records if r.requested_by == requested_by and not r.phase.terminal]

    async def under_way(self, name: str) -> bool:
        _resources, watcher = await self._connect()
        obj = watcher.get(name)
        return obj is not None and not contract.BuildStatus.from_status(obj.get("status")).phase.terminal

    async def get_build(self, namespace: str, name: str, details: bool = True) -> BuildRecord | None:
        _resources, watcher = await self._connect()
        obj = watcher.get(name) if namespace == self.namespace else None
        if obj is None:
            return None
        record = self._record(obj)
        if details:
            facts, uses, record.events = await asyncio.gather(
                self.image_facts.get(succeeded_images([record])), self._last_uses(), self._events(name)
            )
            add_image_facts([record], facts, uses)
        return record

    async def _events(self, name: str) -> list[tuple[float, str, str]]:
        try:
            found = await self._api.request(
                "GET", core_path(self.namespace, "events"), params={"fieldSelector": f"involvedObject.name={name}"}
            )
        except ApiError as exc:
            log.warning("cannot read the events of build %s: %s", name, exc.reason)
            return []
        events = []
        for event in found.get("items") or []:
            when = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
            stamp = datetime.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() if when else 0.0
            events.append((stamp, event.get("reason") or "", event.get("message") or ""))
        return sorted(events)

    async def _object(self, namespace: str, name: str) -> dict[str, Any] | None:
        _resources, watcher = await self._connect()
        return watcher.get(name) if namespace == self.namespace else None

    async def _known(self, namespace: str, name: str) -> Known | None:
        obj = await self._object(namespace, name)
        if obj is None:
            return None
        return Known(BuildSpec.from_spec(obj["spec"]), BuildStatus.from_status(obj.get("status")).phase)

    async def _delete(self, namespace: str, name: str) -> None:
        obj = await self._object(namespace, name)
        if obj is not None:
            await self.resources.delete(namespace, name, obj["metadata"]["uid"])

    async def _stop(self, namespace: str, name: str) -> None:
        # As for any deleted build: the operator kills its container and lets the resource go.
        await self._delete(namespace, name)

    async def _withdraw_if_queued(self, handle: KubernetesBuild) -> bool:
        obj = self.watcher.get(handle.name) if self.watcher else None
        if obj is None or obj["metadata"]["uid"] != handle.uid:
            return False
        if BuildStatus.from_status(obj.get("status")).phase not in (Phase.PENDING, Phase.QUEUED):
            return False
        # The version read with the phase: if the operator has started it since, the API server
        # refuses the deletion (409) and the build runs on.
        try:
            await self.resources.delete(
                handle.namespace, handle.name, handle.uid, resource_version=obj["metadata"]["resourceVersion"]
            )
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _forget_built(self, namespace: str, name: str, tags: tuple[str, ...]) -> None:
        # Its resource would tell the next spawn that the image exists: let it go too.
        await self._delete(namespace, name)

    async def close(self) -> None:
        await super().close()
        for task in list(self._withdrawals):
            task.cancel()
        self.docker.close()
        if self.watcher:
            await self.watcher.stop()
        if self._api is not None:
            await self._api.close()
