"""JupyterHub spawner that starts servers from images repo2docker builds from git repositories."""

from repo2docker_operator import __version__

__all__ = ["__version__"]
