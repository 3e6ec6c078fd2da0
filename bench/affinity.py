"""Cache affinity: a repository whose Dockerfile has a slow dependency step (15 s, cached by
Docker once built) gets a second commit that changes only a file copied after it. Measured:
that build's time (startTime -> completionTime) when it goes to the node that built the first
commit (affinity, both builders running), against the same second commit built on the node
that has never built the repository (what happens without affinity when that node's builder
claims it first), in the same run.

Usage: .venv/bin/python bench/affinity.py   (needs `make testenv`)
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from repo2docker_buildcore.status import parse_iso  # noqa: E402
from support.builds import create_build, head, wait_phase  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.kube import Kubectl  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402

SLOW = 15


def build_seconds(status: dict) -> float:
    return (parse_iso(status["completionTime"]) - parse_iso(status["startTime"])).total_seconds()


def second_commit(env, with_affinity: bool) -> tuple[float, str]:
    kubectl = Kubectl(env)
    kubectl("apply", "-f", str(ROOT / "crds" / "repo2dockerbuilds.yaml"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    logs, instance = Path(tempfile.mkdtemp()), f"bench{uuid.uuid4().hex[:6]}"
    common = {
        "image_prefix": "r2d-bench-",
        "concurrency": 1,
        "instance": instance,
        "affinity_window": 30,
        "docker_socket": env["R2D_NODE_DOCKER_SOCKET"],
    }
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])
    repo = repos.create(
        {
            "Dockerfile": f"FROM {env['R2D_SINGLEUSER_IMAGE']}\nRUN echo {uuid.uuid4().hex} && sleep {SLOW}\n"
            "COPY marker.txt /home/jovyan/marker.txt\n",
            "marker.txt": "one\n",
        }
    )
    ops = [
        OperatorProcess(
            env, namespace, logs, node_name="r2d-node-2", docker_host=env["R2D_NODE2_DOCKER_HOST"], **common
        ).start()
    ]
    try:
        first = create_build(kubectl, namespace, repo.url, head(repo), prefix="r2d-bench-")
        assert wait_phase(kubectl, namespace, first, "Succeeded", timeout=180)["status"]["builder"] == "r2d-node-2"
        if not with_affinity:  # only the node without the layers builds the next commit
            ops.pop().stop()
        ops.append(OperatorProcess(env, namespace, logs, node_name="r2d-node", **common).start())
        repo.commit({"marker.txt": "two\n"}, "second commit")
        second = create_build(kubectl, namespace, repo.url, head(repo), prefix="r2d-bench-")
        status = wait_phase(kubectl, namespace, second, "Succeeded", timeout=180)["status"]
        return build_seconds(status), status["builder"]
    finally:
        for op in ops:
            op.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def measure(env) -> list[tuple[str, str, str, str]]:
    cached, node = second_commit(env, with_affinity=True)
    fresh, other = second_commit(env, with_affinity=False)
    return [
        (
            f"second commit's build, {SLOW} s dependency step",
            f"{cached:.1f} s (on {node})",
            f"{fresh:.1f} s (on {other}, no layers)",
            f"{fresh - cached:.1f} s saved",
        )
    ]


if __name__ == "__main__":
    for row in measure(load_env(ROOT / ".testenv" / "env")):
        print(" | ".join(row))
