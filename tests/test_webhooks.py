"""Webhook verification and prebuild settings (pure logic); deliveries to a real hub are in
test_prebuilds.py."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from repo2dockerspawner.options import RepoPolicy
from repo2dockerspawner.prebuilds import watched_repos
from repo2dockerspawner.webhooks import repository_urls, verified

pytestmark = pytest.mark.unit
BODY = b'{"ref": "refs/heads/main", "repository": {"clone_url": "https://git.example.org/a/b.git"}}'


def sign(secret: str, body: bytes = BODY) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_each_forge_s_signature_is_checked_against_the_secret():
    good = sign("s3cret")
    assert verified({"X-Hub-Signature-256": f"sha256={good}"}, BODY, "s3cret")  # GitHub
    assert verified({"X-Gitea-Signature": good}, BODY, "s3cret")
    assert verified({"X-Forgejo-Signature": good}, BODY, "s3cret")
    assert verified({"X-Gitlab-Token": "s3cret"}, BODY, "s3cret")
    refused = [
        ({"X-Hub-Signature-256": f"sha256={sign('other')}"}, BODY),  # another secret
        ({"X-Hub-Signature-256": f"sha256={good}"}, BODY + b" "),  # a changed body
        ({"X-Gitlab-Token": "s3cre"}, BODY),
        ({}, BODY),  # unsigned
        ({"X-Hub-Signature-256": "sha256=", "X-Gitlab-Token": "s3cret"}, BODY),  # a signature header wins
    ]
    for headers, body in refused:
        assert not verified(headers, body, "s3cret"), headers
    assert not verified({"X-Gitlab-Token": ""}, BODY, "")  # no secret set: nothing passes


def test_the_pushed_repository_is_read_from_any_forge_s_payload():
    assert repository_urls({"repository": {"clone_url": "https://h/a/b.git", "html_url": "https://h/a/b"}}) == [
        "https://h/a/b.git",
        "https://h/a/b",
    ]
    assert "https://gl/a/b.git" in repository_urls({"project": {"git_http_url": "https://gl/a/b.git"}})
    assert repository_urls(["not", "a", "dict"]) == [] and repository_urls({"repository": "x"}) == []


def test_watched_repositories_are_validated_as_user_requests_are():
    policy = RepoPolicy(("https",), ("git.example.org",))
    watched = watched_repos(
        [
            {"repo": "https://git.example.org/a/b", "refs": ["main", "v1", "main"]},
            {"repo": "https://git.example.org/c/d"},
        ],
        policy,
    )
    assert [(w.repo, w.refs) for w in watched] == [
        ("https://git.example.org/a/b", ("main", "v1")),
        ("https://git.example.org/c/d", ("HEAD",)),
    ]
    for entries, words in [
        ([{"repo": "https://evil.example.com/a/b", "refs": ["main"]}], "not allowed"),
        ([{"repo": "http://git.example.org/a/b"}], "https://"),
        ([{"repo": "https://git.example.org/a/b", "refs": ["--upload-pack=x"]}], "ref"),
        ([{"repo": "https://git.example.org/a/b", "refs": []}], "non-empty"),
        ([{"repo": "https://git.example.org/a/b"}, {"repo": "https://git.example.org/a/b.git"}], "twice"),
        (["https://git.example.org/a/b"], "must be"),
    ]:
        with pytest.raises(ValueError, match=words):
            watched_repos(entries, policy)


async def test_a_flood_of_triggers_is_one_resolution_now_and_one_after_the_pause(monkeypatch):
    import asyncio

    from repo2dockerspawner.hub import prebuilder as module
    from repo2dockerspawner.hub.prebuilder import Prebuilder
    from repo2dockerspawner.prebuilds import WatchedRepo

    monkeypatch.setattr(module, "COALESCE", 0.3)
    repo = WatchedRepo("https://git.example.org/a/b", ("main",))
    calls = []

    async def resolve(watched, state):
        assert watched == repo and state is prebuilder.state[repo.key]
        calls.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.01)

    prebuilder = Prebuilder(watched=(repo,), interval=3600, resolve=resolve)
    for _ in range(20):
        prebuilder.trigger(repo)
        await asyncio.sleep(0.005)
    await prebuilder._running[repo.key]
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.29
    await asyncio.sleep(0.35)
    await prebuilder.trigger(repo)  # a while later: at once again
    assert len(calls) == 3
