"""`git ls-remote` from the hub, against hosts that misbehave on purpose (real git, real
servers on loopback or the test environment's git server): it is bounded in time, speed,
output and processes, and cheap for repositories with a million refs."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from tornado import web

from repo2dockerspawner.options import RepoPolicy
from repo2dockerspawner.refs import LookupLimits, resolve_ref
from support.builds import dockerfile_repo, head
from support.gitrepos import git
from support.loopback import (
    LoopbackServer,
    advertise_refs,
    answer_with,
    git_children,
    trickle,
    v2_refs_ignoring_prefixes,
)
from support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def policy(testenv) -> RepoPolicy:
    """Loopback and the git server named as internal hosts an admin trusts."""
    return RepoPolicy(schemes=("http",), hosts=("127.0.0.1", testenv["R2D_BRIDGE_IP"]))


async def refused(repo: str, policy: RepoPolicy, limits: LookupLimits | None = None, ref: str = "main") -> str:
    with pytest.raises(web.HTTPError) as info:
        await resolve_ref(repo, ref, policy, limits or LookupLimits())
    assert info.value.status_code == 400
    return info.value.jupyterhub_message


async def test_a_server_that_never_finishes_is_cut_off_with_every_git_process(policy):
    with LoopbackServer(trickle(byte_every=0.5)) as slow:
        url = f"{slow.url}/slow-{uuid.uuid4().hex[:6]}.git"
        # Under 1000 B/s, but the low-speed limit gets far more time than the timeout: only
        # the timeout can end it. A git helper left alive would hold the lookup open (waiting
        # for git means waiting for its pipes), so the lookup must end well within 10 times it.
        limits = LookupLimits(timeout=3, low_speed_time=600)
        try:
            message = await asyncio.wait_for(refused(url, policy, limits), 10 * limits.timeout)
        except asyncio.TimeoutError:
            raise AssertionError("the lookup outlived its timeout: a git process held it open") from None
        assert "did not answer within 3 s" in message, message
        assert slow.connections >= 1
        assert not git_children(url), "a git process outlived the lookup"


async def test_a_server_that_is_too_slow_is_cut_off_by_the_low_speed_limit(policy):
    with LoopbackServer(trickle(byte_every=0.5)) as slow:
        url = f"{slow.url}/slow-{uuid.uuid4().hex[:6]}.git"
        message = await refused(url, policy, LookupLimits(timeout=120, low_speed_time=2))
        assert "too slowly" in message, message
        wait_until(lambda: not git_children(url), timeout=5, what="git to exit")


async def test_an_advertisement_of_a_million_refs_is_refused_past_the_output_cap(policy):
    with LoopbackServer(advertise_refs(1_000_000)) as flood:
        url = f"{flood.url}/flood-{uuid.uuid4().hex[:6]}.git"
        message = await refused(url, policy, LookupLimits(timeout=120, max_output=4 * 2**20))
        assert "more refs than" in message, message
        assert not git_children(url), "a git process outlived the lookup"


async def test_a_repository_with_a_million_refs_costs_only_the_ref_asked_for(policy, git_repos, testenv):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    commit = head(repo)
    # A million branches, written as git itself packs them (sorted, one line each).
    refs = [f"{commit} refs/heads/b{i:07d}" for i in range(1_000_000)] + [f"{commit} refs/heads/main"]
    refs.sort(key=lambda line: line.split(" ", 1)[1])
    packed = repo.bare / "packed-refs"
    packed.write_text("# pack-refs with: peeled fully-peeled sorted \n" + "\n".join(refs) + "\n")
    (repo.bare / "refs" / "heads" / "main").unlink()
    assert git(repo.bare, "for-each-ref", "--count=3", "refs/heads/") and packed.stat().st_size > 50 * 2**20

    # The output cap is far below what listing every ref would print (about 60 MB).
    started = time.monotonic()
    assert await resolve_ref(repo.url, "main", policy, LookupLimits(max_output=2**20)) == commit
    assert await resolve_ref(repo.url, "b0999999", policy, LookupLimits(max_output=2**20)) == commit
    print(f"two lookups in a repository with 1,000,001 refs: {time.monotonic() - started:.2f} s")


async def test_a_protocol_v2_answer_past_the_output_cap_is_refused(policy):
    """A server may ignore the prefixes asked for: what it sends is capped all the same."""
    with LoopbackServer(v2_refs_ignoring_prefixes(1_000_000)) as flood:
        url = f"{flood.url}/flood-{uuid.uuid4().hex[:6]}.git"
        message = await refused(url, policy, LookupLimits(timeout=120, max_output=4 * 2**20))
        assert "more refs than" in message, message
        assert not git_children(url), "a git process outlived the lookup"


@pytest.mark.parametrize(
    "status, expected",
    [
        ("401 Unauthorized", "needs credentials"),
        ("403 Forbidden", "needs credentials"),
        ("404 Not Found", "was not found"),
        ("500 Internal Server Error", "could not be read"),
    ],
)
async def test_answers_of_a_server_are_told_apart(policy, status, expected):
    with LoopbackServer(answer_with(status)) as server:
        message = await refused(f"{server.url}/x.git", policy)
        assert expected in message, message
        assert "fatal" not in message and "returned error" not in message


async def test_a_closed_port_could_not_be_reached(policy):
    with LoopbackServer() as server:
        port = server.port
    message = await refused(f"http://127.0.0.1:{port}/x.git", policy)
    assert "could not be reached" in message and "Couldn't connect" not in message, message
