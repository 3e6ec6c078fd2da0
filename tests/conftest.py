"""Fixtures shared by every tier.

Integration and end-to-end tests talk to the real daemons `make testenv` starts; they find
them only through `.testenv/env`. A missing environment is a failure with instructions,
never a skip: a skipped tier would hide exactly the breakage these tests exist to catch.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from support.env import TestEnv, load_env
from support.gitrepos import GitRepoFactory
from support.kube import Kubectl

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def testenv() -> TestEnv:
    env_file = Path(os.environ.get("R2D_TESTENV_FILE", REPO_ROOT / ".testenv" / "env"))
    if not env_file.exists():
        pytest.fail(f"{env_file} is missing: run `make testenv` (or `make test`) first", pytrace=False)
    return load_env(env_file)


@pytest.fixture(scope="session")
def kubectl(testenv: TestEnv) -> Kubectl:
    return Kubectl(testenv)


@pytest.fixture
def namespace(kubectl: Kubectl) -> str:
    """A fresh namespace per test. Without kube-controller-manager namespaces never finish
    deleting, so tests do not wait for it; unique names keep tests independent."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def git_repos(testenv: TestEnv) -> GitRepoFactory:
    return GitRepoFactory(Path(testenv["R2D_GIT_ROOT"]), testenv["R2D_GIT_URL"])


@pytest.fixture(scope="session")
def docker_client(testenv: TestEnv):
    import docker

    client = docker.from_env()
    client.ping()
    yield client
    client.close()
