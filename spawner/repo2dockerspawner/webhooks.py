"""Push webhooks (GitHub, GitLab, Gitea and Forgejo): resolve a watched repository at once.

`POST /hub/repo2docker/webhook`. A delivery is verified before its body is read as anything:
GitHub, Gitea and Forgejo sign the body with HMAC-SHA256 of `webhook_secret`
(`X-Hub-Signature-256: sha256=<hex>`, or `X-Gitea-Signature` / `X-Forgejo-Signature: <hex>`),
GitLab sends the secret itself (`X-Gitlab-Token`); each is compared in constant time. A
delivery that fails is refused with 401, and nothing of its body is logged.

A verified push names a repository; it only *triggers* the resolution the timer would have
made (prebuilds.py): the commit comes from the hub's own ref listing, never from the payload,
so even a leaked secret can only make the hub look at repositories it already watches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from tornado import web

from .hubspawner import PREBUILDER, hub_spawner

log = logging.getLogger(__name__)
SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Gitea-Signature", "X-Forgejo-Signature")
EVENT_HEADERS = ("X-GitHub-Event", "X-Gitea-Event", "X-Forgejo-Event", "X-Gitlab-Event")
PUSH_EVENTS = ("push", "Push Hook", "Tag Push Hook")


def verified(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether the delivery carries a valid signature (or GitLab token) for `secret`."""
    if not secret:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    for name in SIGNATURE_HEADERS:
        value = headers.get(name)
        if value:
            given = value[len("sha256=") :] if value.startswith("sha256=") else value
            return hmac.compare_digest(given.strip().lower(), expected)
    token = headers.get("X-Gitlab-Token")
    return token is not None and hmac.compare_digest(token.encode(), secret.encode())


def event_of(headers: Mapping[str, str]) -> str:
    return next((headers[name] for name in EVENT_HEADERS if headers.get(name)), "")


def repository_urls(payload: Any) -> list[str]:
    """The URLs a push payload gives for its repository (each forge names them differently)."""
    urls = []
    for section in ("repository", "project"):
        part = payload.get(section) if isinstance(payload, dict) else None
        if isinstance(part, dict):
            for key in ("clone_url", "html_url", "git_http_url", "web_url", "homepage", "url"):
                if isinstance(part.get(key), str):
                    urls.append(part[key])
    return urls


# Bytes of a delivery's body: forges' push payloads are a few KiB (GitHub caps them at 25 MB,
# but lists at most 20 commits). A larger one is refused before it is read.
MAX_BODY = 1 << 20


@web.stream_request_body
class WebhookHandler(web.RequestHandler):
    """No hub login: forges authenticate by the signature alone. The body is taken in as it
    streams, so one declared or found larger than MAX_BODY is refused (413) unread."""

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
        try:
            spawner = hub_spawner(self.settings)
        except web.HTTPError:
            return self._answer(404, "Webhooks need Repo2DockerSpawner as the hub's spawner.")
        # The signature first: nothing this hub watches (or whether it watches anything) is
        # told to whoever cannot sign.
        if not verified(self.request.headers, body, spawner.webhook_secret):
            log.warning("webhook from %s refused: missing or wrong signature", self.request.remote_ip)
            return self._answer(401, "The delivery's signature (or GitLab token) does not match webhook_secret.")
        prebuilder = self.settings.get(PREBUILDER)
        if prebuilder is None or not prebuilder.watched:
            return self._answer(404, "This hub watches no repositories (Repo2DockerSpawner.prebuild_repos).")
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


HANDLERS = [(r"/repo2docker/webhook", WebhookHandler)]
