"""The Kubernetes API as plain JSON over one aiohttp session: the few REST calls this project
makes (its own resources, Secrets, Events, a ConfigMap, Leases), and the credentials a
kubeconfig or a pod's service account give.

Why not a generated client: kubernetes_asyncio loads about 700 model classes when imported,
34 MB of the operator's 90 MB at rest and 0.7 s of every start, and kopf imports it as well
whenever it is installed. Everything here sends and receives the API server's own JSON (dicts
in camelCase), which is what the callers worked with anyway.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

MERGE_PATCH = "application/merge-patch+json"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Connections to the API server at once. A burst of thousands of cached builds is one
# status write each, and fewer connections left the operator behind the API server on two
# cores; each TLS connection holds about 0.3 MB while it is open.
CONNECTIONS = 100
# A request the API server has not answered in this long is given up (and asked again by
# callers that ask again: resources.worth_asking_again counts a timeout).
REQUEST_TIMEOUT = 60.0
# A bound token file (a pod's service account) is rotated by the kubelet: read it again
# this often, as client-go does.
TOKEN_FILE_REFRESH = 60.0


class ApiError(Exception):
    """The API server answered with an error status; `body` is its Status JSON, if any."""

    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        self.status, self.reason, self.body = status, reason, body
        super().__init__(f"({status}) {reason}: {_message(body) or reason}")


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""


class KubeConfigError(RuntimeError):
    """The kubeconfig does not say how to reach the API server in a way this client knows."""


def _no_token() -> str | None:
    return None


@dataclass
class Credentials:
    """Where the API server is and how to prove who we are, as PEM text and a token source,
    so that both this client and kopf's (`repo2docker_operator.login`) authenticate alike.
    `token()` gives the bearer token to send now (a file re-read, an exec plugin run again
    when its token expires)."""

    server: str
    ca_pem: str | None = None  # None: the system's trust store
    insecure: bool = False
    client_certificate: bytes | None = None
    client_key: bytes | None = None
    token_source: Callable[[], str | None] = _no_token
    username: str | None = None
    password: str | None = None
    _ssl: ssl.SSLContext | bool | None = field(default=None, init=False, repr=False)

    def token(self) -> str | None:
        return self.token_source()

    async def current_token(self) -> str | None:
        """`token()`, with a plugin that must run again run in a thread: it may take seconds
        (a cloud login helper), and the loop serves every other request meanwhile."""
        if isinstance(self.token_source, _ExecPlugin) and self.token_source.stale():
            return await asyncio.to_thread(self.token)
        return self.token()

    def token_expires(self) -> float | None:
        """When the current token stops working (epoch seconds), if its source says."""
        return self.token_source.expires if isinstance(self.token_source, _ExecPlugin) else None

    @property
    def basic(self) -> aiohttp.BasicAuth | None:
        return aiohttp.BasicAuth(self.username, self.password or "") if self.username else None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self._ssl is None:
            self._ssl = _ssl_context(self)
        return self._ssl


def _ssl_context(credentials: Credentials) -> ssl.SSLContext | bool:
    if credentials.insecure and not credentials.client_certificate:
        return False
    context = (
        ssl.create_default_context(cadata=credentials.ca_pem) if credentials.ca_pem else ssl.create_default_context()
    )
    if credentials.insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if credentials.client_certificate and credentials.client_key:
        _load_chain(context, credentials.client_certificate, credentials.client_key)
    return context


class _TokenFile:
    def __init__(self, path: str) -> None:
        self.path, self._token, self._read_at = path, "", -TOKEN_FILE_REFRESH

    def __call__(self) -> str:
        if time.monotonic() - self._read_at >= TOKEN_FILE_REFRESH:
            self._token, self._read_at = Path(self.path).read_text().strip(), time.monotonic()
        return self._token


class _ExecPlugin:
    """A kubeconfig `exec` credential plugin (cloud providers' login helpers): run, its
    ExecCredential's token kept until it expires."""

    def __init__(self, spec: Mapping[str, Any], base: Path) -> None:
        self.spec, self.base = spec, base
        self._token: str | None = None
        self.expires: float | None = None

    def stale(self) -> bool:
        return self._token is None or (self.expires is not None and time.time() > self.expires - 10)

    def __call__(self) -> str | None:
        if self.stale():
            self._token, self.expires = self._run()
        return self._token

    def _run(self) -> tuple[str | None, float | None]:
        command = str(self.spec["command"])
        if "/" in command and not os.path.isabs(command):
            command = str(self.base / command)
        env = {**os.environ, **{e["name"]: e["value"] for e in self.spec.get("env") or []}}
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {
                "apiVersion": self.spec.get("apiVersion", "client.authentication.k8s.io/v1"),
                "kind": "ExecCredential",
                "spec": {"interactive": False},
            }
        )
        done = subprocess.run(
            [command, *(self.spec.get("args") or [])], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise KubeConfigError(f"the kubeconfig's exec plugin {command} failed: {done.stderr.strip()[:500]}")
        status = json.loads(done.stdout).get("status") or {}
        if not status.get("token"):
            raise KubeConfigError(
                f"the kubeconfig's exec plugin {command} gave no token (client certificates "
                f"from exec plugins are not supported)"
            )
        expires = status.get("expirationTimestamp")
        when = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() if expires else None
        return status["token"], when


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT / "token").exists()


