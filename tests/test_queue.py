"""The FIFO build queue and its cap (pure asyncio logic)."""

from __future__ import annotations

import asyncio

import pytest

from repo2docker_buildcore.queue import BuildQueue

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
