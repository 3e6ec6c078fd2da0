"""Builds as the service's pages show them, from the bridge's JSON (hub/wire.py)."""

from __future__ import annotations

import time
from typing import Any

from ..humanize import human_age

ACTIVE = ("Pending", "Queued", "Building")
# What a finished action says, by a fixed key: nothing from the URL is ever shown as a message.
DONE = {
    "cancel": "The build was cancelled; its container is being stopped.",
    "rebuild": "A new build was started.",
    "delete-image": "The image was removed; the next start of this commit builds it again.",
}


class BuildView:
    """One build: its fields as attributes, and what the pages compute from them."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)

    @property
    def short_commit(self) -> str:
        return self.commit[:7]

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.completed or time.time()) - self.started


def status_json(build: BuildView) -> dict[str, Any]:
    """The detail page's live view: phase, queue position, message and log tail."""
    return {
        "phase": build.phase,
        "queuePosition": build.queue_position,
        "message": build.message,
        "logTail": build.log_tail,
        "active": build.active,
        "age": human_age(time.time() - build.created) if build.created else "—",
        "duration": human_age(build.duration),
    }
