"""Which repo2docker a build image holds, and what that version can do.

repo2docker changed how it builds in 2025.08: earlier releases drive the Docker API's classic
builder through docker-py; later ones run ``docker buildx build --progress plain`` and refuse
options the classic builder had (``--build-memory-limit`` makes them exit with status 255).
A build image is a tag that users choose, so its version is read from the image itself (see
``BuildRunner.repo2docker_version``), and every difference between releases lives here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The newest release. Its image tag is the PEP 440 form of the version (setuptools-scm in
# repo2docker's release workflow): 2026.4.0, where releases up to 2024 were tagged 2024.07.0.
DEFAULT_BUILD_IMAGE = "quay.io/jupyterhub/repo2docker:2026.4.0"

# The first release that builds through `docker buildx` (and dropped --build-memory-limit).
BUILDX_SINCE = (2025, 8)

_VERSION_RE = re.compile(r"(?<![0-9])(20[0-9]{2})\.([0-9]{1,2})\.([0-9]+)")


class UnsupportedSetting(ValueError):
    """A configured setting that the build image's repo2docker cannot honour."""


@dataclass(frozen=True, order=True)
class Repo2DockerVersion:
    year: int
    month: int
    patch: int = 0
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> Repo2DockerVersion:
        """From `repo2docker --version` output: '2024.07.0', '2026.4.0', '2025.8.1.dev3+g12ab'."""
        match = _VERSION_RE.search(text or "")
        if not match:
            raise ValueError(f"not a repo2docker version: {text.strip()[:80]!r}")
        year, month, patch = (int(g) for g in match.groups())
        return cls(year, month, patch, f"{year}.{month}.{patch}")

    @property
    def uses_buildx(self) -> bool:
        return (self.year, self.month) >= BUILDX_SINCE

    def __str__(self) -> str:
        return self.text or f"{self.year}.{self.month}.{self.patch}"


def check_supported(version: Repo2DockerVersion, build_image: str, memory_limit: int | None) -> None:
    """Refuse, in words a hub admin can act on, what this repo2docker cannot do."""
    if memory_limit and version.uses_buildx:
        raise UnsupportedSetting(
            f"the build image {build_image} has repo2docker {version}, which builds with docker buildx "
            f"and cannot limit a build's memory (it exits with status 255 when asked to). Remove the "
            f"build memory limit (operator: --memory-limit / R2D_BUILD_MEMORY_LIMIT / spec.resources.memory; "
            f"hub: LocalBackend.memory_limit), or use a build image with repo2docker before 2025.08. "
            f"With buildx, bound builds through the Docker daemon or a dedicated BuildKit builder."
        )
