"""The fair build queue and its cap (pure asyncio logic)."""

from __future__ import annotations

import asyncio

import pytest

from repo2docker_buildcore.queue import BuildQueue, fair_order

pytestmark = pytest.mark.unit


async def test_never_more_than_the_limit_and_fifo_order():
    queue = BuildQueue(2)
    order, peak = [], 0

    async def build(key: str, created: int) -> None:
        nonlocal peak
        await queue.acquire(key, (created,))
        order.append(key)
        peak = max(peak, queue.running)
        await asyncio.sleep(0.01)
        queue.release(key)

    await asyncio.gather(*(build(f"b{i}", i) for i in range(6)))
    assert peak == 2
    assert order == [f"b{i}" for i in range(6)]


async def test_order_follows_creation_not_arrival():
    queue = BuildQueue(1)
    queue.adopt("running")
    got = []

    async def waiter(key, created):
        await queue.acquire(key, (created,))
        got.append(key)

    late = asyncio.create_task(waiter("created-later", 2))
    await asyncio.sleep(0)
    early = asyncio.create_task(waiter("created-earlier", 1))
    await asyncio.sleep(0)
    assert queue.position("created-earlier") == 1 and queue.position("created-later") == 2
    queue.release("running")
    await asyncio.sleep(0)
    assert got == ["created-earlier"]
    queue.release("created-earlier")
    await asyncio.gather(late, early)


async def test_positions_are_reported_as_they_change():
    queue = BuildQueue(1)
    queue.adopt("a")
    seen: dict[str, list[int]] = {"b": [], "c": []}
    tasks = [asyncio.create_task(queue.acquire(k, (i,), seen[k].append)) for i, k in enumerate("bc")]
    await asyncio.sleep(0)
    queue.release("a")
    await asyncio.sleep(0)
    assert seen == {"b": [1], "c": [2, 1]}
    queue.release("b")
    await asyncio.gather(*tasks)


async def test_cancelled_waiter_leaves_the_queue():
    queue = BuildQueue(1)
    queue.adopt("a")
    task = asyncio.create_task(queue.acquire("b"))
    await asyncio.sleep(0)
    assert queue.waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.waiting == 0 and queue.running == 1


async def test_adopted_builds_count_even_over_a_lowered_limit():
    queue = BuildQueue(1)
    queue.adopt("x")
    queue.adopt("y")
    task = asyncio.create_task(queue.acquire("z"))
    await asyncio.sleep(0)
    queue.release("x")
    await asyncio.sleep(0)
    assert not task.done()  # still 1 running (y) = limit
    queue.release("y")
    await asyncio.wait_for(task, 1)


async def test_zero_means_no_limit():
    queue = BuildQueue(0)
    await asyncio.wait_for(asyncio.gather(*(queue.acquire(i) for i in range(50))), 1)
    assert queue.running == 50


def test_fair_order_round_robins_requesters_and_counts_their_running_builds():
    five = [("ann", (t,), f"ann{t}") for t in range(1, 6)]
    # Ann queued five, then Bob one: Bob's goes second, not sixth; Ann's keep their order.
    assert fair_order([*five, ("bob", (9,), "bob9")], {}) == ["ann1", "bob9", "ann2", "ann3", "ann4", "ann5"]
    # Ann's last build started after Bob's: Bob's turn comes first; then they alternate.
    assert fair_order([*five, ("bob", (9,), "bob9"), ("bob", (10,), "bob10")], {"ann": 5.0, "bob": 2.0}) == [
        "bob9",
        "ann1",
        "bob10",
        "ann2",
        "ann3",
        "ann4",
        "ann5",
    ]
    # Two users alternate, each oldest first, whatever order they arrive in.
    mixed = [("bob", (4,), "b4"), ("ann", (2,), "a2"), ("bob", (3,), "b3"), ("ann", (1,), "a1")]
    assert fair_order(mixed, {}) == ["a1", "b3", "a2", "b4"]
    # No requester recorded: one shared bucket, in creation order.
    assert fair_order([("", (2,), "x2"), ("", (1,), "x1"), ("cat", (3,), "c3")], {}) == ["x1", "c3", "x2"]


