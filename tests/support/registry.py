"""The test environment's image registries, seen as users see them: a docker config.json
written as `docker login` writes it, and the registry's own HTTP API."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import requests

from .env import TestEnv


def write_docker_config(directory: Path, registry: str, user: str, password: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = directory / "config.json"
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return str(path)


def login_config(env: TestEnv, directory: Path, password: str | None = None) -> str:
    """Credentials for the authenticated registry (the right ones unless `password` is given)."""
    return write_docker_config(directory, env["R2D_REGISTRY"], env["R2D_REGISTRY_USER"],
                               password if password is not None else env["R2D_REGISTRY_PASSWORD"])


def registry_tags(env: TestEnv, name: str) -> list[str]:
    """Tags of a repository, from the authenticated registry's API (`/v2/<name>/tags/list`)."""
    r = requests.get(f"http://{env['R2D_REGISTRY']}/v2/{name}/tags/list",
                     auth=(env["R2D_REGISTRY_USER"], env["R2D_REGISTRY_PASSWORD"]), timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return r.json().get("tags") or []
