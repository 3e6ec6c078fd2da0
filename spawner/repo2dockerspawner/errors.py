"""What a launch fails with, as the user reads it on the pending page."""

from __future__ import annotations


class BuildFailed(Exception):
    """The launch got no image. The message is what users see on the pending page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message
