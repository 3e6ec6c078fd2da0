"""The hub service: the builds page, the push webhook and the previous-version button.

A JupyterHub service (`python -m repo2dockerspawner.hubservice`), hub-managed by default
(`repo2dockerspawner.hub.setup(c)`), at `/services/repo2docker/`, authenticated with the hub's
OAuth. It holds no Docker or Kubernetes credential: it asks the hub process, where the builds
are, through its bridge (hub/bridge.py). It imports nothing of the spawner, so it starts light;
JupyterHub's OAuth client is loaded at the first request under its prefix (__main__.py).
"""
