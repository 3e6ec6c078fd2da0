"""Which credential a repository gets and how git receives it (pure logic; builds and lookups
with them run against the test environment's private repositories in test_private_repos.py)."""

from __future__ import annotations

import base64
import io
import tarfile

import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.gitcredentials import (
    HOST_STORE,
    REPO_STORE,
    CloneCredentials,
    ForeignSecret,
    GitCredential,
    from_secret,
    helper_environment,
    load_table,
    match,
    origin,
    secret_manifest,
    store_archive,
    store_environment,
)
from repo2dockerspawner.credentials import check_user_hosts, credential_for, from_auth_state

pytestmark = pytest.mark.unit

HUB = GitCredential("hub", "hub-secret")
ALICE = GitCredential("oauth2", "alice-secret", personal=True)


def test_a_credential_never_shows_its_token():
    assert "hub-secret" not in repr(HUB) and "hub-secret" not in str([HUB])
    with pytest.raises(ValueError):
        GitCredential("u", "a\nb")


def test_patterns_pick_the_credential(monkeypatch, tmp_path):
    monkeypatch.setenv("GIT_TOKEN", "from-env")
    (tmp_path / "token").write_text("from-file\n")
    table = load_table(
        {
            "git.example.org": {"username": "a", "token": "t"},
            "*.corp.example": {"username": "b", "token_env": "GIT_TOKEN"},
            "http://gitea.local": {"username": "c", "token_file": str(tmp_path / "token")},
            "https://forge.example.org/course/*": {"username": "d", "token": "course"},
        },
        "creds",
    )
    assert match("https://git.example.org/x/y", table).token == "t"
    assert match("https://GIT.corp.example:8443/x", table).token == "from-env"
    assert match("http://gitea.local/x", table).token == "from-file"
    assert match("https://github.com/x/y", table) is None
    # A bare host pattern is for https: a token never goes over plain http unless written so.
    assert match("http://git.example.org/x/y", table) is None
    # A URL pattern covers whole segments: '*' never crosses '/'.
    assert match("https://forge.example.org/course/a.git", table).token == "course"
    assert match("https://forge.example.org/course/a/b", table) is None
    assert match("https://forge.example.org/other/a", table) is None
    for bad in (
        {"h": {"token": "t"}},
        {"h": {"username": "u"}},
        {"h": {"username": "u", "token": "t", "token_env": "X"}},
        {"h": {"username": "u", "token_env": "R2D_NOT_SET_ANYWHERE"}},
    ):
        with pytest.raises(ValueError, match="creds"):
            load_table(bad, "creds")


@pytest.mark.parametrize("pattern", ["*", "*.*", "?*", "*.org", "http://*", "ssh://git.example.org", "**"])
def test_a_catch_all_or_a_non_http_scheme_is_refused_as_a_credential_pattern(pattern):
    with pytest.raises(ValueError, match="names hosts"):
        load_table({pattern: {"username": "u", "token": "t"}}, "creds")
    with pytest.raises(ValueError, match="names hosts"):
        check_user_hosts([pattern])


def test_a_build_container_gets_store_files_by_scope_and_an_environment_without_the_token():
    url = "http://10.0.0.1:8080/private/alice/course.git"
    assert origin(url) == "http://10.0.0.1:8080"
    both = CloneCredentials(repository=GitCredential("a b", "p@ss/word", personal=True), host=HUB)
    env = store_environment(url, both)
    # The user's own first (git tries helpers in order), for this URL only and its exact path;
    # the hub's for the origin (a submodule on that host gets the hub's, never the user's).
    assert env == {
        "GIT_CONFIG_COUNT": "3",
        "GIT_CONFIG_KEY_0": f"credential.{url}.helper",
        "GIT_CONFIG_VALUE_0": f"store --file={REPO_STORE}",
        "GIT_CONFIG_KEY_1": f"credential.{url}.useHttpPath",
        "GIT_CONFIG_VALUE_1": "true",
        "GIT_CONFIG_KEY_2": "credential.http://10.0.0.1:8080.helper",
        "GIT_CONFIG_VALUE_2": f"store --file={HOST_STORE}",
    }
    assert not any("secret" in value or "word" in value for value in env.values())
    with tarfile.open(fileobj=io.BytesIO(store_archive(url, both))) as tar:
        repo_entry, host_entry = tar.getmember(REPO_STORE.lstrip("/")), tar.getmember(HOST_STORE.lstrip("/"))
        assert repo_entry.mode == host_entry.mode == 0o600
        assert (
            tar.extractfile(repo_entry).read() == b"http://a%20b:p%40ss%2Fword@10.0.0.1:8080/private/alice/course.git\n"
        )
        assert tar.extractfile(host_entry).read() == b"http://hub:hub-secret@10.0.0.1:8080\n"
    hub_only = store_environment(url, CloneCredentials(host=HUB))
    assert hub_only == {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "credential.http://10.0.0.1:8080.helper",
        "GIT_CONFIG_VALUE_0": f"store --file={HOST_STORE}",
    }


