"""Build resources and test repositories for operator and spawner tests."""

from __future__ import annotations

import json
import re
import subprocess
import uuid

import docker.errors

from repo2docker_buildcore import contract
from repo2docker_buildcore.runner import RunnerConfig, build_args
from repo2docker_buildcore.versions import Repo2DockerVersion

from .gitrepos import GitRepo, GitRepoFactory
from .kube import Kubectl
from .waiting import wait_until

IMAGE_PREFIX = "r2d-test-"


def dockerfile_repo(
    git_repos: GitRepoFactory, base_image: str, sleep: float = 0, fail: bool = False, marker: str | None = None
) -> GitRepo:
    """A repo whose Dockerfile builds from the local base. A random token busts Docker's layer
    cache, so every repo really builds; `sleep` makes a build last long enough to observe."""
    token = uuid.uuid4().hex
    lines = [f"FROM {base_image}", f"RUN echo build-{token}" + (f" && sleep {sleep}" if sleep else "")]
    if fail:
        lines.append("RUN echo 'this build is meant to fail' && sleep 4 && exit 3")
    lines.append("COPY marker.txt /home/jovyan/marker.txt")
    return git_repos.create({"Dockerfile": "\n".join(lines) + "\n", "marker.txt": (marker or token) + "\n"})


def image_exists(docker_client, image: str) -> bool:
    try:
        docker_client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def tagged(lines: list[str]) -> bool:
    """Whether a build log says the image was tagged: the classic builder's 'Successfully
    tagged', or BuildKit's 'naming to ... done' (repo2docker 2025.08 and later)."""
    return any(
        "Successfully tagged" in line or (line.startswith("naming to ") and line.endswith(" done")) for line in lines
    )


def shows_first_step(lines: list[str]) -> bool:
    """Whether a build log shows the Dockerfile's first step as a person reads it: 'Step 1/3 :'
    (classic builder) or '[1/3] FROM' (BuildKit, without its '#4 ' vertex prefix)."""
    return any(line.startswith("Step 1/") or re.match(r"^\[1/\d+\] FROM ", line) for line in lines)


def head(repo: GitRepo) -> str:
    return subprocess.check_output(["git", "-C", str(repo.work), "rev-parse", "HEAD"], text=True).strip()


def build_command(build_image: str, repo: GitRepo, image: str, push: bool = False) -> list[str]:
    """The command the operator gives `build_image` (tagged with its repo2docker version) for
    `repo` at its head, for running the same build by hand (benches' baselines)."""
    spec = contract.BuildSpec(repo.url, "main", head(repo), image)
    version = Repo2DockerVersion.parse(build_image.rsplit(":", 1)[1])
    return build_args(RunnerConfig(build_image=build_image, push=push), spec, version)


def create_build(
    kubectl: Kubectl,
    namespace: str,
    repo_url: str,
    commit: str,
    ref: str = "main",
    prefix: str = IMAGE_PREFIX,
    requested_by: str = "",
    **spec_extra,
) -> str:
    spec = contract.BuildSpec(repo_url, ref, commit, contract.image_name(prefix, repo_url, commit))
    manifest = contract.build_manifest(spec, namespace, requested_by)
    manifest["spec"].update(spec_extra)
    kubectl("create", "-f", "-", input=json.dumps(manifest))
    return manifest["metadata"]["name"]


def get_build(kubectl: Kubectl, namespace: str, name: str) -> dict:
    return kubectl.json("get", contract.PLURAL, name, "-n", namespace)


def wait_phase(kubectl: Kubectl, namespace: str, name: str, *phases: str, timeout: float = 120) -> dict:
    def reached():
        obj = get_build(kubectl, namespace, name)
        return obj if obj.get("status", {}).get("phase") in phases else None

    try:
        return wait_until(reached, timeout=timeout, interval=0.3, what=f"{name} to reach {'/'.join(phases)}")
    except AssertionError as exc:
        status = get_build(kubectl, namespace, name).get("status")
        raise AssertionError(f"{exc}; status now: {json.dumps(status, indent=1)[-3000:]}") from None


def expected_provenance(docker_client, build_image: str, base_image: str, builder: str) -> dict:
    """What status.provenance must say of a build FROM `base_image` with `build_image`, asked of
    Docker and of repo2docker itself (not of the code under test); durationSeconds aside."""
    from repo2docker_buildcore.versions import Repo2DockerVersion

    printed = docker_client.containers.run(build_image, ["repo2docker", "--version"], remove=True).decode()
    return {
        "repo2dockerVersion": str(Repo2DockerVersion.parse(printed)),
        "buildImageDigest": docker_client.images.get(build_image).id,
        "baseImageDigest": docker_client.images.get(base_image).id,
        "builder": builder,
    }


def table_columns(table: str) -> list[dict[str, str]]:
    """kubectl's table output as one {COLUMN: value} per row, cut where each header starts (a
    value may be empty, or hold spaces)."""
    header, *rows = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [
        {name: row[start:end].strip() for name, start, end in zip(names, starts, [*starts[1:], None], strict=True)}
        for row in rows
    ]
