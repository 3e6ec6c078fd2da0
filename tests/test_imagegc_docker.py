"""Image garbage collection on the real Docker daemon: the collector in-process, the operator
with its flags, metrics and ConfigMap record, and the hub's embedded backend with its traits.

Images are shaped like built ones: named as the spawner names them (prefix, repository slug
and hash, commit as tag), FROM the single-user image, each with layers of its own (random
bytes, so the daemon cannot share them) to fill a small storage budget.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid

import docker
import pytest
from traitlets.config import Config

from repo2docker_buildcore import contract
from repo2docker_buildcore.collector import ImageCollector
from repo2docker_buildcore.imagegc import GCPolicy
from repo2docker_buildcore.runner import BuildRunner, RunnerConfig
from support.builds import create_build, dockerfile_repo, head, image_exists
from support.waiting import wait_until

# Serial: watermarks are of the whole daemon's storage, which other tests' builds change.
pytestmark = [pytest.mark.integration, pytest.mark.serial]
MB = 1_000_000
BLOB = 12 * MB


def build_like_repo2docker(docker_client, base: str, prefix: str, label: str) -> str:
    """An image under `prefix` as a build of repository '.../<label>' at some commit would be."""
    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    tag = contract.image_name(prefix, f"http://git.example.org/binder/{label}", commit)
    dockerfile = f"FROM {base}\nRUN head -c {BLOB} /dev/urandom > /tmp/{label}.bin\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
    return tag


@pytest.fixture
def prefix(docker_client):
    prefix = f"r2d-test-gc{uuid.uuid4().hex[:6]}-"
    yield prefix
    for container in docker_client.containers.list(all=True):
        if (container.attrs.get("Config", {}).get("Image") or "").startswith(prefix):
            container.remove(force=True)
    for image in docker_client.images.list():
        if any(t.startswith(prefix) for t in image.tags):
            docker_client.images.remove(image.id, force=True)


@pytest.fixture
async def runner(testenv):
    # An instance of its own: hubs and operators of other tests may measure the same daemon.
    runner = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"], instance=f"t{uuid.uuid4().hex[:8]}"))
    yield runner
    runner.close()


def metric(text: str, name: str) -> float:
    """A sample's value from Prometheus' text format."""
    return next(float(line.split()[1]) for line in text.splitlines() if line.split(" ")[0] == name)


def serve(docker_client, image: str):
    """A server's container from the image, as DockerSpawner leaves it while the server runs."""
    return docker_client.containers.run(image, ["sleep", "600"], detach=True, labels={"test": "imagegc"})


