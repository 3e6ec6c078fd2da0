"""The operator with many build resources, on the real API server and dockerd.

Bursts: N new resources created at once (32 requests in flight), each naming the image
derived from its own repository and commit, every image already on the daemon (tagged before,
one tag per resource, as after a hub's prebuilds): the time until all are Succeeded, counted
from the first create and from the last create's answer, against creating them alone (the
API server's own speed, no operator running; measured in the same run); the operator's RSS
right after. Then the same with two builders (the DaemonSet's shape) and which one decided
each resource.

Restarts: resident memory and the time a (re)started operator takes to settle (its CPU time
stops growing: under 5% over one second), at 1,000 and 10,000 finished resources, against the
same operator watching an empty namespace in this run. Those resources are created cheaply
through the API (create + status), all naming one image that exists, finished a minute ago
and marked finished as the operator marks them, with the default TTL of a day.

Usage: .venv/bin/python bench/operator_scale.py [N...]   (needs `make testenv`)
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
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

BURST_PREFIX = "r2d-bench-burst-"


def _api(env, namespace: str) -> tuple[str, dict, ssl.SSLContext]:
    config = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    cluster = config["clusters"][0]["cluster"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    headers = {"Authorization": f"Bearer {env['R2D_KUBE_ADMIN_TOKEN']}"}
    base = f"{cluster['server']}/apis/{contract.GROUP}/{contract.VERSION}/namespaces/{namespace}/{contract.PLURAL}"
    return base, headers, context


def burst_specs(count: int) -> list[contract.BuildSpec]:
    """`count` requests of distinct repositories, each naming its own derived image (the same
    ones in every run: their tags are made once)."""
    specs = []
    for i in range(count):
        url, commit = f"https://example.org/bench/burst-{i}", f"{i:040x}"
        specs.append(contract.BuildSpec(url, "main", commit, contract.image_name(BURST_PREFIX, url, commit)))
    return specs


def tag_all(specs: list[contract.BuildSpec], source: str) -> None:
    """Every spec's image on the host's daemon, as a tag of `source` (only the missing ones)."""
    import docker

    api = docker.from_env(timeout=600).api
    have = {tag for image in api.images(name=BURST_PREFIX.rstrip("-") + "*") for tag in image.get("RepoTags") or []}
    for spec in specs:
        if spec.image not in have:
            repository, _, tag = spec.image.rpartition(":")
            api.tag(source, repository, tag)


async def burst(env, namespace: str, specs: list[contract.BuildSpec]) -> tuple[float, float, float]:
    """Create a resource per spec at once; seconds from the first create until all are
    Succeeded, the same from the last create's answer, and for the creates alone. Succeeded
    is read from a watch of released resources (`status.finishedAt` set), which a cached
    build gets in the same write as its phase."""
    base, headers, context = _api(env, namespace)
    limit = asyncio.Semaphore(32)
    succeeded: set[str] = set()

    async def watch(session) -> None:
        """Until every resource is Succeeded. The API server closes a watch that falls behind
        a burst (as it should): then list what is there and watch on from that version."""
        selector = f"status.{contract.STATUS_FINISHED_AT}!="
        version = None
        while True:
            if version is None:
                async with session.get(base, params={"fieldSelector": selector}) as r:
                    assert r.status == 200, await r.text()
                    listing = await r.json()
                for obj in listing.get("items") or []:
                    if (obj.get("status") or {}).get("phase") == "Succeeded":
                        succeeded.add(obj["metadata"]["name"])
                version = listing["metadata"]["resourceVersion"]
            if len(succeeded) == len(specs):
                return
            query = {
                "watch": "1",
                "fieldSelector": selector,
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "900",
            }
            async with session.get(base, params=query, timeout=aiohttp.ClientTimeout(total=None)) as r:
                if r.status != 200:
                    version = None
                    continue
                async for line in r.content:
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":  # 410: too old a version
                        version = None
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if event.get("type") != "BOOKMARK" and (obj.get("status") or {}).get("phase") == "Succeeded":
                        succeeded.add(obj["metadata"]["name"])
                        if len(succeeded) == len(specs):
                            return

    async def create(session, spec: contract.BuildSpec) -> None:
        async with limit:
            async with session.post(base, json=contract.build_manifest(spec, namespace, requested_by="ann")) as r:
                assert r.status == 201, await r.text()

    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=context, limit=64)) as session:
        watcher = asyncio.create_task(watch(session))
        await asyncio.sleep(0.5)  # the watch is open
        first = time.monotonic()
        await asyncio.gather(*(create(session, spec) for spec in specs))
        last = time.monotonic()
        await asyncio.wait_for(watcher, timeout=900)  # raises what broke the watch
        done = time.monotonic()
    return done - first, done - last, last - first


def _bursts(env, kubectl, sizes: tuple[int, ...]) -> list[tuple[str, str, str, str]]:
    specs = burst_specs(max(sizes))
    started = time.monotonic()
    tag_all(specs, env["R2D_SINGLEUSER_IMAGE"])
    print(f"  ({len(specs)} images tagged in {time.monotonic() - started:.0f} s)", file=sys.stderr)
    try:
        return _burst_rows(env, kubectl, sizes, specs)
    finally:
        started = time.monotonic()
        untag_all(specs)
        print(f"  ({len(specs)} images untagged in {time.monotonic() - started:.0f} s)", file=sys.stderr)


def untag_all(specs: list[contract.BuildSpec]) -> None:
    import docker

    api = docker.from_env(timeout=600).api
    for spec in specs:
        try:
            api.remove_image(spec.image)
        except docker.errors.APIError:
            pass


def _burst_rows(env, kubectl, sizes, specs) -> list[tuple[str, str, str, str]]:
    rows = []
    runs = [(size, 1) for size in sizes] + [(max(sizes), 2)]
    for size, builders in runs:
        alone_ns, namespace = f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
        for ns in (alone_ns, namespace):
            kubectl("create", "namespace", ns)
        try:
            *_, alone = asyncio.run(burst_without_operator(env, alone_ns, specs[:size]))
            kubectl("delete", "namespace", alone_ns, "--wait=false", check=False)
            instance = f"bench{uuid.uuid4().hex[:6]}"
            ops = [
                OperatorProcess(
                    env,
                    namespace,
                    Path(tempfile.mkdtemp()),
                    instance=instance,
                    image_prefix=BURST_PREFIX,
                    node_name=f"r2d-bench-{n}",
                    docker_socket=env["R2D_NODE_DOCKER_SOCKET"],
                    **{"finished-ttl": 86400},
                ).start()
                for n in range(builders)
            ]
            try:
                total, after_last, creating = asyncio.run(burst(env, namespace, specs[:size]))
                rss = max(rss_mb(op.proc.pid) for op in ops)
            finally:
                for op in ops:
                    op.stop()
            who = "one builder" if builders == 1 else "two builders"
            rows.append(
                (
                    f"{size} cached resources at once, {who}: all Succeeded",
                    f"{total:.1f} s from the first create, {after_last:.1f} s after the last",
                    f"{alone:.1f} s (creating them, no operator)",
                    f"{total / alone:.2f}x",
                )
            )
            if builders == 1:
                rows.append((f"operator RSS after {size} cached", f"{rss:.0f} MB", "", ""))
            else:
                decided = collections.Counter(
                    kubectl(
                        "get", contract.PLURAL, "-n", namespace, "-o", "jsonpath={.items[*].status.builder}"
                    ).split()
                )
                rows.append(
                    (
                        "two builders: decided by",
                        ", ".join(f"{b} {n}" for b, n in sorted(decided.items())),
                        f"{size} resources",
                        f"{sum(decided.values()) - size:+d}",
                    )
                )
        finally:
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return rows


async def burst_without_operator(env, namespace: str, specs: list[contract.BuildSpec]) -> tuple[float, float, float]:
    """The creates alone, as `burst` makes them (nothing decides them)."""
    base, headers, context = _api(env, namespace)
    limit = asyncio.Semaphore(32)

    async def create(session, spec: contract.BuildSpec) -> None:
        async with limit:
            async with session.post(base, json=contract.build_manifest(spec, namespace, requested_by="ann")) as r:
                assert r.status == 201, await r.text()

    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=context, limit=64)) as session:
        first = time.monotonic()
        await asyncio.gather(*(create(session, spec) for spec in specs))
        return 0.0, 0.0, time.monotonic() - first


async def create_finished(env, namespace: str, count: int, image: str) -> None:
    base, headers, context = _api(env, namespace)
    finished_epoch = time.time() - 60
    finished = datetime.datetime.fromtimestamp(finished_epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    limit = asyncio.Semaphore(32)

    async def one(session, i: int) -> None:
        commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        spec = contract.BuildSpec(f"https://example.org/bench/repo{i}", "main", commit, image)
        manifest = contract.build_manifest(spec, namespace)
        # As the operator leaves a finished build: marked with its finish time.
        manifest["metadata"].setdefault("labels", {})[contract.LABEL_FINISHED_AT] = str(int(finished_epoch))
        status = {
            "status": {
                "phase": "Succeeded",
                "image": image,
                "message": f"Built {image}.",
                "completionTime": finished,
                "startTime": finished,
                "logLineCount": 0,
                contract.STATUS_FINISHED_AT: int(finished_epoch),
            }
        }
        async with limit:
            async with session.post(base, json=manifest) as r:
                assert r.status == 201, await r.text()
            async with session.patch(
                f"{base}/{manifest['metadata']['name']}/status",
                json=status,
                headers={"Content-Type": "application/merge-patch+json"},
            ) as r:
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
            if samples[-1][0] - samples[0][0] >= 1.0 and window[-1][1] - window[0][1] < 0.05 * (
                window[-1][0] - window[0][0]
            ):
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
    rows = _bursts(env, kubectl, sizes)
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
                rows.append(
                    (
                        f"operator RSS, {size} finished",
                        f"{rss:.0f} MB (peak {peak:.0f})",
                        f"{base_rss:.0f} MB (none)",
                        f"{rss / base_rss:.2f}x",
                    )
                )
                rows.append(
                    (
                        f"restart settle, {size} finished",
                        f"{took:.1f} s",
                        f"{base_settle:.1f} s (none)",
                        f"{took / base_settle:.2f}x",
                    )
                )
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
