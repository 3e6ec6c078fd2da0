"""The one error a user's bad input becomes, shared by every module that validates input."""


class InvalidBuildRequest(ValueError):
    """A value a user supplied cannot be built; the message is meant for that user."""
