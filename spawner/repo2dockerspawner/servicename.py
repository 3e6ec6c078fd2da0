"""Where the hub service lives, for every side that links to it (one name, one prefix rule)."""

from __future__ import annotations

SERVICE_NAME = "repo2docker"


def service_prefix(hub_base_url: str) -> str:
    """`/services/repo2docker/` under JupyterHub's base URL, from the hub's own prefix (`/hub/`)."""
    base = hub_base_url.rstrip("/").removesuffix("hub")
    return f"{base.rstrip('/')}/services/{SERVICE_NAME}/"
