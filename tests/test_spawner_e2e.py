"""End to end: JupyterHub + configurable-http-proxy + Repo2DockerSpawner + real builds.

Both backends run the same scenarios: a REST spawn of a tagged repo on the git server
becomes ready, the user's server (reached through the proxy) serves the repo's marker file,
the progress stream carried build log lines, a second user with the same repo and ref causes
no second build, and a failing repo fails the spawn with its message.
"""

from __future__ import annotations

import concurrent.futures
import html
import re
import subprocess
import time
import uuid
from pathlib import Path

import docker.errors
import pytest
import requests

from repo2docker_buildcore import contract
from support.builds import dockerfile_repo, head, image_exists, shows_first_step, tagged
from support.env import both_repo2docker_versions
from support.hub import unique_user
from support.operator import ContainerWatcher
from support.registry import login_config, registry_tags
from support.waiting import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["local", "kubernetes"])
def hub(request, hubs, build_image):
    return hubs(request.param)


@pytest.fixture
def local_hub(hubs):
    return hubs("local")


@pytest.fixture
def kubernetes_hub(hubs):
    return hubs("kubernetes")


@both_repo2docker_versions
def test_rest_spawn_builds_the_tag_and_serves_the_repo(hub, git_repos, testenv, docker_client):
    # Long enough that the REST answer (after slow_spawn_timeout) comes before the build ends.
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="built from v1", sleep=5)
    repo.tag("v1")
    repo.commit({"marker.txt": "main moved on\n"})  # the tag, not the branch, must be built
    alice, bob = unique_user(), unique_user()

    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        response, events = hub.spawn_and_follow(alice, {"repo": repo.url, "ref": "v1"})
        assert response.status_code == 202, response.text
        # The stream started late (after the 202) yet caught up from the shared status.
        assert events[-1].get("ready"), events
        hub.wait_ready(alice)
        assert hub.user_file(alice, "marker.txt") == "built from v1\n"
        messages = [e["message"] for e in events]
        assert tagged(messages), messages
        assert shows_first_step(messages), messages
        percents = [e["progress"] for e in events if "progress" in e]
        assert percents == sorted(percents) and percents[0] < percents[-1]

        response, events = hub.spawn_and_follow(bob, {"repo": repo.url, "ref": "v1"})
        hub.wait_ready(bob)
        assert hub.user_file(bob, "marker.txt") == "built from v1\n"
    builds = {uid: ids for uid, ids in watcher.seen_ids.items()}
    assert len(builds) == 1, f"one build for two users, Docker saw {builds}"
    assert not any(m.startswith("Step 1/") and "Building" in m for m in (e["message"] for e in events))
    hub.stop_server(alice)
    hub.stop_server(bob)


@both_repo2docker_versions
def test_failing_repo_fails_the_spawn_with_its_message(hub, git_repos, testenv):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], fail=True)
    name = unique_user()
    response, events = hub.spawn_and_follow(name, {"repo": repo.url, "ref": "main"})
    assert response.status_code == 202, response.text
    assert events[-1].get("failed"), events
    text = events[-1]["message"]
    assert "build failed" in text.lower() and "this build is meant to fail" in text, text
    assert not hub.server_ready(name)


def test_bad_options_are_a_400_with_a_message(hub):
    name = unique_user()
    hub.create_user(name)
    for options, expected in [
        ({"repo": "file:///etc/passwd"}, "must start with"),
        ({"repo": "https://github.com/a/b"}, "http:// URLs on this hub"),
        ({"repo": "http://evil.example.org/a/b"}, "not allowed on this hub"),
        (
            {"repo": f"http://{hub.env['R2D_BRIDGE_IP']}:1/a", "ref": "--upload-pack=touch /tmp/x"},
            "git ref may contain",
        ),
    ]:
        r = hub.spawn(name, options)
        assert r.status_code == 400, (options, r.status_code, r.text)
        assert expected in r.json()["message"], r.json()


def test_unknown_ref_is_a_400(hub, git_repos, testenv):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    name = unique_user()
    hub.create_user(name)
    r = hub.spawn(name, {"repo": repo.url, "ref": "no-such-branch"})
    assert r.status_code == 400 and "was not found" in r.json()["message"], r.text