def test_the_hubs_git_gets_the_token_from_its_own_environment_scoped_like_a_build():
    env = helper_environment("https://git.example.org/a/b", HUB)
    assert env["GIT_CONFIG_KEY_0"] == "credential.https://git.example.org.helper"
    assert "hub-secret" not in env["GIT_CONFIG_VALUE_0"] and env["R2D_GIT_TOKEN"] == "hub-secret"
    own = helper_environment("https://git.example.org/a/b", ALICE)
    assert own["GIT_CONFIG_KEY_0"] == "credential.https://git.example.org/a/b.helper"
    assert (own["GIT_CONFIG_KEY_1"], own["GIT_CONFIG_VALUE_1"]) == (
        "credential.https://git.example.org/a/b.useHttpPath",
        "true",
    )


async def test_a_users_own_token_is_for_its_hosts_and_never_goes_elsewhere():
    async def own():
        return ALICE

    hub = [("github.com", HUB), ("evil.example", HUB)]
    assert await credential_for(
        "https://github.com/a/b", hub=hub, user=own, user_hosts=["github.com"]
    ) == CloneCredentials(repository=ALICE, host=HUB)
    # Another host (a link to anywhere): the user's token is not sent, the hub's rules apply.
    assert await credential_for(
        "https://evil.example/a", hub=hub, user=own, user_hosts=["github.com"]
    ) == CloneCredentials(host=HUB)
    assert await credential_for("https://github.com/a/b", hub=hub, user=own, user_hosts=[]) == CloneCredentials(
        host=HUB
    )

    async def none():
        return None

    assert not await credential_for("https://github.com/a/b", hub=[], user=none, user_hosts=["github.com"])


async def test_auth_state_by_key_path_or_callable():
    state = {"access_token": "tok", "oauth": {"token": "nested"}}
    assert await from_auth_state(state, "access_token", "oauth2") == GitCredential("oauth2", "tok")
    assert await from_auth_state(state, "oauth.token", "oauth2") == GitCredential("oauth2", "nested")
    assert await from_auth_state(state, "missing", "oauth2") is None
    assert await from_auth_state(None, "access_token", "oauth2") is None

    async def pick(auth_state):
        return {"username": "x-access-token", "token": auth_state["access_token"]}

    assert await from_auth_state(state, pick, "oauth2") == GitCredential("x-access-token", "tok")
    assert await from_auth_state(state, lambda s: None, "oauth2") is None
    # A user's own: on the cluster it goes to the build (the hub's stay with the hub and operator).
    assert (await from_auth_state(state, "access_token", "oauth2")).personal
    assert (await from_auth_state(state, pick, "oauth2")).personal
    assert not HUB.personal


BUILD = {"metadata": {"name": "b-1234", "namespace": "ns", "uid": "uid-1"}}


def as_read(manifest: dict) -> dict:
    """The Secret as the API server returns it: stringData encoded into data."""
    read = {k: v for k, v in manifest.items() if k != "stringData"}
    read["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in manifest["stringData"].items()}
    return read


def test_a_users_credential_is_handed_to_the_build_that_owns_its_secret_and_to_no_other():
    manifest = secret_manifest(BUILD, ALICE)
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"], manifest["type"]) == ("b-1234-git", "ns", "kubernetes.io/basic-auth")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "name": "b-1234",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert meta["labels"][contract.LABEL_BUILD_NAME] == "b-1234"
    got = from_secret(as_read(manifest), "b-1234", "uid-1")
    assert (got.username, got.token, got.personal) == ("oauth2", "alice-secret", True)

    def refused(secret: dict, name: str = "b-1234", uid: str = "uid-1") -> None:
        with pytest.raises(ForeignSecret):
            from_secret(secret, name, uid)

    refused(as_read(manifest), uid="uid-2")  # a same-named successor of the build
    refused(as_read(manifest), name="other")  # another build naming this Secret
    unowned = as_read(manifest)
    unowned["metadata"] = {**meta, "ownerReferences": []}
    refused(unowned)  # somebody's Secret that happens to have the name
    for change in ({"kind": "ConfigMap"}, {"controller": False}):
        other = as_read(manifest)
        other["metadata"] = {**meta, "ownerReferences": [{**meta["ownerReferences"][0], **change}]}
        refused(other)
    refused({**as_read(manifest), "type": "Opaque"})
    refused({**as_read(manifest), "data": {"username": base64.b64encode(b"u").decode()}})  # no token
