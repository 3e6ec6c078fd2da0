"""Prebuilds, through a real hub (embedded backend), against baselines from the same run:

1. Push -> "image ready" (the pushed commit's image exists on the daemon): with a signed push
   webhook, against the same push picked up by the timer alone (`prebuild_interval`).
2. The first launch after a push, from the REST request to the server being ready: of a
   watched repository (its prebuild done), against the same kind of repository nobody watches
   (the launch builds it).
3. A launch of a branch that moved, taking the previous image (`previous_ok`) while the new
   commit builds, against a launch of a commit that is built already (a cached launch).

Builds take about BUILD_SECONDS, a small environment; real ones take minutes, which only
widens the second ratio.

Usage: .venv/bin/python bench/prebuild.py   (needs `make testenv`)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402
import requests  # noqa: E402

from repo2docker_buildcore import contract  # noqa: E402
from support.builds import head  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.hub import Hub  # noqa: E402
from support.waiting import wait_until  # noqa: E402

INTERVAL, BUILD_SECONDS, ROUNDS, SECRET = 30.0, 10, 3, "bench-secret"
PREFIX = "r2d-bench-"


def slow_repo(repos: GitRepoFactory, base: str):
    return repos.create({"Dockerfile": f"FROM {base}\nRUN echo {uuid.uuid4().hex} && sleep {BUILD_SECONDS}\n"})


def push(repo) -> str:
    """A new commit whose build cannot reuse the last one's layers."""
    dockerfile = (repo.work / "Dockerfile").read_text().replace("RUN echo ", f"RUN echo {uuid.uuid4().hex[:6]}", 1)
    return repo.commit({"Dockerfile": dockerfile})


def image_ready(client, repo, commit: str) -> bool:
    try:
        client.images.get(contract.image_name(PREFIX, repo.url, commit))
        return True
    except docker.errors.ImageNotFound:
        return False


def webhook(hub: Hub, repo) -> None:
    body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": repo.url}}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = requests.post(
        f"{hub.url}/services/repo2docker/webhook",
        data=body,
        timeout=30,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={signature}"},
    )
    assert r.status_code == 202, r.text


def push_to_ready(hub: Hub, client, repo, with_webhook: bool) -> float:
    commit = push(repo)
    pushed = time.monotonic()
    if with_webhook:
        webhook(hub, repo)
    wait_until(
        lambda: image_ready(client, repo, commit),
        timeout=INTERVAL + 180,
        interval=0.1,
        what="the pushed commit's image",
    )
    return time.monotonic() - pushed


def launch(hub: Hub, user: str, repo, **options) -> float:
    hub.create_user(user)
    started = time.monotonic()
    response = hub.spawn(user, {"repo": repo.url, "ref": "main", **options})
    assert response.status_code in (201, 202), response.text
    hub.wait_ready(user, timeout=300)
    took = time.monotonic() - started
    hub.stop_server(user)
    return took


def measure(env) -> list[tuple[str, str, str, str]]:
    client = docker.from_env()
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])
    base = env["R2D_SINGLEUSER_IMAGE"]
    watched = [slow_repo(repos, base) for _ in range(2)]
    hub = Hub(
        env,
        Path(tempfile.mkdtemp()),
        image_prefix=PREFIX,
        **{
            "Repo2DockerHub.webhook_secret": SECRET,
            "Repo2DockerHub.prebuild_interval": INTERVAL,
            "Repo2DockerHub.prebuild_repos": [{"repo": r.url, "refs": ["main"]} for r in watched],
        },
    ).start()
    try:
        for repo in watched:  # the hub's first resolution builds the current heads
            wait_until(lambda: image_ready(client, repo, head(repo)), timeout=300, what="the first prebuilds")
        hooked = [push_to_ready(hub, client, watched[0], with_webhook=True) for _ in range(ROUNDS)]
        polled = [push_to_ready(hub, client, watched[1], with_webhook=False) for _ in range(ROUNDS)]
        prebuilt, cold = [], []
        for n in range(ROUNDS):
            commit = push(watched[0])
            webhook(hub, watched[0])
            wait_until(lambda: image_ready(client, watched[0], commit), timeout=300, what="the prebuild")
            prebuilt.append(launch(hub, f"pre{n}", watched[0]))
            cold.append(launch(hub, f"cold{n}", slow_repo(repos, base)))
        previous, cached = [], []
        for n in range(ROUNDS):
            launch(hub, f"prev{n}", watched[1])  # its current head is built: the launch is cached
            cached.append(launch(hub, f"prev{n}", watched[1]))
            push(watched[1])  # the branch moves; its build takes BUILD_SECONDS
            previous.append(launch(hub, f"prev{n}", watched[1], previous_ok=True))
            wait_until(lambda: image_ready(client, watched[1], head(watched[1])), timeout=300, what="the new build")
    finally:
        hub.stop()
    hook, poll = statistics.median(hooked), statistics.median(polled)
    warm, first = statistics.median(prebuilt), statistics.median(cold)
    return [
        (
            f"push -> image ready (median of {ROUNDS}, {BUILD_SECONDS} s build)",
            f"{hook:.1f} s (webhook)",
            f"{poll:.1f} s (timer, every {INTERVAL:.0f} s)",
            f"{hook / poll:.2f}x",
        ),
        (
            f"first launch after a push -> server ready (median of {ROUNDS})",
            f"{warm:.1f} s (prebuilt)",
            f"{first:.1f} s (built by the launch)",
            f"{warm / first:.2f}x",
        ),
        (
            f"launch of a moved branch with previous_ok -> server ready (median of {ROUNDS})",
            f"{statistics.median(previous):.1f} s (previous image)",
            f"{statistics.median(cached):.1f} s (a cached launch)",
            f"{statistics.median(previous) / statistics.median(cached):.2f}x",
        ),
    ]


if __name__ == "__main__":
    for row in measure(load_env(ROOT / ".testenv" / "env")):
        print(" | ".join(row))
