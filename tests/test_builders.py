"""Several builders, one queue: two operator processes, each on its own node's Docker daemon
(the host's and the test environment's second node's), against the real API server.

Build containers are watched on both daemons; which builder holds a build is read from the
resource, as `kubectl get r2dbuilds` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.kubeapi import connect
from repo2docker_buildcore.resources import BuildResources
from repo2docker_buildcore.runner import BuildRef
from repo2docker_operator import claims
from support.builds import create_build, dockerfile_repo, get_build, head, image_exists, wait_phase
from support.operator import ContainerWatcher, containers_per_build
from support.waiting import wait_until

pytestmark = pytest.mark.integration
NODE1, NODE2 = "r2d-node", "r2d-node-2"


@pytest.fixture
def builders(operator_factory, testenv):
    """start(node, **options): a builder for the node (1 or 2) with its daemon's socket; the
    builders of one test share one instance label, as the chart's DaemonSet pods do."""
    instance = f"b{id(operator_factory) % 10**8}"

    def start(node: int, **options):
        where = {"docker_host": testenv["R2D_NODE2_DOCKER_HOST"]} if node == 2 else {}
        return operator_factory(
            instance=instance,
            node_name=NODE2 if node == 2 else NODE1,
            docker_socket=testenv["R2D_NODE_DOCKER_SOCKET"],
            **where,
            **options,
        )

    return start


def test_two_builders_share_the_queue_each_build_runs_once_on_the_node_that_claimed_it(
    builders, kubectl, namespace, git_repos, base, docker_client, node2_docker
):
    one = builders(1, concurrency=2)
    two = builders(2, concurrency=2)
    repos = [dockerfile_repo(git_repos, base, sleep=4) for _ in range(8)]
    with (
        ContainerWatcher(docker_client, one.instance) as on_one,
        ContainerWatcher(node2_docker, two.instance) as on_two,
    ):
        names = [create_build(kubectl, namespace, r.url, head(r)) for r in repos]
        finished = [wait_phase(kubectl, namespace, n, "Succeeded", "Failed", timeout=300) for n in names]
    assert [b["status"]["phase"] for b in finished] == ["Succeeded"] * 8, [b["status"].get("message") for b in finished]
    # Both nodes built, never more than their cap at once, and each build ran exactly once.
    assert on_one.seen_ids and on_two.seen_ids
    assert on_one.max_running <= 2 and on_two.max_running <= 2
    uids = {b["metadata"]["uid"] for b in finished}
    assert containers_per_build(on_one, on_two) == dict.fromkeys(uids, 1)
    # ... on the node whose name the resource records, where its image now is.
    for build in finished:
        node = build["status"]["builder"]
        watcher, daemon = (on_one, docker_client) if node == NODE1 else (on_two, node2_docker)
        assert build["metadata"]["uid"] in watcher.seen_ids, (node, build["metadata"]["name"])
        assert image_exists(daemon, build["status"]["image"])
    table = kubectl("get", contract.PLURAL, "-n", namespace)
    assert "NODE" in table.splitlines()[0] and NODE2 in table
    # Each builder holds a Lease it renews.
    leases = kubectl.json("get", "leases", "-n", namespace)["items"]
    assert {lease["spec"]["holderIdentity"] for lease in leases} >= {NODE1, NODE2}


