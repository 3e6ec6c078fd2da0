"""Spawners for unit tests: the one way of making a Repo2DockerSpawner without a hub."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from traitlets.config import Config

from repo2dockerspawner.spawner import Repo2DockerSpawner


def user(name: str = "alice", id: int = 1) -> SimpleNamespace:
    """What a spawner reads of its JupyterHub user before it starts."""
    return SimpleNamespace(name=name, id=id, url=f"/user/{name}/")


def make_spawner(
    config: dict | Config | None = None, owner: SimpleNamespace | None = None, fresh: bool = True, **traits: Any
) -> Repo2DockerSpawner:
    """A spawner with `traits` set on it and `config` as the hub's configuration ({class: {trait:
    value}}). `fresh`: with a backend of its own (the shared table cleared), as a new hub's."""
    from repo2dockerspawner.backends import shared

    if fresh:
        shared.clear()
    return Repo2DockerSpawner(user=owner or user(), config=Config(config or {}), **traits)
