"""What a backend hands out and answers with: a build's handle, its record for the builds page,
and the refusals. Below the backends and their image helpers, which all use these."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from repo2docker_buildcore.contract import BuildSpec, BuildStatus, Phase


class BuildHandle(Protocol):
    name: str
    namespace: str
    uid: str

    def current(self) -> BuildStatus:
        """The status as last seen."""

    def statuses(self) -> AsyncIterator[BuildStatus]:
        """The current status at once, then every change, ending after a terminal phase."""


class ActionRefused(Exception):
    """An admin action that cannot be done now; the message says why, for the builds page."""


class ForeignBuild(Exception):
    """The build under our build's name builds something else: someone who may create build
    resources took the name first. Joining it would serve their image or wait for nothing;
    the message, for the user, says so without a wait."""


@dataclass
class BuildRecord:
    """One build as the admin builds page shows it, from either backend."""

    namespace: str
    name: str
    repo_url: str
    ref: str
    commit: str
    phase: Phase
    image: str = ""
    queue_position: int | None = None
    requested_by: str = ""
    created: float | None = None  # unix seconds
    started: float | None = None
    completed: float | None = None
    message: str = ""
    image_size: int | None = None  # bytes of its own layers on this hub's daemon, if there
    last_used: float | None = None
    log_tail: list[str] = field(default_factory=list)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, reason, message)
    provenance: dict[str, Any] = field(default_factory=dict)  # status.provenance: what made the image
    replaces: str = ""  # the commit the ref pointed to before this build's

    @property
    def short_commit(self) -> str:
        return self.commit[:7]

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.completed or time.time()) - self.started


@dataclass(frozen=True)
class Known:
    """What an admin action needs to know of one build."""

    spec: BuildSpec
    phase: Phase


def redo_phases(image_gone: bool) -> set[Phase]:
    """The phases in which a build is replaced rather than joined: failed or cancelled, and
    succeeded too when the caller found its image gone."""
    return {Phase.FAILED, Phase.CANCELLED} | ({Phase.SUCCEEDED} if image_gone else set())
