"""Where builds run: in Kubernetes through the operator, or inside the hub.

Both backends hand the spawner a ``BuildHandle``: the build's name and a stream of its
status. One backend instance serves every spawner of the hub process (shared queue, shared
dedup, one shared watch), created by the registry in ``registry.py``.
"""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from repo2docker_operator.contract import BuildSpec, BuildStatus


class BuildHandle(Protocol):
    name: str
    namespace: str

    def current(self) -> BuildStatus:
        """The status as last seen."""

    def statuses(self) -> AsyncIterator[BuildStatus]:
        """The current status at once, then every change, ending after a terminal phase."""


class BuildBackend(Protocol):
    async def ensure(self, spec: BuildSpec, requested_by: str) -> BuildHandle:
        """Start the build for `spec`, or join the one that exists."""

    async def close(self) -> None: ...
