"""The chart's DaemonSet: a builder pod on each of the test environment's two nodes, each with
its node's own Docker daemon behind the one hostPath (`testenv/node.sh 2`), serving one queue.
Installed with `helm install` as a user would; build containers are watched on both daemons.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from repo2docker_buildcore import contract
from support.builds import create_build, dockerfile_repo, get_build, head, wait_phase
from support.cluster import RELEASE, ROOT, helm, install, instance, operator_pods, ready
from support.hub import Hub, stop_hub
from support.operator import ContainerWatcher
from support.registry import login_config, registry_tags
from support.waiting import wait_until

pytestmark = pytest.mark.cluster
NODES = {"r2d-node", "r2d-node-2"}


@pytest.fixture
def daemonset(testenv, kubectl, namespace, operator_image, docker_client, node2_docker):
    """Installs the chart in daemonset mode with push to the test registry (its credentials in
    a Secret, as the docs say); uninstalls and removes both nodes' build containers after."""
    registry = testenv["R2D_REGISTRY"]
    prefix = f"{registry}/ds-{uuid.uuid4().hex[:8]}/r2d-"
    kubectl(
        "create",
        "secret",
        "docker-registry",
        "push-creds",
        "-n",
        namespace,
        f"--docker-server={registry}",
        f"--docker-username={testenv['R2D_REGISTRY_USER']}",
        f"--docker-password={testenv['R2D_REGISTRY_PASSWORD']}",
    )

    def install_chart(nodes: set[str] = NODES, upgrade: bool = False, **values) -> str:
        install(
            testenv,
            namespace,
            operator_image,
            upgrade=upgrade,
            wait=False,
            **{
                "builders.mode": "daemonset",
                "build.push.enabled": True,
                "build.push.secretName": "push-creds",
                "build.imagePrefix": prefix,
                "docker.socketPath": testenv["R2D_NODE_DOCKER_SOCKET"],
                **values,
            },
        )
        if nodes:
            wait_until(
                lambda: {p["spec"].get("nodeName") for p in operator_pods(kubectl, namespace) if ready(p)} >= nodes,
                timeout=180,
                what=f"a Ready builder pod on each of {sorted(nodes)}",
            )
        return prefix

    yield install_chart
    helm(testenv, "uninstall", RELEASE, "-n", namespace, "--wait=false", check=False)
    for client in (docker_client, node2_docker):
        for c in client.containers.list(
            all=True, filters={"label": [f"{contract.LABEL_INSTANCE}={instance(namespace)}"]}
        ):
            c.remove(force=True)


