"""The test environment's image registries, seen as users see them: a docker config.json
written as `docker login` writes it, and the registry's own HTTP API."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import requests

from .env import TestEnv
from .process import stop_process
from .waiting import wait_until


def write_docker_config(directory: Path, registry: str, user: str, password: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = directory / "config.json"
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return str(path)


def login_config(env: TestEnv, directory: Path, password: str | None = None) -> str:
    """Credentials for the authenticated registry (the right ones unless `password` is given)."""
    return write_docker_config(
        directory,
        env["R2D_REGISTRY"],
        env["R2D_REGISTRY_USER"],
        password if password is not None else env["R2D_REGISTRY_PASSWORD"],
    )


def registry_tags(env: TestEnv, name: str) -> list[str]:
    """Tags of a repository, from the authenticated registry's API (`/v2/<name>/tags/list`)."""
    r = requests.get(
        f"http://{env['R2D_REGISTRY']}/v2/{name}/tags/list",
        auth=(env["R2D_REGISTRY_USER"], env["R2D_REGISTRY_PASSWORD"]),
        timeout=10,
    )
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return r.json().get("tags") or []


@contextlib.contextmanager
def empty_registry(env: TestEnv, port: int, workdir: Path, wait: bool = True) -> Iterator[str]:
    """An anonymous registry of the test environment's build on 127.0.0.1:`port`, with no
    images, for as long as the block runs; yields its host:port."""
    config = workdir / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {workdir}/data}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen(
        [env["R2D_REGISTRY_BIN"], "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if wait:
            wait_until(
                lambda: requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).ok,
                timeout=15,
                what=f"the registry on port {port}",
            )
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=10)
