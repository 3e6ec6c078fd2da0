"""JupyterHub spawner that starts servers from images repo2docker builds from git repositories.

c.JupyterHub.spawner_class = "repo2docker"      # or "repo2dockerspawner.Repo2DockerSpawner"
"""

from repo2docker_buildcore import __version__

from .spawner import BuildFailed, Repo2DockerSpawner

__all__ = ["Repo2DockerSpawner", "BuildFailed", "__version__"]
