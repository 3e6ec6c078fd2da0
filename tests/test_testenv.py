"""Smoke tests of the real test environment: each can fail if its daemon misbehaves."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import docker.errors
import pytest
import requests

from support.env import both_repo2docker_versions
from support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_singleuser_image_runs_jupyterhub_singleuser(testenv, docker_client):
    out = docker_client.containers.run(
        testenv["R2D_SINGLEUSER_IMAGE"], ["jupyterhub-singleuser", "--version"], remove=True
    )
    assert out.decode().strip() == testenv["R2D_JUPYTERHUB_VERSION"]


def test_git_server_advertises_branches_and_tags(git_repos):
    repo = git_repos.create({"README.md": "hi\n"})
    first = repo.commits["main"] = subprocess.check_output(
        ["git", "-C", str(repo.work), "rev-parse", "HEAD"], text=True
    ).strip()
    repo.tag("v1")
    second = repo.commit({"README.md": "changed\n"})
    refs = dict(
        reversed(line.split("\t"))
        for line in subprocess.check_output(["git", "ls-remote", repo.url], text=True).splitlines()
    )
    assert refs["refs/tags/v1"] == first
    assert refs["refs/heads/main"] == second != first


@both_repo2docker_versions
def test_repo2docker_image_builds_a_tag_cloned_over_http(build_image, git_repos, testenv, docker_client):
    """The build image clones the repo by URL at a tag (not the branch head) and tags an image."""
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    dockerfile = f"FROM {base}\nCOPY marker.txt /home/jovyan/marker.txt\n"
    repo = git_repos.create({"Dockerfile": dockerfile, "marker.txt": "from-tag-v1\n"})
    repo.tag("v1")
    repo.commit({"marker.txt": "from-main\n"})
    image = f"r2d-smoke/{repo.name}:v1"
    try:
        logs = docker_client.containers.run(
            build_image,
            [
                "repo2docker",
                "--no-run",
                "--json-logs",
                "--user-id",
                "1000",
                "--user-name",
                "jovyan",
                "--ref",
                "v1",
                "--image-name",
                image,
                repo.url,
            ],
            volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
            environment={"R2D_DATAVERSE_INSTALLATIONS_URL": testenv["R2D_DATAVERSE_INSTALLATIONS_URL"]},
            remove=True,
            stdout=True,
            stderr=True,
        ).decode()
        messages = [json.loads(line)["message"] for line in logs.splitlines() if line.startswith("{")]
        assert any("Cloning into" in m for m in messages), logs
        marker = docker_client.containers.run(image, ["cat", "/home/jovyan/marker.txt"], remove=True)
        assert marker.decode() == "from-tag-v1\n"
    finally:
        try:
            docker_client.images.remove(image, force=True)
        except Exception:
            pass


@both_repo2docker_versions
def test_build_images_are_shaped_like_the_official_one(build_image, docker_client):
    """ENTRYPOINT is a script ending in `exec "$@"`, as in quay.io/jupyterhub/repo2docker: a
    command of flags alone fails exactly as it does with the official image."""
    attrs = docker_client.images.get(build_image).attrs["Config"]
    assert attrs["Entrypoint"] == ["/usr/local/bin/entrypoint"]
    with pytest.raises(docker.errors.ContainerError) as failed:
        docker_client.containers.run(build_image, ["--no-run"], remove=True, stderr=True)
    assert failed.value.exit_status == 127 and b"--no-run" in failed.value.stderr
    # buildx is the CLI plugin repo2docker >= 2025.08 checks for at start.
    out = docker_client.containers.run(build_image, ["docker", "buildx", "version"], remove=True)
    assert out.decode().startswith("github.com/docker/buildx v0.38.2")


def test_registry_requires_credentials_and_accepts_the_written_ones(testenv):
    url = f"http://{testenv['R2D_REGISTRY']}/v2/"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=(testenv["R2D_REGISTRY_USER"], "wrong"), timeout=5).status_code == 401
    assert (
        requests.get(url, auth=(testenv["R2D_REGISTRY_USER"], testenv["R2D_REGISTRY_PASSWORD"]), timeout=5).status_code
        == 200
    )
    assert requests.get(f"http://{testenv['R2D_REGISTRY_ANON']}/v2/", timeout=5).status_code == 200


def test_apiserver_reports_its_real_version(testenv, kubectl):
    version = json.loads(kubectl("get", "--raw", "/version"))
    assert version["gitVersion"] == testenv["R2D_KUBE_VERSION"]


def test_apiserver_serves_an_applied_crd(kubectl, namespace):
    group = f"smoke{uuid.uuid4().hex[:6]}.testenv.example.org"
    crd = textwrap.dedent(f"""
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {{name: widgets.{group}}}
        spec:
          group: {group}
          scope: Namespaced
          names: {{plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}}
          versions:
          - name: v1
            served: true
            storage: true
            schema:
              openAPIV3Schema:
                type: object
                properties:
                  spec:
                    type: object
                    required: [size]
                    properties: {{size: {{type: integer, minimum: 1}}}}
    """)
    kubectl.apply(crd)
    try:
        kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s")
        kubectl.apply(
            f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{size: 3}}\n", "-n", namespace
        )
        assert kubectl("get", "wdg", "-n", namespace, "-o", "jsonpath={.items[*].spec.size}") == "3"
        bad = kubectl.run(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            check=False,
            input=f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w2}}\nspec: {{size: 0}}\n",
        )
        assert bad.returncode != 0 and "spec.size" in bad.stderr
    finally:
        kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def test_serviceaccount_token_is_refused_without_rbac_and_allowed_with_it(kubectl, namespace):
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m").strip()
    as_sa = kubectl.as_token(token)

    refused = as_sa.run("get", "configmaps", "-n", namespace, check=False)
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()
    assert f"system:serviceaccount:{namespace}:nobody" in refused.stderr

    # The same token works once a Role allows it: the refusal above was RBAC, not a bad token.
    kubectl("create", "role", "read-cm", "--verb=list", "--resource=configmaps", "-n", namespace)
    kubectl(
        "create", "rolebinding", "read-cm", "--role=read-cm", f"--serviceaccount={namespace}:nobody", "-n", namespace
    )
    allowed = as_sa.run("get", "configmaps", "-n", namespace, check=False)
    assert allowed.returncode == 0, allowed.stderr
    assert as_sa.run("get", "secrets", "-n", namespace, check=False).returncode != 0


def test_the_node_is_ready_and_the_controllers_run(testenv, kubectl, namespace):
    """`make testenv` gives a real node (kubelet + its own containerd, the built versions) and
    the controller-manager does its work: a namespace gets its default ServiceAccount and CA."""
    node = kubectl.json("get", "node", testenv["R2D_NODE_NAME"])
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", node["status"]["conditions"]
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == testenv["R2D_KUBE_VERSION"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert {a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"} == {testenv["R2D_NODE_IP"]}
    wait_until(
        lambda: kubectl.run("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        what="the controller-manager to create the default ServiceAccount",
    )
    wait_until(
        lambda: kubectl.run("get", "configmap", "kube-root-ca.crt", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        what="the controller-manager to publish the cluster CA",
    )


def test_the_second_node_is_ready_with_its_own_docker_daemon_behind_the_node_socket_path(
    testenv, kubectl, docker_client, node2_docker
):
    """Node 2 (testenv/node.sh 2): Ready, and "this node's Docker socket" (the one hostPath the
    chart's DaemonSet mounts) is its own daemon, for its pods and for the containers its
    daemon starts with that path mounted, while on the host it is the host's daemon."""
    node = kubectl.json("get", "node", testenv["R2D_NODE2_NAME"])
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == testenv["R2D_KUBE_VERSION"]
    ids = {"host": docker_client.info()["ID"], "node 2": node2_docker.info()["ID"]}
    assert ids["host"] != ids["node 2"]
    socket = testenv["R2D_NODE_DOCKER_SOCKET"]
    for name, client in [("host", docker_client), ("node 2", node2_docker)]:
        seen = client.containers.run(
            testenv["R2D_BUILD_IMAGE"],
            ["docker", "info", "--format", "{{.ID}}"],
            volumes={socket: {"bind": "/var/run/docker.sock", "mode": "rw"}},
            entrypoint=[],
            remove=True,
        )
        assert seen.decode().strip() == ids[name], name


def test_load_image_puts_a_docker_image_into_the_node_runtime(testenv):
    """What tests, the demo and users run to give the node an image: idempotent, fully named."""
    image = testenv["R2D_PAUSE_IMAGE"]
    first = subprocess.run([testenv["R2D_LOAD_IMAGE"], image], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"docker.io/{image}"
    for containerd in (testenv["R2D_NODE_CONTAINERD"], testenv["R2D_NODE2_CONTAINERD"]):  # every node's
        listed = subprocess.run(
            ["ctr", "--address", containerd, "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert f"docker.io/{image}" in listed, containerd
    bad = subprocess.run([testenv["R2D_LOAD_IMAGE"], "r2d-test-no-such-image:1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "docker has no image r2d-test-no-such-image:1" in bad.stderr


@pytest.mark.serial  # it runs `make testenv` itself
def test_make_testenv_again_restarts_nothing():
    """`make testenv` on a running environment is a no-op: every daemon keeps its pid (kube-proxy
    would exit if its config file were merely rewritten)."""
    root = Path(__file__).resolve().parent.parent
    testenv_dir = Path(os.environ.get("TESTENV_DIR", root / ".testenv"))
    pid_files = sorted(testenv_dir.glob("**/*.pid"))
    before = {p: p.read_text() for p in pid_files}
    again = subprocess.run(["bash", str(root / "testenv" / "up.sh")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to do" in again.stderr, again.stderr[-2000:]
    assert {p: p.read_text() for p in pid_files if p.exists()} == before
