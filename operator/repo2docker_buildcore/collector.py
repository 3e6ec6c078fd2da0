"""The image garbage collector: gathers facts from the Docker daemon, lets ``imagegc.choose``
decide, and removes what it chose. Run by the operator and by the hub's embedded backend, each
for the daemon it builds with.

A pass every ``interval`` seconds rather than on every build: usage only grows with builds,
a pass costs one `docker system df` (the daemon walks its layers), and watermarks with
hysteresis make the timing uncritical. Between passes a task follows the daemon's container
events to record uses (see ``imageuse.py`` for why there).

BuildKit's cache goes first when storage is over the high watermark: losing it only slows
future builds, while losing an image makes its next user wait for a whole build.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .backoff import Backoff
from .daemon_images import ImageStore
from .docker_api import RunnerError
from .imagegc import Decision, GCPolicy, ImageInfo, choose, removable
from .imageuse import UseLedger
from .settings import setting

log = logging.getLogger(__name__)
NO_TAG = "<none>:<none>"
FIRST_PASS_AFTER = 30.0  # seconds after start, at most
SUBSCRIBE_WAIT = 10.0  # seconds start() waits for a daemon that neither answers nor refuses


@dataclass
class Usage:
    """The daemon's accounting of image storage, in bytes."""

    layers: int  # every image's layers, counted once
    build_cache: int
    ours: int  # held by our images alone (what removing all of them would free)
    images: list[ImageInfo] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.layers + self.build_cache


@dataclass
class GCReport:
    before: Usage
    after: Usage
    decision: Decision
    policy: GCPolicy  # as applied: with shares of the disk turned into bytes for this pass
    removed: list[ImageInfo] = field(default_factory=list)
    skipped: list[ImageInfo] = field(default_factory=list)
    cache_freed: int = 0

    @property
    def freed(self) -> int:
        """Bytes freed by the daemon's own accounting."""
        return self.before.total - self.after.total


def usage_from_df(df: dict, prefix: str, ledger: UseLedger) -> Usage:
    images = []
    for raw in df.get("Images") or []:
        tags = tuple(t for t in raw.get("RepoTags") or () if t != NO_TAG)
        shared = raw.get("SharedSize", -1)
        size = int(raw.get("Size") or 0)
        images.append(
            ImageInfo(
                id=raw["Id"],
                tags=tags,
                unique_size=size - shared if shared and shared > 0 else size,
                created=float(raw.get("Created") or 0),
                containers=max(int(raw.get("Containers") or 0), 0),
                last_used=ledger.last_used((*tags, raw["Id"])),
                labels=dict(raw.get("Labels") or {}),
            )
        )
    # As `docker system df` counts it: shared cache records belong to several and count once elsewhere.
    cache = sum(int(c.get("Size") or 0) for c in df.get("BuildCache") or () if not c.get("Shared"))
    ours = sum(i.unique_size for i in images if i.ours(prefix))
    return Usage(layers=int(df.get("LayersSize") or 0), build_cache=cache, ours=ours, images=images)


