"""The build core: one repo2docker build, from request to image, wherever it runs.

Shared by the Kubernetes operator (``repo2docker_operator``) and the hub's embedded backend
(``repo2dockerspawner.backends.local``): the Repo2DockerBuild contract (``contract``), the
resource client (``resources``), the Docker runner (``runner``), the build job and its rules
(``build``), the FIFO build queue (``queue``), status publishing (``status``), log relay
(``logtail``), and what each repo2docker release can do (``versions``). Nothing here imports
kopf: the operator's handlers, CLI, configuration and metrics live in the operator package.
"""

__version__ = "0.1.0.dev0"