def in_cluster_credentials() -> Credentials:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    return Credentials(
        f"https://{host}:{port}",
        ca_pem=(SERVICE_ACCOUNT / "ca.crt").read_text(),
        token_source=_TokenFile(str(SERVICE_ACCOUNT / "token")),
    )


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """The pod's service account in a cluster (unless `kubeconfig` is named), else a kubeconfig."""
    return in_cluster_credentials() if kubeconfig is None and in_cluster() else kubeconfig_credentials(kubeconfig)


def kubeconfig_credentials(path: str | None = None) -> Credentials:
    """From the kubeconfig at `path`, else $KUBECONFIG (files merged, the first to name an
    entry wins, as kubectl does), else ~/.kube/config; its current context."""
    paths = (
        [path]
        if path
        else [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        or [str(Path.home() / ".kube" / "config")]
    )
    merged: dict[str, dict[str, Any]] = {"clusters": {}, "users": {}, "contexts": {}}
    current, bases = None, {}
    for one in paths:
        if not os.path.exists(one):
            continue
        config = yaml.safe_load(Path(one).read_text()) or {}
        current = current or config.get("current-context")
        for kind in merged:
            for entry in config.get(kind) or []:
                if entry.get("name") not in merged[kind]:
                    merged[kind][entry["name"]] = entry
                    bases[(kind, entry["name"])] = Path(one).resolve().parent
    if not current or current not in merged["contexts"]:
        raise KubeConfigError(f"no current context in the kubeconfig ({os.pathsep.join(paths)})")
    context = merged["contexts"][current]["context"]
    cluster_name, user_name = context["cluster"], context.get("user", "")
    cluster = merged["clusters"][cluster_name]["cluster"]
    user = (merged["users"].get(user_name) or {}).get("user") or {}
    return _credentials(cluster, user, bases[("clusters", cluster_name)], bases.get(("users", user_name), Path(".")))


def _credentials(
    cluster: Mapping[str, Any], user: Mapping[str, Any], cluster_base: Path, user_base: Path
) -> Credentials:
    if user.get("auth-provider"):
        raise KubeConfigError("kubeconfig auth-provider entries are not supported: use an exec credential plugin")
    ca_pem = None
    if cluster.get("certificate-authority-data"):
        ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
    elif cluster.get("certificate-authority"):
        ca_pem = (cluster_base / cluster["certificate-authority"]).read_text()
    token: Callable[[], str | None] = _no_token
    if user.get("token"):
        token = (lambda value: lambda: value)(str(user["token"]))
    elif user.get("tokenFile"):
        token = _TokenFile(str(user_base / user["tokenFile"]))
    elif user.get("exec"):
        token = _ExecPlugin(user["exec"], user_base)
    return Credentials(
        str(cluster["server"]).rstrip("/"),
        ca_pem=ca_pem,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        client_certificate=_pem(user, "client-certificate", user_base),
        client_key=_pem(user, "client-key", user_base),
        token_source=token,
        username=user.get("username"),
        password=user.get("password"),
    )


def _pem(user: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    if user.get(f"{key}-data"):
        return base64.b64decode(user[f"{key}-data"])
    if user.get(key):
        return (base / user[key]).read_bytes()
    return None


def _load_chain(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """ssl reads a client certificate only from files: written to private temporary ones."""
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for name, data in (("cert.pem", certificate), ("key.pem", key)):
            path = os.path.join(directory, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(data)
            paths.append(path)
        context.load_cert_chain(*paths)


@dataclass
class KubeApi:
    """One session to the API server; requests and watches of JSON. Shared by whoever the
    owner hands it to, closed by the owner."""

    credentials: Credentials
    connections: int = CONNECTIONS
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ssl=self.credentials.ssl_context()),
                auth=self.credentials.basic,
            )
        return self._session

    async def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", **(extra or {})}
        token = await self.credentials.current_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str | None = None,
    ) -> dict[str, Any]:
        """The API server's JSON answer; ApiError for an error status."""
        headers = await self._headers({"Accept": accept} if accept else None)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self.session().request(
            method,
            self.credentials.server + path,
            params=_query(params),
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, response.reason or "", text)
            return json.loads(text) if text else {}

    async def watch(self, path: str, params: Mapping[str, Any], timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) of a collection until the server ends the stream
        (`timeoutSeconds`); an ERROR event (410: too old a version) is yielded as it came."""
        query = {**params, "watch": "true", "timeoutSeconds": int(timeout)}
        async with self.session().get(
            self.credentials.server + path,
            params=_query(query),
            headers=await self._headers(),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=REQUEST_TIMEOUT, sock_read=timeout + REQUEST_TIMEOUT
            ),
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, response.reason or "", await response.text())
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items() if v is not None}


async def connect(kubeconfig: str | None = None) -> KubeApi:
    """An API client from the pod's service account in a cluster, else from a kubeconfig."""
    return KubeApi(await asyncio.to_thread(load_credentials, kubeconfig))


def custom_path(
    namespace: str | None, group: str, version: str, plural: str, name: str = "", subresource: str = ""
) -> str:
    where = f"/namespaces/{namespace}" if namespace else ""
    return "/".join(p for p in (f"/apis/{group}/{version}{where}/{plural}", name, subresource) if p)


def core_path(namespace: str, plural: str, name: str = "") -> str:
    return "/".join(p for p in (f"/api/v1/namespaces/{namespace}/{plural}", name) if p)