async def test_lru_images_go_used_and_in_use_ones_stay_and_the_daemon_frees_the_bytes(
    testenv, docker_client, prefix, runner, tmp_path
):
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    # Built first, so by build time alone it would be the first to go; a later use saves it.
    recently_used = build_like_repo2docker(docker_client, base, prefix, "recently-used")
    old1 = build_like_repo2docker(docker_client, base, prefix, "old-one")
    old2 = build_like_repo2docker(docker_client, base, prefix, "old-two")
    served = build_like_repo2docker(docker_client, base, prefix, "served")
    removed_seen = []
    collector = ImageCollector(
        runner.images,
        GCPolicy(prefix=prefix),
        interval=0,
        on_removed=lambda image, reason: removed_seen.append((image.tags, reason)),
    )
    await collector.start()
    try:
        serve(docker_client, served)
        docker_client.containers.run(recently_used, ["true"], remove=True)  # a server that came and went
        # The loop is busy for over a second (as on a loaded machine) before the collector's
        # tasks run again: uses from right after start() must count all the same.
        time.sleep(1.5)
        await asyncio.to_thread(
            wait_until,
            lambda: collector.ledger.last_used([recently_used]),
            timeout=30,
            what="the container events to record the use",
        )

        # Earlier builds' BuildKit cache would go first and could be enough: start without it.
        await runner.images.prune_build_cache(0)
        usage = await collector.usage()
        sizes = {tag: i.unique_size for i in usage.images for tag in i.tags if tag.startswith(prefix)}
        assert all(size >= BLOB for size in sizes.values()), sizes
        # Over budget by exactly the two least recently used images.
        collector.policy = GCPolicy(
            prefix=prefix,
            high_watermark=usage.total - 1,
            low_watermark=usage.total - sizes[old1] - sizes[old2],
            grace=0,
        )
        report = await collector.run_once()

        assert sorted(t for i in report.removed for t in i.tags) == sorted([old1, old2])
        assert not image_exists(docker_client, old1) and not image_exists(docker_client, old2)
        assert image_exists(docker_client, recently_used) and image_exists(docker_client, served)
        # The daemon's own accounting (`docker system df`) shows the bytes gone.
        assert report.freed >= 0.95 * (sizes[old1] + sizes[old2]), (report.freed, sizes)
        assert sorted(tags for tags, _ in removed_seen) == sorted([(old1,), (old2,)])  # built within a second
        assert all("high watermark" in reason for _, reason in removed_seen)

        # However low the budget: the image a server runs from stays, the rest goes.
        collector.policy = GCPolicy(prefix=prefix, high_watermark=0, low_watermark=0, grace=0)
        report = await collector.run_once()
        assert [i.tags for i in report.removed] == [(recently_used,)]
        assert image_exists(docker_client, served)
        assert report.after.ours == sizes[served]
    finally:
        await collector.stop()


async def test_wanted_and_young_images_stay_and_a_refused_removal_is_skipped(testenv, docker_client, prefix, runner):
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    wanted = build_like_repo2docker(docker_client, base, prefix, "being-built")
    stopped = build_like_repo2docker(docker_client, base, prefix, "stopped-server")
    container = docker_client.containers.create(stopped, ["true"])
    # Docker itself refuses to remove an image a (stopped) container uses: skipped, not fatal.
    assert await runner.images.remove_image(docker_client.images.get(stopped).id) is False

    young = ImageCollector(
        runner.images, GCPolicy(prefix=prefix, high_watermark=0, low_watermark=0, grace=3600), interval=0
    )
    assert (await young.run_once()).removed == []  # built seconds ago: within the grace period

    collector = ImageCollector(
        runner.images,
        GCPolicy(prefix=prefix, high_watermark=0, low_watermark=0, grace=0),
        wanted=lambda: {wanted},
        interval=0,
    )
    report = await collector.run_once()
    assert report.removed == [] and image_exists(docker_client, wanted) and image_exists(docker_client, stopped)
    container.remove()
    report = await collector.run_once()
    assert [i.tags for i in report.removed] == [(stopped,)]


async def test_the_build_cache_is_pruned_first_down_to_the_budget(testenv, docker_client, git_repos, prefix, runner):
    """A real repo2docker build (BuildKit through buildx) leaves cache records in the daemon."""
    from repo2docker_buildcore.build import BuildJob
    from repo2docker_buildcore.queue import BuildQueue
    from repo2docker_buildcore.runner import BuildRef
    from repo2docker_buildcore.status import StatusPublisher
    from support.builds import dockerfile_repo, head
    from support.operator import offline_build_env

    build_runner = BuildRunner(
        RunnerConfig(
            build_image=testenv["R2D_BUILD_IMAGE"],
            instance=f"t{uuid.uuid4().hex[:8]}",
            environment=tuple(offline_build_env(testenv).items()),
        )
    )
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    spec = contract.BuildSpec(repo.url, "main", head(repo), contract.image_name(prefix, repo.url, head(repo)))

    async def publish(fields):
        pass

    job = BuildJob(
        runner=build_runner,
        queue=BuildQueue(1),
        ref=BuildRef("t", "cache", uuid.uuid4().hex),
        spec=spec,
        publisher=StatusPublisher(publish, interval=0.1),
    )
    outcome = await job.run()
    build_runner.close()
    assert outcome.phase.value == "Succeeded", outcome.message
    collector = ImageCollector(runner.images, GCPolicy(prefix=prefix), interval=0)
    before = await collector.usage()
    assert before.build_cache > 0, "a buildx build leaves BuildKit cache in the daemon"
    # Over the high watermark by less than the cache: pruning the cache alone is enough.
    collector.policy = GCPolicy(prefix=prefix, high_watermark=before.total - 1, low_watermark=before.layers, grace=0)
    report = await collector.run_once()
    after = await collector.usage()
    assert report.cache_freed > 0 and after.build_cache < before.build_cache
    assert report.removed == [] and image_exists(docker_client, spec.image)


