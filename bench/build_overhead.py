"""Build overhead of the operator: resource creation → Succeeded, against running the same
repo2docker container by hand, both measured in this run on the same machine.

Each round builds two fresh repositories with identical Dockerfiles (a random token defeats
Docker's layer cache for both): one by `docker run` of the build image, one through a
Repo2DockerBuild resource and the operator. Prints per-round times, the median overhead in
seconds and the ratio operator/by-hand.

Usage: .venv/bin/python bench/build_overhead.py [rounds]   (needs `make testenv`)
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

import docker  # noqa: E402

from support.builds import build_command, create_build, dockerfile_repo, head, wait_phase  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.kube import Kubectl  # noqa: E402
from support.operator import OperatorProcess, offline_build_env  # noqa: E402


def run_by_hand(client, env, repo, image: str, **run_options) -> None:
    """The build container the operator would run, started by hand, until it exits."""
    client.containers.run(
        env["R2D_BUILD_IMAGE"],
        build_command(env["R2D_BUILD_IMAGE"], repo, image),
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        remove=True,
        environment=offline_build_env(env),
        **run_options,
    )


def by_hand(client, env, repo) -> float:
    image = f"r2d-bench/{repo.name}:{head(repo)}"
    start = time.monotonic()
    run_by_hand(client, env, repo, image)
    elapsed = time.monotonic() - start
    client.images.get(image)  # it really exists
    return elapsed


def through_operator(kubectl, namespace, repo) -> float:
    start = time.monotonic()
    name = create_build(kubectl, namespace, repo.url, head(repo), prefix="r2d-bench-")
    obj = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    return time.monotonic() - start


def measure(env, rounds: int = 5) -> list[tuple[str, str, str, str]]:
    hand, oper = run(env, rounds)
    mh, mo = statistics.median(hand), statistics.median(oper)
    return [
        ("build, resource to Succeeded", f"{mo:.2f} s", f"{mh:.2f} s (by hand)", f"{mo / mh:.2f}x ({mo - mh:+.2f} s)")
    ]


def main(rounds: int) -> None:
    hand, oper = run(load_env(ROOT / ".testenv" / "env"), rounds)
    mh, mo = statistics.median(hand), statistics.median(oper)
    print(f"median by hand: {mh:.2f}s; through the operator: {mo:.2f}s")
    print(f"overhead: {mo - mh:+.2f}s per build; ratio operator/by-hand: {mo / mh:.2f}")


def run(env, rounds: int) -> tuple[list[float], list[float]]:
    kubectl = Kubectl(env)
    client = docker.from_env()
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])
    kubectl("apply", "-f", str(ROOT / "crds" / "repo2dockerbuilds.yaml"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    op = OperatorProcess(
        env, namespace, Path(tempfile.mkdtemp()), image_prefix="r2d-bench-", **{"status-interval": 1.0}
    ).start()
    try:
        hand, oper = [], []
        for i in range(rounds):
            a = dockerfile_repo(repos, env["R2D_SINGLEUSER_IMAGE"])
            b = dockerfile_repo(repos, env["R2D_SINGLEUSER_IMAGE"])
            hand.append(by_hand(client, env, a))
            oper.append(through_operator(kubectl, namespace, b))
            print(f"round {i + 1}: by hand {hand[-1]:.2f}s, through the operator {oper[-1]:.2f}s", file=sys.stderr)
        return hand, oper
    finally:
        op.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        for image in client.images.list():
            if any(tag.startswith(("r2d-bench/", "r2d-bench-")) for tag in image.tags):
                client.images.remove(image.id, force=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