def test_a_builder_on_each_node_builds_from_one_queue_and_images_serve_either_node(
    daemonset, testenv, kubectl, namespace, git_repos, docker_client, node2_docker, tmp_path
):
    prefix = daemonset(**{"build.concurrency": 2})
    assert len(operator_pods(kubectl, namespace)) == 2
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    repos = [dockerfile_repo(git_repos, base, sleep=4, marker=f"commit {i}") for i in range(8)]
    label = instance(namespace)
    with ContainerWatcher(docker_client, label) as on_one, ContainerWatcher(node2_docker, label) as on_two:
        names = [create_build(kubectl, namespace, r.url, head(r), prefix=prefix) for r in repos]
        finished = [wait_phase(kubectl, namespace, n, "Succeeded", "Failed", timeout=400) for n in names]
    assert [b["status"]["phase"] for b in finished] == ["Succeeded"] * 8, [b["status"].get("message") for b in finished]
    assert on_one.seen_ids and on_two.seen_ids, "both nodes' daemons built"
    assert on_one.max_running <= 2 and on_two.max_running <= 2
    runs: dict[str, int] = {}
    for watcher in (on_one, on_two):
        for uid, ids in watcher.seen_ids.items():
            runs[uid] = runs.get(uid, 0) + len(ids)
    assert runs == {b["metadata"]["uid"]: 1 for b in finished}, "exactly one build container per build"
    for build in finished:
        watcher = on_two if build["status"]["builder"] == "r2d-node-2" else on_one
        assert build["metadata"]["uid"] in watcher.seen_ids, "it ran on the node its status names"
        repository, tag = build["spec"]["image"].split("/", 1)[1].rsplit(":", 1)
        assert registry_tags(testenv, repository) == [tag]
    assert "r2d-node-2" in kubectl("get", contract.PLURAL, "-n", namespace)

    # A hub whose servers run on node 1's daemon starts one from an image node 2 built: pulled.
    built_on_two = next(i for i, b in enumerate(finished) if b["status"]["builder"] == "r2d-node-2")
    image = finished[built_on_two]["spec"]["image"]
    assert not [t for i in docker_client.images.list() for t in i.tags if t == image]
    made = subprocess.run(
        [str(ROOT / "tools" / "hub-kubeconfig.sh"), namespace],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECTL": testenv["KUBECTL"], "KUBECONFIG": testenv["KUBECONFIG"]},
    )
    assert made.returncode == 0, made.stderr
    (tmp_path / "hub.kubeconfig").write_text(made.stdout)
    hub_docker = Path(login_config(testenv, tmp_path / "hub-docker")).parent
    hub = Hub(
        testenv,
        tmp_path,
        backend="kubernetes",
        namespace=namespace,
        kubeconfig=str(tmp_path / "hub.kubeconfig"),
        image_prefix=prefix,
        process_env={"DOCKER_CONFIG": str(hub_docker)},
    ).start()
    try:
        response, events = hub.spawn_and_follow("alice", {"repo": repos[built_on_two].url, "ref": "main"})
        assert response.status_code in (201, 202), response.text
        assert events[-1].get("ready"), events[-3:]
        assert hub.user_file("alice", "marker.txt") == f"commit {built_on_two}\n"
        assert docker_client.images.get(image)
        hub.stop_server("alice")
    finally:
        stop_hub(hub, docker_client)


@pytest.mark.serial
def test_a_lost_node_s_build_is_built_again_on_the_other_and_its_return_leaves_no_duplicate(
    daemonset, testenv, kubectl, namespace, git_repos, docker_client, node2_docker
):
    """Serial: it stops the whole second node (kubelet, its pods, containerd, dockerd)."""
    prefix = daemonset(
        {"r2d-node-2"}, **{"builders.leaseDuration": 6, "builders.nodeSelector.kubernetes\\.io/hostname": "r2d-node-2"}
    )
    # Only node 2 builds at first (its selector), so the build is surely there; then node 1 may.
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=60)
    name = create_build(kubectl, namespace, repo.url, head(repo), prefix=prefix)
    wait_until(
        lambda: get_build(kubectl, namespace, name).get("status", {}).get("phase") == "Building",
        timeout=120,
        what="the build to run on node 2",
    )
    assert get_build(kubectl, namespace, name)["status"]["builder"] == "r2d-node-2"
    down = subprocess.run(
        ["bash", str(ROOT / "testenv" / "node-down.sh"), "2"], capture_output=True, text=True, timeout=180
    )
    assert down.returncode == 0, down.stderr
    try:
        daemonset({"r2d-node"}, upgrade=True, **{"builders.leaseDuration": 6})  # node 1 may build too now
        status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=300)["status"]
        assert status["phase"] == "Succeeded" and status["builder"] == "r2d-node", status
        events = kubectl.json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")[
            "items"
        ]
        assert any(e["reason"] == "Requeued" and "The node r2d-node-2 was lost" in e["message"] for e in events), events
    finally:
        up = subprocess.run(
            ["bash", str(ROOT / "testenv" / "node.sh"), "2"], capture_output=True, text=True, timeout=600
        )
        assert up.returncode == 0, up.stderr[-3000:]
    # Node 2 back: its builder pod runs again, and no build container of that build survives there.
    wait_until(
        lambda: {p["spec"].get("nodeName") for p in operator_pods(kubectl, namespace) if ready(p)} == NODES,
        timeout=240,
        what="the builder pods of both nodes Ready again",
    )
    label = {"label": [f"{contract.LABEL_INSTANCE}={instance(namespace)}"]}
    wait_until(
        lambda: not node2_docker.containers.list(all=True, filters=label),
        timeout=120,
        what="node 2's stale build container to be removed",
    )
    assert get_build(kubectl, namespace, name)["status"]["phase"] == "Succeeded"
