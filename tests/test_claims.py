"""Claims, Leases and the queue's view of other builders (pure logic; the API server's side is
in test_builders.py)."""

from __future__ import annotations

import asyncio

import pytest

from repo2docker_buildcore.queue import BuildQueue
from repo2docker_operator.claims import LOST_MESSAGE, ClusterView, claim_fields, requeue_fields
from repo2docker_operator.leases import LeaseObservations
from support.fakes import Clock
from support.waiting import until

pytestmark = pytest.mark.unit


def test_a_builder_is_lost_a_lease_duration_after_its_lease_last_changed_by_the_readers_clock():
    clock = Clock()
    seen = LeaseObservations("node-1", duration=15, clock=clock)
    seen.observe("node-2", "7")
    clock.now += 14
    seen.observe("node-2", "7")  # read again, not renewed: its time is when it last changed
    assert not seen.lost("node-2")
    clock.now += 2
    assert seen.lost("node-2") and seen.alive() == ["node-1"]
    seen.observe("node-2", "8")  # renewed: alive again
    assert not seen.lost("node-2") and seen.alive() == ["node-1", "node-2"]


def test_a_builder_is_alone_only_once_it_has_read_the_leases_for_a_whole_duration():
    """Alone, it may create containers ahead of their claims; another builder's Lease may
    simply not have been read yet in its first moments."""
    clock = Clock()
    seen = LeaseObservations("node-1", duration=15, clock=clock)
    assert not seen.alone()  # just started: it cannot tell yet
    clock.now += 16
    assert seen.alone()
    seen.observe("node-2", "3")
    assert not seen.alone()
    clock.now += 16  # node-2 stopped renewing
    assert seen.alone()


def test_a_builder_never_seen_counts_from_the_readers_start_and_the_reader_is_never_lost():
    clock = Clock()
    seen = LeaseObservations("node-1", duration=15, clock=clock)
    assert not seen.lost("gone-before-we-started")
    clock.now += 16
    assert seen.lost("gone-before-we-started")
    assert not seen.lost("node-1")


def test_a_claim_is_made_only_on_an_unclaimed_unfinished_build():
    assert claim_fields({"phase": "Queued"}, "node-1")["builder"] == "node-1"
    assert claim_fields({"phase": "Queued", "builder": "node-2"}, "node-1") is None
    assert claim_fields({"phase": "Queued", "builder": "node-1"}, "node-1") is None  # already held
    assert claim_fields({"phase": "Succeeded"}, "node-1") is None
    assert "claimedAt" in claim_fields({}, "node-1")


def test_a_requeue_takes_only_the_lost_builders_unfinished_build_and_clears_its_run():
    running = {
        "phase": "Building",
        "builder": "node-2",
        "claimedAt": "2026-01-01T00:00:00Z",
        "containerId": "abc",
        "startTime": "2026-01-01T00:00:01Z",
        "logTail": ["step 1"],
        "logLineCount": 1,
    }
    fields = requeue_fields(running, "node-2")
    assert fields["phase"] == "Queued" and fields["message"] == LOST_MESSAGE.format(node="node-2")
    for cleared in ("builder", "claimedAt", "containerId", "startTime", "logTail", "logLineCount"):
        assert cleared in fields and fields[cleared] is None  # a merge patch: None removes it
    assert requeue_fields({**running, "builder": "node-3"}, "node-2") is None  # someone else holds it now
    assert requeue_fields({**running, "phase": "Succeeded"}, "node-2") is None


def test_the_cluster_view_counts_others_claims_and_remembers_each_requesters_last_turn():
    view = ClusterView("node-1")
    view.seen("a", {"phase": "Building", "builder": "node-2", "claimedAt": "2026-01-01T00:00:10Z"}, "ann")
    view.seen("b", {"phase": "Building", "builder": "node-1", "claimedAt": "2026-01-01T00:00:05Z"}, "bob")
    view.seen("c", {"phase": "Queued"}, "cid")
    assert view.elsewhere() == 1
    view.seen("a", {"phase": "Succeeded", "builder": "node-2", "claimedAt": "2026-01-01T00:00:10Z"}, "ann")
    assert view.elsewhere() == 0
    # Finished (and gone from the watch), but Ann's turn was taken then.
    view.seen("a", {}, "ann", deleted=True)
    assert view.last_claimed["ann"] > view.last_claimed["bob"]
    assert "cid" not in view.last_claimed


async def test_the_cluster_cap_counts_builds_other_builders_hold():
    queue = BuildQueue(limit=2, cluster_limit=3)
    queue.set_elsewhere(2)
    await asyncio.wait_for(queue.acquire("mine-1"), 1)
    second = asyncio.create_task(queue.acquire("mine-2"))
    await until(lambda: queue.position("mine-2") is not None, what="the second to queue")
    assert not second.done() and queue.position("mine-2") == 1  # 2 elsewhere + 1 here = 3
    queue.set_elsewhere(1)  # one of theirs finished
    await asyncio.wait_for(second, 1)
    assert queue.running == 2


async def test_a_turn_taken_on_another_builder_counts_in_this_builders_fair_order():
    queue = BuildQueue(limit=1)
    queue.adopt("running")
    got: list[str] = []

    async def wait(key: str, requester: str, created: int) -> None:
        await queue.acquire(key, (created,), requester=requester)
        got.append(key)
        queue.release(key)

    tasks = [asyncio.create_task(wait("ann-2", "ann", 1)), asyncio.create_task(wait("bob-1", "bob", 2))]
    await until(lambda: queue.waiting == 2, what="both to queue")
    assert queue.position("ann-2") == 1  # neither has had a turn: the older build first
    queue.note_start("ann", 1e12)  # Ann's other build was just claimed on another node
    assert queue.position("bob-1") == 1
    queue.release("running")
    await asyncio.gather(*tasks)
    assert got == ["bob-1", "ann-2"]


async def test_a_held_back_build_keeps_its_place_lets_the_next_one_by_and_starts_after_its_hold():
    queue = BuildQueue(limit=1)
    got: list[str] = []

    async def wait(key: str, created: int, hold: float = 0.0) -> None:
        await queue.acquire(key, (created,), hold=hold)
        got.append(key)

    held = asyncio.create_task(wait("held", 1, hold=0.3))
    await until(lambda: queue.position("held") is not None, what="the held build to queue")
    assert queue.position("held") == 1 and queue.running == 0  # a free slot, but not for it yet
    other = asyncio.create_task(wait("other", 2))
    await asyncio.wait_for(other, 1)
    assert got == ["other"] and queue.position("held") == 1
    queue.release("other")
    await asyncio.wait_for(held, 1)  # the hold ended: it starts without anyone releasing again
    assert got == ["other", "held"]


def test_a_lease_speaks_for_the_builder_its_name_says_and_only_if_its_holder_agrees():
    from repo2docker_operator.leases import builder_of, lease_name

    assert builder_of(lease_name("r2d-node-2"), "r2d-node-2") == "r2d-node-2"
    # A Lease of another name claiming to hold for node 2 would keep a lost node 'alive'.
    assert builder_of("anything", "r2d-node-2") is None
    assert builder_of(lease_name("fake"), "r2d-node-2") is None
    assert builder_of(lease_name("r2d-node-2"), None) is None
    assert builder_of(lease_name("Bad_Name"), "Bad_Name") is None
