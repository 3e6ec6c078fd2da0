"""What a registry costs: build + push against build alone, and a spawn that pulls its image
against one that finds it, each pair measured in this run on this machine.

1. By hand, with the newest repo2docker build image: each round builds two fresh repositories
   with identical Dockerfiles, one with `--push` to the test registry (htpasswd auth), one
   without. Before the rounds, one build is pushed to a new, empty registry: the cost of a
   hub's first build, which uploads every layer of the base image. The rounds then measure the
   steady state, where the registry holds the base layers and a push uploads the new ones.
2. Through JupyterHub (local backend, push on): a REST spawn of an already-built commit until
   the server is ready, once with the image in the daemon and once after removing it, so that
   DockerSpawner pulls it from the registry with the hub's Docker credentials. The repository
   adds a 64 MB layer to the single-user base (which the daemon keeps, as a node would).

Usage: .venv/bin/python bench/push_pull.py [rounds]   (needs `make testenv`)
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

from repo2docker_buildcore import contract  # noqa: E402
from support.builds import build_command, dockerfile_repo, head  # noqa: E402
from support.env import load_env  # noqa: E402
from support.gitrepos import GitRepoFactory  # noqa: E402
from support.hub import Hub  # noqa: E402
from support.operator import free_port, offline_build_env  # noqa: E402
from support.registry import empty_registry, login_config  # noqa: E402


def build(client, env, repo, image: str, docker_config_dir: str | None) -> float:
    command = build_command(env["R2D_BUILD_IMAGE"], repo, image, push=bool(docker_config_dir))
    volumes = {"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}}
    if docker_config_dir:
        # Writable: buildx keeps its own state under ~/.docker/buildx.
        volumes[docker_config_dir] = {"bind": "/root/.docker", "mode": "rw"}
    start = time.monotonic()
    client.containers.run(
        env["R2D_BUILD_IMAGE"],
        command,
        volumes=volumes,
        remove=True,
        environment=offline_build_env(env),
    )
    return time.monotonic() - start


def first_push(client, env, repos, config_dir: str) -> None:
    """Build alone, then build + push of the same kind of repository to an empty registry."""
    with empty_registry(env, free_port(), Path(tempfile.mkdtemp())) as registry:
        a = dockerfile_repo(repos, env["R2D_SINGLEUSER_IMAGE"])
        b = dockerfile_repo(repos, env["R2D_SINGLEUSER_IMAGE"])
        alone = build(client, env, a, contract.image_name("r2d-bench-", a.url, head(a)), None)
        pushed = build(client, env, b, contract.image_name(f"{registry}/bench/r2d-bench-", b.url, head(b)), config_dir)
        print(
            f"first build on an empty registry: build {alone:.2f}s, build + push {pushed:.2f}s "
            f"(uploads the base image's layers); ratio {pushed / alone:.2f}"
        )


def build_vs_push(client, env, repos, prefix: str, config_dir: str, rounds: int) -> None:
    first_push(client, env, repos, config_dir)
    alone, pushed = [], []
    for i in range(rounds):
        a = dockerfile_repo(repos, env["R2D_SINGLEUSER_IMAGE"])
        b = dockerfile_repo(repos, env["R2D_SINGLEUSER_IMAGE"])
        alone.append(build(client, env, a, contract.image_name("r2d-bench-", a.url, head(a)), None))
        pushed.append(build(client, env, b, contract.image_name(prefix, b.url, head(b)), config_dir))
        print(f"round {i + 1}: build {alone[-1]:.2f}s, build + push {pushed[-1]:.2f}s")
    ma, mp = statistics.median(alone), statistics.median(pushed)
    print(f"median build: {ma:.2f}s; build + push: {mp:.2f}s; push adds {mp - ma:+.2f}s; ratio {mp / ma:.2f}")


def spawn_time(hub: Hub, name: str, repo) -> float:
    start = time.monotonic()
    response, events = hub.spawn_and_follow(name, {"repo": repo.url, "ref": "main"})
    assert events and events[-1].get("ready"), events
    hub.wait_ready(name)
    elapsed = time.monotonic() - start
    hub.stop_server(name)
    return elapsed


def pull_vs_local(client, env, repos, prefix: str, push_config: str, rounds: int) -> None:
    work = Path(tempfile.mkdtemp())
    hub_docker = Path(login_config(env, work / "hub-docker")).parent
    hub = Hub(
        env,
        work,
        process_env={"DOCKER_CONFIG": str(hub_docker)},
        backend="local",
        image_prefix=prefix,
        allowed_images=[env["R2D_SINGLEUSER_IMAGE"]],
        **{"LocalBackend.push": True, "LocalBackend.docker_config": push_config},
    )
    hub.start()
    try:
        repo = repos.create(
            {"Dockerfile": f"FROM {env['R2D_SINGLEUSER_IMAGE']}\nRUN head -c 64M /dev/urandom >/home/jovyan/data.bin\n"}
        )
        image = contract.image_name(prefix, repo.url, head(repo))
        user = f"bench{uuid.uuid4().hex[:6]}"
        spawn_time(hub, user, repo)  # builds and pushes; not measured
        local, pulled = [], []
        for i in range(rounds):
            local.append(spawn_time(hub, user, repo))
            client.images.remove(image, force=True)
            pulled.append(spawn_time(hub, user, repo))
            print(f"round {i + 1}: spawn with the image {local[-1]:.2f}s, spawn that pulls it {pulled[-1]:.2f}s")
        ml, mp = statistics.median(local), statistics.median(pulled)
        print(f"median spawn: {ml:.2f}s with the image, {mp:.2f}s pulling it; ratio {mp / ml:.2f}")
    finally:
        hub.stop()
        for c in client.containers.list(all=True, filters={"name": "r2d-e2e-"}):
            c.remove(force=True)


def main(rounds: int) -> None:
    env = load_env(ROOT / ".testenv" / "env")
    client = docker.from_env()
    repos = GitRepoFactory(Path(env["R2D_GIT_ROOT"]), env["R2D_GIT_URL"])
    prefix = f"{env['R2D_REGISTRY']}/bench-{uuid.uuid4().hex[:8]}/r2d-bench-"
    config = login_config(env, Path(tempfile.mkdtemp()))
    try:
        build_vs_push(client, env, repos, prefix, str(Path(config).parent), rounds)
        pull_vs_local(client, env, repos, prefix, config, rounds)
    finally:
        for image in client.images.list():
            if any(tag.startswith(("r2d-bench-", env["R2D_REGISTRY"] + "/bench-")) for tag in image.tags):
                client.images.remove(image.id, force=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
