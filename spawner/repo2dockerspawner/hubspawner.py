"""The hub's own Repo2DockerSpawner: the builds page, prebuilds and webhooks act through it.

They have no user and no spawn, but they need what every user's spawner has: the build
backend (one per hub process and configuration, so the very one the launches use), the
allow-lists, credentials and image naming. So the hub gets one spawner of its own, made from
its configuration with a placeholder owner, kept in the tornado application's settings.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

from tornado import web

log = logging.getLogger(__name__)
SPAWNER = "repo2docker_hub_spawner"
PREBUILDER = "repo2docker_prebuilder"


def hub_spawner(settings: dict[str, Any]) -> Any:
    """The hub's spawner (made on first use), or a 404 when the hub runs another spawner."""
    from .spawner import Repo2DockerSpawner

    spawner = settings.get(SPAWNER)
    if spawner is None:
        spawner_class = settings.get("spawner_class")
        if not (isinstance(spawner_class, type) and issubclass(spawner_class, Repo2DockerSpawner)):
            raise web.HTTPError(404, "This page needs Repo2DockerSpawner as the hub's spawner.")
        # DockerSpawner renders names from its user as soon as it is configured: a
        # placeholder owner for a spawner that is never started.
        owner = SimpleNamespace(name="repo2docker-hub", id=0, url="/")
        spawner = settings[SPAWNER] = spawner_class(config=settings["config"], user=owner)
    return spawner


async def start_with_hub() -> None:
    """Once the hub serves: start prebuilds (which must not wait for anybody's first visit)."""
    from jupyterhub.app import JupyterHub

    from .prebuilds import Prebuilder

    app = JupyterHub.instance()
    while getattr(app, "tornado_application", None) is None:
        await asyncio.sleep(0.2)
    settings = app.tornado_application.settings
    try:
        spawner = hub_spawner(settings)
    except web.HTTPError:
        return  # not this project's spawner: nothing to prebuild
    prebuilder = settings[PREBUILDER] = Prebuilder(spawner, spawner.watched_repos(), spawner.prebuild_interval)
    prebuilder.start()


def schedule_start() -> None:
    """Called while the hub loads its configuration (inside its event loop); without a
    running loop (the configuration read by another program) there is no hub to start with."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(start_with_hub(), name="repo2docker: start with the hub")
    _started.add(task)
    task.add_done_callback(_report)


_started: set[asyncio.Task] = set()


def _report(task: asyncio.Task) -> None:
    _started.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("repo2docker: could not start prebuilds: %s", task.exception())
