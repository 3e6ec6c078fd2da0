"""One backend per hub process and configuration, shared by every spawner.

Spawner objects come and go (one per user and server); the queue, the dedup table and the
watch must outlive them, so backends live here, keyed by their class and the configuration
that shapes them. A module-level table rather than a class attribute: it is explicit, and
tests can clear it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

from traitlets.config import Config

_backends: dict[Hashable, Any] = {}


def shared_backend(cls: type, config: Config) -> Any:
    """The backend of class `cls` for this configuration, created on first use."""
    section = config[cls.__name__] if cls.__name__ in config else {}
    key = (cls, json.dumps(dict(section), sort_keys=True, default=str))
    if key not in _backends:
        _backends[key] = cls(config=config)
    return _backends[key]


def clear() -> list[Any]:
    """Forget every backend (returns them, so the caller can close them)."""
    backends = list(_backends.values())
    _backends.clear()
    return backends
