"""Hub-wide settings never silently do nothing.

`prebuild_repos` and `webhook_secret` take effect through `repo2dockerspawner.hub.setup(c)`.
A hub whose configuration sets them (under either name, or the secret's variable) without
calling it would start and never prebuild, with no word in its log. So loading the spawner
by name while the hub reads its configuration (the package's `__getattr__`) schedules one look
at the loaded configuration; when something is set and `setup` was not called, the hub stops
before it serves, with a message naming both.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

log = logging.getLogger(__name__)
# The configuration section `setup(c)` marks (no class reads it).
MARK = "Repo2DockerHubSetUp"
HUB_SETTINGS = ("prebuild_repos", "prebuild_interval", "webhook_secret")
SECTIONS = ("Repo2DockerHub", "Repo2DockerSpawner")
SECRET_VARIABLE = "R2D_WEBHOOK_SECRET"
_scheduled = False


def mark_set_up(c: Any) -> None:
    c[MARK]["done"] = True


def needing_setup(config: Any, environ: dict[str, str]) -> list[str]:
    """What the configuration sets that needs `setup(c)`, when it was not called."""
    if MARK in config and config[MARK].get("done"):
        return []
    found = [
        f"c.{section}.{name}"
        for section in SECTIONS
        if section in config
        for name in HUB_SETTINGS
        if name in config[section]
    ]
    if environ.get(SECRET_VARIABLE):
        found.append(f"${SECRET_VARIABLE}")
    return found


def check_the_hub() -> None:
    """Stop the hub when it was told to do what only `setup(c)` makes happen."""
    from jupyterhub.app import JupyterHub

    if not JupyterHub.initialized():
        return
    app = JupyterHub.instance()
    missing = needing_setup(app.config, dict(os.environ))
    if missing:
        app.log.critical(
            "%s set, but jupyterhub_config.py does not call repo2dockerspawner.hub.setup(c), "
            "which runs prebuilds and the webhook: add `import repo2dockerspawner.hub; "
            "repo2dockerspawner.hub.setup(c)`, or remove the setting",
            ", ".join(missing),
        )
        app.exit(1)


def schedule_check() -> None:
    """Once per process, when the spawner is loaded inside a running hub's loop (JupyterHub
    loads its configuration, and with it the spawner class, in its loop): the look runs after
    the whole configuration file has been read."""
    global _scheduled
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if not _scheduled:
        _scheduled = True
        loop.call_soon(check_the_hub)
