"""Prebuilds on a real hub: watched branches built with nobody asking (on the timer and on a
signed push webhook), behind users' launches, and a launch afterwards that builds nothing."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import time

import pytest
import requests

from repo2docker_buildcore import contract
from support.builds import dockerfile_repo, head, image_exists
from support.hub import ADMIN, SERVICE
from support.operator import ContainerWatcher
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
SECRET = "prebuild-test-secret"


def watching(hubs, backend: str, repo, interval: float, **extra):
    return hubs(
        backend,
        **{
            "Repo2DockerHub.prebuild_repos": [{"repo": repo.url, "refs": ["main"]}],
            "Repo2DockerHub.prebuild_interval": interval,
            "Repo2DockerHub.webhook_secret": SECRET,
        },
        **extra,
    )


def no_build_containers(docker_client, hub) -> None:
    """Until the builds so far have removed their containers (an image is tagged a moment
    before its build container exits)."""
    label = f"{contract.LABEL_INSTANCE}={hub.build_instance}"
    wait_until(
        lambda: not docker_client.containers.list(all=True, filters={"label": label}),
        timeout=60,
        what="the earlier builds' containers to go",
    )


def image_of(repo, commit: str) -> str:
    return contract.image_name("r2d-e2e-", repo.url, commit)


def deliver(hub, body: dict, **headers: str) -> requests.Response:
    return requests.post(
        f"{hub.url}{SERVICE}/webhook",
        data=json.dumps(body).encode(),
        timeout=30,
        headers={"Content-Type": "application/json", **headers},
    )


def github_push(hub, url: str, secret: str = SECRET) -> requests.Response:
    body = {"ref": "refs/heads/main", "repository": {"clone_url": url}}
    signature = hmac.new(secret.encode(), json.dumps(body).encode(), hashlib.sha256).hexdigest()
    return deliver(hub, body, **{"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={signature}"})


def watched_rows(hub) -> list[dict[str, str]]:
    page = hub.login(ADMIN).get(f"{hub.url}{SERVICE}/builds").text
    return [
        dict(re.findall(r'data-(repo|ref|commit|resolutions)="([^"]*)"', row))
        for row in re.findall(r'<tr class="r2d-watched"[^>]*>', page)
    ]


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_pushed_branch_is_built_with_nobody_asking_and_the_next_launch_builds_nothing(
    backend, testenv, docker_client, git_repos, hubs
):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="first")
    hub = watching(hubs, backend, repo, interval=5)
    wait_until(
        lambda: image_exists(docker_client, image_of(repo, head(repo))),
        timeout=180,
        what="the watched branch's prebuild at the hub's start",
    )
    no_build_containers(docker_client, hub)
    second = repo.commit({"marker.txt": "second\n"})
    pushed = time.monotonic()
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        wait_until(lambda: watcher.seen_ids, timeout=60, interval=0.2, what="a build of the pushed commit")
        print(f"push -> build container: {time.monotonic() - pushed:.1f} s (interval 5 s)")
        wait_until(
            lambda: image_exists(docker_client, image_of(repo, second)), timeout=180, what="the pushed commit's image"
        )
    assert [(row["ref"], row["commit"]) for row in watched_rows(hub)] == [("main", second)]

    no_build_containers(docker_client, hub)
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        response, events = hub.spawn_and_follow("ann", {"repo": repo.url, "ref": "main"})
        assert response.status_code in (201, 202) and events[-1].get("ready"), events[-3:]
    assert watcher.seen_ids == {}, "the launch of a prebuilt commit ran a build container"
    assert hub.user_file("ann", "marker.txt") == "second\n"
    hub.stop_server("ann")


def test_a_signed_webhook_starts_the_build_at_once_a_wrong_one_nothing_and_a_flood_one_listing(
    testenv, docker_client, git_repos, hubs
):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    hub = watching(hubs, "local", repo, interval=3600)  # after the first, no resolution but the webhook's
    wait_until(
        lambda: image_exists(docker_client, image_of(repo, head(repo))),
        timeout=180,
        what="the watched branch's prebuild at the hub's start",
    )
    listings = int(watched_rows(hub)[0]["resolutions"])
    no_build_containers(docker_client, hub)
    second = repo.commit({"marker.txt": "second\n"})
    body = {"ref": "refs/heads/main", "repository": {"clone_url": repo.url}}
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        refused = [
            github_push(hub, repo.url, secret="not-the-secret"),
            deliver(hub, body, **{"X-GitHub-Event": "push"}),  # unsigned
            deliver(hub, body, **{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET[:-1]}),
            deliver(hub, body, **{"X-Gitea-Event": "push", "X-Gitea-Signature": "0" * 64}),
        ]
        assert [r.status_code for r in refused] == [401] * 4, [r.text for r in refused]
        assert github_push(hub, "http://git.example.org/not/watched.git").status_code == 404
        time.sleep(3)
        assert watcher.seen_ids == {} and int(watched_rows(hub)[0]["resolutions"]) == listings

        sent = time.monotonic()
        assert github_push(hub, repo.url).status_code == 202
        wait_until(lambda: watcher.seen_ids, timeout=30, interval=0.1, what="the build the webhook asked for")
        print(f"signed webhook -> build container: {time.monotonic() - sent:.2f} s")
        # A flood of deliveries for one repository: one listing under way, at most one after it.
        before = int(watched_rows(hub)[0]["resolutions"])
        gitlab = deliver(
            hub, {"project": {"git_http_url": repo.url}}, **{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}
        )
        assert gitlab.status_code == 202
        for _ in range(20):
            assert github_push(hub, repo.url).status_code == 202
        time.sleep(3)
        assert int(watched_rows(hub)[0]["resolutions"]) - before <= 2
        wait_until(
            lambda: image_exists(docker_client, image_of(repo, second)), timeout=180, what="the pushed commit's image"
        )
    assert len(watcher.seen_ids) == 1  # one build, whatever the number of deliveries


def test_prebuilds_wait_behind_users_launches_at_a_limit_of_one(testenv, docker_client, git_repos, hubs):
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    watched = dockerfile_repo(git_repos, base)
    hub = watching(hubs, "local", watched, interval=3600, **{"LocalBackend.concurrency": 1})
    wait_until(
        lambda: image_exists(docker_client, image_of(watched, head(watched))),
        timeout=180,
        what="the watched branch's prebuild at the hub's start",
    )
    slow, quick = dockerfile_repo(git_repos, base, sleep=15), dockerfile_repo(git_repos, base)
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        hub.create_user("u1")
        assert hub.spawn("u1", {"repo": slow.url, "ref": "main"}).status_code == 202
        wait_until(lambda: watcher.running_since, timeout=60, what="the slow launch's build to run")
        pushed = watched.commit({"marker.txt": "pushed\n"})
        assert github_push(hub, watched.url).status_code == 202
        wait_until(lambda: watched_rows(hub)[0]["commit"] == pushed, timeout=30, what="the prebuild to be asked for")
        hub.create_user("u2")
        assert hub.spawn("u2", {"repo": quick.url, "ref": "main"}).status_code == 202  # asked after the prebuild
        wait_until(
            lambda: image_exists(docker_client, image_of(watched, pushed)),
            timeout=240,
            what="the prebuild to run in the end",
        )
    names = [contract.build_name(r.url, c) for r, c in ((slow, head(slow)), (quick, head(quick)), (watched, pushed))]
    started = [
        watcher.names[c]
        for c in sorted(watcher.running_since, key=watcher.running_since.get)
        if watcher.names[c] in names
    ]  # the first prebuild's container may still be ending
    assert started == names, started  # the later launch went before the earlier prebuild


def test_the_webhook_tells_nothing_to_whoever_cannot_sign_and_reads_no_large_body(hubs):
    """Whether a hub watches anything (and which repositories) was told before the signature
    was checked; a body of any size was read into memory first."""
    hub = hubs("local", **{"Repo2DockerHub.webhook_secret": SECRET})  # a hub that watches nothing
    body = {"ref": "refs/heads/main", "repository": {"clone_url": "http://git.example.org/a/b.git"}}
    unsigned = deliver(hub, body, **{"X-GitHub-Event": "push"})
    assert unsigned.status_code == 401 and "watch" not in unsigned.text, unsigned.text
    assert github_push(hub, "http://git.example.org/a/b.git").status_code == 404  # signed: told
    # 2 MB declared: refused from the headers alone, the body never sent. (Asked of the
    # service's own port: configurable-http-proxy waits for a body before it relays an early answer.)
    host, port = hub.service_address()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", f"{SERVICE}/webhook")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(2 * 2**20))
    conn.putheader("X-GitHub-Event", "push")
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413, (answer.status, answer.read()[:300])
    conn.close()
    # Sent in chunks, without a length: refused once it grows past the limit.
    chunked = requests.post(
        f"http://{host}:{port}{SERVICE}/webhook",
        data=iter([b"x" * 65536] * 20),
        timeout=30,
        headers={"X-GitHub-Event": "push"},
    )
    assert chunked.status_code == 413, chunked.text