async def test_one_users_many_builds_do_not_all_go_before_anothers_first():
    queue = BuildQueue(1)
    started = []

    async def build(key: str, created: int, requester: str) -> None:
        await queue.acquire(key, (created,), requester=requester)
        started.append(key)
        await asyncio.sleep(0.01)
        queue.release(key)

    tasks = [asyncio.create_task(build(f"ann{i}", i, "ann")) for i in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(build("bob", 9, "bob")))
    await asyncio.sleep(0)
    assert queue.position("bob") == 1  # ann0 runs; her next four wait behind Bob's first
    await asyncio.gather(*tasks)
    assert started == ["ann0", "bob", "ann1", "ann2", "ann3", "ann4"]


def test_prebuilds_go_after_every_launch_whatever_their_age():
    from repo2docker_buildcore.contract import PREBUILD_REQUESTER as HUB

    waiting = [(HUB, (1,), "pre1"), ("ann", (5,), "ann5"), (HUB, (2,), "pre2"), ("bob", (7,), "bob7")]
    assert fair_order(waiting, {"ann": 3.0}) == ["bob7", "ann5", "pre1", "pre2"]


async def test_a_prebuild_a_user_joins_takes_that_user_s_turn():
    from repo2docker_buildcore.contract import PREBUILD_REQUESTER as HUB

    queue = BuildQueue(1)
    await queue.acquire("running")
    waiters = [
        asyncio.create_task(queue.acquire(key, (n,), requester=who))
        for n, (key, who) in enumerate([("pre", HUB), ("ann", "ann")])
    ]
    await asyncio.sleep(0)
    assert (queue.position("ann"), queue.position("pre")) == (1, 2)
    queue.set_requester("pre", "bob")  # Bob launched the commit the hub was prebuilding
    assert (queue.position("pre"), queue.position("ann")) == (1, 2)  # older, and now a launch
    queue.release("running")
    await waiters[0]
    queue.release("pre")
    await waiters[1]


async def _work_for_one_freed_slot(monkeypatch, waiters: int) -> tuple[int, int, dict[str, float | None]]:
    """Orderings and estimate simulations made for one freed slot with `waiters` waiting, each
    of them asking its position and estimate when told it moved (as a queued build does)."""
    from repo2docker_buildcore import queue as queue_module

    calls = {"order": 0, "simulate": 0}

    def counted(name: str, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(queue_module, "fair_order", counted("order", queue_module.fair_order))
    monkeypatch.setattr(queue_module, "start_delays", counted("simulate", queue_module.start_delays))
    queue = BuildQueue(1)
    queue.history.record("repo", 60.0)
    queue.adopt("running", repo="repo")
    told: dict[str, float | None] = {}

    def asker(key: str):
        def on_position(position: int) -> None:
            assert queue.position(key) == position
            told[key] = queue.estimate(key)

        return on_position

    tasks = [
        asyncio.create_task(queue.acquire(f"w{i}", (i,), asker(f"w{i}"), requester=f"user{i % 7}", repo="repo"))
        for i in range(waiters)
    ]
    await asyncio.sleep(0)
    calls.update(order=0, simulate=0)
    told.clear()
    queue.release("running", record=False)
    await asyncio.sleep(0)
    work = (calls["order"], calls["simulate"], dict(told))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return work


async def test_the_work_for_one_event_does_not_grow_with_the_queue(monkeypatch):
    """One freed slot moves every waiter, and each then asks its position and estimate: the
    queue orders and simulates once for all of them (it did once per asker: with 1,000
    waiters 2,000 orderings and 999 simulations for one event)."""
    small = await _work_for_one_freed_slot(monkeypatch, 10)
    large = await _work_for_one_freed_slot(monkeypatch, 1000)
    assert small[:2] == large[:2] == (2, 1), (small[:2], large[:2])
    assert len(large[2]) == 999 and all(estimate is not None for estimate in large[2].values())
    # The estimates themselves: w1 runs now (60 s expected), so the next waiter starts in about a minute.
    assert 59 <= sorted(large[2].values())[0] <= 60


def test_fair_order_of_many_requesters_is_the_round_robin():
    """The heap gives what taking the least recent requester each time gives."""
    waiting = [(f"user{i % 13}", (i,), i) for i in range(200)]
    last = {f"user{i}": float(i * 7 % 13) for i in range(13)}
    expected, queues, turn, later = [], {}, dict(last), max(last.values())
    for requester, order, item in waiting:
        queues.setdefault(requester, []).append((order, item))
    while queues:
        requester = min(queues, key=lambda r: (turn[r], queues[r][0][0]))
        expected.append(queues[requester].pop(0)[1])
        later += 1.0
        turn[requester] = later
        if not queues[requester]:
            del queues[requester]
    assert fair_order(waiting, last) == expected
