"""Push webhooks (GitHub, GitLab, Gitea and Forgejo): resolve a watched repository at once.

A delivery is verified before its body is read as anything:
GitHub, Gitea and Forgejo sign the body with HMAC-SHA256 of `webhook_secret`
(`X-Hub-Signature-256: sha256=<hex>`, or `X-Gitea-Signature` / `X-Forgejo-Signature: <hex>`),
GitLab sends the secret itself (`X-Gitlab-Token`); each is compared in constant time. A
delivery that fails is refused with 401, and nothing of its body is logged.

A verified push names a repository; it only *triggers* the resolution the timer would have
made (hub/prebuilder.py): the commit comes from the hub's own ref listing, never from the payload,
so even a leaked secret can only make the hub look at repositories it already watches.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

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
