"""The hub process's narrow interface to the hub service: the embedded backend's builds stay here.

Why not the build core inside the service: the embedded backend's queue, build tasks and live
logs, and the launches that wait for them (the previous-version button must reach one), live
in the hub process, where each user's spawner runs. Moving them out would make every launch a
client of another process; instead the service, which holds no Docker or Kubernetes
credential, asks the hub for five things over HTTP on a loopback port:

    GET  /builds                                  every build, and the watched repositories
    GET  /builds/<namespace>/<name>[?details=0]   one build (404: none)
    POST /builds/<namespace>/<name>/<action>      cancel | rebuild | delete-image, {"by": user}
    POST /webhook                                 a delivery, its forge's headers, body as is
    POST /previous/<user>[/<server>]              the owner chose the previous version

Every request carries `Authorization: Bearer <token>`, a token made for each hub start and
handed to the service in its environment; anything else is a 403. The webhook's secret stays
here too: deliveries are verified in the hub.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Protocol

from tornado import httpserver, web

from ..backends import ActionRefused, BuildBackend
from ..webhooks import PUSH_EVENTS, event_of, repository_urls, verified
from .prebuilder import Prebuilder
from .settings import Repo2DockerHub
from .wire import build_to_wire, prebuilds_to_wire


class HubServices(Protocol):
    """What the bridge asks of the hub-wide services (services.py), which open it."""

    backend: BuildBackend
    settings: Repo2DockerHub | None
    prebuilder: Prebuilder | None

    def user_spawner(self, user_name: str, server_name: str) -> Any: ...


log = logging.getLogger(__name__)
NAME = r"([a-z0-9][a-z0-9.-]{0,252})"
ACTIONS = ("cancel", "rebuild", "delete-image")
# Bytes of a webhook delivery (the service refuses larger ones before they get here).
MAX_BODY = 1 << 20


class BridgeHandler(web.RequestHandler):
    def initialize(self, services: HubServices, token: str) -> None:
        self.hub_services = services
        self.token = token

    def prepare(self) -> None:
        given = self.request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise web.HTTPError(403)

    def check_xsrf_cookie(self) -> None:
        """A token in a header, never a cookie: nothing a browser sends on its own."""

    def answer(self, status: int, **body: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(json.dumps({"message": self._reason}))

    @property
    def backend(self) -> BuildBackend:
        return self.hub_services.backend


class BuildsHandler(BridgeHandler):
    async def get(self) -> None:
        builds = await self.backend.list_builds()
        self.answer(
            200, builds=[build_to_wire(b) for b in builds], prebuilds=prebuilds_to_wire(self.hub_services.prebuilder)
        )


class BuildHandler(BridgeHandler):
    async def get(self, namespace: str, name: str) -> None:
        record = await self.backend.get_build(namespace, name, details=self.get_argument("details", "1") != "0")
        if record is None:
            return self.answer(404, message=f"There is no build {namespace}/{name}.")
        self.answer(200, build=build_to_wire(record))


class ActionHandler(BridgeHandler):
    async def post(self, namespace: str, name: str, action: str) -> None:
        by = str(json.loads(self.request.body or b"{}").get("by") or "")
        if await self.backend.get_build(namespace, name, details=False) is None:
            return self.answer(404, message=f"There is no build {namespace}/{name}.")
        try:
            if action == "cancel":
                await self.backend.cancel(namespace, name)
            elif action == "rebuild":
                await self.backend.rebuild(namespace, name, requested_by=by)
            else:
                await self.backend.delete_image(namespace, name)
        except ActionRefused as exc:
            return self.answer(409, message=str(exc))
        log.info("builds page: %s %s %s/%s", by, action, namespace, name)
        self.answer(200, gone=await self.backend.get_build(namespace, name, details=False) is None)


class WebhookHandler(BridgeHandler):
    """A forge's delivery as the service received it: verified here, where the secret is."""

    async def post(self) -> None:
        settings, prebuilder = self.hub_services.settings, self.hub_services.prebuilder
        if settings is None or prebuilder is None:
            return self.answer(404, message="Webhooks need Repo2DockerSpawner as the hub's spawner.")
        body, headers = self.request.body, self.request.headers
        # The signature first: nothing this hub watches (or whether it watches anything) is
        # told to whoever cannot sign.
        if not verified(headers, body, settings.webhook_secret):
            log.warning("webhook refused: missing or wrong signature")
            return self.answer(401, message="The delivery's signature (or GitLab token) does not match webhook_secret.")
        if not prebuilder.watched:
            return self.answer(404, message="This hub watches no repositories (Repo2DockerHub.prebuild_repos).")
        event = event_of(headers)
        if event in ("ping", "Ping Hook", "System Hook"):
            return self.answer(200, message="pong")
        if event not in PUSH_EVENTS:
            return self.answer(202, message=f"{event or 'This event'} is not a push; nothing to do.")
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return self.answer(400, message="The body is not JSON.")
        watched = next((w for w in map(prebuilder.find, repository_urls(payload)) if w is not None), None)
        if watched is None:
            return self.answer(404, message="The pushed repository is not one this hub watches.")
        prebuilder.trigger(watched)
        log.info("webhook: push to %s; resolving its refs", watched.repo)
        self.answer(202, message=f"Resolving {watched.repo}.")


class PreviousHandler(BridgeHandler):
    """The server's owner (the service checked who) chose the previous version: the waiting
    launch takes it; after a failed build, the answer names the launch to start again (the
    service starts it with the owner's own token)."""

    async def post(self, user_name: str, server_name: str = "") -> None:
        spawner = self.hub_services.user_spawner(user_name, server_name)
        if spawner is None:
            return self.answer(404, message="There is no such server.")
        if spawner.pending == "spawn":
            if not getattr(spawner, "use_previous", lambda: False)():
                return self.answer(409, message="This launch has no previous version to start.")
            return self.answer(200, chosen=True)
        if spawner.active:
            return self.answer(200, chosen=False)  # running already: nothing to choose
        options = {key: value for key, value in (spawner.user_options or {}).items() if key in ("repo", "ref")}
        if not options.get("repo"):
            return self.answer(409, message="There is no launch to start a previous version of.")
        self.answer(200, launch={**options, "previous_ok": True})


def routes(services: HubServices, token: str) -> list[tuple]:
    kwargs = {"services": services, "token": token}
    return [
        (r"/builds", BuildsHandler, kwargs),
        (rf"/builds/{NAME}/{NAME}", BuildHandler, kwargs),
        (rf"/builds/{NAME}/{NAME}/({'|'.join(ACTIONS)})", ActionHandler, kwargs),
        (r"/webhook", WebhookHandler, kwargs),
        (r"/previous/([^/]+)/?([^/]*)", PreviousHandler, kwargs),
    ]


def serve(services: HubServices, address: str, port: int, token: str) -> httpserver.HTTPServer:
    """Listen on `address:port` (loopback unless the service runs elsewhere)."""
    server = httpserver.HTTPServer(web.Application(routes(services, token)), max_body_size=MAX_BODY + 4096)
    server.listen(port, address=address)
    return server
