"""Fixtures shared by every tier.

Integration and end-to-end tests talk to the real daemons `make testenv` starts; they find
them only through `.testenv/env`. A missing environment is a failure with instructions,
never a skip: a skipped tier would hide exactly the breakage these tests exist to catch.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from support.builds import IMAGE_PREFIX
from support.env import REPO2DOCKER_VERSIONS, TestEnv, load_env
from support.gitrepos import GitRepoFactory
from support.kube import Kubectl

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def testenv() -> TestEnv:
    env_file = Path(os.environ.get("R2D_TESTENV_FILE", REPO_ROOT / ".testenv" / "env"))
    if not env_file.exists():
        pytest.fail(f"{env_file} is missing: run `make testenv` (or `make test`) first", pytrace=False)
    return load_env(env_file)


ARTIFACTS = Path(os.environ.get("R2D_ARTIFACTS", REPO_ROOT / "test-artifacts"))


@pytest.fixture
def artifacts(request) -> Path:
    """This test's folder under test-artifacts/ (or $R2D_ARTIFACTS): emptied when the test
    starts and kept after the run, in CI too, for the screenshots and logs worth looking at."""
    module = request.node.module.__name__.rpartition(".")[2]
    path = ARTIFACTS / module / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def kubectl(testenv: TestEnv) -> Kubectl:
    return Kubectl(testenv)


@pytest.fixture
def namespace(kubectl: Kubectl) -> str:
    """A fresh namespace per test; deleting it (which the controller-manager finishes) does
    not block the next test, and unique names keep tests independent."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    yield name
    # The test's operator is gone by now: build resources it left keep its finalizer, which
    # would hold the namespace in Terminating for good on a machine that runs tests daily.
    for build in kubectl.run("get", "repo2dockerbuilds", "-n", name, "-o", "name", check=False).stdout.split():
        kubectl("patch", build, "-n", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def base(testenv: TestEnv) -> str:
    """The image test repositories build FROM: the local single-user image (nothing is pulled)."""
    return testenv["R2D_SINGLEUSER_IMAGE"]


@pytest.fixture
def hubs(request, testenv, tmp_path, docker_client):
    """`hubs(backend, **config)` starts a real hub for this test (with the Kubernetes backend
    also an operator in the test's namespace); each is stopped afterwards, its servers and
    build containers removed, whatever the test did."""
    from support.hub import start_hub, stop_hub

    started = []

    def start(backend: str, **options):
        workdir = tmp_path if not started else tmp_path / f"hub-{len(started)}"
        workdir.mkdir(exist_ok=True)
        started.append(start_hub(request, backend, testenv, workdir, docker_client, **options))
        return started[-1]

    yield start
    for hub in started:
        stop_hub(hub, docker_client)


@pytest.fixture
def home_volume(docker_client):
    """A volume name template (DockerSpawner's `volumes` key) for this test's users. Requested
    before `hubs`, it is torn down after them: the volumes go once no server uses them."""
    import docker.errors

    stem = f"r2d-test-home-{uuid.uuid4().hex[:8]}"
    yield stem + "-{username}"
    for vol in docker_client.volumes.list(filters={"name": stem}):
        try:
            vol.remove(force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="session")
def git_repos(testenv: TestEnv) -> GitRepoFactory:
    return GitRepoFactory(Path(testenv["R2D_GIT_ROOT"]), testenv["R2D_GIT_URL"])


TEST_IMAGE_PREFIXES = ("r2d-test-", "r2d-e2e-", "r2d-smoke/", "r2d-bench")


@pytest.fixture
def build_image(request, testenv) -> str:
    return testenv[REPO2DOCKER_VERSIONS[getattr(request, "param", "r2d-newest")]]


@pytest.fixture(scope="session")
def node2_docker(testenv: TestEnv):
    """The second Docker node's daemon (testenv/node.sh 2), as the host reaches it."""
    import docker

    client = docker.DockerClient(base_url=testenv["R2D_NODE2_DOCKER_HOST"])
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_client(testenv: TestEnv):
    import docker

    client = docker.from_env()
    client.ping()
    yield client
    client.close()


TIERS = ("integration", "e2e", "browser", "cluster")


# Longest tiers first: parallel workers then end together on short tests instead of one
# worker starting a five-minute cluster test when the others are done. No fixture is wider
# than a function's but the session's, so the order costs no extra set-up.
RUN_ORDER = ("cluster", "e2e", "browser", "integration")


def tier_rank(marks: set[str]) -> int:
    return next((i for i, tier in enumerate(RUN_ORDER) if tier in marks), len(RUN_ORDER))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist distributes them
def pytest_collection_modifyitems(config, items):
    """A test is of one tier: a module-wide mark must not make a pure unit test a daemon test
    too (`-m unit` would run it, `-m integration` as well)."""
    ranks = {}
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        if "unit" in marks and marks & set(TIERS):
            raise pytest.UsageError(f"{item.nodeid} is marked unit and {sorted(marks & set(TIERS))}: pick one")
        ranks[item.nodeid] = tier_rank(marks)
    items.sort(key=lambda item: ranks[item.nodeid])  # stable: file order within a tier


SESSIONS_LOCK = REPO_ROOT / ".testenv" / "test-sessions.lock"


def pytest_sessionstart(session):
    """Every pytest process (controller and workers) holds a shared lock while it runs, so
    that the sweep below can tell whether another session still uses the test images."""
    SESSIONS_LOCK.parent.mkdir(exist_ok=True)
    session.config._r2d_sessions_lock = open(SESSIONS_LOCK, "a")
    fcntl.flock(session.config._r2d_sessions_lock, fcntl.LOCK_SH)


def pytest_sessionfinish(session, exitstatus):
    """Images built by tests would pile up run after run on a reused machine. Removed once,
    at the very end: in a parallel run by the controller, after every worker is done (a
    worker's own end would remove images that other workers' tests are still using), and
    only when no other pytest session runs on this checkout (its images are in use)."""
    if hasattr(session.config, "workerinput"):
        return
    lock = getattr(session.config, "_r2d_sessions_lock", None)
    if lock is not None:
        fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session's tests may still need every image
    env_file = Path(os.environ.get("R2D_TESTENV_FILE", REPO_ROOT / ".testenv" / "env"))
    if not env_file.exists():
        return
    import docker

    testenv = load_env(env_file)
    registries = tuple(f"{testenv[k]}/" for k in ("R2D_REGISTRY", "R2D_REGISTRY_ANON") if k in testenv)
    try:
        client = docker.from_env()
        images = client.images.list()
    except docker.errors.DockerException:
        return
    # By tag, not by id: an image that also carries a tag of its own (a base image a test
    # tagged) keeps it; the last tag's removal removes the image.
    for image in images:
        for tag in image.tags:
            if tag.startswith(TEST_IMAGE_PREFIXES + registries):
                try:
                    client.images.remove(tag, force=True)
                except docker.errors.APIError:
                    pass  # still used by a container a test left; the next run retries
    for volume in client.volumes.list(filters={"name": "r2d-test-home-"}):
        try:
            volume.remove()
        except docker.errors.APIError:
            pass  # in use
    client.close()


@pytest.fixture(scope="session")
def operator_image(testenv: TestEnv, tmp_path_factory):
    """The operator image built by tools/operator-image.sh from the Dockerfile (on the local
    Python base: nothing can be pulled) and loaded into the node's runtime, once per run:
    parallel workers share the run's temporary root, where the first one leaves the tag for
    the others (the script's cache spares rebuilding it in later runs, and under one tag the
    node's runtime keeps it: the load skips an image it has)."""
    import subprocess

    tag = "r2d-test-operator:session"
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None
    with open((shared or tmp_path_factory.getbasetemp()) / "operator-image.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "operator-image.done" if shared else None
        if done is not None and done.exists():
            return done.read_text()
        built = subprocess.run(
            [str(REPO_ROOT / "tools" / "operator-image.sh"), tag, testenv["R2D_SINGLEUSER_IMAGE"]],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert built.returncode == 0, built.stderr[-3000:]
        loaded = subprocess.run([testenv["R2D_LOAD_IMAGE"], tag], capture_output=True, text=True, timeout=600)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        if done is not None:
            done.write_text(tag)
    return tag


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> str:
    """The project's CRD, applied from its single source in crds/."""
    from repo2docker_buildcore import contract

    # Workers start together: two first applies race (one is told AlreadyExists, or a
    # conflict), and the next attempt updates what the other created.
    for attempt in range(3):
        applied = kubectl.run("apply", "-f", str(REPO_ROOT / "crds" / "repo2dockerbuilds.yaml"), check=attempt == 2)
        if applied.returncode == 0:
            break
    kubectl("wait", "--for=condition=Established", f"crd/{contract.CRD_NAME}", "--timeout=60s")
    return contract.CRD_NAME


@pytest.fixture
def operator_factory(testenv, namespace, crd, tmp_path_factory, docker_client, build_image):
    """Start operator processes for this test's namespace; all are stopped and their
    build containers removed afterwards, whatever the test did."""
    from support.operator import OperatorProcess

    log_dir = tmp_path_factory.mktemp("operator")
    started: list[OperatorProcess] = []

    def start(**options) -> OperatorProcess:
        # The prefix the tests' resources are made with (support.builds.create_build).
        op = OperatorProcess(
            testenv, namespace, log_dir, **{"build_image": build_image, "image_prefix": IMAGE_PREFIX, **options}
        )
        started.append(op)
        return op.start()

    yield start
    import docker

    for op in started:
        op.kill()
        try:
            client = docker.DockerClient(base_url=op.docker_host) if op.docker_host else docker_client
            leftovers = client.containers.list(
                all=True, filters={"label": [f"repo2dockerspawner.jupyter.org/instance={op.instance}"]}
            )
        except docker.errors.DockerException:  # a test's deliberately unreachable daemon
            continue
        for c in leftovers:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # A removal already under way (a build's own clean-up, or the daemon's) ends
                # the same: anything else is a leftover the test should hear about.
                if exc.status_code != 409:
                    raise
