"""Builds images from git repositories with repo2docker, driven by Repo2DockerBuild resources.

The modules here are shared by the Kubernetes operator and the hub's embedded backend;
nothing at this level imports kopf, so the hub can use them without it.
"""

__version__ = "0.1.0.dev0"
