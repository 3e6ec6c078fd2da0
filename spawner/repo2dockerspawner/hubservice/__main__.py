"""`python -m repo2dockerspawner.hubservice`: the hub service's process.

It listens at once with tornado alone. JupyterHub asks a managed service's address at every
hub start (any answer will do) and now and then after; those requests, outside the service's
prefix, get a 404 from a plain router. The pages' application, with JupyterHub's OAuth client
(which loads the hub's database layer: most of a second of CPU), is made at the first request
under the prefix: a hub whose builds page nobody opens never pays for it.

Environment: JupyterHub's for services (JUPYTERHUB_SERVICE_URL, _SERVICE_PREFIX, _BASE_URL,
_API_URL, _API_TOKEN, _CLIENT_ID, _OAUTH_CALLBACK_URL, ...), and R2D_BRIDGE_URL and
R2D_BRIDGE_TOKEN, where the hub process answers (hub/bridge.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from tornado import httputil, web
from tornado.httpserver import HTTPServer
from tornado.routing import AnyMatches, PathMatches, Router, Rule, RuleRouter

from .client import BridgeClient


class LazyApplication(Router):
    """Delegates to the application `make()` returns, made at the first request."""

    def __init__(self, make: Callable[[], web.Application]) -> None:
        self.make = make
        self.app: web.Application | None = None

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> httputil.HTTPMessageDelegate | None:
        if self.app is None:
            self.app = self.make()
        return self.app.find_handler(request, **kwargs)


class NotHere(web.RequestHandler):
    def get(self) -> None:
        raise web.HTTPError(404)


def router(environ: Mapping[str, str]) -> RuleRouter:
    prefix = environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/repo2docker/")
    base = environ.get("JUPYTERHUB_BASE_URL", "/")
    bridge = BridgeClient(environ["R2D_BRIDGE_URL"], environ["R2D_BRIDGE_TOKEN"])

    def make() -> web.Application:
        from .app import make_app

        return make_app(bridge, prefix, base.rstrip("/") + "/hub/", environ["JUPYTERHUB_API_URL"])

    lazy = LazyApplication(make)
    legacy = re.escape(base.rstrip("/")) + r"/hub/(builds|repo2docker/)"
    return RuleRouter(
        [
            Rule(PathMatches(re.escape(prefix.rstrip("/")) + r"(/.*)?$"), lazy),
            Rule(PathMatches(legacy + r".*$"), lazy),  # the first release's URLs (app.py)
            Rule(AnyMatches(), web.Application([(r".*", NotHere)])),
        ]
    )


async def serve(environ: Mapping[str, str]) -> None:
    address = urlsplit(environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    server = HTTPServer(router(environ), xheaders=True)
    server.listen(address.port or 80, address=address.hostname or "127.0.0.1")
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # JupyterHub stops its services with SIGINT
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    server.stop()


def main() -> None:
    asyncio.run(serve(os.environ))


if __name__ == "__main__":
    main()
