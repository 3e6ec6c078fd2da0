"""The identities of a shared cluster, for attacks made as the people who hold them.

`chart_identities` installs the chart's RBAC the way the README tells operators to (a release
whose operator image is not on the node, so no pod competes with the test's operator
process), and adds a namespace user: a ServiceAccount that may create and read build
resources in the namespace, as a course's teaching assistant or a CI job would. Each
identity is used only through its own token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from repo2docker_buildcore import contract

from .cluster import CHART, helm
from .env import TestEnv
from .kube import Kubectl

OPERATOR_ACCOUNT = "r2d-repo2docker-operator"
HUB_ACCOUNT = "jupyterhub"
STUDENT_ACCOUNT = "student"

STUDENT_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "build-requester"},
    "rules": [
        {"apiGroups": [contract.GROUP], "resources": [contract.PLURAL], "verbs": ["create", "get", "list", "watch"]}
    ],
}


def token_for(kubectl: Kubectl, namespace: str, account: str) -> Kubectl:
    return kubectl.as_token(kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip())


def token_kubeconfig(env: TestEnv, token: str, path: Path, namespace: str) -> Path:
    """A kubeconfig holding only `token` (the server and CA of the test environment's)."""
    config = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    config["users"] = [{"name": "token", "user": {"token": token}}]
    for ctx in config["contexts"]:
        ctx["context"]["user"] = "token"
        ctx["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Identities:
    namespace: str
    operator: Kubectl
    hub: Kubectl
    student: Kubectl

    def as_(self, who: str) -> Kubectl:
        return {"hub": self.hub, "student": self.student, "operator": self.operator}[who]


def install_chart_rbac(env: TestEnv, namespace: str, *extra: str) -> None:
    helm(
        env,
        "install",
        "r2d",
        str(CHART),
        "-n",
        namespace,
        "--set",
        "hub.rbac.create=true",
        "--set",
        "image.repository=r2d-test/operator",
        "--set",
        "image.tag=dev",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        f"build.image={env['R2D_BUILD_IMAGE']}",
        "--set",
        "build.imagePrefix=r2d-test-",
        *extra,
    )


def chart_identities(env: TestEnv, kubectl: Kubectl, namespace: str, *extra: str) -> Identities:
    install_chart_rbac(env, namespace, *extra)
    kubectl("create", "serviceaccount", STUDENT_ACCOUNT, "-n", namespace)
    kubectl.apply(json.dumps(STUDENT_ROLE), "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "student-requests-builds",
        "-n",
        namespace,
        "--role=build-requester",
        f"--serviceaccount={namespace}:{STUDENT_ACCOUNT}",
    )
    return Identities(
        namespace,
        token_for(kubectl, namespace, OPERATOR_ACCOUNT),
        token_for(kubectl, namespace, HUB_ACCOUNT),
        token_for(kubectl, namespace, STUDENT_ACCOUNT),
    )


def uninstall_chart(env: TestEnv, namespace: str) -> None:
    helm(env, "uninstall", "r2d", "-n", namespace, "--wait=false", check=False)
