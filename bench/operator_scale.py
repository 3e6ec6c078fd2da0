"""The operator with many finished build resources: resident memory and the time a (re)started
operator takes to settle (its CPU time stops growing: under 5% over one second), at 1,000 and
10,000 finished resources, against the same operator watching an empty namespace in this run.

The resources are created cheaply through the API (create + status), all naming one image that
exists, finished a minute ago and marked finished as the operator marks them, with the
default TTL of a day.

Usage: .venv/bin/python bench/operator_scale.py [N...]   (needs `make testenv`)
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from repo2docker_buildcore import contract  # noqa: E402
from support.env import load_env  # noqa: E402
from support.kube import Kubectl  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402


async def create_finished(env, namespace: str, count: int, image: str) -> None:
    config = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    cluster = config["clusters"][0]["cluster"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    headers = {"Authorization": f"Bearer {env['R2D_KUBE_ADMIN_TOKEN']}"}
    base = f"{cluster['server']}/apis/{contract.GROUP}/{contract.VERSION}/namespaces/{namespace}/{contract.PLURAL}"
    finished_epoch = time.time() - 60
    finished = datetime.datetime.fromtimestamp(finished_epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    limit = asyncio.Semaphore(32)

    async def one(session, i: int) -> None:
        commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        spec = contract.BuildSpec(f"https://example.org/bench/repo{i}", "main", commit, image)
        manifest = contract.build_manifest(spec, namespace)
        # As the operator leaves a finished build: marked with its finish time.
        manifest["metadata"].setdefault("labels", {})[contract.LABEL_FINISHED_AT] = str(int(finished_epoch))
        status = {"status": {"phase": "Succeeded", "image": image, "message": f"Built {image}.",
                             "completionTime": finished, "startTime": finished, "logLineCount": 0,
                             contract.STATUS_FINISHED_AT: int(finished_epoch)}}
        async with limit:
            async with session.post(base, json=manifest) as r:
                assert r.status == 201, await r.text()
            async with session.patch(f"{base}/{manifest['metadata']['name']}/status", json=status,
                                     headers={"Content-Type": "application/merge-patch+json"}) as r:
                assert r.status == 200, await r.text()

    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=context)) as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def settle(env, namespace: str) -> tuple[float, float, float]:
    """Start an operator for `namespace`; seconds until idle, then RSS and peak RSS in MB."""
    op = OperatorProcess(env, namespace, Path(tempfile.mkdtemp()), image_prefix="r2d-bench-", **{"finished-ttl": 86400})
    start = time.monotonic()
    op.start()
    try:
        pid = op.proc.pid
        samples = [(time.monotonic(), cpu_seconds(pid))]
        while True:
            time.sleep(0.25)
            samples.append((time.monotonic(), cpu_seconds(pid)))
            window = [s for s in samples if s[0] >= samples[-1][0] - 1.0]
            if samples[-1][0] - samples[0][0] >= 1.0 and window[-1][1] - window[0][1] < 0.05 * (window[-1][0] - window[0][0]):
                idle_at = window[0][0]
                break
            if time.monotonic() - start > 600:
                raise AssertionError("the operator did not settle in 10 minutes")
        time.sleep(1.0)
        return idle_at - start, rss_mb(pid), rss_mb(pid, "VmHWM")
    finally:
        op.stop()


def measure(env, sizes: tuple[int, ...] = (1000, 10000)) -> list[tuple[str, str, str, str]]:
    import docker

    kubectl = Kubectl(env)
    kubectl("apply", "-f", str(ROOT / "crds" / "repo2dockerbuilds.yaml"))
    client = docker.from_env()
    image = "r2d-bench-scale:1"
    client.images.get(env["R2D_SINGLEUSER_IMAGE"]).tag(image)
    empty = f"bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", empty)
    rows = []
    try:
        base_settle, base_rss, _ = settle(env, empty)
        for size in sizes:
            namespace = f"bench-{uuid.uuid4().hex[:8]}"
            kubectl("create", "namespace", namespace)
            try:
                started = time.monotonic()
                asyncio.run(create_finished(env, namespace, size, image))
                print(f"  ({size} finished resources created in {time.monotonic() - started:.0f} s)", file=sys.stderr)
                took, rss, peak = settle(env, namespace)
                rows.append((f"operator RSS, {size} finished", f"{rss:.0f} MB (peak {peak:.0f})",
                             f"{base_rss:.0f} MB (none)", f"{rss / base_rss:.2f}x"))
                rows.append((f"restart settle, {size} finished", f"{took:.1f} s", f"{base_settle:.1f} s (none)",
                             f"{took / base_settle:.2f}x"))
            finally:
                kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    finally:
        kubectl("delete", "namespace", empty, "--wait=false", check=False)
        client.images.remove(image)
    return rows


if __name__ == "__main__":
    sizes = tuple(int(a) for a in sys.argv[1:]) or (1000, 10000)
    for row in measure(load_env(ROOT / ".testenv" / "env"), sizes):
        print(" | ".join(row))