async def test_shares_of_the_disk_are_measured_on_the_daemons_data_root_and_drive_removal(
    testenv, docker_client, prefix, runner
):
    """'85%' is of the filesystem that holds Docker's data root, measured from a container of the
    build image, as from a pod that sees no host path: the same numbers the host's statvfs gives."""

    # What a hub killed mid-measurement leaves: an exited probe of its instance (and of another's).
    def left_probe(instance):
        container = docker_client.containers.run(
            testenv["R2D_BUILD_IMAGE"],
            ["true"],
            detach=True,
            network_disabled=True,
            labels={contract.LABEL_MANAGED_BY: contract.MANAGED_BY, contract.LABEL_PROBE: instance},
        )
        container.wait()
        return container

    ours, sibling = left_probe(runner.config.instance), left_probe(f"{runner.config.instance}-other")
    try:
        disk = await runner.images.data_root_usage()
        host = os.statvfs(docker_client.info()["DockerRootDir"])
        assert disk.size == host.f_frsize * host.f_blocks
        assert abs(disk.available - host.f_frsize * host.f_bavail) < 0.01 * disk.size  # others write meanwhile
        probes = docker_client.containers.list(
            all=True, filters={"label": f"{contract.LABEL_PROBE}={runner.config.instance}"}
        )
        assert probes == [], "neither this probe nor the one left before stays"
        assert docker_client.containers.get(sibling.id), "another instance's probe is its own to sweep"
    finally:
        for container in (ours, sibling):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

    image = build_like_repo2docker(docker_client, testenv["R2D_SINGLEUSER_IMAGE"], prefix, "shared-disk")
    never = ImageCollector(runner.images, GCPolicy.from_settings(prefix, "100%", "100%", 0, 0), interval=0)
    report = await never.run_once()
    assert report.removed == [] and report.policy.high_watermark > report.before.total
    always = ImageCollector(runner.images, GCPolicy.from_settings(prefix, "0%", "0%", 0, 0), interval=0)
    report = await always.run_once()
    assert [i.tags for i in report.removed] == [(image,)] and report.policy.high_watermark == 0
    assert not image_exists(docker_client, image)


