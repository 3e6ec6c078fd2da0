"""What a user waits for, through JupyterHub, for each backend, against a baseline taken in
the same run:

1. Log latency: a build prints a timestamped line every 0.2 s; each line's arrival as a
   progress event at the REST client (listening from the start of the spawn), minus the time
   it was printed. Baseline: the same lines
   read from the build container's own Docker log stream (the floor any relay can reach;
   BuildKit's output buffering is in both).
2. Spawn of an already-built repository until the server is ready, against a spawn without a
   repository (plain DockerSpawner with the default image) in the same hub.

Usage: .venv/bin/python bench/hub_latency.py   (needs `make testenv`)
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402

from repo2docker_buildcore import contract  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.hub import Hub  # noqa: E402
from support.kube import Kubectl  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402

LINE = re.compile(r"lat (\d+\.\d+)$")
TICKS = 40


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ticking_repo(repos: GitRepoFactory, base: str):
    program = (
        f"import time\nfor _ in range({TICKS}):\n    print('lat', repr(time.time()), flush=True)\n    time.sleep(0.2)\n"
    )
    return repos.create(
        {
            "Dockerfile": f"FROM {base}\nCOPY tick.py /tmp/tick.py\n"
            f"RUN echo {uuid.uuid4().hex} && sleep 3 && python3 /tmp/tick.py\n",
            "tick.py": program,
        }
    )


def follow_container(client, instance: str, into: list[float], stop: threading.Event) -> None:
    """Baseline: the build container's own log stream, read as soon as the container exists."""
    while not stop.is_set():
        found = client.containers.list(filters={"label": [f"{contract.LABEL_INSTANCE}={instance}"]})
        if found:
            for chunk in found[0].logs(stream=True, follow=True):
                now = time.time()
                for raw in chunk.decode(errors="replace").splitlines():
                    try:
                        message = json.loads(raw).get("message", "")
                    except ValueError:
                        message = raw
                    for text in message.splitlines():
                        if m := re.search(r"lat (\d+\.\d+)", text):
                            into.append(now - float(m.group(1)))
            return
        time.sleep(0.02)


class Backend:
    """A hub (and for Kubernetes an operator process) for one backend."""

    def __init__(self, name: str, env, workdir: Path, follow_build_logs: bool = True) -> None:
        self.name, self.env = name, env
        self.operator = None
        config = {
            "backend": name,
            "allowed_images": [env["R2D_SINGLEUSER_IMAGE"]],
            "image_prefix": "r2d-bench-",
            "KubernetesBackend.follow_build_logs": follow_build_logs,
        }
        if name == "kubernetes":
            kubectl = Kubectl(env)
            kubectl("apply", "-f", str(ROOT / "crds" / "repo2dockerbuilds.yaml"))
            self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
            kubectl("create", "namespace", self.namespace)
            self.operator = OperatorProcess(
                env, self.namespace, workdir, image_prefix="r2d-bench-", **{"status-interval": 1.0}
            ).start()
            config.update(
                {"KubernetesBackend.namespace": self.namespace, "KubernetesBackend.kubeconfig": env["KUBECONFIG"]}
            )
        self.hub = Hub(env, workdir, **config).start()
        self.instance = self.operator.instance if self.operator else self.hub.instance

    def close(self) -> None:
        self.hub.stop()
        if self.operator:
            self.operator.stop()
            Kubectl(self.env)("delete", "namespace", self.namespace, "--wait=false", check=False)

    def log_latency(self, repos, client) -> tuple[list[float], list[float]]:
        repo = ticking_repo(repos, self.env["R2D_SINGLEUSER_IMAGE"])
        hub_latency: list[float] = []
        docker_latency: list[float] = []
        stop = threading.Event()
        follower = threading.Thread(target=follow_container, args=(client, self.instance, docker_latency, stop))
        follower.start()
        user = f"lat{uuid.uuid4().hex[:6]}"
        self.hub.create_user(user)
        assert self.hub.spawn(user, {"repo": repo.url, "ref": "main"}).status_code == 202
        connected = None
        for event in self.hub.progress(user):
            connected = connected or time.time()
            # Lines printed before this client was listening are replayed on connect: not latency.
            if (m := LINE.search(event.get("message", ""))) and float(m.group(1)) > connected:
                hub_latency.append(time.time() - float(m.group(1)))
        stop.set()
        follower.join(timeout=30)
        self.hub.stop_server(user)
        return hub_latency, docker_latency

    def spawn_times(self, repos, rounds: int) -> tuple[list[float], list[float]]:
        repo = repos.create({"Dockerfile": f"FROM {self.env['R2D_SINGLEUSER_IMAGE']}\nRUN echo {uuid.uuid4().hex}\n"})
        warm = f"w{uuid.uuid4().hex[:6]}"  # builds the image once
        self.hub.create_user(warm)
        _, events = self.hub.spawn_and_follow(warm, {"repo": repo.url, "ref": "main"})
        assert events[-1].get("ready"), events[-3:]
        self.hub.stop_server(warm)
        built, plain = [], []
        for _ in range(rounds):
            for options, into in (({"repo": repo.url, "ref": "main"}, built), (None, plain)):
                user = f"s{uuid.uuid4().hex[:6]}"
                start = time.monotonic()
                _, events = self.hub.spawn_and_follow(user, options)
                assert events[-1].get("ready"), events[-3:]
                into.append(time.monotonic() - start)
                self.hub.stop_server(user)
        return built, plain


def measure(env, rounds: int = 5) -> list[tuple[str, str, str, str]]:
    client = docker.from_env()
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])
    rows = []
    # The third: a hub that does not share the builder's daemon reads lines from the resource.
    for name, label, follow in (
        ("local", "local", True),
        ("kubernetes", "kubernetes", True),
        ("kubernetes", "kubernetes, resource only", False),
    ):
        backend = Backend(name, env, Path(tempfile.mkdtemp()), follow_build_logs=follow)
        try:
            hub_lat, docker_lat = backend.log_latency(repos, client)
            assert len(hub_lat) >= TICKS * 0.9, f"{len(hub_lat)} of {TICKS} lines reached the client"
            h50, h95 = percentile(hub_lat, 50), percentile(hub_lat, 95)
            d50, d95 = percentile(docker_lat, 50), percentile(docker_lat, 95)
            rows.append(
                (f"log latency p50, {label}", f"{h50:.3f} s", f"{d50:.3f} s (docker logs)", f"+{h50 - d50:.3f} s")
            )
            rows.append(
                (f"log latency p95, {label}", f"{h95:.3f} s", f"{d95:.3f} s (docker logs)", f"+{h95 - d95:.3f} s")
            )
            if not follow:
                continue
            built, plain = backend.spawn_times(repos, rounds)
            mb, mp = statistics.median(built), statistics.median(plain)
            rows.append((f"spawn, built repo, {name}", f"{mb:.2f} s", f"{mp:.2f} s (no repo)", f"{mb / mp:.2f}x"))
        finally:
            backend.close()
    return rows


if __name__ == "__main__":
    for row in measure(load_env(ROOT / ".testenv" / "env")):
        print(" | ".join(row))