class ImageCollector:
    def __init__(
        self,
        images: ImageStore,
        policy: GCPolicy,
        ledger: UseLedger | None = None,
        wanted: Callable[[], Iterable[str]] = lambda: (),
        interval: float = setting("gc_interval").default,
        on_removed: Callable[[ImageInfo, str], None] | None = None,
        on_usage: Callable[[int], None] | None = None,
        where: str = "",
    ) -> None:
        self.images = images
        self.policy = policy
        self.ledger = ledger or UseLedger()
        self.wanted = wanted
        self.interval = interval
        self.on_removed = on_removed
        self.on_usage = on_usage
        self.where = where  # for log lines: which daemon (operators share log aggregators)
        self._tasks: list[asyncio.Task] = []
        self._started = False
        self._last_event = 0.0
        # Ids of our images as of the last pass: a container created by image id is a use of
        # one of these or of nothing we keep (builders create theirs from base images by id).
        self._our_ids: set[str] = set()
        self._first_attempt = asyncio.Event()  # the first subscription to events answered or failed
        self._lock = asyncio.Lock()

    # ---- use ------------------------------------------------------------------------------

    def touch(self, image: str, when: float | None = None) -> None:
        """Record a use (a build that just succeeded counts: its server is about to start)."""
        self.ledger.touch(image, when)

    def _on_container(self, image: str, when: float) -> None:
        self._last_event = max(self._last_event, when)
        if image.startswith(self.policy.prefix) or image in self._our_ids:
            self.ledger.touch(image, when)

    async def _follow_uses(self) -> None:
        backoff = Backoff.doubling(1.0, 30.0)
        while True:
            try:
                # From the start (or the last event seen): the daemon replays what happened
                # before the subscription, so no use between start() and here is lost.
                await self.images.container_uses(
                    self._on_container, since=self._last_event, on_subscribed=self._first_attempt.set
                )
                backoff.reset()  # followed until the daemon went away: try again soon
            except Exception as exc:  # noqa: BLE001 - Docker away: retry
                log.debug("cannot follow container events (%s); retrying", exc)
            self._first_attempt.set()
            await asyncio.sleep(backoff.next())

    # ---- passes -----------------------------------------------------------------------------

    async def usage(self) -> Usage:
        return usage_from_df(await self.images.disk_usage(), self.policy.prefix, self.ledger)

    async def run_once(self, now: float | None = None) -> GCReport:
        """One pass: prune the cache if over the watermark, then remove the chosen images."""
        async with self._lock:
            now = time.time() if now is None else now
            before = await self.usage()
            for image in before.images:  # a container uses it now: that is a use now
                if image.containers and image.ours(self.policy.prefix):
                    for tag in image.tags:
                        self.ledger.touch(tag, now)
            policy = await self._policy_for(before)
            current, cache_freed = before, 0
            high, target = policy.high_watermark, policy.target
            if high is not None and before.total > high and before.build_cache:
                keep = max(target - before.layers, 0)
                cache_freed = await self.images.prune_build_cache(keep)
                log.info("%spruned the build cache to %s bytes: %s bytes freed", self.where, keep, cache_freed)
                current = await self.usage()
            decision = choose(current.images, current.total, policy, set(self.wanted()), now)
            report = GCReport(before=before, after=current, decision=decision, policy=policy, cache_freed=cache_freed)
            for image in decision.remove:
                await self._remove(image, decision.reasons[image.id], report)
            if report.removed or cache_freed:
                report.after = await self.usage()
            # Only our images' uses are worth keeping: the record stays as small as the store.
            self._our_ids = {i.id for i in report.after.images if i.ours(self.policy.prefix)}
            self.ledger.keep_only(
                {ref for i in report.after.images if i.ours(self.policy.prefix) for ref in (*i.tags, i.id)}
            )
            await self.ledger.save()
            if self.on_usage:
                self.on_usage(report.after.ours)
            if report.removed:
                log.info(
                    "%simage GC freed %s bytes (daemon accounting): %s → %s",
                    self.where,
                    report.freed,
                    report.before.total,
                    report.after.total,
                )
            return report

    async def _policy_for(self, usage: Usage) -> GCPolicy:
        """The policy in bytes for this pass: shares of the disk are measured now."""
        if not self.policy.by_disk_share:
            return self.policy
        try:
            disk = await self.images.data_root_usage()
        except RunnerError as exc:
            log.warning("%sno removal by size this pass: %s", self.where, exc)
            return self.policy.without_size_limits()
        policy = self.policy.for_disk(disk, usage.total)
        log.debug(
            "%sdisk %s of %s bytes used; images may hold %s (high) / %s (low) bytes, hold %s",
            self.where,
            disk.used,
            disk.size,
            policy.high_watermark,
            policy.target,
            usage.total,
        )
        return policy

    def _still_removable(self, image: ImageInfo) -> bool:
        """Checked again just before removing: the pass measured a while ago, and meanwhile a
        build may have found the image and told a spawn to use it (a use, or a wanted image)."""
        fresh = dataclasses.replace(image, last_used=self.ledger.last_used((*image.tags, image.id)))
        return removable(fresh, self.policy, set(self.wanted()), time.time())

    async def _remove(self, image: ImageInfo, reason: str, report: GCReport) -> None:
        name = ", ".join(image.tags) or image.id[:19]
        if not self._still_removable(image):
            log.info("%skept image %s: it was just asked for", self.where, name)
            report.skipped.append(image)
            return
        try:
            removed = await self.images.remove_image(image.id)
        except RunnerError as exc:  # one image is never worth the pass
            log.warning("%scould not remove image %s: %s", self.where, name, exc)
            removed = False
        if not removed:
            log.info("%skept image %s: it is in use after all, or gone", self.where, name)
            report.skipped.append(image)
            return
        report.removed.append(image)
        self.ledger.forget((*image.tags, image.id))  # at once: a stop mid-pass saves the record
        log.info("%sremoved image %s (%s bytes): %s", self.where, name, image.unique_size, reason)
        if self.on_removed:
            self.on_removed(image, reason)

    async def _passes(self) -> None:
        # Start-up first (re-attaching builds, the first requests): a `df` walks every layer.
        await asyncio.sleep(min(self.interval, FIRST_PASS_AFTER))
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - Docker away or an API hiccup: next interval
                log.warning("%simage GC pass failed: %s", self.where, exc)
            await asyncio.sleep(self.interval)

    # ---- lifecycle ----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Load the record of uses, then follow uses and run passes (idempotent)."""
        if self._started:
            return
        self._started = True
        self._last_event = time.time()
        await self.ledger.load()
        self._tasks = [asyncio.create_task(self._follow_uses(), name="follow image uses")]
        # Returns once the daemon follows (or refused): a container created after start()
        # is then a use for sure. Docker away costs no wait; it is retried in the background.
        try:
            await asyncio.wait_for(self._first_attempt.wait(), SUBSCRIBE_WAIT)
        except asyncio.TimeoutError:
            log.warning("%sthe Docker daemon does not answer a subscription to its events yet", self.where)
        if self.policy.enabled and self.interval > 0:
            self._tasks.append(asyncio.create_task(self._passes(), name="image GC"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.ledger.save()
