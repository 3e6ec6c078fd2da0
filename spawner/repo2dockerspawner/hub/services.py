"""The hub-wide objects, made once: the hub's own spawner, its settings, the prebuilder, the bridge.

The builds page, prebuilds and webhooks have no user and no spawn, but they need what every
user's spawner has: the build backend (one per hub process and configuration, so the very one
the launches use), the allow-lists, credentials and image naming. So the hub gets one spawner
of its own, made from its configuration with a placeholder owner. `setup(c)` makes one
`HubServices`; the bridge's handlers are handed it (tornado's `initialize`), none makes it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from traitlets.config import Config

from ..backends import BuildBackend
from ..spawner import Repo2DockerSpawner
from .prebuilder import Prebuilder, PrebuildResolver
from .settings import Repo2DockerHub

log = logging.getLogger(__name__)
# DockerSpawner renders names from its user as soon as it is configured: a placeholder owner
# for a spawner that is never started.
HUB_OWNER = SimpleNamespace(name="repo2docker-hub", id=0, url="/")


@dataclass(frozen=True)
class BridgeAddress:
    """Where the hub process answers the service (bridge.py), and the token it asks for."""

    ip: str
    port: int
    token: str

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"


class NotThisSpawner(Exception):
    """The hub runs another spawner class: there are no builds to show or prebuild."""


class HubServices:
    def __init__(self, config: Config, bridge: BridgeAddress) -> None:
        self.config = config
        self.bridge = bridge
        self.bridge_server: Any = None
        self._spawner: Repo2DockerSpawner | None = None
        self.settings: Repo2DockerHub | None = None
        self.prebuilder: Prebuilder | None = None

    @property
    def spawner(self) -> Repo2DockerSpawner:
        """The hub's own spawner, of the hub's spawner class (a subclass too)."""
        if self._spawner is None:
            spawner_class = self.spawner_class()
            if not (isinstance(spawner_class, type) and issubclass(spawner_class, Repo2DockerSpawner)):
                raise NotThisSpawner(f"the hub's spawner is {spawner_class!r}, not a Repo2DockerSpawner")
            self._spawner = spawner_class(config=self.config, user=HUB_OWNER)
        return self._spawner

    def spawner_class(self) -> Any:
        """The class JupyterHub resolved from `c.JupyterHub.spawner_class` (entry point names too)."""
        app = self.app()
        return app.spawner_class if app is not None else Repo2DockerSpawner

    def app(self) -> Any:
        """The JupyterHub application of this process (None outside a hub)."""
        from jupyterhub.app import JupyterHub

        return JupyterHub.instance() if JupyterHub.initialized() else None

    def user_spawner(self, user_name: str, server_name: str) -> Any:
        """The spawner of one user's server, or None when there is no such user or server."""
        from jupyterhub import orm

        app = self.app()
        orm_user = orm.User.find(app.db, user_name) if app is not None else None
        if orm_user is None:
            return None
        user = app.users[orm_user]
        if server_name and server_name not in user.orm_spawners:
            return None
        return user.spawners[server_name]

    @property
    def backend(self) -> BuildBackend:
        return self.spawner.build_backend

    def start(self) -> None:
        """Once the hub has read its configuration (called soon after `setup(c)`, in the hub's
        loop): the bridge, the settings, checked now so that a wrong one stops the hub, and
        prebuilds, which must not wait for anybody's first visit."""
        from .bridge import serve

        try:
            spawner = self.spawner  # also sends this package's log lines to the hub's log
        except NotThisSpawner as exc:
            log.warning("repo2docker hub services: %s; nothing to show or prebuild", exc)
            return
        self.bridge_server = serve(self, self.bridge.ip, self.bridge.port, self.bridge.token)
        log.info("repo2docker hub bridge at %s", self.bridge.url)
        self.settings = Repo2DockerHub(config=spawner.backend_config())  # the old names moved here
        self.prebuilder = Prebuilder(
            self.settings.watched_repos(spawner.policy), self.settings.prebuild_interval, PrebuildResolver(spawner)
        )
        self.prebuilder.start()

    def schedule_start(self) -> None:
        """`start` once the configuration is read: `setup(c)` runs while the hub loads its
        configuration file, inside its event loop, and the rest of the file is read before the
        loop runs anything else. Without a running loop (the configuration read by another
        program) there is no hub to start with."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(self._start_or_stop_the_hub)

    def _start_or_stop_the_hub(self) -> None:
        try:
            self.start()
        except Exception as exc:  # a wrong setting: the hub must not run without what it was told to do
            from jupyterhub.app import JupyterHub

            log.critical("repo2docker hub services could not start: %s", exc)
            if JupyterHub.initialized():
                JupyterHub.instance().exit(1)
