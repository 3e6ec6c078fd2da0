"""The service's pages and endpoints (loaded at its first request: see __main__.py).

Who may do what, as on JupyterHub's own admin pages: viewing builds needs `admin-ui`; acting
on them (every user's builds and images) needs `admin:servers` without a filter; the
previous-version button is its server's owner's alone. A browser signs in with the hub's
OAuth (no consent page); a script may send a token with the scope and
`access:services!service=repo2docker`. Form posts carry the service's XSRF token.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import quote

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..humanize import human_age, human_size
from .client import BridgeClient
from .views import ACTIVE, DONE, BuildView, status_json

log = logging.getLogger(__name__)
TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
NAME = r"([a-z0-9][a-z0-9.-]{0,252})"
ACTIONS = ("cancel", "rebuild", "delete-image")
VIEW_SCOPE = "admin-ui"
ACTION_SCOPE = "admin:servers"
# Bytes of a webhook delivery: forges' push payloads are a few KiB (GitHub caps them at 25 MB,
# but lists at most 20 commits). A larger one is refused before it is read.
MAX_BODY = 1 << 20


class Shared:
    """What every handler is handed (tornado's `initialize`): made once by `make_app`."""

    def __init__(self, bridge: BridgeClient, auth: HubOAuth, prefix: str, hub_prefix: str, api_url: str) -> None:
        self.bridge, self.auth = bridge, auth
        self.prefix, self.hub_prefix, self.api_url = prefix, hub_prefix, api_url
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)


