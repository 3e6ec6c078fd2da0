"""The Kubernetes backend: builds are Repo2DockerBuild resources that the operator runs.

Creating the resource is the dedup: the name is a function of (repository, commit), so a
second user gets AlreadyExists and joins the first user's build. A build that failed or was
cancelled is retried by deleting and recreating its resource; one that succeeded is reused
as long as it exists (after its TTL the operator finds the image and succeeds at once).
"""

from __future__ import annotations

import asyncio
import logging

from repo2docker_operator import contract
from repo2docker_operator.contract import BuildSpec, Phase
from repo2docker_operator.resources import BuildResources, api_client

from ..watcher import BuildWatcher, KubernetesBuild

log = logging.getLogger(__name__)
REQUESTED_BY = f"{contract.GROUP}/requested-by"


class KubernetesBackend:
    def __init__(self, namespace: str, kubeconfig: str | None = None) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
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

    async def ensure(self, spec: BuildSpec, requested_by: str = "") -> KubernetesBuild:
        resources, watcher = await self._connect()
        manifest = contract.build_manifest(spec, self.namespace)
        manifest["metadata"]["annotations"] = {REQUESTED_BY: requested_by} if requested_by else {}
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
