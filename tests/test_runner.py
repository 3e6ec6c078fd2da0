"""The build runner against the real Docker daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import tarfile
import uuid

import docker.errors
import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildSpec
from repo2docker_buildcore.docker_api import RegistryError, RegistryUnavailable, RunnerError
from repo2docker_buildcore.runner import BuildRef, BuildRunner, RunnerConfig, build_environment
from support.builds import dockerfile_repo, head
from support.env import both_repo2docker_versions
from support.operator import free_port, offline_build_env
from support.registry import login_config, registry_tags

pytestmark = pytest.mark.integration


@pytest.fixture
def runner_config(testenv, tmp_path):
    docker_config = tmp_path / "config.json"
    docker_config.write_text(json.dumps({"auths": {"registry.example.org": {"auth": "dXNlcjpwYXNz"}}}))
    # Offline, as the hub's and operator's builds are: without it repo2docker fails at once
    # fetching the Dataverse list, and a test reading the running container would race its exit.
    return RunnerConfig(
        build_image=testenv["R2D_BUILD_IMAGE"],
        instance=f"t{uuid.uuid4().hex[:8]}",
        push=True,
        docker_config=str(docker_config),
        environment=build_environment(offline_build_env(testenv)),
    )


async def test_start_labels_the_container_copies_push_credentials_and_never_starts_twice(
    runner_config, git_repos, testenv, docker_client
):
    runner = BuildRunner(runner_config)
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=30)
    spec = BuildSpec(repo.url, "main", head(repo), contract.image_name("r2d-test-", repo.url, head(repo)))
    ref = BuildRef("ns", "build-1", uuid.uuid4().hex)
    try:
        first = await runner.start(ref, spec)
        second = await runner.start(ref, spec)  # e.g. a daemon re-run: joins, never a second container
        assert first.id == second.id
        container = docker_client.containers.get(first.id)
        labels = container.labels
        assert labels[contract.LABEL_BUILD_UID] == ref.uid and labels[contract.LABEL_INSTANCE] == runner_config.instance
        assert container.attrs["Config"]["Cmd"][0] == "repo2docker"
        assert container.attrs["Config"]["Cmd"][-2:] == ["--", repo.url]
        assert "--push" in container.attrs["Config"]["Cmd"]
        stream, _ = container.get_archive("/root/.docker/config.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            copied = json.loads(tar.extractfile("config.json").read())
        assert copied["auths"]["registry.example.org"]["auth"] == "dXNlcjpwYXNz"
        assert [b.id for b in await runner.list_builds()] == [first.id]
        assert (await runner.find(ref.uid)).id == first.id
    finally:
        for c in docker_client.containers.list(
            all=True, filters={"label": [f"{contract.LABEL_INSTANCE}={runner_config.instance}"]}
        ):
            c.remove(force=True)
        runner.close()


async def test_unreachable_daemon_is_a_clear_error(testenv):
    import docker

    runner = BuildRunner(
        RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"]),
        client_factory=lambda: docker.DockerClient(base_url="unix:///nonexistent/docker.sock"),
    )
    with pytest.raises(RunnerError, match="Docker daemon did not answer"):
        await runner.ping()
    runner.close()


def counted_probes(runner: BuildRunner) -> list:
    """The version probes the runner starts from now on. (Counted at the runner: other tests'
    containers come and go on the same daemon, and a probe is removed once it ran.)"""
    probes: list = []
    run_probe = runner.api.run_probe

    async def counted(*args, **kwargs):
        probes.append(args)
        return await run_probe(*args, **kwargs)

    runner.api.run_probe = counted
    return probes


@both_repo2docker_versions
async def test_repo2docker_version_is_read_from_the_build_image_once(build_image, testenv, docker_client):
    runner = BuildRunner(RunnerConfig(build_image=build_image))
    try:
        version = await runner.repo2docker_version(build_image)
        expected = testenv[
            "R2D_REPO2DOCKER_VERSION" if build_image == testenv["R2D_BUILD_IMAGE"] else "R2D_REPO2DOCKER_2024_VERSION"
        ]
        assert str(version) == expected
        assert version.uses_buildx == (build_image == testenv["R2D_BUILD_IMAGE"])
        # Cached by image id: no second probe container.
        probes = counted_probes(runner)
        assert await runner.repo2docker_version(build_image) == version
        assert probes == []
    finally:
        runner.close()


async def test_a_burst_of_first_builds_shares_one_version_probe(testenv):
    """Four builds asking at once, before anything is known: one probe container, not four."""
    runner = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"]))
    probes = counted_probes(runner)
    try:
        versions = await asyncio.gather(*(runner.repo2docker_version(testenv["R2D_BUILD_IMAGE"]) for _ in range(4)))
        assert len(set(map(str, versions))) == 1 and str(versions[0]) == testenv["R2D_REPO2DOCKER_VERSION"]
        assert len(probes) == 1
    finally:
        runner.close()


async def test_memory_limit_with_a_buildx_release_is_refused_in_words(testenv):
    runner = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"]))
    spec = BuildSpec("http://h/a/b", "main", "a" * 40, "r2d-test-x:" + "a" * 40, memory_limit=2**30)
    try:
        with pytest.raises(RunnerError, match="cannot limit a build's memory"):
            await runner.command(spec)
        old = await runner.command(dataclasses.replace(spec, build_image=testenv["R2D_BUILD_IMAGE_2024"]))
        assert old[0] == "repo2docker" and old[old.index("--build-memory-limit") + 1] == str(2**30)
    finally:
        runner.close()


async def test_registry_checks_and_push_through_the_daemon(testenv, tmp_path, docker_client):
    registry = testenv["R2D_REGISTRY"]
    good = login_config(testenv, tmp_path / "good")
    bad = login_config(testenv, tmp_path / "bad", password="not-the-password")
    name = f"runner-{uuid.uuid4().hex[:8]}/r2d-x"
    image = f"{registry}/{name}:1"
    docker_client.images.get(testenv["R2D_BASE_IMAGE"]).tag(f"{registry}/{name}", "1")
    runner = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"], push=True, docker_config=good))
    refused = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"], push=True, docker_config=bad))
    down = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"], push=True))
    try:
        assert await runner.images.registry_has(image) is False
        with pytest.raises(RegistryError, match=f"registry {registry} refused the push") as exc:
            await refused.images.push(image)
        assert "not-the-password" not in str(exc.value)
        with pytest.raises(RegistryError, match="refused"):
            await refused.images.registry_has(image)
        await runner.images.push(image)
        assert registry_tags(testenv, name) == ["1"]
        assert await runner.images.registry_has(image) is True
        with pytest.raises(RegistryUnavailable, match="could not be reached"):
            await down.images.registry_has(f"127.0.0.1:{free_port()}/x/r2d-y:1")
    finally:
        docker_client.images.remove(image, force=True)
        for r in (runner, refused, down):
            r.close()


async def test_the_version_check_is_a_labelled_probe_and_sweeps_what_a_killed_process_left(testenv, docker_client):
    import time

    instance = f"t{uuid.uuid4().hex[:8]}"
    probe_labels = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY, contract.LABEL_PROBE: instance}
    # What a process killed during its version check leaves: an exited, labelled container.
    left = docker_client.containers.run(
        testenv["R2D_BUILD_IMAGE"], ["true"], detach=True, network_disabled=True, labels=probe_labels
    )
    left.wait()
    runner = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"], instance=instance))
    since = time.time() - 1
    try:
        version = await runner.repo2docker_version(testenv["R2D_BUILD_IMAGE"])
        assert version.uses_buildx
        until = time.time() + 1
        created = list(
            docker_client.events(
                since=since,
                until=until,
                decode=True,
                filters={"type": "container", "event": "create", "label": f"{contract.LABEL_PROBE}={instance}"},
            )
        )
        assert [e["Actor"]["Attributes"]["image"] for e in created if e["id"] != left.id] == [
            testenv["R2D_BUILD_IMAGE"]
        ], "the version check runs as this instance's probe"
        assert not docker_client.containers.list(all=True, filters={"label": f"{contract.LABEL_PROBE}={instance}"})
    finally:
        runner.close()
        try:
            left.remove(force=True)
        except docker.errors.NotFound:
            pass