class Page(HubOAuthenticated, web.RequestHandler):
    def initialize(self, shared: Shared) -> None:
        self.shared = shared
        self.hub_auth = shared.auth

    @property
    def scopes(self) -> set[str]:
        return set((self.current_user or {}).get("scopes", ()))

    def need(self, scope: str, what: str) -> None:
        """`scope` itself, not a filtered one: `admin:servers!user=x` is about one user's servers."""
        if scope not in self.scopes:
            raise web.HTTPError(403, f"{what} needs the scope {scope}.")

    def render_page(self, template: str, **values: Any) -> None:
        html = self.shared.templates.get_template(template).render(
            prefix=self.shared.prefix,
            hub_prefix=self.shared.hub_prefix,
            user=self.current_user,
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token,
            human_age=human_age,
            human_size=human_size,
            now=time.time(),
            **values,
        )
        self.finish(html)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message
        self.render_page("r2d-error.html", status=status_code, message=message)

    async def ask(self, request: Awaitable[tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
        """The hub process's answer; a 503 saying so when it gives none (restarting, say)."""
        try:
            return await request
        except ConnectionError:
            raise web.HTTPError(503, "The hub did not answer; try again in a moment.") from None

    async def bridge_answer(self, request: Awaitable[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        status, body = await self.ask(request)
        if status >= 400:
            raise web.HTTPError(status, body.get("message") or "The hub refused.")
        return body

    async def record(self, namespace: str, name: str, details: bool = True) -> BuildView:
        body = await self.bridge_answer(self.shared.bridge.build(namespace, name, details))
        return BuildView(body["build"])


class BuildListHandler(Page):
    @web.authenticated
    async def get(self) -> None:
        self.need(VIEW_SCOPE, "Viewing builds")
        body = await self.bridge_answer(self.shared.bridge.builds())
        builds = [BuildView(b) for b in body["builds"]]
        self.render_page(
            "r2d-builds.html",
            builds=builds,
            active=any(b.active for b in builds),
            prebuilds=body.get("prebuilds"),
            message=DONE.get(self.get_argument("done", "")),
        )


class BuildHandler(Page):
    @web.authenticated
    async def get(self, namespace: str, name: str) -> None:
        self.need(VIEW_SCOPE, "Viewing builds")
        build = await self.record(namespace, name)
        self.render_page(
            "r2d-build.html", build=build, active_phases=ACTIVE, message=DONE.get(self.get_argument("done", ""))
        )


class BuildStatusHandler(Page):
    @web.authenticated
    async def get(self, namespace: str, name: str) -> None:
        self.need(VIEW_SCOPE, "Viewing builds")
        build = await self.record(namespace, name, details=False)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(status_json(build)))


class BuildActionHandler(Page):
    """Cancel, rebuild, delete an image: POST only (anything else is a 405)."""

    @web.authenticated
    async def post(self, namespace: str, name: str, action: str) -> None:
        self.need(ACTION_SCOPE, "Acting on builds")
        status, body = await self.ask(self.shared.bridge.act(namespace, name, action, self.current_user["name"]))
        if status == 409:
            self.set_status(409)
            build = await self.record(namespace, name)
            return self.render_page("r2d-build.html", build=build, active_phases=ACTIVE, error=body.get("message"))
        if status >= 400:
            raise web.HTTPError(status, body.get("message") or "The hub refused.")
        where = "builds" if body.get("gone") else f"builds/{namespace}/{name}"
        self.redirect(f"{self.shared.prefix}{where}?done={action}")


class PreviousHandler(Page):
    """GET: the confirmation (its form carries the XSRF token the pending page's button posts
    with); POST: start the previous version, in the waiting launch or, after a failed build,
    in a new launch that the owner's own token starts through the hub's API."""

    def own(self, user_name: str) -> None:
        if self.current_user.get("name") != user_name or self.current_user.get("kind", "user") != "user":
            raise web.HTTPError(403, "Only the server's owner can choose what it starts.")

    @web.authenticated
    async def get(self, user_name: str, server_name: str = "") -> None:
        self.own(user_name)
        self.render_page("r2d-previous.html", action=self.request.path)

    @web.authenticated
    async def post(self, user_name: str, server_name: str = "") -> None:
        self.own(user_name)
        body = await self.bridge_answer(self.shared.bridge.previous(user_name, server_name))
        if "launch" in body:
            await self.launch(user_name, server_name, body["launch"])
        pending = f"{self.shared.hub_prefix}spawn-pending/{quote(user_name, safe='')}"
        self.redirect(pending + (f"/{quote(server_name, safe='')}" if server_name else ""))

    async def launch(self, user_name: str, server_name: str, options: dict[str, Any]) -> None:
        """A new launch through the hub's REST API with the owner's own token (`servers!user`):
        the service has no right of its own to start anybody's server."""
        token = self.hub_auth.get_token(self)
        path = f"/users/{quote(user_name, safe='')}/servers/{quote(server_name, safe='')}"
        response = await AsyncHTTPClient().fetch(
            HTTPRequest(
                self.shared.api_url.rstrip("/") + path,
                method="POST",
                body=json.dumps(options),
                headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
                request_timeout=60,
            ),
            raise_error=False,
        )
        if response.code not in (201, 202):
            message = json.loads(response.body or b"{}").get("message") if response.body else ""
            raise web.HTTPError(response.code if response.code < 600 else 502, message or "The hub refused the launch.")


@web.stream_request_body
class WebhookHandler(web.RequestHandler):
    """No login: forges authenticate by the signature alone, which the hub checks. The body is
    taken in as it streams, so one declared or found larger than MAX_BODY is refused (413) unread."""

    def initialize(self, shared: Shared) -> None:
        self.shared = shared

    def check_xsrf_cookie(self) -> None:
        """Forges sign the body; they have no cookie, so no XSRF token either."""

    def prepare(self) -> None:
        self._body = bytearray()
        self._too_large = False
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            self._answer(413, f"A delivery's body may be at most {MAX_BODY} bytes.")

    def data_received(self, chunk: bytes) -> None:
        if self._too_large or len(self._body) + len(chunk) > MAX_BODY:
            self._too_large, self._body = True, bytearray()
        else:
            self._body += chunk

    def _answer(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"status": status, "message": message})

    async def post(self) -> None:
        if self._too_large:
            return self._answer(413, f"A delivery's body may be at most {MAX_BODY} bytes.")
        try:
            status, body = await self.shared.bridge.webhook(self.request.headers, bytes(self._body))
        except ConnectionError:  # forges retry a failed delivery
            return self._answer(503, "The hub did not answer; deliver again later.")
        self._answer(status, body.get("message", ""))


class MovedHandler(web.RequestHandler):
    """A page of the first release's URLs (`/hub/builds...`, `/hub/repo2docker/previous/...`):
    sent on to the same page under the service's prefix."""

    def initialize(self, shared: Shared, to: str) -> None:
        self.shared, self.to = shared, to

    def get(self, rest: str) -> None:
        query = f"?{self.request.query}" if self.request.query else ""
        self.redirect(f"{self.shared.prefix}{self.to}{rest}{query}", permanent=True)


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    def initialize(self, shared: Shared) -> None:
        self.hub_auth = shared.auth


def make_app(bridge: BridgeClient, prefix: str, hub_prefix: str, api_url: str) -> web.Application:
    auth = HubOAuth(cache_max_age=60)
    shared = Shared(bridge, auth, prefix, hub_prefix, api_url)
    kwargs = {"shared": shared}
    routes = [
        (r"builds/?", BuildListHandler),
        (rf"builds/{NAME}/{NAME}/?", BuildHandler),
        (rf"builds/{NAME}/{NAME}/status", BuildStatusHandler),
        (rf"builds/{NAME}/{NAME}/({'|'.join(ACTIONS)})", BuildActionHandler),
        (r"previous/([^/]+)/?([^/]*)", PreviousHandler),
        (r"webhook", WebhookHandler),
    ]
    handlers: list[tuple] = [(prefix + route, handler, kwargs) for route, handler in routes]
    # The first release's URLs (the proxy routes them here): forges' webhooks keep working
    # where they were pointed; pages are sent on.
    old = hub_prefix.rstrip("/")
    handlers.append((rf"{old}/repo2docker/webhook", WebhookHandler, kwargs))
    handlers.append((rf"{old}/builds(.*)", MovedHandler, {**kwargs, "to": "builds"}))
    handlers.append((rf"{old}/repo2docker/previous(.*)", MovedHandler, {**kwargs, "to": "previous"}))
    handlers.append((prefix + r"oauth_callback", OAuthCallbackHandler, kwargs))
    handlers.append((prefix + r"?", web.RedirectHandler, {"url": prefix + "builds"}))
    # A secret of this process: a restart signs everybody in again (silently: no consent page).
    return web.Application(handlers, cookie_secret=os.urandom(32), hub_auth=auth)
