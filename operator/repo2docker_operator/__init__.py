"""The kopf operator that reconciles Repo2DockerBuild resources: handlers, CLI, configuration
and metrics. The build itself (contract, runner, job, queue) is ``repo2docker_buildcore``."""

from repo2docker_buildcore import __version__

__all__ = ["__version__"]
