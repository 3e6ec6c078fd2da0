"""The build runner against the real Docker daemon."""

from __future__ import annotations

import io
import json
import tarfile
import uuid

import pytest

from repo2docker_operator import contract
from repo2docker_operator.contract import BuildSpec
from repo2docker_operator.runner import BuildRef, BuildRunner, RunnerConfig
from support.builds import dockerfile_repo, head

pytestmark = pytest.mark.integration


@pytest.fixture
def runner_config(testenv, tmp_path):
    docker_config = tmp_path / "config.json"
    docker_config.write_text(json.dumps({"auths": {"registry.example.org": {"auth": "dXNlcjpwYXNz"}}}))
    return RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"], instance=f"t{uuid.uuid4().hex[:8]}",
                        push=True, docker_config=str(docker_config))


async def test_start_labels_the_container_copies_push_credentials_and_never_starts_twice(
        runner_config, git_repos, testenv, docker_client):
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
        assert container.attrs["Config"]["Cmd"][-2:] == ["--", repo.url]
        assert "--push" in container.attrs["Config"]["Cmd"]
        stream, _ = container.get_archive("/root/.docker/config.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            copied = json.loads(tar.extractfile("config.json").read())
        assert copied["auths"]["registry.example.org"]["auth"] == "dXNlcjpwYXNz"
        assert [b.id for b in await runner.list_builds()] == [first.id]
        assert (await runner.find(ref.uid)).id == first.id
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": [f"{contract.LABEL_INSTANCE}={runner_config.instance}"]}):
            c.remove(force=True)
        runner.close()


async def test_unreachable_daemon_is_a_clear_error(testenv):
    import docker

    from repo2docker_operator.runner import RunnerError

    runner = BuildRunner(RunnerConfig(build_image=testenv["R2D_BUILD_IMAGE"]),
                         client_factory=lambda: docker.DockerClient(base_url="unix:///nonexistent/docker.sock"))
    with pytest.raises(RunnerError, match="Docker daemon did not answer"):
        await runner.ping()
    runner.close()
