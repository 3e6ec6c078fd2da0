"""Restarts seen from outside, on the real daemons: a hub restarted while its builds run, and a
Docker daemon killed and restarted under a build. Build containers are watched from Docker.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
from pathlib import Path

import docker
import pytest

from repo2docker_buildcore import contract
from support.builds import dockerfile_repo, image_exists
from support.hub import start_hub, stop_hub, unique_user
from support.operator import ContainerWatcher
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def build_containers(client, instance: str) -> list:
    return client.containers.list(all=True, filters={"label": [f"{contract.LABEL_INSTANCE}={instance}"]})


def test_builds_survive_a_hub_restart_finish_unasked_and_free_their_slots(testenv, docker_client, git_repos, hubs):
    """Two builds run at limit 2 when the hub restarts. Nobody asks for them again: the new
    hub process still follows both to their end and removes their containers, and a third
    build, asked for right after the restart, waits for a slot and starts when one frees."""
    hub = hubs("local", **{"LocalBackend.concurrency": 2})
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    first = [dockerfile_repo(git_repos, base, sleep=s) for s in (15, 25)]  # both outlive the restart
    third = dockerfile_repo(git_repos, base, marker="third")
    with ContainerWatcher(docker_client, hub.instance) as watcher:
        for repo in first:
            name = unique_user()
            hub.create_user(name)
            assert hub.spawn(name, {"repo": repo.url, "ref": "main"}).status_code == 202
        wait_until(lambda: len(watcher.running_until) == 2, timeout=60, what="both builds to run")
        hub.stop()
        hub.start()
        response, events = hub.spawn_and_follow(unique_user(), {"repo": third.url, "ref": "main"})
        assert events[-1].get("ready"), events
        wait_until(
            lambda: not build_containers(docker_client, hub.instance),
            timeout=60,
            what="every build container to be removed",
        )
    assert watcher.max_running == 2, f"the cap broke after the restart: {watcher.max_running} at once"
    survivors = [cid for cid, name in watcher.names.items() if name != contract.build_name(third.url, _head(third))]
    third_id = next(cid for cid, name in watcher.names.items() if name == contract.build_name(third.url, _head(third)))
    assert len(survivors) == 2 and len(watcher.names) == 3, watcher.names
    # The third started only once a survivor had finished, and without waiting for anyone to ask.
    freed = min(watcher.running_until[cid] for cid in survivors)
    # No wall-clock bound on how soon: that it started at all shows the slot was freed.
    assert freed <= watcher.running_since[third_id], (freed, watcher.running_since[third_id])
    for repo in first:  # both finished: their images exist
        assert image_exists(
            docker_client, contract.image_name(hub.spawner_config["image_prefix"], repo.url, _head(repo))
        )


def _head(repo) -> str:
    return subprocess.check_output(["git", "-C", str(repo.work), "rev-parse", "HEAD"], text=True).strip()


def restart_dockerd(testenv) -> None:
    """Kill the test environment's dockerd as a crash would (SIGKILL), then start it again."""
    pid_file = Path(os.environ.get("TESTENV_DIR", ROOT / ".testenv")) / "dockerd.pid"
    assert pid_file.exists(), "dockerd was not started by `make testenv`; this test must restart it"
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    wait_until(
        lambda: subprocess.run(["docker", "info"], capture_output=True).returncode != 0,
        timeout=30,
        what="dockerd to be gone",
    )
    subprocess.run(["bash", str(ROOT / "testenv" / "docker.sh")], check=True, capture_output=True)
    wait_until(lambda: docker.from_env().ping(), timeout=60, what="dockerd to answer again")


@pytest.mark.serial  # restarts dockerd: every container on it stops
def test_a_docker_restart_mid_build_fails_the_spawn_and_the_first_retry_builds(request, testenv, tmp_path, git_repos):
    """Both backends at once, under one restart: a local hub's build and an operator's."""
    client = docker.from_env()
    hubs = {}
    try:
        for backend in ("local", "kubernetes"):
            (tmp_path / backend).mkdir()
            hubs[backend] = start_hub(request, backend, testenv, tmp_path / backend, client)
        repos = {
            b: dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=20, marker=f"after the restart, {b}")
            for b in hubs
        }
        names = {b: unique_user() for b in hubs}
        for backend, hub in hubs.items():
            hub.create_user(names[backend])
            assert hub.spawn(names[backend], {"repo": repos[backend].url, "ref": "main"}).status_code == 202
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # each user watching the pending page
            watching = {b: pool.submit(lambda b=b: list(hubs[b].progress(names[b]))) for b in hubs}
            for backend, hub in hubs.items():
                wait_until(
                    lambda: any(c.status == "running" for c in build_containers(client, hub.build_instance)),
                    timeout=60,
                    what=f"the {backend} build to run",
                )
            restart_dockerd(testenv)
            events = {b: w.result(timeout=120) for b, w in watching.items()}
        for backend in hubs:
            assert events[backend] and events[backend][-1].get("failed"), (backend, events[backend])
            assert "Docker" in events[backend][-1]["message"], (backend, events[backend][-1])  # says what went wrong
        client = docker.from_env()

        # The first retry builds (it does not re-attach to the dead build's container).
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            retries = {
                b: pool.submit(hub.spawn_and_follow, names[b], {"repo": repos[b].url, "ref": "main"})
                for b, hub in hubs.items()
            }
            retried = {b: r.result(timeout=300) for b, r in retries.items()}
        for backend, hub in hubs.items():
            _response, events = retried[backend]
            assert events[-1].get("ready"), (backend, events)
            assert hub.user_file(names[backend], "marker.txt") == f"after the restart, {backend}\n"
            hub.stop_server(names[backend])
            # The dead build's exited container does not stay behind.
            wait_until(
                lambda: not build_containers(client, hub.build_instance),
                timeout=60,
                what=f"no {backend} build containers left",
            )
    finally:
        for hub in hubs.values():
            stop_hub(hub, docker.from_env())
