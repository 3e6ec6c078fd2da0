"""The Kubernetes backend: builds are Repo2DockerBuild resources that the operator runs.

Creating the resource is the dedup: the name is a function of (repository, commit), so a
second user gets AlreadyExists and joins the first user's build. A build that failed or was
cancelled is retried by deleting and recreating its resource; one that succeeded is reused
as long as it exists (after its TTL the operator finds the image and succeeds at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, AsyncIterator

from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Unicode, default

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildSpec, BuildStatus, Phase
from repo2docker_buildcore.resources import BuildResources, api_client

from . import BuildBackend
from .watcher import BuildWatcher, Seen

log = logging.getLogger(__name__)


class KubernetesBuild:
    """A handle on one build resource, read from the shared watcher."""

    def __init__(self, watcher: BuildWatcher, obj: dict[str, Any]) -> None:
        self.watcher = watcher
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
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return obj["metadata"]["uid"] == self.uid

    async def statuses(self) -> AsyncIterator[BuildStatus]:
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


class KubernetesBackend(BuildBackend):
    """Builds are Repo2DockerBuild resources in one namespace, built by repo2docker-operator."""

    namespace = Unicode(config=True, help="Namespace of the build resources. Default: the pod's, else 'default'.")
    kubeconfig = Unicode(
        None, allow_none=True, config=True,
        help="Path of a kubeconfig. Default: in-cluster configuration, else ~/.kube/config.",
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

    async def _connect(self) -> tuple[BuildResources, BuildWatcher]:
        async with self._lock:
            if self.watcher is None:
                self._api = await api_client(self.kubeconfig)
                self.resources = BuildResources(self._api)
                self.watcher = BuildWatcher(self.resources, self.namespace)
        self.watcher.start()
        await self.watcher.ready()
        return self.resources, self.watcher

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

    async def ensure(self, spec: BuildSpec, requested_by: str = "") -> KubernetesBuild:
        resources, watcher = await self._connect()
        manifest = contract.build_manifest(spec, self.namespace, requested_by)
        for _attempt in range(3):
            obj, created = await resources.create(manifest)
            phase = contract.BuildStatus.from_status(obj.get("status")).phase
            if created or phase not in (Phase.FAILED, Phase.CANCELLED):
                log.info("%s build %s for %s", "created" if created else "joined", obj["metadata"]["name"], requested_by)
                return KubernetesBuild(watcher, obj)
            # A finished failure: retry with a fresh resource (the finalizer may hold the old one a moment).
            name = obj["metadata"]["name"]
            log.info("retrying failed build %s", name)
            await resources.delete(self.namespace, name)
            await watcher.wait_for(lambda: watcher.get(name) is None or watcher.get(name)["metadata"]["uid"] != obj["metadata"]["uid"], timeout=60)
        raise RuntimeError("could not start a new build: the previous one keeps coming back")

    async def close(self) -> None:
        if self.watcher:
            await self.watcher.stop()
        if self._api is not None:
            await self._api.close()
