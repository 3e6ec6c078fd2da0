"""Settings of the hub as a whole, apart from any user's spawner: `c.Repo2DockerHub.…`.

They used to be the spawner's (every user's spawner validated them); the old names
(`c.Repo2DockerSpawner.prebuild_repos`, …) still work, with a deprecation line
(backends/traits.py). They take effect through `repo2dockerspawner.hub.setup(c)`; a hub that
sets them without it stops with a message (hubcheck.py).
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Dict, Float, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from ..options import RepoPolicy
from ..prebuilds import WatchedRepo, watched_repos

# Every resolution lists the refs of a repository: more often than this is a load on its host.
MIN_PREBUILD_INTERVAL = 5.0


class Repo2DockerHub(Configurable):
    """What the hub does for everybody: prebuilds and their push webhook."""

    prebuild_repos = List(
        Dict(),
        config=True,
        help="""Repositories whose refs this hub builds before anybody launches them:
        [{"repo": URL, "refs": ["main", ...]}, ...], validated as a user's request (allow-lists
        included). Each is resolved every prebuild_interval seconds (one listing for all its
        refs) and on a push webhook; a new commit is built as a launch would build it, behind
        every user's launch in the queue. Needs repo2dockerspawner.hub.setup(c).""",
    )
    prebuild_interval = Float(300.0, config=True, help="Seconds between resolutions of the prebuild_repos.")
    webhook_secret = Unicode(
        config=True,
        help="""The secret of push webhooks at /services/repo2docker/webhook (GitHub, Gitea, Forgejo:
        the HMAC key; GitLab: the token). Default: $R2D_WEBHOOK_SECRET. Empty: every delivery is
        refused.""",
    )

    @default("webhook_secret")
    def _default_webhook_secret(self) -> str:
        return os.environ.get("R2D_WEBHOOK_SECRET", "")

    @validate("prebuild_interval")
    def _validate_prebuild_interval(self, proposal: Any) -> Any:
        if proposal["value"] < MIN_PREBUILD_INTERVAL:
            raise TraitError(
                f"Repo2DockerHub.prebuild_interval: at least {MIN_PREBUILD_INTERVAL:.0f} seconds (each one lists refs)"
            )
        return proposal["value"]

    def watched_repos(self, policy: RepoPolicy) -> tuple[WatchedRepo, ...]:
        """`prebuild_repos`, validated against the hub's allow-lists (a TraitError otherwise)."""
        try:
            return watched_repos(self.prebuild_repos, policy)
        except ValueError as exc:
            raise TraitError(f"Repo2DockerHub.{exc}") from None
