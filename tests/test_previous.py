"""The last good image while a new commit builds: REST clients' previous_ok on both backends,
and the pending page's button after a failed build (its browser view is in test_browser.py)."""

from __future__ import annotations

import time

import pytest

from repo2docker_buildcore import contract
from support.builds import dockerfile_repo, head, image_exists
from support.hub import ADMIN, SERVICE, own_xsrf
from support.operator import ContainerWatcher
from support.waiting import wait_until

pytestmark = pytest.mark.e2e


def moved_on(repo, marker: str, extra: str) -> str:
    """A new commit on main whose build takes long (or fails): `extra` ends its Dockerfile."""
    dockerfile = (repo.work / "Dockerfile").read_text() + extra
    return repo.commit({"Dockerfile": dockerfile, "marker.txt": marker + "\n"})


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_moved_branch_starts_its_previous_image_at_once_and_the_new_build_goes_on(
    backend, testenv, docker_client, git_repos, hubs
):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="first")
    hub = hubs(backend)
    response, events = hub.spawn_and_follow("ann", {"repo": repo.url, "ref": "main"})
    assert events[-1].get("ready"), events[-3:]
    hub.stop_server("ann")
    first = head(repo)
    second = moved_on(repo, "second", "RUN sleep 45\n")
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        started = time.monotonic()
        response, events = hub.spawn_and_follow("ann", {"repo": repo.url, "ref": "main", "previous_ok": True})
        assert events[-1].get("ready"), events[-3:]
        print(f"launch of the previous image while the new commit builds: {time.monotonic() - started:.1f} s")
        assert hub.user_file("ann", "marker.txt") == "first\n"
        assert watcher.seen_ids, "the new commit's build did not start"
    hub.stop_server("ann")
    namespace = hub.spawner_config.get("KubernetesBackend.namespace", "local")
    detail = hub.login(ADMIN).get(f"{hub.url}{SERVICE}/builds/{namespace}/{contract.build_name(repo.url, second)}").text
    assert f'data-field="replaces">{first}<' in detail  # the new build records the commit it replaces
    wait_until(
        lambda: image_exists(docker_client, contract.image_name("r2d-e2e-", repo.url, second)),
        timeout=180,
        what="the new commit's build to finish, for the next launch",
    )
    response, events = hub.spawn_and_follow("ann", {"repo": repo.url, "ref": "main"})
    assert events[-1].get("ready") and hub.user_file("ann", "marker.txt") == "second\n"
    hub.stop_server("ann")


def test_after_a_failed_build_the_owner_alone_can_start_the_previous_version(testenv, git_repos, hubs):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="good")
    hub = hubs("local")
    assert hub.spawn_and_follow("bob", {"repo": repo.url, "ref": "main"})[1][-1].get("ready")
    hub.stop_server("bob")
    moved_on(repo, "broken", "RUN sleep 4 && exit 3\n")
    _response, events = hub.spawn_and_follow("bob", {"repo": repo.url, "ref": "main"})
    assert events[-1].get("failed")
    offers = [e for e in events if "r2d-previous" in e.get("html_message", "")]
    assert offers and f"commit {head(repo)[:7]}" not in offers[0]["message"]  # the good one, not the broken one
    assert "The previous version (commit" in events[-1]["message"]
    action = f"{hub.url}{SERVICE}/previous/bob/"
    mallory = hub.login("mallory")  # another user, with a valid XSRF token of her own
    refused = mallory.post(action, data={"_xsrf": own_xsrf(hub, mallory, SERVICE)}, allow_redirects=False)
    assert refused.status_code == 403 and not hub.server_ready("bob")
    bob = hub.login("bob")
    xsrf = own_xsrf(hub, bob, SERVICE)  # signed in to the service
    assert bob.post(action, allow_redirects=False).status_code == 403  # without the XSRF token
    chosen = bob.post(action, data={"_xsrf": xsrf}, allow_redirects=False)
    assert chosen.status_code == 302 and "/spawn-pending/bob" in chosen.headers["Location"], chosen.text[-300:]
    hub.wait_ready("bob", timeout=120)
    assert hub.user_file("bob", "marker.txt") == "good\n"
    hub.stop_server("bob")
