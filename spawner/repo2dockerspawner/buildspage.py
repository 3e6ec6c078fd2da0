"""Deprecated: `repo2dockerspawner.buildspage.setup(c)` is `repo2dockerspawner.hub.setup(c)`."""

from __future__ import annotations

import logging
from typing import Any


def setup(c: Any) -> Any:
    """The first name of `repo2dockerspawner.hub.setup`, kept for one release."""
    from .hub import setup as hub_setup

    logging.getLogger(__name__).warning(
        "repo2dockerspawner.buildspage.setup(c) is deprecated: call repo2dockerspawner.hub.setup(c)"
    )
    return hub_setup(c)
