"""Where builds run: in Kubernetes through the operator, or inside the hub.

A backend is a configurable class that owns its settings (as BinderHub's build executors do):
``c.LocalBackend.build_image``, ``c.KubernetesBackend.namespace``, and so on. The spawner picks
one with ``Repo2DockerSpawner.backend_class`` (or the short form ``backend = "local" |
"kubernetes"``) and asks it for builds; it never branches on which one it has. One backend
instance serves every spawner of the hub process (shared queue, dedup and watch), see
``shared.py``. Each hands out a ``BuildHandle``: the build's name and a stream of its status.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol

from traitlets.config import LoggingConfigurable

from repo2docker_buildcore.contract import BuildSpec, BuildStatus


class BuildHandle(Protocol):
    name: str
    namespace: str

    def current(self) -> BuildStatus:
        """The status as last seen."""

    def statuses(self) -> AsyncIterator[BuildStatus]:
        """The current status at once, then every change, ending after a terminal phase."""


class BuildBackend(LoggingConfigurable):
    """The interface the spawner uses; subclasses add their settings as traits."""

    def longest_build(self) -> float:
        """Seconds a build may take here; the spawner waits that long (and a little more)."""
        return 3600.0

    def build_resources(self) -> dict[str, Any]:
        """BuildSpec fields this backend sets itself (e.g. memory and CPU limits)."""
        return {}

    async def ensure(self, spec: BuildSpec, requested_by: str = "") -> BuildHandle:
        """Start the build for `spec`, or join the one that exists."""
        raise NotImplementedError

    def check_image_prefix(self, prefix: str) -> None:
        """Refuse (TraitError) an image prefix this backend cannot build under."""

    def describe_error(self, exc: Exception) -> str:
        """One line for a user about a failure to start a build."""
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    async def close(self) -> None:
        """Stop following builds; builds themselves go on."""
