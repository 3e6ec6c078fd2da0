"""Reading build resources: what the operator makes of the API server's answers at start
(pure logic, with the listing scripted)."""

from __future__ import annotations

import pytest

from repo2docker_buildcore.kubeapi import ApiError
from repo2docker_buildcore.resources import UNFINISHED_SELECTOR, BuildResources, OutdatedCRD

pytestmark = pytest.mark.unit


def resources(*answers) -> tuple[BuildResources, list]:
    """BuildResources whose listing gives `answers` in turn (an exception is raised)."""
    asked: list = []
    pending = list(answers)

    async def listing(namespace, **query):
        asked.append((namespace, query))
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    r = BuildResources.__new__(BuildResources)
    r.list = listing
    return r, asked


async def test_a_crd_installed_a_moment_ago_is_waited_for():
    busy = ApiError(429, "Too Many Requests")  # "storage is (re)initializing"
    r, asked = resources(busy, busy, {"items": []})
    await r.check_selectable_fields("ns")
    assert asked == [("ns", {"field_selector": UNFINISHED_SELECTOR, "limit": 1})] * 3


async def test_a_crd_without_the_selectable_field_is_named_and_other_refusals_are_not_retried():
    r, _ = resources(ApiError(400, "field label not supported"))
    with pytest.raises(OutdatedCRD, match="kubectl apply -f crds/repo2dockerbuilds.yaml"):
        await r.check_selectable_fields("ns")
    r, asked = resources(ApiError(403, "Forbidden"))
    with pytest.raises(ApiError):
        await r.check_selectable_fields("ns")
    assert len(asked) == 1
    r, asked = resources(*[ApiError(503, "Unavailable")] * 3)
    with pytest.raises(ApiError):
        await r.check_selectable_fields("ns", within=1.0)  # 0.5 s, then 1 s would pass it
    assert len(asked) == 2


def test_only_answers_that_may_change_are_asked_again():
    import asyncio

    import aiohttp

    from repo2docker_buildcore.resources import worth_asking_again

    assert all(worth_asking_again(ApiError(code)) for code in (408, 429, 500, 502, 503, 504))
    assert not any(worth_asking_again(ApiError(code)) for code in (400, 403, 404, 409, 422))
    assert worth_asking_again(aiohttp.ClientConnectionError()) and worth_asking_again(asyncio.TimeoutError())
    assert not worth_asking_again(ValueError("a bug"))