def test_a_lost_builders_build_is_built_again_by_the_other_and_its_return_leaves_no_second(
    builders, kubectl, namespace, git_repos, base, docker_client, node2_docker
):
    two = builders(2, lease_duration=3)
    repo = dockerfile_repo(git_repos, base, sleep=25)
    with ContainerWatcher(node2_docker, two.instance) as on_two:
        name = create_build(kubectl, namespace, repo.url, head(repo))
        wait_until(lambda: on_two.running_since, timeout=60, what="the build to run on node 2")
    assert get_build(kubectl, namespace, name)["status"]["builder"] == NODE2
    two.kill()  # its build container runs on, as on a node that lost its network
    one = builders(1, lease_duration=3)
    with ContainerWatcher(docker_client, one.instance) as on_one:
        wait_until(
            lambda: (
                (lambda st: (st.get("phase"), st.get("builder")))(get_build(kubectl, namespace, name).get("status", {}))
                == ("Building", NODE1)
            ),
            timeout=60,
            what="the build to run again on node 1",
        )
        events = kubectl.json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")[
            "items"
        ]
        assert any(e["reason"] == "Requeued" and f"The node {NODE2} was lost" in e["message"] for e in events), events
        # Node 2's builder comes back while node 1 builds: the container of a build it no
        # longer holds goes, and the build runs on where it is.
        label = {"label": [f"{contract.LABEL_INSTANCE}={two.instance}"]}
        assert node2_docker.containers.list(filters=label)
        two.start()
        wait_until(
            lambda: not node2_docker.containers.list(all=True, filters=label),
            timeout=60,
            what="node 2's stale build container to be removed",
        )
        assert get_build(kubectl, namespace, name)["status"]["phase"] == "Building"
        status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=120)["status"]
    assert status["phase"] == "Succeeded" and status["builder"] == NODE1
    assert image_exists(docker_client, status["image"])
    assert containers_per_build(on_one) == {get_build(kubectl, namespace, name)["metadata"]["uid"]: 1}


def test_the_builder_that_built_a_repository_last_gets_first_claim_on_its_next_commit(
    builders, kubectl, namespace, git_repos, base, docker_client, node2_docker
):
    """Node 2 built the repository (its layers are there); its next commit waits for node 2
    within the affinity window although node 1 is idle, while node 2 finishes another build."""
    builders(2, concurrency=1, affinity_window=60)
    repo = dockerfile_repo(git_repos, base)
    first = create_build(kubectl, namespace, repo.url, head(repo))
    assert wait_phase(kubectl, namespace, first, "Succeeded", "Failed", timeout=120)["status"]["builder"] == NODE2
    other = dockerfile_repo(git_repos, base, sleep=8)
    busy = create_build(kubectl, namespace, other.url, head(other))
    wait_phase(kubectl, namespace, busy, "Building", timeout=60)
    one = builders(1, concurrency=1, affinity_window=60)  # started after the first build ended: it reads who built it
    repo.commit({"marker.txt": "second commit\n"}, "second commit")
    with ContainerWatcher(docker_client, one.instance) as on_one:
        second = create_build(kubectl, namespace, repo.url, head(repo))
        status = wait_phase(kubectl, namespace, second, "Succeeded", "Failed", timeout=120)["status"]
    assert status["phase"] == "Succeeded" and status["builder"] == NODE2, status
    assert not on_one.seen_ids, "node 1 (idle) left the build to the node that had its layers"


@contextlib.asynccontextmanager
async def unclaimed_build(testenv, kubectl, namespace: str, git_repos, base):
    """A build no operator watches, and the resources API as a builder has it: (resources, ref)."""
    repo = dockerfile_repo(git_repos, base)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    ref = BuildRef(namespace, name, get_build(kubectl, namespace, name)["metadata"]["uid"])
    api = await connect(testenv["KUBECONFIG"])
    try:
        yield BuildResources(api), ref
    finally:
        await api.close()


async def test_of_two_claims_from_one_read_exactly_one_wins(testenv, kubectl, namespace, crd, git_repos, base):
    async with unclaimed_build(testenv, kubectl, namespace, git_repos, base) as (resources, ref):
        seen = await resources.get(namespace, ref.name)

        def claim_as(node: str):
            return resources.patch_status_at(
                namespace, ref.name, seen["metadata"]["resourceVersion"], {"builder": node}
            )

        # Two builders decide from the same read: the API server accepts the first write only.
        assert await claim_as("node-a") is True
        assert await claim_as("node-b") is False  # 409
        # claim() reads again after such a refusal and reports the winner, as both racing do.
        held = await asyncio.gather(claims.claim(resources, ref, "node-b"), claims.claim(resources, ref, "node-c"))
        assert held == ["node-a", "node-a"]


async def test_racing_claims_of_an_unclaimed_build_leave_one_holder(testenv, kubectl, namespace, crd, git_repos, base):
    async with unclaimed_build(testenv, kubectl, namespace, git_repos, base) as (resources, ref):
        held = await asyncio.gather(*(claims.claim(resources, ref, f"node-{i}") for i in range(4)))
    winner = get_build(kubectl, namespace, ref.name)["status"]["builder"]
    assert held == [winner] * 4 and winner.startswith("node-")
