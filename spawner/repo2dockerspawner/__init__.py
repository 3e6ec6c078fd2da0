"""JupyterHub spawner that starts servers from images repo2docker builds from git repositories.

c.JupyterHub.spawner_class = "repo2docker"      # or "repo2dockerspawner.Repo2DockerSpawner"
"""

from __future__ import annotations

from typing import Any

from repo2docker_buildcore import __version__

__all__ = ["BuildFailed", "Repo2DockerSpawner", "__version__"]


def __getattr__(name: str) -> Any:
    """The spawner, imported when asked for (a process that needs only a part of the package,
    such as the hub service, does not load it). Every time a hub loads it by name (its entry
    point, `spawner_class` or an import in jupyterhub_config.py, which JupyterHub reads inside
    its event loop), the hub's configuration is checked once it is read (hubcheck.py); the name
    is not cached here for that reason."""
    if name in ("Repo2DockerSpawner", "BuildFailed"):
        from . import hubcheck, spawner

        hubcheck.schedule_check()
        return getattr(spawner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
