"""Reading `.testenv/env`, the one file that says where the test environment is."""

from __future__ import annotations

from pathlib import Path

import pytest

TestEnv = dict[str, str]

# The build images of the test environment, by the repo2docker release they hold: the newest
# (buildx) and 2024.7.0 (the last classic-builder release). Tests that must hold for both
# take `@both_repo2docker_versions` (the `build_image` fixture); the rest run the newest.
REPO2DOCKER_VERSIONS = {"r2d-newest": "R2D_BUILD_IMAGE", "r2d-2024.7": "R2D_BUILD_IMAGE_2024"}
both_repo2docker_versions = pytest.mark.parametrize("build_image", list(REPO2DOCKER_VERSIONS), indirect=True)


def load_env(path: Path) -> TestEnv:
    """Parse KEY=VALUE lines (comments and blanks ignored), as a shell would source them."""
    env: TestEnv = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip()
    return env
