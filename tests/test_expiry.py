"""Expiries: finished resources deleted when their TTL ends, by one task (pure logic, fake clock).
The operator's use of it on the real API server is in test_operator.py."""

from __future__ import annotations

import asyncio

import pytest

from repo2docker_operator.expiry import RETRY_AFTER, Expiries
from support.fakes import Clock
from support.waiting import until

pytestmark = pytest.mark.unit


def at(seconds: float) -> float:
    return seconds


def expiries(ttl: float = 100, fail: set[str] = frozenset()) -> tuple[Expiries, list[tuple], Clock]:
    deleted: list[tuple] = []
    clock = Clock(1_000_000.0)

    async def delete(namespace, name, uid):
        if name in fail:
            raise RuntimeError("API down")
        deleted.append((namespace, name, uid))

    return Expiries(delete, ttl, clock), deleted, clock


async def test_deleted_when_the_ttl_since_completion_ends_in_order():
    exp, deleted, clock = expiries()
    exp.finished("ns", "late", "u2", at(clock.now + 50))
    exp.finished("ns", "early", "u1", at(clock.now - 10))
    assert await exp.expire_due() == 0
    clock.now += 90
    assert await exp.expire_due() == 1 and deleted == [("ns", "early", "u1")]
    clock.now += 60
    assert await exp.expire_due() == 1 and deleted[-1] == ("ns", "late", "u2")
    assert len(exp) == 0


async def test_a_relist_adds_nothing():
    exp, deleted, clock = expiries()
    exp.finished("ns", "a", "u1", at(clock.now))
    exp.finished("ns", "a", "u1", at(clock.now))  # seen again after a restart's relist
    assert len(exp._heap) == 1


async def test_ttl_zero_keeps_everything():
    exp, deleted, clock = expiries(ttl=0)
    exp.finished("ns", "a", "u1", at(clock.now - 10_000))
    assert len(exp) == 0 and await exp.expire_due() == 0


async def test_a_failed_deletion_is_retried_later_not_lost():
    exp, deleted, clock = expiries(fail={"a"})
    exp.finished("ns", "a", "u1", at(clock.now - 200))
    assert await exp.expire_due() == 0
    assert exp.next_due() == clock.now + RETRY_AFTER


async def test_the_sleeper_wakes_for_an_earlier_expiry():
    """One task: it sleeps until the earliest expiry and is woken when a sooner one arrives."""
    exp, deleted, _ = expiries(ttl=0.05, fail=set())
    exp._clock = lambda: asyncio.get_running_loop().time() + 1_000_000
    task = asyncio.create_task(exp.run())
    try:
        await asyncio.sleep(0)  # the sleeper goes to sleep with nothing to do
        exp.finished("ns", "a", "u1", None)
        await until(lambda: deleted == [("ns", "a", "u1")], timeout=2, what="the sleeper to wake and delete")
    finally:
        task.cancel()
