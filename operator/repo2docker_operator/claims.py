"""Claims: exactly one builder builds each build, decided by the API server.

Every builder runs a daemon for every unfinished build and queues it. The one that gets a
free slot for it first claims it by writing its name into `status.builder`, with the
resourceVersion it read as the precondition (`BuildResources.patch_status_where`): of two
claims made from the same read, the API server accepts one and answers the other 409; the
loser reads again, sees the winner's name, and stops wanting the build. Only the claimer
writes the build's status from then on.

A builder whose Lease expires is lost (`leases.py`): any other builder puts its unfinished
builds back in the queue by the same kind of guarded write (only if the lost one still holds
it), and the queue gives them to whoever has a slot. A lost builder that comes back finds
its claim gone and removes its container without writing anything.

`ClusterView` is what one builder knows of the others from the watch: how many builds they
run (for a cluster-wide cap) and when each requester's builds were last claimed anywhere (so
the fair order is the same on every builder).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildStatus, Phase
from repo2docker_buildcore.resources import BuildResources
from repo2docker_buildcore.runner import BuildRef
from repo2docker_buildcore.status import parse_iso

LOST_MESSAGE = "The node {node} was lost (its builder's Lease expired); the build went back to the queue."
# What a requeue clears: the lost builder's run of the build, so the next one starts afresh.
_RUN_FIELDS = ("builder", "claimedAt", "containerId", "startTime", "logTail", "logLineCount", "queuePosition")


def claim_fields(status: dict[str, Any], me: str) -> dict[str, Any] | None:
    """The status patch that claims an unclaimed, unfinished build for `me`, else None."""
    if status.get("builder") or BuildStatus.from_status(status).phase.terminal:
        return None
    return {"builder": me, "claimedAt": _now_ms()}


def requeue_fields(status: dict[str, Any], lost: str) -> dict[str, Any] | None:
    """The patch that takes a build from the lost builder `lost` and queues it again, else None."""
    if status.get("builder") != lost or BuildStatus.from_status(status).phase.terminal:
        return None
    return {**dict.fromkeys(_RUN_FIELDS), "phase": Phase.QUEUED.value, "message": LOST_MESSAGE.format(node=lost)}


async def claim(resources: BuildResources, ref: BuildRef, me: str) -> str | None:
    """Claim the build; the builder that holds it afterwards (`me` if this claim won, or the
    winner), None if it is gone or finished."""
    holder: list[str | None] = [None]

    def decide(status: dict[str, Any]) -> dict[str, Any] | None:
        holder[0] = status.get("builder") or None
        return claim_fields(status, me)

    if await resources.patch_status_where(ref.namespace, ref.name, ref.uid, decide):
        return me
    return holder[0]


async def requeue(resources: BuildResources, ref: BuildRef, lost: str) -> bool:
    """Queue the build again if the lost builder still holds it (another builder may have
    done it already: then False)."""
    return await resources.patch_status_where(
        ref.namespace, ref.name, ref.uid, lambda status: requeue_fields(status, lost)
    )


def _now_ms() -> str:
    """Milliseconds: claims of one second are told apart in the fair order (and in benches)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(iso: str | None) -> float | None:
    when = parse_iso(iso)
    return when.timestamp() if when else None


@dataclass
class ClusterView:
    """The unfinished builds' claims as the watch shows them, and each requester's last claim."""

    me: str
    _claims: dict[str, str] = field(default_factory=dict)  # uid -> builder
    last_claimed: dict[str, float] = field(default_factory=dict)  # requester -> unix time
    last_built: dict[str, str] = field(default_factory=dict)  # repository -> builder of its last build

    def seen(
        self, uid: str, status: dict[str, Any] | None, requester: str, deleted: bool = False, repo: str = ""
    ) -> None:
        """A watch event of one build. A build that left the watch (finished) is forgotten,
        except for when its requester's build was claimed (that turn stays taken) and which
        builder built its repository (that node has its layers)."""
        status = status or {}
        builder = status.get("builder")
        if builder and repo and status.get("containerId") and BuildStatus.from_status(status).phase == Phase.SUCCEEDED:
            self.last_built[repo] = builder
        if deleted or not builder or BuildStatus.from_status(status).phase.terminal:
            self._claims.pop(uid, None)
        else:
            self._claims[uid] = builder
        claimed = _epoch(status.get("claimedAt"))
        if builder and claimed is not None and claimed > self.last_claimed.get(requester, float("-inf")):
            self.last_claimed[requester] = claimed

    def elsewhere(self) -> int:
        """Builds that other builders hold (running, or about to)."""
        return sum(1 for builder in self._claims.values() if builder != self.me)


def requester_of(meta: dict[str, Any]) -> str:
    return (meta.get("annotations") or {}).get(contract.ANNOTATION_REQUESTED_BY, "")
