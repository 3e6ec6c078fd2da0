"""The chart's operator as a pod on the test environment's node (kubelet, containerd, CNI,
kube-proxy, scheduler and controller-manager, all real): `helm install` as the docs (install.md) say,
nothing started by hand. Build containers are watched from Docker, the operator pod from the
API server, its liveness from the kubelet's own probe metrics.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import requests

from repo2docker_buildcore import contract
from support.builds import create_build, dockerfile_repo, get_build, head, image_exists, wait_phase
from support.cluster import (
    DEPLOYMENT,
    RELEASE,
    ROOT,
    helm,
    install,
    instance,
    operator_pods,
    pod_log,
    wait_operator_pod,
)
from support.hub import Hub, stop_hub
from support.operator import ContainerWatcher, containers_per_build
from support.waiting import wait_until

pytestmark = pytest.mark.cluster
DOCKER_SOCKET = "/var/run/docker.sock"


@pytest.fixture
def release(testenv, kubectl, namespace, operator_image, docker_client):
    """Installs (through the returned function) and, whatever the test did, uninstalls the
    chart and removes the build containers its operator left."""

    def install_chart(**values) -> dict:
        install(testenv, namespace, operator_image, **values)
        return wait_operator_pod(kubectl, namespace)

    yield install_chart
    helm(testenv, "uninstall", RELEASE, "-n", namespace, "--wait=false", check=False)
    for c in docker_client.containers.list(
        all=True, filters={"label": [f"{contract.LABEL_INSTANCE}={instance(namespace)}"]}
    ):
        c.remove(force=True)


def probe_successes(kubectl, namespace: str, pod: str) -> float:
    """Successful liveness probes of the pod, as the kubelet counts them (via the API server's node proxy)."""
    metrics = kubectl(
        "get",
        "--raw",
        f"/api/v1/nodes/{kubectl.json('get', 'pod', pod, '-n', namespace)['spec']['nodeName']}/proxy/metrics/probes",
    )
    total = 0.0
    for line in metrics.splitlines():
        if (
            line.startswith("prober_probe_total{")
            and f'pod="{pod}"' in line
            and f'namespace="{namespace}"' in line
            and 'probe_type="Liveness"' in line
            and 'result="successful"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("mode", ["root", "socket-group"])
def test_helm_install_gives_a_ready_operator_pod_that_builds(
    mode, release, testenv, kubectl, namespace, git_repos, docker_client
):
    values = {"build.imagePrefix": "r2d-test-"}
    group = os.stat(DOCKER_SOCKET).st_gid
    if mode == "socket-group":
        values["docker.socketGroupId"] = group
    pod = release(**values)
    name = pod["metadata"]["name"]

    # Started by the kubelet from the image's entrypoint; watching, as its log says.
    wait_until(
        lambda: f"Watching {contract.PLURAL} in namespace(s) {namespace}" in pod_log(kubectl, namespace, name),
        timeout=60,
        what="the operator's log to say it is watching",
    )
    ids = kubectl("exec", "-n", namespace, name, "--", "id")
    if mode == "root":
        assert ids.startswith("uid=0("), ids
    else:
        assert ids.startswith("uid=10001(") and re.search(rf"groups=.*\b{group}\b", ids), ids

    # It builds through the node's Docker socket, in both modes.
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    build = create_build(kubectl, namespace, repo.url, head(repo))
    status = wait_phase(kubectl, namespace, build, "Succeeded", "Failed", timeout=240)["status"]
    assert status["phase"] == "Succeeded", status
    assert image_exists(docker_client, status["image"])

    # The liveness probe really runs and passes (first after initialDelaySeconds), no restarts.
    wait_until(
        lambda: probe_successes(kubectl, namespace, name) >= 1,
        timeout=60,
        interval=1,
        what="the kubelet to count a successful liveness probe",
    )
    pod = kubectl.json("get", "pod", name, "-n", namespace)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    assert not [e for e in events if e["reason"] in ("Unhealthy", "BackOff", "Failed")], events


def test_hub_outside_the_cluster_spawns_through_the_operator_pod(
    release, testenv, kubectl, namespace, git_repos, docker_client, tmp_path
):
    release(**{"build.imagePrefix": "r2d-e2e-"})
    # The hub's kubeconfig as the docs (install.md) have users make it: the chart's hub identity's token.
    made = subprocess.run(
        [str(ROOT / "tools" / "hub-kubeconfig.sh"), namespace],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECTL": testenv["KUBECTL"], "KUBECONFIG": testenv["KUBECONFIG"]},
    )
    assert made.returncode == 0, made.stderr
    kubeconfig = tmp_path / "hub.kubeconfig"
    kubeconfig.write_text(made.stdout)
    assert "token: " in made.stdout and "admin" not in made.stdout

    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="only in this commit")
    hub = Hub(testenv, tmp_path, backend="kubernetes", namespace=namespace, kubeconfig=str(kubeconfig)).start()
    try:
        with ContainerWatcher(docker_client, instance(namespace)) as watcher:
            response, events = hub.spawn_and_follow("alice", {"repo": repo.url, "ref": "main"})
            assert response.status_code in (201, 202), response.text
            assert events[-1].get("ready"), events[-3:]
        build = contract.build_name(repo.url, head(repo))
        assert build in kubectl("get", contract.PLURAL, "-n", namespace)
        assert get_build(kubectl, namespace, build)["status"]["phase"] == "Succeeded"
        assert hub.user_file("alice", "marker.txt") == "only in this commit\n"
        # Built by the chart's pod (its instance label), in exactly one container.
        assert list(containers_per_build(watcher).values()) == [1], watcher.seen_ids
        assert any(
            line.startswith("Step ") or line.startswith("[") for line in (e.get("message", "") for e in events)
        ), "no build log reached the progress events"

        # The metrics Service answers on its ClusterIP (kube-proxy) and counts the build.
        service = kubectl.json("get", "service", f"{DEPLOYMENT}-metrics", "-n", namespace)
        cluster_ip, port = service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"]
        metrics = wait_until(
            lambda: requests.get(f"http://{cluster_ip}:{port}/metrics", timeout=5).text,
            timeout=30,
            what="the metrics Service to answer",
        )
        assert re.search(r'^repo2docker_builds_total\{outcome="succeeded"\} 1\.0$', metrics, re.M), metrics
        slices = kubectl.json(
            "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={DEPLOYMENT}-metrics"
        )["items"]
        pod_ip = operator_pods(kubectl, namespace)[0]["status"]["podIP"]
        assert [a for s in slices for e in s["endpoints"] for a in e["addresses"]] == [pod_ip]
        hub.stop_server("alice")
    finally:
        stop_hub(hub, docker_client)


def test_upgrade_rolls_the_pod_the_new_limit_holds_and_a_deleted_pod_reattaches(
    release, testenv, kubectl, namespace, git_repos, docker_client, operator_image
):
    old = release(**{"build.imagePrefix": "r2d-test-", "build.concurrency": 1})["metadata"]["name"]
    repos = [dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=25) for _ in range(3)]
    with ContainerWatcher(docker_client, instance(namespace)) as watcher:
        builds = [create_build(kubectl, namespace, r.url, head(r)) for r in repos]
        wait_until(lambda: watcher.running_until, timeout=60, what="the first build to run")
        wait_until(
            lambda: (
                sorted(get_build(kubectl, namespace, b).get("status", {}).get("phase", "") for b in builds)
                == ["Building", "Queued", "Queued"]
            ),
            timeout=30,
            what="one build running and two queued at limit 1",
        )
        at_limit_one = watcher.max_running

        watcher.max_running = 0
        install(
            testenv,
            namespace,
            operator_image,
            upgrade=True,
            **{"build.imagePrefix": "r2d-test-", "build.concurrency": 2},
        )
        new = wait_operator_pod(kubectl, namespace, other_than=old)["metadata"]["name"]
        assert old not in {p["metadata"]["name"] for p in operator_pods(kubectl, namespace)}
        wait_until(
            lambda: (
                len(
                    docker_client.containers.list(
                        filters={"label": [f"{contract.LABEL_INSTANCE}={instance(namespace)}"], "status": "running"}
                    )
                )
                == 2
            ),
            timeout=90,
            what="two builds to run at the new limit 2",
        )

        kubectl("delete", "pod", new, "-n", namespace, "--wait=false")
        replacement = wait_operator_pod(kubectl, namespace, other_than=new)["metadata"]["name"]
        for b in builds:
            status = wait_phase(kubectl, namespace, b, "Succeeded", "Failed", timeout=240)["status"]
            assert status["phase"] == "Succeeded", (b, status)
        wait_until(
            lambda: (
                not docker_client.containers.list(
                    all=True, filters={"label": [f"{contract.LABEL_INSTANCE}={instance(namespace)}"]}
                )
            ),
            timeout=60,
            what="the finished builds' containers to be removed",
        )
    assert at_limit_one == 1, f"{at_limit_one} builds ran at once at limit 1"
    assert watcher.max_running == 2, f"{watcher.max_running} builds ran at once at limit 2"
    assert sorted(containers_per_build(watcher).values()) == [1, 1, 1], watcher.seen_ids
    assert "Watching" in pod_log(kubectl, namespace, replacement)


