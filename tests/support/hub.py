"""A real JupyterHub process (with configurable-http-proxy from npm) using Repo2DockerSpawner."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from repo2docker_buildcore.contract import LABEL_INSTANCE

from .env import TestEnv
from .operator import free_port, offline_build_env
from .process import stop_process
from .waiting import GiveUp, wait_until

ADMIN = "r2d-admin"
# The hub service's prefix (repo2dockerspawner.servicename): builds pages, webhook, previous button.
SERVICE = "/services/repo2docker"


class Hub:
    def __init__(
        self,
        env: TestEnv,
        workdir: Path,
        process_env: dict[str, str] | None = None,
        hub_config: list[str] | None = None,
        setup: str | None = "repo2dockerspawner.hub",
        **spawner_config: Any,
    ) -> None:
        """`setup`: the module whose setup(c) the configuration calls (None: not called)."""
        self.env = env
        self.setup = setup
        self.process_env = process_env or {}
        self.hub_config = list(hub_config or [])  # further lines of jupyterhub_config.py
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.password = "r2d-test-password"
        self.port = free_port()
        self.api_port = free_port()
        self.hub_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance = f"hub{secrets.token_hex(4)}"
        self.server_prefix = f"r2d-e2e-{self.instance}-"
        self.spawner_config = {
            "image": env["R2D_SINGLEUSER_IMAGE"],
            "LocalBackend.build_image": env["R2D_BUILD_IMAGE"],
            "allowed_repo_schemes": ["http"],
            "allowed_repo_hosts": [env["R2D_BRIDGE_IP"]],
            "image_prefix": "r2d-e2e-",
            "LocalBackend.instance": self.instance,
            "LocalBackend.build_env": offline_build_env(env),
            **spawner_config,
        }
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "jupyterhub.log"

    def config(self) -> str:
        bridge = self.env["R2D_BRIDGE_IP"]
        lines = [
            'c.JupyterHub.spawner_class = "repo2docker"',
            'c.JupyterHub.ip = "127.0.0.1"',
            f"c.JupyterHub.port = {self.port}",
            f'c.JupyterHub.hub_ip = "{bridge}"',
            f"c.JupyterHub.hub_port = {self.hub_port}",
            f'c.JupyterHub.hub_connect_ip = "{bridge}"',
            f'c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"',
            f'c.JupyterHub.db_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"',
            f'c.JupyterHub.cookie_secret_file = "{self.workdir}/cookie_secret"',
            'c.JupyterHub.authenticator_class = "dummy"',
            f'c.DummyAuthenticator.password = "{self.password}"',
            "c.Authenticator.allow_all = True",
            f'c.JupyterHub.services = [{{"name": "tester", "api_token": "{self.token}"}}]',
            'c.JupyterHub.load_roles = [{"name": "tester", "services": ["tester"], '
            '"scopes": ["admin:users", "admin:servers", "access:servers", "access:services", "read:services", "read:users", "read:hub", "admin:server_state", "read:metrics"]}]',
            "c.Spawner.http_timeout = 120",
            # A spawn that fails within this answers the REST request itself (bad options: 400);
            # a longer one answers 202 and the progress stream follows it.
            'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 3}',
            # Servers named by this hub's instance: stopping it removes its servers, no other hub's.
            f'c.DockerSpawner.name_template = "{self.server_prefix}{{username}}--{{servername}}"',
            *([f"import {self.setup}", f"{self.setup}.setup(c)"] if self.setup else []),
            f'c.Authenticator.admin_users = {{"{ADMIN}"}}',
            f'c.LocalBackend.gc_use_record = "{self.workdir}/image-use.json"',
        ]
        for key, value in self.spawner_config.items():  # "trait" (the spawner's) or "Class.trait"
            lines.append(f"c.{key if '.' in key else 'Repo2DockerSpawner.' + key} = {value!r}")
        return "\n".join(lines + self.hub_config) + "\n"

    def start(self) -> Hub:
        (self.workdir / "jupyterhub_config.py").write_text(self.config())
        env = {
            **os.environ,
            "PATH": f"{self.env['R2D_CHP_BIN']}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            **self.process_env,
        }
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.workdir / "jupyterhub_config.py")],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._up, timeout=60, what=f"JupyterHub to answer (log: {self.log_path})")
        except BaseException:
            self.stop()  # never leave a half-started hub behind
            raise
        return self

    def _up(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise GiveUp(f"jupyterhub exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        try:
            return self.api("GET", "/info").status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        stop_process(self.proc, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    # ---- REST -----------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, f"{self.url}/hub/api{path}", headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs
        )

    def service_address(self) -> tuple[str, int]:
        """Where the hub service itself listens (not through the proxy)."""
        from urllib.parse import urlsplit

        answer = self.api("GET", "/services/repo2docker")
        assert answer.status_code == 200, answer.text
        url = urlsplit(answer.json()["url"])
        return url.hostname, url.port

    def create_user(self, name: str) -> None:
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text

    def spawn(self, name: str, options: dict | None) -> requests.Response:
        return self.api("POST", f"/users/{name}/server", json={"user_options": options} if options is not None else {})

    def progress(self, name: str, timeout: float = 300) -> Iterator[dict]:
        """Server-sent progress events until the spawn is ready or failed."""
        with self.api("GET", f"/users/{name}/server/progress", stream=True, timeout=timeout) as r:
            assert r.status_code == 200, r.text
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    yield event
                    if event.get("ready") or event.get("failed"):
                        return

    def server_ready(self, name: str) -> bool:
        user = self.api("GET", f"/users/{name}").json()
        server = user.get("servers", {}).get("", {})
        return bool(server.get("ready"))

    def wait_ready(self, name: str, timeout: float = 300) -> None:
        wait_until(lambda: self.server_ready(name), timeout=timeout, interval=0.5, what=f"{name}'s server to be ready")

    def server_container(self, name: str) -> str:
        """The Docker name of `name`'s default server."""
        return f"{self.server_prefix}{name}--"

    def user_file(self, name: str, path: str) -> str:
        """A file's content, served by the user's server through the proxy."""
        r = requests.get(
            f"{self.url}/user/{name}/api/contents/{path}",
            params={"content": "1", "type": "file"},
            headers={"Authorization": f"token {self.token}"},
            timeout=30,
        )
        assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
        return r.json()["content"]

    def metric(self, name: str) -> float | None:
        """A sample of /hub/metrics (the hub's Prometheus registry), as the tester service reads it."""
        r = requests.get(f"{self.url}/hub/metrics", headers={"Authorization": f"token {self.token}"}, timeout=30)
        r.raise_for_status()
        return next((float(line.split()[1]) for line in r.text.splitlines() if line.split(" ")[0] == name), None)

    def stop_server(self, name: str) -> None:
        r = self.api("DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204), r.text
        wait_until(
            lambda: not self.api("GET", f"/users/{name}").json().get("servers"),
            timeout=60,
            what=f"{name}'s server to stop",
        )

    def spawn_and_follow(self, name: str, options: dict | None) -> tuple[requests.Response, list[dict]]:
        self.create_user(name)
        response = self.spawn(name, options)
        events: list[dict] = []
        if response.status_code in (201, 202):
            events = list(self.progress(name))
        return response, events

    # ---- pages, as a logged-in person ------------------------------------------------------

    def login(self, name: str) -> requests.Session:
        """A browser-like session (cookies, XSRF) logged in as `name`."""
        session = requests.Session()
        session.get(f"{self.url}/hub/login", timeout=30)
        r = session.post(
            f"{self.url}/hub/login",
            data={"username": name, "password": self.password, "_xsrf": session.cookies.get("_xsrf", "")},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 302, f"login as {name}: {r.status_code} {r.text[:300]}"
        return session


def unique_user() -> str:
    """A user name no other test (or earlier run) on this hub's daemon has used."""
    return f"u{uuid.uuid4().hex[:8]}"


def own_xsrf(hub: Hub, session: requests.Session, where: str = "/hub") -> str:
    """A session's own, valid XSRF token, as a browser's page would send it: for the hub's pages
    the cookie a page view sets; for the hub service (`where=SERVICE`) the token its pages carry,
    after signing in to it with the hub's OAuth on the way (any page of it, an error page too)."""
    if where == SERVICE:
        page = session.get(f"{hub.url}{SERVICE}/builds", timeout=30)
        found = re.search(r'<meta name="r2d-xsrf" content="([^"]+)"', page.text)
        assert found, page.text[-500:]
        return found[1]
    session.get(f"{hub.url}/hub/home", timeout=30)
    return session.cookies.get("_xsrf")


def form_xsrf(html: str) -> str:
    """The XSRF token a page's forms carry."""
    match = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert match, "the page has no form with an XSRF token"
    return match.group(1)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.monotonic()
    return fn(*args, **kwargs), time.monotonic() - start


def start_hub(
    request,
    backend: str,
    testenv,
    tmp_path,
    docker_client,
    operator_options: dict | None = None,
    process_env: dict[str, str] | None = None,
    hub_config: list[str] | None = None,
    kubeconfig: str | None = None,
    setup: str | None = "repo2dockerspawner.hub",
    **extra,
) -> Hub:
    """A hub for a test; with the Kubernetes backend also an operator in the test's namespace.
    `extra` is spawner configuration, `process_env` the hub process's environment."""
    # allowed_images is set: built images must start anyway (they are not user-chosen images).
    build_image = request.getfixturevalue("build_image")
    config = {
        "backend": backend,
        "LocalBackend.concurrency": 2,
        "allowed_images": [testenv["R2D_SINGLEUSER_IMAGE"]],
        "LocalBackend.build_image": build_image,
        **extra,
    }
    instance = None
    if backend == "kubernetes":
        namespace = request.getfixturevalue("namespace")
        operator = request.getfixturevalue("operator_factory")(
            image_prefix=extra.get("image_prefix", "r2d-e2e-"), **(operator_options or {})
        )
        instance = operator.instance
        config.update(
            {
                "KubernetesBackend.namespace": namespace,
                "KubernetesBackend.kubeconfig": kubeconfig or testenv["KUBECONFIG"],
            }
        )
    hub = Hub(testenv, tmp_path, process_env=process_env, hub_config=hub_config, setup=setup, **config).start()
    hub.build_instance = instance or hub.instance  # whose containers are builds
    hub.build_image = build_image
    # Who builds (status.provenance.builder): the operator's node name, by default its host's.
    hub.operator_builder = (operator_options or {}).get("node_name") or socket.gethostname()
    hub.backend = backend
    return hub


def stop_hub(hub: Hub, docker_client) -> None:
    hub.stop()
    for c in docker_client.containers.list(all=True, filters={"name": hub.server_prefix}):
        c.remove(force=True)
    # The embedded backend's builds outlive the hub by design (the next hub adopts them); no
    # next hub has this one's instance label, so its builds would run on for nobody.
    for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={hub.instance}"}):
        c.remove(force=True)
