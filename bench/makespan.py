"""Slot hand-off: six short builds at limit 2 through the operator, all from Docker's own
events. The hand-off is the time from one build container's exit ("die") to the next one's
start ("start": its process runs), for each build that waited for a slot; measured with the
next builds' containers created ahead (`prepare_next`, the default) against the same six
builds without (create + start after the exit), in the same run. Efficiency is the containers'
running time (start to exit) over 2 x the makespan (first start to last exit), against the
same six repo2docker containers run by hand, two workers back to back.

Usage: .venv/bin/python bench/makespan.py   (needs `make testenv`)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402
from build_overhead import run_by_hand  # noqa: E402

from repo2docker_buildcore import contract  # noqa: E402
from support.builds import create_build, head, wait_phase  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.kube import Kubectl  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402

BUILDS, LIMIT, SECONDS = 6, 2, 3


def short_repos(repos: GitRepoFactory, base: str) -> list:
    return [
        repos.create({"Dockerfile": f"FROM {base}\nRUN echo {uuid.uuid4().hex} && sleep {SECONDS}\n"})
        for _ in range(BUILDS)
    ]


class Intervals:
    """Running intervals of containers with a label, from Docker's event stream."""

    def __init__(self, client, label: str) -> None:
        self.client, self.label = client, label
        self.started: dict[str, float] = {}
        self.died: dict[str, float] = {}
        self._events = client.events(decode=True, filters={"type": "container", "label": label})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._events:
                when = event["timeNano"] / 1e9
                if event["status"] == "start":
                    self.started[event["id"]] = when
                elif event["status"] == "die":
                    self.died[event["id"]] = when
        except Exception:  # noqa: BLE001 - closed
            pass

    def close(self) -> None:
        self._events.close()

    def efficiency(self) -> tuple[float, float]:
        spans = [(self.started[c], self.died[c]) for c in self.started if c in self.died]
        assert len(spans) == BUILDS, f"{len(spans)} build containers seen"
        makespan = max(end for _, end in spans) - min(start for start, _ in spans)
        busy = sum(end - start for start, end in spans)
        return busy / (LIMIT * makespan), makespan

    def handoffs(self) -> list[float]:
        """Exit -> next start, for each start that waited for a slot (the k-th start after the
        first LIMIT got the slot the k-th exit freed)."""
        starts, dies = sorted(self.started.values()), sorted(self.died.values())
        return [start - die for start, die in zip(starts[LIMIT:], dies, strict=False)]


def by_hand(client, env, repos, images: list[str]) -> Intervals:
    label = f"r2d-bench-hand={uuid.uuid4().hex[:8]}"
    intervals = Intervals(client, label)
    time.sleep(0.3)

    def run(repo) -> None:
        images.append(f"r2d-bench-hand/{repo.name}:latest")
        run_by_hand(client, env, repo, images[-1], labels=dict([label.split("=")]))

    with ThreadPoolExecutor(LIMIT) as pool:
        list(pool.map(run, short_repos(repos, env["R2D_SINGLEUSER_IMAGE"])))
    time.sleep(0.5)
    intervals.close()
    return intervals


def through_operator(client, env, repos, images: list[str], **options) -> Intervals:
    kubectl = Kubectl(env)
    kubectl("apply", "-f", str(ROOT / "crds" / "repo2dockerbuilds.yaml"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    op = OperatorProcess(
        env,
        namespace,
        Path(tempfile.mkdtemp()),
        image_prefix="r2d-bench-",
        concurrency=LIMIT,
        lease_duration=3,
        **options,
    ).start()
    try:
        intervals = Intervals(client, f"{contract.LABEL_INSTANCE}={op.instance}")
        time.sleep(3.5)  # past its first lease duration: it knows it is the only builder (and may make ahead)
        repos_ = short_repos(repos, env["R2D_SINGLEUSER_IMAGE"])
        with ThreadPoolExecutor(BUILDS) as pool:  # all requested at once, as the workers by hand
            names = list(
                pool.map(lambda r: create_build(kubectl, namespace, r.url, head(r), prefix="r2d-bench-"), repos_)
            )
        for name in names:
            status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=300)["status"]
            assert status["phase"] == "Succeeded", status
            images.append(status["image"])
        time.sleep(0.5)
        intervals.close()
        intervals.efficiency()  # checks every build was seen
        return intervals
    finally:
        op.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def measure(env) -> list[tuple[str, str, str, str]]:
    client = docker.from_env()
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])
    images: list[str] = []
    try:
        manual = by_hand(client, env, repos, images)
        ahead = through_operator(client, env, repos, images)
        created_at_exit = through_operator(client, env, repos, images, no_prepare_next=True)
    finally:  # what the builds made: the next run builds new repositories anyway
        for image in images:
            try:
                client.images.remove(image)
            except docker.errors.APIError:
                pass
    hand, hand_span = manual.efficiency()
    oper, oper_span = ahead.efficiency()
    gaps, base = ahead.handoffs(), created_at_exit.handoffs()
    return [
        (
            f"busy share of makespan, {BUILDS} builds at limit {LIMIT}",
            f"{oper:.1%} ({oper_span:.1f} s)",
            f"{hand:.1%} ({hand_span:.1f} s, by hand)",
            f"{oper / hand:.3f}x",
        ),
        (
            "hand-off: build container exit -> next one running (median, max of 4)",
            f"{_ms(gaps)} (created ahead)",
            f"{_ms(base)} (created at the exit)",
            f"{statistics.median(gaps) / statistics.median(base):.2f}x",
        ),
        (
            "hand-off floor: the same exit -> start by hand (a worker's create + start)",
            f"{_ms(gaps)} (operator, created ahead)",
            f"{_ms(manual.handoffs())} (by hand)",
            f"{statistics.median(gaps) / statistics.median(manual.handoffs()):.2f}x",
        ),
    ]


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


if __name__ == "__main__":
    for row in measure(load_env(ROOT / ".testenv" / "env")):
        print(" | ".join(row))