def test_uninstall_keeps_the_crd_and_builds_and_a_reinstall_finishes_a_running_build(
    release, testenv, kubectl, namespace, git_repos, docker_client, operator_image
):
    release(**{"build.imagePrefix": "r2d-test-"})
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=20)
    build = create_build(kubectl, namespace, repo.url, head(repo))
    wait_phase(kubectl, namespace, build, "Building", timeout=60)
    labels = {"label": [f"{contract.LABEL_INSTANCE}={instance(namespace)}"]}
    container = docker_client.containers.list(filters=labels)[0]

    helm(testenv, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s")
    for kind, name in [
        ("deployment", DEPLOYMENT),
        ("serviceaccount", DEPLOYMENT),
        ("role", DEPLOYMENT),
        ("rolebinding", DEPLOYMENT),
        ("service", f"{DEPLOYMENT}-metrics"),
        ("serviceaccount", "jupyterhub"),
        ("role", f"{DEPLOYMENT}-hub"),
    ]:
        assert "NotFound" in kubectl.run("get", kind, name, "-n", namespace, check=False).stderr, (kind, name)
    wait_until(lambda: not operator_pods(kubectl, namespace), timeout=60, what="the operator pod to go")
    assert kubectl.json("get", "crd", contract.CRD_NAME)["spec"]["group"] == contract.GROUP
    assert get_build(kubectl, namespace, build)["status"]["phase"] == "Building"
    container.reload()
    assert container.status == "running", "uninstalling the operator must not kill a running build"

    install(testenv, namespace, operator_image, **{"build.imagePrefix": "r2d-test-"})
    status = wait_phase(kubectl, namespace, build, "Succeeded", "Failed", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    wait_until(
        lambda: not docker_client.containers.list(all=True, filters=labels),
        timeout=60,
        what="the adopted build's container to be removed",
    )
    assert image_exists(docker_client, status["image"])
