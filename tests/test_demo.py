"""`make demo`, followed exactly as it prints: log in, open the Binder link, get a server
running the image built from the sample repository."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from repo2docker_buildcore import contract
from support.cluster import helm, operator_pods
from support.operator import free_port
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_make_demo_spawns_a_server_from_the_sample_repository(backend, testenv, kubectl, tmp_path, docker_client):
    ports = {name: str(free_port()) for name in ("DEMO_PORT", "DEMO_HUB_PORT", "DEMO_PROXY_API_PORT")}
    env = {**os.environ, **ports, "DEMO_BACKEND": backend, "DEMO_NAMESPACE": f"demo-{ports['DEMO_PORT']}"}
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(
        ["make", "-s", "demo"],
        cwd=ROOT,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    user = f"demo{ports['DEMO_PORT']}"
    try:
        link = wait_until(
            lambda: re.search(r"Binder link: (\S+)", log.read_text()), timeout=600, what="the demo's banner"
        )
        password = re.search(r"password '([^']+)'", log.read_text()).group(1)
        base = link.group(1).split("/hub/")[0]
        session = requests.Session()
        wait_until(lambda: session.get(f"{base}/hub/login", timeout=5).status_code == 200, timeout=60, what="the hub")
        page = session.get(f"{base}/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        assert session.post(f"{base}/hub/login", data={"username": user, "password": password, "_xsrf": xsrf}).ok

        # The Binder link from the banner opens the form, filled in; the click (a POST) launches.
        form = session.get(link.group(1), timeout=30)
        assert form.status_code == 200 and 'id="r2d-link-notice"' in form.text, form.text[-500:]
        repo, ref = re.search(r"repo=(\S+)&ref=(\S+)", link.group(1)).groups()
        launched = session.post(
            f"{base}/hub/spawn", data={"repo": repo, "ref": ref, "_xsrf": session.cookies.get("_xsrf")}, timeout=30
        )
        assert launched.ok, launched.text[-500:]
        headers = {"X-XSRFToken": session.cookies.get("_xsrf")}

        def ready():
            model = session.get(f"{base}/hub/api/user", headers=headers, timeout=10).json()
            return model["servers"].get("", {}).get("ready")

        wait_until(ready, timeout=300, interval=1, what="the demo server")
        readme = session.get(f"{base}/user/{user}/files/README.md", timeout=30)
        assert readme.status_code == 200 and "built from this repository" in readme.text
        container = docker_client.containers.get(f"r2d-demo-{user}--")
        assert container.image.tags[0].startswith("r2d-demo-")
        # The admin login the banner prints works, and leads to the builds page it names.
        admin_name, admin_password, builds = re.search(
            r"Admin:\s+log in as '([^']+)' with password '([^']+)'; builds page: (\S+)", log.read_text()
        ).groups()
        admin = requests.Session()
        page = admin.get(f"{base}/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        assert admin.post(
            f"{base}/hub/login", data={"username": admin_name, "password": admin_password, "_xsrf": xsrf}
        ).ok
        listing = admin.get(builds, timeout=30)
        assert listing.status_code == 200 and repo.replace("&", "&amp;") in listing.text, listing.text[-500:]
        if backend == "kubernetes":
            assert_built_by_the_chart_pod(kubectl, env["DEMO_NAMESPACE"], container.image.tags[0])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        for c in docker_client.containers.list(all=True, filters={"name": f"r2d-demo-{user}"}):
            c.remove(force=True)
        if backend == "kubernetes":
            helm(testenv, "uninstall", "r2d", "-n", env["DEMO_NAMESPACE"], "--wait=false", check=False)
            kubectl("delete", "namespace", env["DEMO_NAMESPACE"], "--wait=false", check=False)


def assert_built_by_the_chart_pod(kubectl, namespace: str, image: str) -> None:
    """The operator of the kubernetes demo is the chart's pod: it built the image, and no
    operator runs as a host process (the pod's process runs in a kubelet pod cgroup)."""
    builds = kubectl.json("get", contract.PLURAL, "-n", namespace)["items"]
    assert [b["status"]["phase"] for b in builds if b["spec"]["image"] == image] == ["Succeeded"], builds
    pods = operator_pods(kubectl, namespace)
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running", pods
    for pid in Path("/proc").iterdir():
        try:
            cmdline = (pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cgroup = (pid / "cgroup").read_text()
        except (OSError, ValueError):
            continue
        if "repo2docker-operator" in cmdline and "python" in cmdline:
            assert "kubepods" in cgroup, f"an operator runs outside the cluster: {pid.name} {cmdline}"
