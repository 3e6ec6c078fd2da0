"""The project's own Kubernetes client against the real API server, with each way a kubeconfig
says who we are (a token, a token file, an exec plugin, a client certificate embedded or in
files next to the kubeconfig, several files in $KUBECONFIG), and the errors a user sees when a
kubeconfig asks for what it does not do."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from repo2docker_buildcore import contract
from repo2docker_buildcore.kubeapi import ApiError, KubeConfigError, connect, kubeconfig_credentials
from support.operator import OperatorProcess
from support.waiting import wait_until


def _testenv_kubeconfig(testenv) -> dict:
    return yaml.safe_load(Path(testenv["KUBECONFIG"]).read_text())


def _with_user(testenv, user: dict) -> dict:
    config = _testenv_kubeconfig(testenv)
    config["users"] = [{"name": "who", "user": user}]
    config["contexts"][0]["context"]["user"] = "who"
    cluster = config["clusters"][0]["cluster"]
    cluster["certificate-authority-data"] = base64.b64encode(
        Path(cluster.pop("certificate-authority")).read_bytes()
    ).decode()
    return config


async def _who(path: Path) -> dict:
    api = await connect(str(path))
    try:
        return await api.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    finally:
        await api.close()


def _user_of(review: dict) -> tuple[str, list[str]]:
    info = review["status"]["userInfo"]
    return info["username"], info.get("groups") or []


def _admin_token(testenv) -> str:
    return testenv["R2D_KUBE_ADMIN_TOKEN"]


@pytest.mark.integration
def test_a_token_a_token_file_and_an_exec_plugin_authenticate_as_the_same_user(testenv, tmp_path):
    token = _admin_token(testenv)
    (tmp_path / "token").write_text(token + "\n")
    plugin = tmp_path / "bin" / "credential"
    plugin.parent.mkdir()
    plugin.write_text(
        '#!/bin/sh\n[ "$WHO" = admin ] || exit 3\n'
        f'echo \'{{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", '
        f'"status": {{"token": "{token}"}}}}\'\n'
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    users = {
        "token": {"token": token},
        # Relative to the kubeconfig's own directory, as kubectl reads it.
        "tokenFile": {"tokenFile": "token"},
        "exec": {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "./bin/credential",
                "env": [{"name": "WHO", "value": "admin"}],
                "interactiveMode": "Never",
            }
        },
    }
    seen = set()
    for kind, user in users.items():
        path = tmp_path / f"{kind}.kubeconfig"
        path.write_text(yaml.safe_dump(_with_user(testenv, user)))
        seen.add(_user_of(asyncio.run(_who(path)))[0])
    assert len(seen) == 1, seen


@pytest.mark.integration
def test_a_client_certificate_embedded_or_in_files_authenticates(testenv, tmp_path):
    pki = Path(testenv["KUBECONFIG"]).parent / "pki"
    certificate, key = (
        (pki / "apiserver-kubelet-client.crt").read_bytes(),
        (pki / "apiserver-kubelet-client.key").read_bytes(),
    )
    embedded = tmp_path / "embedded.kubeconfig"
    embedded.write_text(
        yaml.safe_dump(
            _with_user(
                testenv,
                {
                    "client-certificate-data": base64.b64encode(certificate).decode(),
                    "client-key-data": base64.b64encode(key).decode(),
                },
            )
        )
    )
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "client.crt").write_bytes(certificate)
    (tmp_path / "certs" / "client.key").write_bytes(key)
    files = tmp_path / "files.kubeconfig"
    files.write_text(
        yaml.safe_dump(
            _with_user(testenv, {"client-certificate": "certs/client.crt", "client-key": "certs/client.key"})
        )
    )
    for path in (embedded, files):
        name, groups = _user_of(asyncio.run(_who(path)))
        assert (name, "system:masters" in groups) == ("kube-apiserver-kubelet-client", True)


@pytest.mark.integration
def test_kubeconfig_files_in_the_environment_are_merged_and_errors_carry_the_servers_message(
    testenv, tmp_path, monkeypatch
):
    config = _with_user(testenv, {"token": "not-a-token"})
    users, rest = tmp_path / "users.kubeconfig", tmp_path / "rest.kubeconfig"
    # The first file to name an entry wins: the real token in the first file, a wrong one after.
    users.write_text(yaml.safe_dump({"users": [{"name": "who", "user": {"token": _admin_token(testenv)}}]}))
    rest.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(users), str(tmp_path / "missing"), str(rest)]))

    async def both() -> None:
        api = await connect()
        try:
            await api.request("GET", "/api/v1/namespaces/default")
            with pytest.raises(ApiError) as raised:
                await api.request("GET", "/api/v1/namespaces/r2d-no-such-namespace")
            assert raised.value.status == 404
            assert 'namespaces "r2d-no-such-namespace" not found' in str(raised.value)
        finally:
            await api.close()

    asyncio.run(both())


@pytest.mark.unit
def test_a_kubeconfig_this_client_cannot_use_is_named_in_the_error(tmp_path):
    cluster = {"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}
    context = {"name": "x", "context": {"cluster": "c", "user": "u"}}

    def write(user: dict, current: str = "x") -> str:
        path = tmp_path / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "clusters": [cluster],
                    "contexts": [context],
                    "current-context": current,
                    "users": [{"name": "u", "user": user}],
                }
            )
        )
        return str(path)

    with pytest.raises(KubeConfigError, match="auth-provider entries are not supported"):
        kubeconfig_credentials(write({"auth-provider": {"name": "gcp"}}))
    with pytest.raises(KubeConfigError, match="no current context"):
        kubeconfig_credentials(write({"token": "t"}, current="elsewhere"))
    failing = tmp_path / "fails"
    failing.write_text("#!/bin/sh\necho 'not logged in' >&2\nexit 1\n")
    failing.chmod(0o755)
    credentials = kubeconfig_credentials(write({"exec": {"command": str(failing)}}))
    with pytest.raises(KubeConfigError, match="exec plugin .* failed: not logged in"):
        credentials.token()
    assert kubeconfig_credentials(write({"token": "t"})).token() == "t"


@pytest.mark.integration
def test_kopf_logs_in_as_the_operators_client_does(testenv, kubectl, namespace, crd, tmp_path):
    """With a token file, which kopf's own kubeconfig reader does not know (and in a pod it
    would call kubernetes.default.svc, which needs the cluster's DNS; the cluster tier runs
    that case): the operator's watch sees a new build and its write decides it."""
    (tmp_path / "token").write_text(_admin_token(testenv))
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(_with_user(testenv, {"tokenFile": "token"})))
    op = OperatorProcess(testenv, namespace, tmp_path, kubeconfig=str(path)).start()
    try:
        url, commit = "https://example.org/login/repo", "c" * 40
        spec = contract.BuildSpec(url, "main", commit, contract.image_name("r2d-", url, commit))
        made = json.loads(
            kubectl(
                "create",
                "-f",
                "-",
                "-o",
                "json",
                input=json.dumps(contract.build_manifest(spec, namespace, requested_by="ann")),
            )
        )
        name = made["metadata"]["name"]
        phase = wait_until(
            lambda: kubectl.json("get", contract.PLURAL, name, "-n", namespace).get("status", {}).get("phase"),
            timeout=60,
            what="the operator to decide the build",
        )
        assert phase in ("Pending", "Queued", "Building", "Failed", "Succeeded"), phase
        assert "LoginError" not in op.log() and "kubernetes.default.svc" not in op.log()
    finally:
        op.stop()