async def test_the_operator_collects_with_its_flags_counts_in_metrics_and_keeps_uses_in_its_configmap(
    testenv, docker_client, kubectl, namespace, operator_factory, git_repos
):
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    prefix = f"r2d-test-gc{uuid.uuid4().hex[:6]}-"
    unused = [build_like_repo2docker(docker_client, base, prefix, f"unused{i}") for i in range(2)]
    served = build_like_repo2docker(docker_client, base, prefix, "served")
    server = serve(docker_client, served)
    kubectl("create", "configmap", "image-use", "-n", namespace)
    try:
        operator = operator_factory(
            image_prefix=prefix,
            gc_interval=1,
            gc_high_watermark="1",
            gc_low_watermark="0",
            gc_grace=0,
            gc_use_record=f"configmap:{namespace}/image-use",
        )
        await asyncio.to_thread(
            wait_until,
            lambda: not any(image_exists(docker_client, i) for i in unused),
            timeout=60,
            what="the operator to remove the unused images",
        )
        assert image_exists(docker_client, served)
        # The gauge is set once the pass has measured again after its removals.
        await asyncio.to_thread(
            wait_until,
            lambda: (metric(operator.metrics(), "repo2docker_image_bytes") or 0) >= BLOB,
            timeout=30,
            what="the pass to report the bytes left under the prefix",
        )
        metrics = operator.metrics()
        assert metric(metrics, "repo2docker_images_removed_total") == 2
        assert metric(metrics, "repo2docker_image_bytes_removed_total") >= 2 * BLOB
        assert metric(metrics, "repo2docker_image_bytes") >= BLOB  # the served image's
        assert all(f"removed image {i}" in operator.log() for i in unused)

        def recorded() -> dict:
            data = kubectl.json("get", "configmap", "image-use", "-n", namespace).get("data") or {}
            return json.loads(data.get("last-used.json") or "{}")

        await asyncio.to_thread(
            wait_until, lambda: served in recorded(), timeout=30, what="the in-use image's last use in the ConfigMap"
        )
        assert recorded()[served] > time.time() - 120 and not set(unused) & set(recorded())

        # A build's image, once removed, takes its finished resource along: a spawn that found
        # the resource would be told the image exists. The next request builds again.
        repo = dockerfile_repo(git_repos, base)
        name = create_build(kubectl, namespace, repo.url, head(repo), prefix=prefix)
        await asyncio.to_thread(
            wait_until,
            lambda: kubectl.run("get", contract.PLURAL, name, "-n", namespace, check=False).returncode != 0,
            timeout=120,
            what="the build to succeed, its image to go, and its resource with it",
        )
        assert not image_exists(docker_client, contract.image_name(prefix, repo.url, head(repo)))
        assert f"deleted build {namespace}/{name}: its image" in operator.log()
    finally:
        server.remove(force=True)


async def test_the_embedded_backend_collects_with_its_traits_and_keeps_uses_in_its_file(
    testenv, docker_client, prefix, tmp_path
):
    from repo2dockerspawner.backends.local import LocalBackend

    base = testenv["R2D_SINGLEUSER_IMAGE"]
    # Built first: by build time alone it would go first; the record of an earlier hub saves it.
    used = build_like_repo2docker(docker_client, base, prefix, "used")
    unused = build_like_repo2docker(docker_client, base, prefix, "unused")
    record = tmp_path / "uses.json"
    record.write_text(json.dumps({unused: time.time() - 7200, used: time.time()}))
    measure = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"]))
    await measure.images.prune_build_cache(0)  # else the cache, pruned first, could be enough
    usage = await ImageCollector(measure.images, GCPolicy(prefix=prefix)).usage()
    measure.close()
    size = {t: i.unique_size for i in usage.images for t in i.tags}
    # Over budget by one byte, and one image is enough to get back under it.
    backend = LocalBackend(
        config=Config(
            {
                "LocalBackend": {
                    "build_image": testenv["R2D_BUILD_IMAGE"],
                    "instance": f"t{uuid.uuid4().hex[:8]}",
                    "gc_interval": 0.5,
                    "gc_high_watermark": str(usage.total - 1),
                    "gc_low_watermark": str(usage.total - size[unused]),
                    "gc_grace": 0,
                    "gc_use_record": str(record),
                }
            }
        )
    )
    backend.start_image_gc(prefix)
    try:
        await asyncio.to_thread(
            wait_until,
            lambda: not image_exists(docker_client, unused),
            timeout=30,
            what="the hub's collector to remove the least recently used image",
        )
        assert image_exists(docker_client, used)
        # Counted in the hub's own registry, which JupyterHub serves at /hub/metrics (once the
        # pass is back from Docker's removal, a moment after the image is gone).
        from prometheus_client import REGISTRY

        await asyncio.to_thread(
            wait_until,
            lambda: REGISTRY.get_sample_value("repo2docker_images_removed_total") >= 1,
            timeout=10,
            what="the removal to be counted",
        )
        assert REGISTRY.get_sample_value("repo2docker_image_bytes_removed_total") >= BLOB
    finally:
        await backend.close()
    assert json.loads(record.read_text()).keys() == {used}
