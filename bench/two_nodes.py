"""Builders on two Docker nodes against one: 12 builds (a 6 s step each) at a per-node cap of 2,
from the first resource created to the last build Succeeded, with one builder (node 1) and
then with two (node 1 and the test environment's second node), in the same run. Also the
claim latency, resource created -> `status.claimedAt` (p50/p95), read from the resources.

Both nodes share this machine's two cores, so the second node adds build slots but no CPU:
the ratio says what a second node is worth when builds wait (a sleep, as a download does),
not when they compute.

Usage: .venv/bin/python bench/two_nodes.py   (needs `make testenv`)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from repo2docker_buildcore.status import parse_iso  # noqa: E402
from support.builds import create_build, get_build, head, wait_phase  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.kube import Kubectl  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402

BUILDS, CAP, SECONDS = 12, 2, 6


def run(env, nodes: int) -> tuple[float, list[float]]:
    kubectl = Kubectl(env)
    kubectl("apply", "-f", str(ROOT / "crds" / "repo2dockerbuilds.yaml"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    logs, instance = Path(tempfile.mkdtemp()), f"bench{uuid.uuid4().hex[:6]}"
    common = {
        "image_prefix": "r2d-bench-",
        "concurrency": CAP,
        "instance": instance,
        "docker_socket": env["R2D_NODE_DOCKER_SOCKET"],
    }
    ops = [OperatorProcess(env, namespace, logs, node_name="r2d-node", **common).start()]
    if nodes == 2:
        ops.append(
            OperatorProcess(
                env, namespace, logs, node_name="r2d-node-2", docker_host=env["R2D_NODE2_DOCKER_HOST"], **common
            ).start()
        )
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])
    made = [
        repos.create(
            {"Dockerfile": f"FROM {env['R2D_SINGLEUSER_IMAGE']}\nRUN echo {uuid.uuid4().hex} && sleep {SECONDS}\n"}
        )
        for _ in range(BUILDS)
    ]
    try:
        start, created = time.monotonic(), {}

        def create(repo) -> str:
            before = time.time()
            name = create_build(kubectl, namespace, repo.url, head(repo), prefix="r2d-bench-")
            created[name] = before
            return name

        with ThreadPoolExecutor(4) as pool:
            names = list(pool.map(create, made))
        for name in names:
            assert (
                wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=600)["status"]["phase"]
                == "Succeeded"
            )
        elapsed = time.monotonic() - start
        latencies = []
        for name in names:
            claimed = parse_iso(get_build(kubectl, namespace, name)["status"].get("claimedAt"))
            if claimed:
                latencies.append(claimed.timestamp() - created[name])
        return elapsed, latencies
    finally:
        for op in ops:
            op.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def measure(env) -> list[tuple[str, str, str, str]]:
    one, _ = run(env, 1)
    two, latencies = run(env, 2)
    # Queued builds are claimed when a slot frees: only the first CAP per node measure a claim.
    first = sorted(latencies)[: 2 * CAP]
    p50 = statistics.median(first)
    p95 = sorted(first)[max(0, int(round(0.95 * len(first))) - 1)]
    return [
        (
            f"{BUILDS} builds ({SECONDS} s step) at cap {CAP} per node: two nodes",
            f"{two:.1f} s",
            f"{one:.1f} s (one node)",
            f"{one / two:.2f}x throughput",
        ),
        (
            "claim latency of the first builds, kubectl create -> claimedAt",
            f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms",
            "",
            "",
        ),
    ]


if __name__ == "__main__":
    for row in measure(load_env(ROOT / ".testenv" / "env")):
        print(" | ".join(row))