def test_no_repo_starts_the_default_image(hub, docker_client):
    name = unique_user()
    response, events = hub.spawn_and_follow(name, None)
    assert response.status_code in (201, 202)
    hub.wait_ready(name)
    container = docker_client.containers.get(hub.server_container(name))
    assert container.image.tags == [hub.env["R2D_SINGLEUSER_IMAGE"]]
    hub.stop_server(name)


def test_stopping_a_pending_spawn_keeps_the_shared_build(hub, git_repos, testenv, docker_client):
    """Alice gives up while her image builds. The build is not hers alone: it goes on, and
    Bob, asking for the same repo and ref, joins it rather than starting another."""
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=8, marker="shared")
    alice, bob = unique_user(), unique_user()
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        hub.create_user(alice)
        assert hub.spawn(alice, {"repo": repo.url, "ref": "main"}).status_code == 202
        wait_until(lambda: any(len(ids) for ids in watcher.seen_ids.values()), timeout=60, what="the build to start")
        r = hub.api("DELETE", f"/users/{alice}/server")
        assert r.status_code in (202, 204), r.text
        wait_until(
            lambda: not hub.api("GET", f"/users/{alice}").json().get("servers"),
            timeout=60,
            what="alice's pending spawn to stop",
        )
        build_uid, ids = next(iter(watcher.seen_ids.items()))
        running = docker_client.containers.get(next(iter(ids)))
        assert running.status == "running", "stopping a pending spawn must not kill the shared build"

        response, events = hub.spawn_and_follow(bob, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events
        assert hub.user_file(bob, "marker.txt") == "shared\n"
    assert list(watcher.seen_ids) == [build_uid] and len(watcher.seen_ids[build_uid]) == 1
    hub.stop_server(bob)


def test_hub_restart_loses_nothing(hub, git_repos, testenv, docker_client):
    """A hub restart mid-build: the next spawn of the same repo and commit joins the build
    that is still running instead of starting another; state keeps the build's name."""
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=8, marker="survived")
    alice = unique_user()
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        hub.create_user(alice)
        assert hub.spawn(alice, {"repo": repo.url, "ref": "main"}).status_code == 202
        wait_until(lambda: watcher.seen_ids, timeout=60, what="the build to start")
        hub.stop()
        hub.start()
        response, events = hub.spawn_and_follow(alice, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events
        assert hub.user_file(alice, "marker.txt") == "survived\n"
    assert len(watcher.seen_ids) == 1 and all(len(ids) == 1 for ids in watcher.seen_ids.values()), watcher.seen_ids
    server = hub.api("GET", f"/users/{alice}").json()["servers"][""]
    build = server["state"]["repo2docker"]
    assert build["repo"] == repo.url and build["ref"] == "main" and len(build["commit"]) == 40
    assert build["image"].startswith("r2d-e2e-") and build["build"]
    hub.stop_server(alice)


def test_a_build_whose_image_was_removed_builds_again(hub, git_repos, testenv, docker_client):
    """The build's record (the resource, or the embedded backend's memory) outlives its image:
    `docker image prune -a` on the host, say. The next spawn builds again instead of failing to
    pull an image that exists nowhere."""
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="built again")
    alice = unique_user()
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        _response, events = hub.spawn_and_follow(alice, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events
        hub.stop_server(alice)
        image = contract.image_name("r2d-e2e-", repo.url, head(repo))
        # The stopped server's container goes by Docker's auto-remove, which may still be under
        # way when the hub reports the server stopped: as `docker image prune` would, wait for it.
        wait_until(lambda: removed(docker_client, image), timeout=60, what="the image to be removable")

        _response, events = hub.spawn_and_follow(alice, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events
        assert tagged([e.get("message", "") for e in events]), "the second spawn showed a real build's log"
        assert hub.user_file(alice, "marker.txt") == "built again\n"
    assert sum(len(ids) for ids in watcher.seen_ids.values()) == 2, watcher.seen_ids
    hub.stop_server(alice)


def test_the_hubs_collector_removes_unused_built_images_and_keeps_the_one_a_server_runs(
    testenv, docker_client, git_repos, hubs
):
    """The embedded backend's collector inside the hub, with watermarks no image fits under: the
    image of a server DockerSpawner started stays; the one whose server stopped goes once its
    grace period is over, counted on /hub/metrics; the next start of that commit builds again.
    Its own image prefix keeps other tests' images out of its reach (it removes only those)."""
    prefix = f"r2d-e2e-gc{uuid.uuid4().hex[:6]}-"
    hub = hubs(
        "local",
        image_prefix=prefix,
        **{
            "LocalBackend.gc_interval": 2.0,
            "LocalBackend.gc_high_watermark": "1",
            "LocalBackend.gc_low_watermark": "0",
            "LocalBackend.gc_grace": 15.0,
        },
    )
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    served, stopped = dockerfile_repo(git_repos, base, marker="served"), dockerfile_repo(git_repos, base)
    alice, bob = unique_user(), unique_user()
    for name, repo in ((alice, served), (bob, stopped)):
        _response, events = hub.spawn_and_follow(name, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events
    hub.stop_server(bob)
    gone = contract.image_name(prefix, stopped.url, head(stopped))
    wait_until(
        lambda: not image_exists(docker_client, gone),
        timeout=120,
        what="the hub's collector to remove the image nobody uses",
    )
    assert image_exists(docker_client, contract.image_name(prefix, served.url, head(served)))
    assert hub.user_file(alice, "marker.txt") == "served\n"
    assert hub.metric("repo2docker_images_removed_total") >= 1
    assert hub.metric("repo2docker_image_bytes_removed_total") > 0
    assert "removed image " + gone in hub.log()

    _response, events = hub.spawn_and_follow(bob, {"repo": stopped.url, "ref": "main"})
    assert events[-1].get("ready") and tagged([e.get("message", "") for e in events]), events
    hub.stop_server(bob)
    hub.stop_server(alice)


def build_watches(kubectl) -> int:
    """Open WATCH requests on build resources, as the API server itself counts them."""
    total = 0
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        if (
            line.startswith("apiserver_longrunning_requests{")
            and 'verb="WATCH"' in line
            and f'group="{contract.GROUP}"' in line
            and f'resource="{contract.PLURAL}"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


@pytest.mark.serial  # the API server counts every client's watches, not this hub's alone
def test_watch_connections_do_not_grow_with_pending_spawns(kubernetes_hub, kubectl, git_repos, testenv):
    hub = kubernetes_hub
    repos = [dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=15) for _ in range(6)]
    users = [unique_user() for _ in repos]
    baseline = build_watches(kubectl)  # the operator's own watch

    hub.create_user(users[0])
    assert hub.spawn(users[0], {"repo": repos[0].url, "ref": "main"}).status_code == 202
    one = wait_until(lambda: (n := build_watches(kubectl)) > baseline and n, timeout=30, what="the hub's watch")
    for name, repo in zip(users[1:], repos[1:], strict=True):
        hub.create_user(name)
        assert hub.spawn(name, {"repo": repo.url, "ref": "main"}).status_code == 202
    pending = [
        n for n in users if hub.api("GET", f"/users/{n}").json()["servers"].get("", {}).get("pending") == "spawn"
    ]
    assert len(pending) == 6
    # Every spawn has its build (it logs it, then follows it at once), and the operator has
    # queued or started all six: a watch per spawn would be open by now.
    namespace = hub.spawner_config["KubernetesBackend.namespace"]
    wait_until(lambda: hub.log().count(f": build {namespace}/") == 6, timeout=60, what="six spawns following builds")

    def taken_up() -> bool:  # queued, running or (the first ones, 15 s each) already done
        items = kubectl.json("get", contract.PLURAL, "-n", namespace)["items"]
        return len(items) == 6 and all(b.get("status", {}).get("phase") not in (None, "Pending") for b in items)

    wait_until(taken_up, timeout=60, what="the operator to take up the six builds")
    assert build_watches(kubectl) == one == baseline + 1
    for name in users:
        hub.api("DELETE", f"/users/{name}/server")


def test_form_and_query_paths(local_hub, git_repos, testenv):
    """The HTML form and Binder-style /hub/spawn?repo=&ref= links, with a logged-in browser session."""
    hub = local_hub
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="via query")
    name = unique_user()
    session = requests.Session()
    login = session.get(f"{hub.url}/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', login.text).group(1)
    r = session.post(f"{hub.url}/hub/login", data={"username": name, "password": hub.password, "_xsrf": xsrf})
    assert r.status_code == 200, r.text[:500]

    form = session.get(f"{hub.url}/hub/spawn/{name}")
    assert 'name="repo"' in form.text and 'name="ref"' in form.text
    assert html.escape(testenv["R2D_SINGLEUSER_IMAGE"]) in form.text
    xsrf = session.cookies.get("_xsrf")  # the spawn form has no field: the page's script sends the cookie's token

    bad = session.post(f"{hub.url}/hub/spawn/{name}", data={"repo": "file:///etc/passwd", "ref": "", "_xsrf": xsrf})
    assert "must start with" in html.unescape(bad.text) and 'name="repo"' in bad.text

    bad = session.get(f"{hub.url}/hub/spawn/{name}", params={"repo": "https://github.com/a/b"})
    assert bad.status_code == 400 and "http:// URLs on this hub" in html.unescape(bad.text)

    # A link fills in the form (test_attacks_hub.py has the rest); the form's POST launches.
    filled = session.get(f"{hub.url}/hub/spawn/{name}", params={"repo": repo.url, "ref": "main"})
    assert filled.status_code == 200 and f'value="{html.escape(repo.url)}"' in filled.text
    ok = session.post(f"{hub.url}/hub/spawn/{name}", data={"repo": repo.url, "ref": "main", "_xsrf": xsrf})
    assert ok.status_code == 200 and ("/spawn-pending/" in ok.url or f"/user/{name}/" in ok.url), ok.url
    hub.wait_ready(name)
    assert hub.user_file(name, "marker.txt") == "via query\n"
    hub.stop_server(name)


def test_local_backend_caps_builds_and_queues_users(testenv, docker_client, git_repos, hubs):
    hub = hubs("local", **{"LocalBackend.concurrency": 1})
    repos = [dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=4, marker=f"repo {i}") for i in range(3)]
    users = [unique_user() for _ in repos]
    with ContainerWatcher(docker_client, hub.instance) as watcher:

        def spawn_and_watch(name: str, repo) -> list[dict]:  # one user: start, then watch the pending page
            hub.create_user(name)
            assert hub.spawn(name, {"repo": repo.url, "ref": "main"}).status_code == 202
            return list(hub.progress(name))

        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:  # three users at once
            futures = {name: pool.submit(spawn_and_watch, name, repo) for name, repo in zip(users, repos, strict=True)}
            streams = {name: future.result() for name, future in futures.items()}
    for i, name in enumerate(users):
        assert streams[name][-1].get("ready"), streams[name]
        assert hub.user_file(name, "marker.txt") == f"repo {i}\n"
    assert watcher.max_running == 1 and len(watcher.seen_ids) == 3
    queued = [e["message"] for events in streams.values() for e in events if "ahead of yours" in e["message"]]
    assert queued, ("a waiting user is told how many builds are ahead", streams)
    for name in users:
        hub.stop_server(name)


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_pushed_image_is_pulled_from_the_registry_by_the_next_spawn(
    backend, testenv, tmp_path, docker_client, git_repos, hubs
):
    """Builds push; a server whose image is gone from this daemon (as on another Docker node)
    is started from the registry, with the pull credentials DockerSpawner users configure: the
    hub's own Docker client configuration. No second build runs."""
    registry = testenv["R2D_REGISTRY"]
    prefix = f"{registry}/e2e-{uuid.uuid4().hex[:8]}/r2d-e2e-"
    push_config = login_config(testenv, tmp_path / "push")  # what builds push with
    hub_docker = Path(login_config(testenv, tmp_path / "hub-docker")).parent  # what the hub pulls with
    options = {"push": True, "docker_config": push_config}
    spawner = {"LocalBackend.push": True, "LocalBackend.docker_config": push_config} if backend == "local" else {}
    hub = hubs(
        backend,
        image_prefix=prefix,
        operator_options=options,
        process_env={"DOCKER_CONFIG": str(hub_docker)},
        **spawner,
    )
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="from the registry")
    commit = subprocess.check_output(["git", "-C", str(repo.work), "rev-parse", "HEAD"], text=True).strip()
    image = contract.image_name(prefix, repo.url, commit)
    alice = unique_user()
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        response, events = hub.spawn_and_follow(alice, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events
        assert hub.user_file(alice, "marker.txt") == "from the registry\n"
        hub.stop_server(alice)
        assert registry_tags(testenv, image.split("/", 1)[1].rsplit(":", 1)[0]) == [commit]

        docker_client.images.remove(image, force=True)
        response, events = hub.spawn_and_follow(alice, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events
        assert hub.user_file(alice, "marker.txt") == "from the registry\n"
    assert docker_client.images.get(image)  # pulled back into this daemon
    assert len(watcher.seen_ids) == 1 and all(len(ids) == 1 for ids in watcher.seen_ids.values()), watcher.seen_ids
    assert testenv["R2D_REGISTRY_PASSWORD"] not in hub.log()
    hub.stop_server(alice)


@pytest.mark.parametrize("follow_build_logs", [True, False])
def test_build_lines_reach_the_user_as_printed_from_the_builders_daemon(testenv, git_repos, follow_build_logs, hubs):
    """The operator here writes the resource's status at most every 60 s, so a line that
    reaches the user long before the build ends came from the build container itself (the hub
    shares the builder's daemon). With following off, the same line comes from the resource:
    only with the final write.

    The step sleeps 20 s: BuildKit's plain progress printer (buildx) may itself hold a step's
    lines back for up to 10 s while another step is the one it prints (its `maxDelay`), so a
    shorter build would make the builder's delay, not ours, decide the test."""
    hub = hubs(
        "kubernetes",
        operator_options={"status-interval": 60},
        **{"KubernetesBackend.follow_build_logs": follow_build_logs},
    )
    repo = git_repos.create(
        {
            "Dockerfile": f"FROM {testenv['R2D_SINGLEUSER_IMAGE']}\n"
            f"RUN echo tick-{uuid.uuid4().hex[:6]}-start && sleep 20 && echo tick-end\n"
        }
    )
    name = unique_user()
    hub.create_user(name)
    assert hub.spawn(name, {"repo": repo.url, "ref": "main"}).status_code == 202
    received: list[tuple[float, str]] = [(time.monotonic(), e.get("message", "")) for e in hub.progress(name)]
    start = next(t for t, message in received if re.search(r"tick-\w+-start$", message))
    built = next(t for t, message in received if message.startswith("Built "))
    ahead = built - start
    if follow_build_logs:
        assert ahead > 5, f"the line arrived only {ahead:.1f} s before the build ended"
    else:
        assert ahead < 5, f"without following, lines come with the resource's writes ({ahead:.1f} s)"
    hub.stop_server(name)


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_user_with_as_many_unfinished_builds_as_the_limit_is_refused_one_more(
    backend, hubs, git_repos, testenv, docker_client
):
    """Stopped launches leave their builds running: one user cannot pile them up past the limit,
    may still join one of them, and nobody else is held back."""
    hub = hubs(backend, per_user_build_limit=2)
    repos = [dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=20) for _ in range(3)]
    name, other = unique_user(), unique_user()
    hub.create_user(name)
    for started, repo in enumerate(repos[:2], start=1):
        assert hub.spawn(name, {"repo": repo.url, "ref": "main"}).status_code in (201, 202)
        wait_until(lambda: hub.log().count(f"{name}: build ") == started, timeout=60, what="the build to be asked for")
        assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
        wait_until(
            lambda: not hub.api("GET", f"/users/{name}").json().get("servers"),
            timeout=60,
            what="the pending spawn to stop",
        )

    refused = hub.spawn(name, {"repo": repos[2].url, "ref": "main"})
    message = refused.json()["message"]
    assert refused.status_code == 429 and "You already have 2 builds waiting or running" in message, refused.text
    assert repos[0].url in message and repos[1].url in message
    # The limit is one user's only; joining another user's build under way starts nothing and
    # is never refused (it used to be: the build was counted as one more of this user's).
    hub.create_user(other)
    assert hub.spawn(other, {"repo": repos[2].url, "ref": "main"}).status_code in (201, 202)
    wait_until(lambda: f"{other}: build " in hub.log(), timeout=60, what="the other user's build to be asked for")
    joined = hub.spawn(name, {"repo": repos[2].url, "ref": "main"})
    assert joined.status_code in (201, 202), joined.text
    hub.stop_server(name)
    # Joining a build of one's own still works.
    assert hub.spawn(name, {"repo": repos[0].url, "ref": "main"}).status_code in (201, 202)
    for who in (name, other):
        hub.api("DELETE", f"/users/{who}/server")


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_simultaneous_launches_of_one_user_start_at_most_the_limit(backend, hubs, git_repos, testenv):
    """Named servers launched at once: each one's check ran before any of them had created its
    build, so all passed."""
    hub = hubs(
        backend,
        per_user_build_limit=1,
        hub_config=["c.JupyterHub.allow_named_servers = True", "c.JupyterHub.named_server_limit_per_user = 10"],
    )
    repos = [dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=20) for _ in range(4)]
    name = unique_user()
    hub.create_user(name)

    def launch(index: int) -> requests.Response:
        return hub.api(
            "POST", f"/users/{name}/servers/s{index}", json={"user_options": {"repo": repos[index].url, "ref": "main"}}
        )

    with concurrent.futures.ThreadPoolExecutor(len(repos)) as pool:
        answers = list(pool.map(launch, range(len(repos))))
    codes = sorted(r.status_code for r in answers)
    assert codes == [202, 429, 429, 429] or codes == [201, 429, 429, 429], [(r.status_code, r.text) for r in answers]
    assert len(re.findall(rf"{name}:s\d: build ", hub.log())) == 1, hub.log()[-3000:]
    for index in range(len(repos)):
        hub.api("DELETE", f"/users/{name}/servers/s{index}")


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_queued_build_nobody_waits_for_is_withdrawn_and_a_running_one_finishes(
    backend, hubs, git_repos, testenv, docker_client
):
    hub = hubs(
        backend,
        **{"LocalBackend.concurrency": 1, f"{type_name(backend)}.abandoned_after": 2.0},
        operator_options={"concurrency": 1},
    )
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    slow, waiting = dockerfile_repo(git_repos, base, sleep=10), dockerfile_repo(git_repos, base)
    ann, bob = unique_user(), unique_user()
    with ContainerWatcher(docker_client, hub.build_instance) as watcher:
        for name, repo in ((ann, slow), (bob, waiting)):
            hub.create_user(name)
            assert hub.spawn(name, {"repo": repo.url, "ref": "main"}).status_code in (201, 202)
            wait_until(lambda: f"{name}: build " in hub.log(), timeout=60, what=f"{name}'s build to be asked for")
        wait_until(lambda: watcher.running_since, timeout=60, what="Ann's build to run")
        for name in (bob, ann):  # both give up: Bob's build is queued, Ann's runs
            hub.api("DELETE", f"/users/{name}/server")
        wait_until(lambda: "withdrew build" in hub.log(), timeout=60, what="the queued build to be withdrawn")
        slow_image = contract.image_name("r2d-e2e-", slow.url, head(slow))
        wait_until(lambda: image_exists(docker_client, slow_image), timeout=120, what="Ann's build to finish")
    assert f"withdrew build {hub_namespace(hub)}/{contract.build_name(waiting.url, head(waiting))}" in hub.log()
    ran = [watcher.names[c] for c in watcher.running_since]  # a withdrawn build's container may have been made ahead
    assert ran == [contract.build_name(slow.url, head(slow))], watcher.names
    withdrawn = f"{contract.LABEL_BUILD_NAME}={contract.build_name(waiting.url, head(waiting))}"
    assert not docker_client.containers.list(all=True, filters={"label": withdrawn}), "the withdrawn build's container"
    assert not image_exists(docker_client, contract.image_name("r2d-e2e-", waiting.url, head(waiting)))


def type_name(backend: str) -> str:
    return {"local": "LocalBackend", "kubernetes": "KubernetesBackend"}[backend]


def hub_namespace(hub) -> str:
    return hub.spawner_config.get("KubernetesBackend.namespace") if hub.backend == "kubernetes" else "local"


def removed(docker_client, image: str) -> bool:
    try:
        docker_client.images.remove(image)
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # a container still uses it
            return False
        raise
    return True
