"""What image garbage collection costs on the daemon: a pass with nothing to remove (with
watermarks as sizes, and as shares of the disk, the default, which measures the disk with a
short container each pass), a pass that removes images, and the builds page's listing of the
embedded backend (cold, and from its cache), each against a plain `docker image ls` of the
same daemon in the same run (the cheapest question one can ask about images). N images under
a fresh prefix, each with a layer of its own (1 MB).

Usage: .venv/bin/python bench/image_gc.py [N]   (needs `make testenv`)
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402
from traitlets.config import Config  # noqa: E402

from repo2docker_buildcore import contract  # noqa: E402
from repo2docker_buildcore.collector import ImageCollector  # noqa: E402
from repo2docker_buildcore.imagegc import GCPolicy  # noqa: E402
from repo2docker_buildcore.runner import BuildRunner, RunnerConfig  # noqa: E402
from support.env import load_env  # noqa: E402


def build_images(client, base: str, prefix: str, count: int) -> list[str]:
    tags = []
    for i in range(count):
        commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        tag = contract.image_name(prefix, f"https://example.org/bench/repo{i}", commit)
        dockerfile = f"FROM {base}\nLABEL repo2docker.repo=https://example.org/bench/repo{i}\nRUN head -c 1000000 /dev/urandom > /tmp/x\n"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
        tags.append(tag)
    return tags


async def median_time(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def measure_async(env, count: int) -> list[tuple[str, str, str, str]]:
    from repo2dockerspawner.backends.local import LocalBackend

    client = docker.from_env()
    prefix = f"r2d-bench-gc{uuid.uuid4().hex[:6]}-"
    runner = BuildRunner(RunnerConfig(build_image=env["R2D_BUILD_IMAGE"]))
    backend = LocalBackend(
        config=Config({"LocalBackend": {"build_image": env["R2D_BUILD_IMAGE"], "gc_use_record": "", "gc_interval": 0}})
    )
    try:
        build_images(client, env["R2D_SINGLEUSER_IMAGE"], prefix, count)
        backend.start_image_gc(prefix)
        listing = await median_time(lambda: asyncio.to_thread(client.api.images))
        idle = ImageCollector(runner.images, GCPolicy(prefix=prefix, high_watermark=10**15), interval=0)
        idle_pass = await median_time(idle.run_once)
        shares = ImageCollector(runner.images, GCPolicy.from_settings(prefix, "100%", "100%", 0, 3600), interval=0)
        share_pass = await median_time(shares.run_once)

        async def cold_page():
            backend.image_facts.invalidate()
            await backend.list_builds()

        page = await median_time(cold_page)
        cached_page = await median_time(backend.list_builds)
        remover = ImageCollector(
            runner.images, GCPolicy(prefix=prefix, high_watermark=0, low_watermark=0, grace=0), interval=0
        )
        start = time.perf_counter()
        report = await remover.run_once()
        removing = time.perf_counter() - start
        removed = len(report.removed)
    finally:
        await backend.close()
        runner.close()
        for image in client.images.list():
            if any(t.startswith(prefix) for t in image.tags):
                client.images.remove(image.id, force=True)
        client.close()
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    return [
        (
            f"GC pass, nothing to remove ({count} images)",
            ms(idle_pass),
            f"docker image ls {ms(listing)}",
            f"x{idle_pass / listing:.1f}",
        ),
        (
            "the same with watermarks as shares of the disk (probe)",
            ms(share_pass),
            f"docker image ls {ms(listing)}",
            f"x{share_pass / listing:.1f}",
        ),
        (
            f"GC pass removing {removed} images",
            ms(removing),
            f"docker image ls {ms(listing)}",
            f"{removing / max(removed, 1) * 1000:.0f} ms per image",
        ),
        (
            f"builds page list, embedded backend ({count} images)",
            ms(page),
            f"docker image ls {ms(listing)}",
            f"x{page / listing:.1f}",
        ),
        (
            "the same, within 15 s of the last (cached)",
            ms(cached_page),
            f"docker image ls {ms(listing)}",
            f"x{cached_page / listing:.2f}",
        ),
    ]


def measure(env, count: int = 30) -> list[tuple[str, str, str, str]]:
    return asyncio.run(measure_async(env, count))


if __name__ == "__main__":
    rows = measure(load_env(ROOT / ".testenv" / "env"), int(sys.argv[1]) if len(sys.argv) > 1 else 30)
    for row in rows:
        print(" | ".join(row))
