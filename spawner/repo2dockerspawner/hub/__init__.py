"""Everything hub-wide, for `jupyterhub_config.py` only: `repo2dockerspawner.hub.setup(c)`.

It adds the builds page, the push webhook and the previous-version button to the hub, the
spawn-pending page that shows the build log, and starts prebuilds once the hub has read its
configuration. Nothing in the package below imports this one.
"""

from __future__ import annotations

import os
from typing import Any

from ..hubcheck import mark_set_up
from . import buildspage, previous, webhook
from .services import HubServices
from .settings import Repo2DockerHub

__all__ = ["HubServices", "Repo2DockerHub", "setup"]

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def setup(c: Any) -> HubServices:
    """Add the hub's pages, webhook and templates to the configuration `c`; start prebuilds
    once the hub has read all of it. Returns the hub-wide services (one per call)."""
    services = HubServices(c)
    paths = c.JupyterHub.template_paths
    if isinstance(paths, list):
        paths.insert(0, TEMPLATES)
    else:
        paths.prepend([TEMPLATES])
    handlers = [
        *((route, handler, {"services": services}) for route, handler in buildspage.ROUTES + webhook.ROUTES),
        *previous.ROUTES,
    ]
    c.JupyterHub.extra_handlers.extend(handlers)  # a list, or traitlets' lazy value: both extend
    mark_set_up(c)
    services.schedule_start()
    return services
