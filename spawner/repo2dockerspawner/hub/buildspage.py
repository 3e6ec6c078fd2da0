"""The admin builds page, at /hub/builds: every build, its log, and the admin's actions.

Scopes as JupyterHub's own admin pages: `admin-ui` to view, `admin:servers` to act. Every
action calls the backend's own method, the code its builds run through anyway.
"""

from __future__ import annotations

import time
from typing import Any

from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from repo2docker_buildcore.contract import Phase

from ..backends import ActionRefused, BuildBackend, BuildRecord
from ..humanize import human_age, human_size
from .services import HubServices, NotThisSpawner

ACTIVE = (Phase.PENDING, Phase.QUEUED, Phase.BUILDING)
# What a finished action says, by a fixed key: nothing from the URL is ever shown as a message.
DONE = {
    "cancel": "The build was cancelled; its container is being stopped.",
    "rebuild": "A new build was started.",
    "delete-image": "The image was removed; the next start of this commit builds it again.",
}
NAME_PATTERN = r"([a-z0-9][a-z0-9.-]{0,252})"
# Viewing is what the admin page's scope is for; acting on every user's builds and images is
# administering servers.
VIEW_SCOPE = "admin-ui"
ACTION_SCOPE = "admin:servers"


def record_json(record: BuildRecord) -> dict[str, Any]:
    return {
        "phase": record.phase.value,
        "queuePosition": record.queue_position,
        "message": record.message,
        "logTail": record.log_tail,
        "active": record.phase in ACTIVE,
        "age": human_age(time.time() - record.created) if record.created else "—",
        "duration": human_age(record.duration),
    }


class BuildsBase(BaseHandler):
    def initialize(self, services: HubServices) -> None:
        self.hub_services = services

    @property
    def backend(self) -> BuildBackend:
        """The hub's shared build backend: the hub's own spawner's, which is the one every
        user's spawner has (one per configuration and process)."""
        try:
            return self.hub_services.backend
        except NotThisSpawner:
            raise web.HTTPError(404, "This page needs Repo2DockerSpawner as the hub's spawner.") from None

    async def record(self, namespace: str, name: str, details: bool = True) -> BuildRecord:
        record = await self.backend.get_build(namespace, name, details=details)
        if record is None:
            raise web.HTTPError(404, f"There is no build {namespace}/{name}.")
        return record

    def template_helpers(self) -> dict[str, Any]:
        return {"human_age": human_age, "human_size": human_size, "now": time.time(), "active_phases": ACTIVE}

    async def render_build(self, record: BuildRecord, message: str | None = None, error: str | None = None) -> None:
        html = await self.render_template(
            "r2d-build.html", build=record, message=message, error=error, **self.template_helpers()
        )
        self.finish(html)


class BuildListHandler(BuildsBase):
    @web.authenticated
    @needs_scope(VIEW_SCOPE)
    async def get(self) -> None:
        builds = await self.backend.list_builds()
        html = await self.render_template(
            "r2d-builds.html",
            builds=builds,
            active=any(b.phase in ACTIVE for b in builds),
            prebuilder=self.hub_services.prebuilder,
            message=DONE.get(self.get_argument("done", "")),
            **self.template_helpers(),
        )
        self.finish(html)


class BuildHandler(BuildsBase):
    @web.authenticated
    @needs_scope(VIEW_SCOPE)
    async def get(self, namespace: str, name: str) -> None:
        await self.render_build(await self.record(namespace, name), message=DONE.get(self.get_argument("done", "")))


class BuildStatusHandler(BuildsBase):
    """The detail page's live view: phase, queue position, message and log tail as JSON."""

    _accept_token_auth = True  # for scripts and services too

    @web.authenticated
    @needs_scope(VIEW_SCOPE)
    async def get(self, namespace: str, name: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(record_json(await self.record(namespace, name, details=False)))


class BuildActionHandler(BuildsBase):
    """Cancel, rebuild, delete an image: POST only (tornado answers 405 to anything else).

    They act on every user's builds and servers' images, so they need ACTION_SCOPE without a
    filter: `admin-ui` only lets one *view* the admin pages, and `admin:servers!user=x` is
    about one user's servers. A service's token with the scope works too (token requests
    carry no cookie, so they need no XSRF token; a browser's do)."""

    _accept_token_auth = True

    @web.authenticated
    async def post(self, namespace: str, name: str, action: str) -> None:
        from jupyterhub.scopes import Scope

        if self.parsed_scopes.get(ACTION_SCOPE) != Scope.ALL:
            raise web.HTTPError(403, f"Acting on builds needs the scope {ACTION_SCOPE}.")
        await self.record(namespace, name, details=False)  # 404 for no such build
        try:
            if action == "cancel":
                await self.backend.cancel(namespace, name)
            elif action == "rebuild":
                await self.backend.rebuild(namespace, name, requested_by=self.current_user.name)
            else:
                await self.backend.delete_image(namespace, name)
        except ActionRefused as exc:
            self.set_status(409)
            await self.render_build(await self.record(namespace, name), error=str(exc))
            return
        self.log.info("builds page: %s %s %s/%s", self.current_user.name, action, namespace, name)
        gone = await self.backend.get_build(namespace, name, details=False) is None
        where = "builds" if gone else f"builds/{namespace}/{name}"
        self.redirect(f"{self.hub.base_url}{where}?done={action}")


ROUTES = [
    (r"/builds/?", BuildListHandler),
    (rf"/builds/{NAME_PATTERN}/{NAME_PATTERN}/?", BuildHandler),
    (rf"/builds/{NAME_PATTERN}/{NAME_PATTERN}/status", BuildStatusHandler),
    (rf"/builds/{NAME_PATTERN}/{NAME_PATTERN}/(cancel|rebuild|delete-image)", BuildActionHandler),
]
