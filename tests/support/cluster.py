"""The chart on the test environment's node, installed the way the README tells users to.

`install_command` is the one place that spells out the `helm install` the tests run; the
README's "On the test environment's node" section shows the same flags.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .env import TestEnv
from .kube import Kubectl
from .operator import offline_build_env
from .waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "repo2docker-operator"
RELEASE = "r2d"
DEPLOYMENT = f"{RELEASE}-repo2docker-operator"


def helm(env: TestEnv, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [env["HELM"], *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"KUBECONFIG": env["KUBECONFIG"], "HOME": "/tmp", "PATH": "/usr/bin:/bin"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def chart_values(env: TestEnv, operator_image: str, **values: Any) -> list[str]:
    """`--set` flags: the operator image loaded into the node, the environment's build image,
    what builds need offline, the hub identity; `values` override or add (dotted keys)."""
    repository, _, tag = operator_image.rpartition(":")
    settings: dict[str, Any] = {
        "image.repository": repository,
        "image.tag": tag,
        "build.image": env["R2D_BUILD_IMAGE"],
        "hub.rbac.create": True,
        **{f"build.env.{k}": v for k, v in offline_build_env(env).items()},
        **values,
    }
    flags: list[str] = []
    for key, value in settings.items():
        flags += [
            "--set-json" if not isinstance(value, str) else "--set-string",
            f"{key}={json.dumps(value) if not isinstance(value, str) else value}",
        ]
    return flags


def install(
    env: TestEnv, namespace: str, operator_image: str, upgrade: bool = False, wait: bool = True, **values: Any
) -> None:
    verb = ["upgrade"] if upgrade else ["install"]
    helm(
        env,
        *verb,
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        *(["--wait", "--timeout", "180s"] if wait else []),
        *chart_values(env, operator_image, **values),
    )


def instance(namespace: str) -> str:
    """The label value the chart gives this release's build containers."""
    return f"{namespace}.{RELEASE}"[:63]


def operator_pods(kubectl: Kubectl, namespace: str) -> list[dict]:
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=repo2docker-operator")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True"


def wait_operator_pod(kubectl: Kubectl, namespace: str, other_than: str | None = None, timeout: float = 180) -> dict:
    """The Deployment's one Ready operator pod (a new one, if `other_than` names the old)."""

    def one_ready():
        pods = [p for p in operator_pods(kubectl, namespace) if p["metadata"]["name"] != other_than]
        return pods[0] if len(pods) == 1 and ready(pods[0]) else None

    return wait_until(one_ready, timeout=timeout, interval=0.5, what=f"a Ready operator pod in {namespace}")


def pod_log(kubectl: Kubectl, namespace: str, pod: str) -> str:
    return kubectl("logs", "-n", namespace, pod, check=False)
