"""The service's side of the bridge (hub/bridge.py): five requests to the hub process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

# Seconds for the hub to answer; its handlers only read (or start) what is already in memory.
TIMEOUT = 30.0
# The headers of a forge's delivery that the hub verifies and reads.
WEBHOOK_HEADERS = (
    "Content-Type",
    "X-Hub-Signature-256",
    "X-Gitea-Signature",
    "X-Forgejo-Signature",
    "X-Gitlab-Token",
    "X-GitHub-Event",
    "X-Gitea-Event",
    "X-Forgejo-Event",
    "X-Gitlab-Event",
)


class BridgeClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.http = AsyncHTTPClient()

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        request = HTTPRequest(
            self.url + path,
            method=method,
            body=body if body is not None else (b"" if method == "POST" else None),
            headers={**(headers or {}), "Authorization": f"Bearer {self.token}"},
            request_timeout=TIMEOUT,
        )
        response = await self.http.fetch(request, raise_error=False)
        if response.code == 599:  # no answer at all
            raise ConnectionError(f"the hub's bridge did not answer: {response.error}")
        try:
            return response.code, json.loads(response.body or b"{}")
        except ValueError:
            return response.code, {"message": response.body.decode(errors="replace")[:500]}

    async def builds(self) -> tuple[int, dict[str, Any]]:
        return await self.request("GET", "/builds")

    async def build(self, namespace: str, name: str, details: bool = True) -> tuple[int, dict[str, Any]]:
        return await self.request("GET", f"/builds/{namespace}/{name}?details={int(details)}")

    async def act(self, namespace: str, name: str, action: str, by: str) -> tuple[int, dict[str, Any]]:
        return await self.request("POST", f"/builds/{namespace}/{name}/{action}", json.dumps({"by": by}).encode())

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        forwarded = {name: headers[name] for name in WEBHOOK_HEADERS if headers.get(name)}
        return await self.request("POST", "/webhook", body, forwarded)

    async def previous(self, user: str, server: str) -> tuple[int, dict[str, Any]]:
        return await self.request("POST", f"/previous/{quote(user, safe='')}/{quote(server, safe='')}")
