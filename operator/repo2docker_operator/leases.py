"""Which builders are alive: each holds a `coordination.k8s.io` Lease it renews, and reads
everyone's.

Why a Lease per builder rather than leader election: every builder builds; what the others
need to know is only whether a builder that claimed builds is still there, so that a lost
node's builds go back to the queue.

Why expiry is judged by when *this reader* last saw a Lease change, on its own monotonic
clock, rather than by the `renewTime` written in it: node clocks differ, and a builder whose
clock runs a minute behind would otherwise always look expired (or one ahead, never). A
builder never seen renewing counts from this reader's start, so a claim by a node that is
gone before this operator started is still taken over, one lease duration later.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from repo2docker_buildcore import contract
from repo2docker_buildcore.kubeapi import MERGE_PATCH, ApiError, KubeApi, custom_path

log = logging.getLogger(__name__)
LEASE_PREFIX = "repo2docker-builder."
LABEL_BUILDER = f"{contract.GROUP}/builder"


def lease_name(builder: str) -> str:
    return LEASE_PREFIX + builder


def builder_of(name: str, holder: str | None) -> str | None:
    """The builder a Lease speaks for: the one its name says, and only if the holder written
    inside agrees. Whoever may write Leases in the namespace could otherwise keep a lost
    builder 'alive' (its builds never requeued) from a Lease of any name."""
    if not name.startswith(LEASE_PREFIX):
        return None
    builder = name[len(LEASE_PREFIX) :]
    return builder if holder == builder and contract.is_dns_label(builder) else None


@dataclass
class LeaseObservations:
    """When each builder's Lease was last seen to change, by this reader's clock."""

    me: str
    duration: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    _versions: dict[str, str] = field(default_factory=dict)
    _changed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    def observe(self, builder: str, resource_version: str) -> None:
        if self._versions.get(builder) != resource_version:
            self._versions[builder] = resource_version
            self._changed[builder] = self.clock()

    def lost(self, builder: str) -> bool:
        """Not renewed for a whole lease duration (this builder itself is never lost to itself)."""
        if builder == self.me:
            return False
        return self.clock() - self._changed.get(builder, self.started) > self.duration

    def alive(self) -> list[str]:
        """Builders seen renewing within the duration, this one included."""
        return sorted({self.me, *(b for b in self._changed if not self.lost(b))})

    def alone(self) -> bool:
        """No other builder is alive, as far as can be told: not before a whole duration since
        this reader's start (another builder's Lease may not have been read yet)."""
        return self.clock() - self.started > self.duration and self.alive() == [self.me]


class BuilderLeases:
    """Renews this builder's Lease and observes the others', every third of the duration."""

    def __init__(self, api: KubeApi, namespace: str, me: str, duration: float) -> None:
        self.api = api
        self.namespace = namespace
        self.observations = LeaseObservations(me, duration)
        self._warned = False  # once per outage: a renewal every few seconds would flood the log

    @property
    def me(self) -> str:
        return self.observations.me

    def lost(self, builder: str) -> bool:
        return self.observations.lost(builder)

    async def refresh(self) -> None:
        """Renew this builder's Lease and read everyone's, once."""
        await self._renew()
        await self._observe()

    async def try_refresh(self) -> bool:
        """`refresh()`; False, with a warning once per outage, if the API server cannot be
        reached (the Leases read before stay what this builder knows)."""
        try:
            await self.refresh()
        except (ApiError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            if not self._warned:
                log.warning("cannot renew or read builder Leases in %s: %s", self.namespace, exc)
                self._warned = True
            return False
        self._warned = False
        return True

    async def run(self, first_done: bool = False) -> None:
        """Refresh every third of the duration (`first_done`: the first refresh is done)."""
        period = self.observations.duration / 3
        while True:
            if not first_done:
                await self.try_refresh()
            first_done = False
            await asyncio.sleep(period)

    async def _renew(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        name = lease_name(self.me)
        spec = {"holderIdentity": self.me, "leaseDurationSeconds": int(self.observations.duration), "renewTime": now}
        try:
            await self.api.request("PATCH", self._path(name), body={"spec": spec}, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {"metadata": {"name": name, "labels": {LABEL_BUILDER: "true"}}, "spec": {**spec, "acquireTime": now}}
            await self.api.request("POST", self._path(), body=body)

    async def _observe(self) -> None:
        leases = await self.api.request("GET", self._path(), params={"labelSelector": f"{LABEL_BUILDER}=true"})
        for lease in leases.get("items") or []:
            builder = builder_of(lease["metadata"]["name"], (lease.get("spec") or {}).get("holderIdentity"))
            if builder:
                self.observations.observe(builder, lease["metadata"]["resourceVersion"])

    def _path(self, name: str = "") -> str:
        return custom_path(self.namespace, "coordination.k8s.io", "v1", "leases", name)
