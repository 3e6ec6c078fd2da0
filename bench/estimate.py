"""Error of the wait estimate: one operator at cap 1 learns from one build (a 6 s step), then
five more of the same kind are queued at once. For each queued build, the first
`status.estimatedStart` seen is compared with its real `startTime`. Baseline, same run: the
naive estimate people make from a position ("position x the usual build time", counted from
when that position was first seen), which ignores how far the running build has got.

Usage: .venv/bin/python bench/estimate.py   (needs `make testenv`)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from repo2docker_buildcore.status import parse_iso  # noqa: E402
from support.builds import create_build, get_build, head, wait_phase  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.kube import Kubectl  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402

QUEUED, SECONDS = 5, 6


def measure(env) -> list[tuple[str, str, str, str]]:
    kubectl = Kubectl(env)
    kubectl("apply", "-f", str(ROOT / "crds" / "repo2dockerbuilds.yaml"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    op = OperatorProcess(env, namespace, Path(tempfile.mkdtemp()), image_prefix="r2d-bench-", concurrency=1).start()
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])

    def repo():
        return repos.create(
            {"Dockerfile": f"FROM {env['R2D_SINGLEUSER_IMAGE']}\nRUN echo {uuid.uuid4().hex} && sleep {SECONDS}\n"}
        )

    try:
        first = create_build(kubectl, namespace, (r := repo()).url, head(r), prefix="r2d-bench-")
        done = wait_phase(kubectl, namespace, first, "Succeeded", timeout=120)["status"]
        usual = (parse_iso(done["completionTime"]) - parse_iso(done["startTime"])).total_seconds()
        names = [
            create_build(kubectl, namespace, (r := repo()).url, head(r), prefix="r2d-bench-") for _ in range(QUEUED)
        ]
        estimated: dict[str, float] = {}
        naive: dict[str, float] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(estimated) < QUEUED - 1:
            for name in names:
                status = get_build(kubectl, namespace, name).get("status", {})
                if name not in estimated and status.get("phase") == "Queued" and status.get("estimatedStart"):
                    estimated[name] = parse_iso(status["estimatedStart"]).timestamp()
                    naive[name] = time.time() + status.get("queuePosition", 1) * usual
            time.sleep(0.3)
        started = {
            n: parse_iso(wait_phase(kubectl, namespace, n, "Succeeded", timeout=300)["status"]["startTime"]).timestamp()
            for n in estimated
        }
    finally:
        op.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    ours = statistics.mean(abs(estimated[n] - started[n]) for n in estimated)
    theirs = statistics.mean(abs(naive[n] - started[n]) for n in estimated)
    return [
        (
            f"wait estimate error, {len(estimated)} queued builds at cap 1 (mean |estimated - real start|)",
            f"{ours:.1f} s",
            f"{theirs:.1f} s (position x usual build time)",
            f"{theirs / max(ours, 0.1):.1f}x closer",
        )
    ]


if __name__ == "__main__":
    for row in measure(load_env(ROOT / ".testenv" / "env")):
        print(" | ".join(row))
