"""Shared listings of a daemon's tags (pure asyncio logic, the listing scripted)."""

from __future__ import annotations

import asyncio

import pytest

from repo2docker_buildcore.taglisting import TagListing
from support.waiting import until

pytestmark = pytest.mark.unit


class Daemon:
    """Lists its tags slowly, counting the listings."""

    def __init__(self) -> None:
        self.tags: set[str] = {"a:1"}
        self.listings = 0
        self.release = asyncio.Event()

    async def list_tags(self) -> frozenset[str]:
        self.listings += 1
        seen = frozenset(self.tags)
        await self.release.wait()
        self.release.clear()
        return seen


async def test_questions_asked_together_share_one_listing():
    daemon = Daemon()
    listing = TagListing(daemon.list_tags)
    asks = [asyncio.create_task(listing.tags()) for _ in range(1000)]
    await until(lambda: daemon.listings == 1, what="the listing to begin")
    daemon.release.set()
    answers = await asyncio.gather(*asks)
    assert daemon.listings == 1 and all(answer == {"a:1"} for answer in answers)


async def test_a_question_asked_during_a_listing_waits_for_the_next():
    """A tag made while a listing is under way may be missing from it: the question after it
    gets the listing after it."""
    daemon = Daemon()
    listing = TagListing(daemon.list_tags)
    first = asyncio.create_task(listing.tags())
    await until(lambda: daemon.listings == 1, what="the first listing to begin")
    daemon.tags.add("b:2")
    second = asyncio.create_task(listing.tags())
    await asyncio.sleep(0.01)
    daemon.release.set()
    assert await first == {"a:1"}
    await until(lambda: daemon.listings == 2, what="the second listing to begin")
    daemon.release.set()
    assert await second == {"a:1", "b:2"} and daemon.listings == 2


async def test_a_failed_listing_fails_its_questions_and_the_next_one_lists_again():
    calls = []

    async def flaky() -> frozenset[str]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("daemon gone")
        return frozenset({"a:1"})

    listing = TagListing(flaky)
    with pytest.raises(OSError):
        await asyncio.gather(listing.tags(), listing.tags())
    assert await listing.tags() == {"a:1"} and len(calls) == 2
