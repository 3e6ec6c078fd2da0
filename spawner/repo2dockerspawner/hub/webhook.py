"""The push webhook, `POST /hub/repo2docker/webhook`: a verified push to a watched repository
resolves it at once (webhooks.py verifies; hub/prebuilder.py resolves)."""

from __future__ import annotations

import json
import logging

from tornado import web

from ..webhooks import PUSH_EVENTS, event_of, repository_urls, verified
from .services import HubServices

log = logging.getLogger(__name__)


# Bytes of a delivery's body: forges' push payloads are a few KiB (GitHub caps them at 25 MB,
# but lists at most 20 commits). A larger one is refused before it is read.
MAX_BODY = 1 << 20


@web.stream_request_body
class WebhookHandler(web.RequestHandler):
    """No hub login: forges authenticate by the signature alone. The body is taken in as it
    streams, so one declared or found larger than MAX_BODY is refused (413) unread."""

    def initialize(self, services: HubServices) -> None:
        self.hub_services = services

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
        body = bytes(self._body)
        settings, prebuilder = self.hub_services.settings, self.hub_services.prebuilder
        if settings is None or prebuilder is None:
            return self._answer(404, "Webhooks need Repo2DockerSpawner as the hub's spawner.")
        # The signature first: nothing this hub watches (or whether it watches anything) is
        # told to whoever cannot sign.
        if not verified(self.request.headers, body, settings.webhook_secret):
            log.warning("webhook from %s refused: missing or wrong signature", self.request.remote_ip)
            return self._answer(401, "The delivery's signature (or GitLab token) does not match webhook_secret.")
        if not prebuilder.watched:
            return self._answer(404, "This hub watches no repositories (Repo2DockerHub.prebuild_repos).")
        event = event_of(self.request.headers)
        if event in ("ping", "Ping Hook", "System Hook"):
            return self._answer(200, "pong")
        if event not in PUSH_EVENTS:
            return self._answer(202, f"{event or 'This event'} is not a push; nothing to do.")
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return self._answer(400, "The body is not JSON.")
        watched = next((w for w in map(prebuilder.find, repository_urls(payload)) if w is not None), None)
        if watched is None:
            return self._answer(404, "The pushed repository is not one this hub watches.")
        prebuilder.trigger(watched)
        log.info("webhook: push to %s; resolving its refs", watched.repo)
        self._answer(202, f"Resolving {watched.repo}.")


ROUTES = [(r"/repo2docker/webhook", WebhookHandler)]
