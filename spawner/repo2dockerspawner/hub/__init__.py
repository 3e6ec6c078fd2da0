"""Everything hub-wide, for `jupyterhub_config.py` only: `repo2dockerspawner.hub.setup(c)`.

It registers the hub service `repo2docker` (the builds page, the push webhook and the
previous-version button, at `/services/repo2docker/`), opens the bridge the service asks the
hub process through (bridge.py), puts the spawn-pending page that shows the build log on the
template path, and starts prebuilds once the hub has read its configuration. Nothing in the
package below imports this one.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

from ..hubcheck import mark_set_up
from ..servicename import SERVICE_NAME
from .services import BridgeAddress, HubServices
from .settings import Repo2DockerHub

__all__ = ["HubServices", "Repo2DockerHub", "setup"]

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
# What the service may do with a user's token, at most (each user's own scopes limit it
# further): view builds (admin-ui), act on them (admin:servers), start the owner's own server
# again with the previous version (servers!user).
OAUTH_SCOPES = ["admin-ui", "admin:servers", "servers!user"]
LEGACY_PATHS = ("/hub/builds", "/hub/repo2docker/")


def setup(
    c: Any,
    *,
    bridge_ip: str = "127.0.0.1",
    bridge_port: int | None = None,
    bridge_token: str | None = None,
    service_url: str | None = None,
    api_token: str | None = None,
) -> HubServices:
    """Configure `c` for the hub service and the hub-wide services; returns them (one per call).

    By default JupyterHub runs the service itself (`python -m repo2dockerspawner.hubservice`
    on a free loopback port) and the bridge listens on a free loopback port with a token made
    now. To run the service apart, give `service_url` (where it listens) and `api_token` (its
    JupyterHub token), and `bridge_ip`, `bridge_port` and `bridge_token` (where and with what
    it reaches the hub process); start it with those in its environment (docs: hub services).
    """
    from jupyterhub.utils import random_port

    bridge = BridgeAddress(bridge_ip, bridge_port or random_port(), bridge_token or secrets.token_urlsafe(32))
    services = HubServices(c, bridge)
    service: dict[str, Any] = {
        "name": SERVICE_NAME,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": list(OAUTH_SCOPES),
        "display": False,  # a page for admins; every user may reach the service (the button)
    }
    if service_url is None:
        service.update(
            url=f"http://127.0.0.1:{random_port()}",
            command=[sys.executable, "-m", "repo2dockerspawner.hubservice"],
            environment={"R2D_BRIDGE_URL": bridge.url, "R2D_BRIDGE_TOKEN": bridge.token},
        )
    else:
        if not api_token:
            raise ValueError("repo2dockerspawner.hub.setup: a service run apart (service_url) needs its api_token")
        service.update(url=service_url, api_token=api_token)
    c.JupyterHub.services.append(service)
    # The first release's URLs, under the hub's prefix, still reach the service: forges keep
    # their webhook's address, bookmarks of the builds page are sent on (hubservice/app.py).
    base = str(c.JupyterHub.base_url if "base_url" in c.JupyterHub else "/").rstrip("/")
    c.Proxy.extra_routes.update({f"{base}{path}": service["url"] for path in LEGACY_PATHS})
    # Every user may reach the service (the previous-version button); what they may do there
    # is the service's to check, by their scopes.
    c.JupyterHub.extra_user_scopes.add(f"access:services!service={SERVICE_NAME}")
    paths = c.JupyterHub.template_paths
    if isinstance(paths, list):
        paths.insert(0, TEMPLATES)
    else:
        paths.prepend([TEMPLATES])
    mark_set_up(c)
    services.schedule_start()
    return services
