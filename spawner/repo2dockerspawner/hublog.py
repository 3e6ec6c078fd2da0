"""The project's log lines in the hub's log."""

from __future__ import annotations

import logging

# Packages whose module loggers write what the backends do: build outcomes, adopted builds,
# image removals. JupyterHub configures only its own logger (and hooks tornado's into it).
LOGGED_PACKAGES = ("repo2dockerspawner", "repo2docker_buildcore")


def join_hub_log(hub_log: logging.Logger) -> None:
    """Send our packages' log lines through the hub's logger, its handlers, format and level,
    as JupyterHub does with tornado's: without it an INFO line such as 'removed image …' goes
    nowhere (Python's last-resort handler prints warnings only, unformatted)."""
    for name in LOGGED_PACKAGES:
        logger = logging.getLogger(name)
        if logger.parent is not hub_log and hub_log.name != name:
            logger.parent = hub_log
            logger.propagate = True
