"""What the operator holds while it runs, typed: kopf's `memo` carries one `OperatorState`.

The state is made at start-up (`OperatorState.start`) and closed at clean-up; handlers read
it, never build parts of it. Besides the kopf handlers, three things run here: the TTL sweep
of finished resources, the image collector and its record of uses, and the release of the
resources whose image the collector removed.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from dataclasses import dataclass, field

from repo2docker_buildcore import contract
from repo2docker_buildcore.backoff import Backoff, retry
from repo2docker_buildcore.collector import ImageCollector
from repo2docker_buildcore.contract import BuildStatus
from repo2docker_buildcore.imagegc import ImageInfo
from repo2docker_buildcore.imageuse import UseLedger, store_from_setting
from repo2docker_buildcore.kubeapi import KubeApi, connect
from repo2docker_buildcore.queue import BuildQueue
from repo2docker_buildcore.resources import BuildResources, BuildSecrets
from repo2docker_buildcore.runner import BuildRunner
from repo2docker_buildcore.status import parse_iso

from .claims import ClusterView
from .config import OperatorConfig
from .expiry import Expiries
from .leases import BuilderLeases
from .metrics import OperatorMetrics

log = logging.getLogger(__name__)


@dataclass
class OperatorState:
    config: OperatorConfig
    api: KubeApi
    resources: BuildResources
    queue: BuildQueue
    metrics: OperatorMetrics
    runner: BuildRunner
    expiries: Expiries
    secrets: BuildSecrets
    leases: BuilderLeases
    cluster: ClusterView
    collector: ImageCollector | None = None
    # Images that unfinished builds will produce (a count: two namespaces may build one image).
    wanted_images: collections.Counter = field(default_factory=collections.Counter)
    tasks: set[asyncio.Task] = field(default_factory=set)
    # Finished builds this process marks (or marked) while the watch still shows them: the
    # build's own end and the watch's sight of its terminal phase would otherwise both write.
    marking: set[str] = field(default_factory=set)
    # New builds being decided (`handlers.new_build`): one decision per build at a time.
    deciding: set[str] = field(default_factory=set)

    def seen_build(self, uid: str, status: dict | None, requester: str, deleted: bool, repo: str = "") -> None:
        """A watch event of a build: what the other builders hold, whose turn was when, and
        which builder built each repository last."""
        self.cluster.seen(uid, status, requester, deleted, repo)
        self.queue.set_requester(uid, requester)  # a launch that joined a prebuild made it a user's
        if requester in self.cluster.last_claimed:
            self.queue.note_start(requester, self.cluster.last_claimed[requester])
        self.queue.set_elsewhere(self.cluster.elsewhere())

    @classmethod
    async def start(cls, config: OperatorConfig) -> OperatorState:
        """Connect, check the CRD (OutdatedCRD), start metrics, the TTL sweep and the collector."""
        api = await connect()
        resources = BuildResources(api)
        for namespace in config.watched():
            await resources.check_selectable_fields(namespace)
        queue = BuildQueue(config.concurrency, config.cluster_concurrency)
        state = cls(
            config=config,
            api=api,
            resources=resources,
            queue=queue,
            metrics=OperatorMetrics(queue),
            runner=BuildRunner(config.runner_config()),
            expiries=Expiries(resources.delete, config.finished_ttl),
            secrets=BuildSecrets(api),
            leases=BuilderLeases(api, config.leases_in, config.builder, config.lease_duration),
            cluster=ClusterView(config.builder),
        )
        # The others' Leases are read once before any build is looked at: a builder in its
        # first moments would otherwise see itself alone and take a build another builder
        # has the layers for (cache affinity asks who is alive).
        first_done = await state.leases.try_refresh()
        state.spawn(state.leases.run(first_done), "renew this builder's Lease, observe the others'")
        if config.metrics_port:
            state.metrics.serve(config.metrics_port, config.metrics_address)
        state.spawn(state._sweep(), "delete expired build resources")
        state.collector = ImageCollector(
            state.runner.images,
            config.gc_policy(),
            UseLedger(store_from_setting(config.gc_use_record, api)),
            wanted=lambda: +state.wanted_images,
            interval=config.gc_interval,
            on_removed=state._image_removed,
            on_usage=state.metrics.gc.usage,
        )
        await state.collector.start()
        return state

    def spawn(self, coroutine, name: str) -> None:
        """A task of the operator's own, kept referenced until it ends (or the operator does)."""
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def affinity_hold(self, namespace: str, repo: str, created: str | None) -> float:
        """Seconds to hold a build of `repo` back here: within the affinity window from its
        creation, the builder that built the repository last (its layers are on that node)
        gets the first claim, while it is alive."""
        if self.leases.observations.alive() == [self.config.builder]:
            return 0.0  # no other builder to defer to: no listing either (one per build is O(N) on the API server)
        born = parse_iso(created)
        age = (datetime.datetime.now(datetime.timezone.utc) - born).total_seconds() if born else 0.0
        if age >= self.config.affinity_window:
            return 0.0
        owner = self.cluster.last_built.get(repo) or await self._last_builder(namespace, repo)
        if owner in (None, self.config.builder) or self.leases.lost(owner):
            return 0.0
        return self.config.affinity_window - age

    async def _last_builder(self, namespace: str, repo: str) -> str | None:
        """Who built the repository last, from its kept resources (the watch shows only
        unfinished ones, and this builder may have started after the last build ended)."""
        try:
            listing = await self.resources.list(
                namespace, label_selector=f"{contract.LABEL_REPO_HASH}={contract.repo_hash(repo)}"
            )
        except Exception as exc:  # noqa: BLE001 - no affinity then: any builder may build it
            log.debug("cannot list the builds of %s: %s", repo, exc)
            return None
        built = [
            (o["status"].get("completionTime") or "", o["status"]["builder"])
            for o in listing.get("items", [])
            if o.get("spec", {}).get("repoUrl") == repo
            and (o.get("status") or {}).get("builder")
            and o["status"].get("containerId")
            and o["status"].get("phase") == "Succeeded"
        ]
        if built:
            self.cluster.last_built.setdefault(repo, max(built)[1])
        return self.cluster.last_built.get(repo)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.collector is not None:
            await self.collector.stop()  # saves the images' last use
        self.runner.close()
        await self.api.close()

    # ---- finished resources --------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Learn the finished resources from one paged, metadata-only listing, then expire them."""

        async def learn(namespace: str | None) -> None:
            async for ns, name, uid, finished_at in self.resources.list_finished(namespace):
                self.expiries.finished(ns, name, uid, finished_at)

        def tell(exc: BaseException, delay: float) -> None:
            log.warning("cannot list finished builds yet (%s); retrying in %.0f s", exc, delay)

        if self.config.finished_ttl:
            for namespace in self.config.watched():
                # API trouble at start: ask again (every expiry waits for it anyway).
                await retry(
                    lambda: learn(namespace), retry_on=Exception, backoff=Backoff.doubling(1.0, 30.0), on_retry=tell
                )
        await self.expiries.run()

    # ---- images the collector removed -----------------------------------------------------------

    def _image_removed(self, image: ImageInfo, reason: str) -> None:
        self.metrics.gc.removed(image, reason)
        if not self.config.push:  # with push the registry still has it: its resource stays true
            self.spawn(self._release_builds_of(image.tags), "release builds of a removed image")

    async def _release_builds_of(self, tags: tuple[str, ...]) -> None:
        """Delete the finished resources of a removed image: a spawn that found one would be told
        the image exists. Without them, the next request of that commit builds again."""
        for tag in tags:
            commit = tag.rpartition(":")[2]
            for namespace in self.config.watched():
                try:
                    listing = await self.resources.list(namespace, label_selector=f"{contract.LABEL_COMMIT}={commit}")
                    for obj in listing.get("items", []):
                        if (
                            obj.get("spec", {}).get("image") == tag
                            and BuildStatus.from_status(obj.get("status")).phase.terminal
                        ):
                            meta = obj["metadata"]
                            await self.resources.delete(meta["namespace"], meta["name"], meta["uid"])
                            log.info(
                                "deleted build %s/%s: its image %s was removed", meta["namespace"], meta["name"], tag
                            )
                except Exception as exc:  # noqa: BLE001 - the resource then expires with its TTL
                    log.warning("could not delete the builds of removed image %s: %s", tag, exc)
