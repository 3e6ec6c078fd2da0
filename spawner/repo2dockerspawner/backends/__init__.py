"""Where builds run: in Kubernetes through the operator, or inside the hub.

A backend is a configurable class that owns its settings (as BinderHub's build executors do):
``c.LocalBackend.build_image``, ``c.KubernetesBackend.namespace``, and so on. The spawner picks
one with ``Repo2DockerSpawner.backend_class`` (or the short form ``backend = "local" |
"kubernetes"``) and asks it for builds; it never branches on which one it has. One backend
instance serves every spawner of the hub process (shared queue, dedup and watch), see
``shared.py``. Each hands out a ``BuildHandle``: the build's name and a stream of its status.
"""

from .base import BuildBackend
from .records import ActionRefused, BuildHandle, BuildRecord, ForeignBuild, Known, redo_phases

__all__ = ["ActionRefused", "BuildBackend", "BuildHandle", "BuildRecord", "ForeignBuild", "Known", "redo_phases"]
