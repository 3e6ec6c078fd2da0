"""One backend per hub process and configuration, shared by every spawner.

Spawner objects come and go (one per user and server); the queue, the dedup table and the
watch must outlive them, so they live here, keyed by the configuration that shapes them.
A module-level table rather than a class attribute: it is explicit, and tests can clear it.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

_backends: dict[Hashable, Any] = {}


def shared(key: Hashable, factory: Callable[[], Any]) -> Any:
    if key not in _backends:
        _backends[key] = factory()
    return _backends[key]


def clear() -> list[Any]:
    """Forget every backend (returns them, so the caller can close them)."""
    backends = list(_backends.values())
    _backends.clear()
    return backends
