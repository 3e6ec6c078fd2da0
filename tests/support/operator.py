"""The operator as a real process against the test environment's API server and dockerd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

from .env import TestEnv
from .process import stop_process
from .waiting import GiveUp, wait_until


def offline_build_env(env: TestEnv) -> dict[str, str]:
    """What builds need in an environment without internet access, as a hub admin would set it
    (see the README): repo2docker >= 2025.08 fetches the Dataverse installations list first."""
    return {"R2D_DATAVERSE_INSTALLATIONS_URL": env["R2D_DATAVERSE_INSTALLATIONS_URL"]}


# Ports for the tests' hubs, proxies and operators. Asking the kernel for a free one and
# closing it leaves a window in which a parallel worker may be handed the same one (seen:
# an operator's metrics port taken, "Address already in use"). Each worker draws from its
# own block instead, below the kernel's ephemeral range (never given to outgoing
# connections) and clear of the test environment's fixed ports (all below 24000).
PORT_BASE, PORT_BLOCK, PORT_BLOCKS = 24000, 1000, 8
_next_port = 0


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else PORT_BLOCKS - 1
    start = PORT_BASE + (index % PORT_BLOCKS) * PORT_BLOCK
    return range(start, start + PORT_BLOCK)


def free_port() -> int:
    """A port of this worker's block that nothing listens on (taken in turn, from a random
    start: a port a previous run just closed is not handed out first)."""
    global _next_port
    block = _port_block()
    if not _next_port:
        _next_port = int.from_bytes(os.urandom(2), "big") % len(block)
    for _attempt in range(len(block)):
        port = block[_next_port % len(block)]
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {block}")


class OperatorProcess:
    """`repo2docker-operator` watching one namespace, with its own instance label so that
    builds of concurrently running tests are never counted together."""

    def __init__(
        self,
        env: TestEnv,
        namespace: str,
        log_dir: Path,
        instance: str | None = None,
        token: str | None = None,
        kubeconfig: str | None = None,
        **options: object,
    ) -> None:
        self.env = env
        self.namespace = namespace
        self.instance = instance or f"t{uuid.uuid4().hex[:8]}"
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.options = {
            "build_image": env["R2D_BUILD_IMAGE"],
            "concurrency": 2,
            "status-interval": 0.5,
            "finished-ttl": 0,
            "build_env": offline_build_env(env),
            **options,
        }
        self.token = token
        self.kubeconfig = kubeconfig  # its own (a user the test made); default: the test environment's
        self.docker_host = options.get("docker_host")  # another node's daemon (--docker-host); default: the host's
        self.log_path = log_dir / f"operator-{self.instance}-{options.get('node_name') or 'host'}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "repo2docker_operator",
            "--namespace",
            self.namespace,
            "--instance",
            self.instance,
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--metrics-port",
            str(self.metrics_port),
        ]
        for key, value in self.options.items():
            key = key.replace("_", "-")
            if isinstance(value, dict):  # repeatable NAME=VALUE options
                for name, item in value.items():
                    cmd += [f"--{key}", f"{name}={item}"]
            elif value is True:
                cmd.append(f"--{key}")
            elif value is not None and value is not False:
                cmd += [f"--{key}", str(value)]
        return cmd

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig or self.env["KUBECONFIG"], "PYTHONUNBUFFERED": "1"}
        if self.token:
            env["KUBECONFIG"] = self._token_kubeconfig()
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"\n===== start {self.starts}: {' '.join(self.command())}\n")
        log.flush()
        self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._alive, timeout=60, what=f"operator liveness (log: {self.log_path})")
        return self

    def _alive(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise GiveUp(f"operator exited with {self.proc.returncode}; log:\n{self.log()[-3000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _token_kubeconfig(self) -> str:
        import yaml

        config = yaml.safe_load(Path(self.env["KUBECONFIG"]).read_text())
        config["users"] = [{"name": "token", "user": {"token": self.token}}]
        for ctx in config["contexts"]:
            ctx["context"]["user"] = "token"
        path = self.log_path.with_suffix(".kubeconfig")
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def kill(self) -> None:
        """SIGKILL: no clean-up handlers run, exactly like a crashed pod."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc, timeout=40)

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


class ContainerWatcher:
    """Samples Docker (not the operator) for this instance's running build containers."""

    def __init__(self, docker_client, instance: str, interval: float = 0.1) -> None:
        self.client = docker_client
        self.filters = {"label": [f"repo2dockerspawner.jupyter.org/instance={instance}"]}
        self.interval = interval
        self.max_running = 0
        self.seen_ids: dict[str, set[str]] = {}  # build uid -> container ids ever seen
        self.running_since: dict[str, float] = {}  # container id -> first sample that saw it running
        self.running_until: dict[str, float] = {}  # container id -> last sample that saw it running
        self.names: dict[str, str] = {}  # container id -> its build's name
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ContainerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                containers = self.client.containers.list(all=True, sparse=True, filters=self.filters)
            except Exception:  # noqa: BLE001 - the next sample will do
                time.sleep(self.interval)
                continue
            running = 0
            now = time.monotonic()
            for c in containers:
                # Sparse listings (one API call per sample) carry labels and state as raw attrs.
                labels = c.attrs.get("Labels") or {}
                uid = labels.get("repo2dockerspawner.jupyter.org/build-uid", "")
                self.seen_ids.setdefault(uid, set()).add(c.id)
                self.names[c.id] = labels.get("repo2dockerspawner.jupyter.org/build-name", "")
                if c.attrs.get("State") in ("running", "restarting"):  # "created": made ahead, not started
                    running += 1
                    self.running_since.setdefault(c.id, now)
                    self.running_until[c.id] = now
            self.max_running = max(self.max_running, running)
            self.samples += 1
            time.sleep(self.interval)


def containers_per_build(*watchers: ContainerWatcher) -> dict[str, int]:
    """How many build containers each build (by resource uid) had, over every watched node."""
    counts: dict[str, int] = {}
    for watcher in watchers:
        for uid, ids in watcher.seen_ids.items():
            if uid:
                counts[uid] = counts.get(uid, 0) + len(ids)
    return counts
