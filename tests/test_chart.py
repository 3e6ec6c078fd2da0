"""The Helm chart against the real API server, with helm and kubectl built from Go modules.

Renders, schema and RBAC. The RBAC tests run the operator as a process with *only* the
chart's ServiceAccount token, which proves the role is enough (a build succeeds) and no more
(Secrets, Pods and other namespaces are refused); their release names an image the node does
not have, so no operator pod competes. The operator as the chart's pod is test_cluster.py.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from repo2docker_buildcore import contract
from support.builds import create_build, dockerfile_repo, head, wait_phase
from support.cluster import CHART, helm
from support.tenants import install_chart_rbac, token_for, uninstall_chart

ROOT = Path(__file__).resolve().parent.parent
FULL_VALUES = ROOT / "tests" / "data" / "chart-values-full.yaml"


def template(testenv, *args: str) -> str:
    return helm(testenv, "template", "r2d", str(CHART), "--kube-version", testenv["R2D_KUBE_VERSION"], *args).stdout


def test_the_deployment_passes_every_chart_setting_to_its_variable(testenv):
    """Rendered with every option set: each table row's variable carries its value."""
    from test_chart_files import chart_value

    from repo2docker_buildcore.settings import ENV, SETTINGS

    full = yaml.safe_load(FULL_VALUES.read_text())
    docs = yaml.safe_load_all(template(testenv, "-f", str(FULL_VALUES), "-n", "ns-one"))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for row in SETTINGS:
        if row.chart is None:
            continue
        value = chart_value(full, row.chart)
        if row.kind is tuple:
            expected = ",".join(value)
        elif row.kind == ENV:
            expected = json.dumps(value, separators=(",", ":"))
        elif row.kind is bool:
            expected = str(value).lower()
        else:
            expected = str(value)
        assert env.get(row.env) == expected, (row.name, row.env, env.get(row.env), expected)
    table = {row.env for row in SETTINGS}
    assert {name for name in env if name.startswith("R2D_")} <= table, "a variable the table does not know"


pytestmark = pytest.mark.integration


def test_helm_template_works_without_a_cluster_as_users_run_it(testenv):
    """A released helm assumes the Kubernetes version of its client libraries without a
    cluster; one built without those ldflags assumes v1.20 and refuses the chart's kubeVersion."""
    proc = helm(testenv, "template", "r2d", str(CHART), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "kind: Deployment" in proc.stdout


def test_helm_lint_strict(testenv):
    out = helm(testenv, "lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", ["default", "full"])
def test_rendered_manifests_pass_server_side_dry_run(testenv, kubectl, namespace, crd, values):
    other = f"{namespace}-b"
    kubectl("create", "namespace", other)
    args = ["-n", namespace, "--include-crds"]
    if values == "full":
        args += [
            "-f",
            str(FULL_VALUES),
            "--set",
            f"watch.namespaces={{{namespace},{other}}}",
            "--set",
            f"hub.rbac.namespace={namespace}",
        ]
    manifests = template(testenv, *args)
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(manifests) if doc)
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "Role", "RoleBinding", "Service"} <= set(kinds)
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=manifests)  # every object names its namespace
    assert "deployment.apps/r2d-repo2docker-operator created (server dry run)" in out
    if values == "full":
        # The operator in two namespaces, the hub's, each one's read (or update) of the one
        # ConfigMap of images' last use, and the builders' Leases.
        assert kinds.count("Role") == 6
        # The admission policies (requesters, status) and their bindings, accepted by the API server.
        assert kinds.count("ValidatingAdmissionPolicy") == kinds.count("ValidatingAdmissionPolicyBinding") == 2
        deployment = next(d for d in yaml.safe_load_all(manifests) if d and d["kind"] == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["R2D_NAMESPACES"] == f"{namespace},{other}" and env["R2D_CONCURRENT_BUILDS"] == "5"
        assert env["R2D_PUSH"] == "true" and env["R2D_DOCKER_CONFIG"].endswith("config.json")
        # Repository credentials: the Secret mounted read-only, the variable naming its file.
        assert env["R2D_GIT_CREDENTIALS"] == "/etc/repo2docker-operator/git/credentials.json"
        secret = next(v["secret"] for v in pod["volumes"] if v["name"] == "git-credentials")
        assert secret == {"secretName": "git-creds", "items": [{"key": "credentials.json", "path": "credentials.json"}]}
        assert {"name": "git-credentials", "mountPath": "/etc/repo2docker-operator/git", "readOnly": True} in pod[
            "containers"
        ][0]["volumeMounts"]
        assert env["R2D_ALLOWED_BUILD_IMAGES"] == "registry.example.org/r2d/repo2docker:2025.12.0"
        assert json.loads(env["R2D_BUILD_ENV"]) == {
            "HTTPS_PROXY": "http://proxy.example.org:3128",
            "NO_PROXY": "localhost,10.0.0.0/8",
        }
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["supplementalGroups"] == [998]
        assert pod["volumes"][0]["hostPath"]["path"] == "/run/docker.sock"
        assert env["R2D_LIVENESS"] == "http://[::]:8181/healthz" and env["R2D_METRICS_ADDRESS"] == "::"
        assert "networkpolicy.networking.k8s.io/r2d-repo2docker-operator created (server dry run)" in out


def test_all_namespaces_uses_cluster_rbac(testenv):
    docs = [d for d in yaml.safe_load_all(template(testenv, "--set", "watch.allNamespaces=true")) if d]
    assert "ClusterRole" in [d["kind"] for d in docs]
    # Builds everywhere, but the record of images' last use stays one ConfigMap in one
    # namespace, and the Leases in the release's.
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Role") == [
        "r2d-repo2docker-operator-image-use",
        "r2d-repo2docker-operator-leases",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "build.concurrency=two",
        "build.concurrency=-1",
        "bogus=1",
        "build.bogus=1",
        "build.imagePrefix=UPPER",
        "build.memoryLimit=lots",
        "metrics.port=70000",
        "docker.socketPath=relative",
        "watch.namespaces={Bad_NS}",
        "build.env.1BAD=x",
        "imageGC.highWatermark=lots",
        "imageGC.highWatermark=120%",
        "imageGC.lowWatermark=-5%",
        "imageGC.interval=-1",
        "build.imagePrefix=",
        "networkPolicy.apiServer.cidrs={not-a-cidr}",
        "builders.mode=everywhere",
        "builders.leaseDuration=1",
        "build.clusterConcurrency=-1",
    ],
)
def test_schema_rejects_bad_values(testenv, bad):
    proc = helm(
        testenv, "template", "r2d", str(CHART), "--kube-version", testenv["R2D_KUBE_VERSION"], "--set", bad, check=False
    )
    assert proc.returncode != 0 and "schema" in proc.stderr, (bad, proc.stderr)


def test_daemonset_mode_runs_a_builder_per_matching_node_with_that_node_s_name(testenv):
    docs = [
        d
        for d in yaml.safe_load_all(
            template(
                testenv,
                "--set",
                "builders.mode=daemonset",
                "--set",
                "build.push.enabled=true",
                "--set",
                "build.imagePrefix=registry.example.org/r2d-",
                "--set",
                "builders.nodeSelector.builds=yes",
                "--set",
                "nodeSelector.zone=a",
                "--set",
                "build.clusterConcurrency=3",
            )
        )
        if d
    ]
    kinds = [d["kind"] for d in docs]
    assert "DaemonSet" in kinds and "Deployment" not in kinds
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["R2D_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["R2D_CLUSTER_CONCURRENCY"]["value"] == "3" and env["R2D_LEASE_DURATION"]["value"] == "15"
    assert env["R2D_LEASE_NAMESPACE"]["value"] == "default"
    # Each node's daemon has its own images: its own key in the shared ConfigMap of uses.
    assert env["R2D_GC_USE_RECORD"]["value"].endswith("-image-use#$(R2D_NODE_NAME)")
    assert list(env).index("R2D_NODE_NAME") < list(env).index("R2D_GC_USE_RECORD")
    assert pod["nodeSelector"] == {"builds": "yes", "zone": "a"}
    # The deployment's builder has a name that outlives its pod.
    deployment = next(d for d in yaml.safe_load_all(template(testenv)) if d and d["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["R2D_NODE_NAME"]["value"] == "r2d-repo2docker-operator"


def test_daemonset_mode_without_push_is_refused_with_why(testenv):
    proc = helm(
        testenv,
        "template",
        "r2d",
        str(CHART),
        "--kube-version",
        testenv["R2D_KUBE_VERSION"],
        "--set",
        "builders.mode=daemonset",
        check=False,
    )
    assert proc.returncode != 0
    assert "builders.mode=daemonset needs build.push.enabled=true" in proc.stderr, proc.stderr


def test_builders_may_hold_leases_in_the_release_namespace_only(testenv):
    docs = [d for d in yaml.safe_load_all(template(testenv, "-n", "r2d-ns")) if d]
    roles = [d for d in docs if d["kind"] == "Role" and any("leases" in r["resources"] for r in d["rules"])]
    assert len(roles) == 1 and roles[0]["metadata"]["namespace"] == "r2d-ns"
    assert roles[0]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "create", "patch"]}
    ]


def test_network_policy_admits_metrics_in_and_only_the_api_server_and_dns_out(testenv):
    docs = [
        d
        for d in yaml.safe_load_all(
            template(
                testenv, "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServer.cidrs={172.17.0.1/32}"
            )
        )
        if d
    ]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "repo2docker-operator"
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9090}]}]
    api, dns = policy["egress"]
    assert api == {
        "to": [{"ipBlock": {"cidr": "172.17.0.1/32"}}],
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
    }
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert not [
        d for d in yaml.safe_load_all(template(testenv)) if d and d["kind"] == "NetworkPolicy"
    ]  # off by default
    refused = helm(
        testenv,
        "template",
        "r2d",
        str(CHART),
        "--kube-version",
        testenv["R2D_KUBE_VERSION"],
        "--set",
        "networkPolicy.enabled=true",
        check=False,
    )
    assert refused.returncode != 0 and "networkPolicy.apiServer.cidrs" in refused.stderr


@pytest.fixture
def release(testenv, kubectl, namespace):
    other = f"{namespace}-other"
    kubectl("create", "namespace", other)
    install_chart_rbac(testenv, namespace)
    yield {"namespace": namespace, "other": other}
    uninstall_chart(testenv, namespace)


def refused(result: subprocess.CompletedProcess) -> bool:
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


def test_helm_install_creates_everything(testenv, kubectl, release):
    ns = release["namespace"]
    assert kubectl.json("get", "crd", contract.CRD_NAME)["spec"]["group"] == contract.GROUP
    for kind, name in [
        ("deployment", "r2d-repo2docker-operator"),
        ("serviceaccount", "r2d-repo2docker-operator"),
        ("role", "r2d-repo2docker-operator"),
        ("rolebinding", "r2d-repo2docker-operator"),
        ("service", "r2d-repo2docker-operator-metrics"),
        ("serviceaccount", "jupyterhub"),
        ("role", "r2d-repo2docker-operator-hub"),
        ("configmap", "r2d-repo2docker-operator-image-use"),
    ]:
        assert kubectl.json("get", kind, name, "-n", ns)["metadata"]["name"] == name
    status = json.loads(helm(testenv, "status", "r2d", "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "kubectl get r2dbuilds" in status["info"]["notes"]


def test_operator_identity_is_enough_and_no_more(testenv, kubectl, release, operator_factory, git_repos):
    ns, other = release["namespace"], release["other"]
    operator = token_for(kubectl, ns, "r2d-repo2docker-operator")

    # Enough: the operator, authenticated only by the chart's ServiceAccount, builds.
    operator_factory(token=operator.token, image_prefix="r2d-test-")
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    name = create_build(kubectl, ns, repo.url, head(repo))
    status = wait_phase(kubectl, ns, name, "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    events = kubectl.json("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    assert {"Building", "Succeeded"} <= {e["reason"] for e in events["items"]}

    # No more.
    assert refused(operator.run("get", "secrets", "-n", ns, check=False))
    assert refused(operator.run("delete", "pod", "anything", "-n", ns, check=False))
    assert refused(operator.run("get", "pods", "-n", ns, check=False))
    assert refused(operator.run("get", contract.PLURAL, "-n", other, check=False))
    manifest = contract.build_manifest(contract.BuildSpec(repo.url, "main", head(repo), "r2d-test-x:1"), other)
    assert refused(operator.run("create", "-f", "-", input=json.dumps(manifest), check=False))
    assert refused(operator.run("create", "configmap", "x", "-n", ns, check=False))
    # The one ConfigMap of images' last use: read and updated, no other.
    record = "r2d-repo2docker-operator-image-use"
    assert (
        operator.run(
            "patch",
            "configmap",
            record,
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"data": {"last-used.json": "{}"}}),
            check=False,
        ).returncode
        == 0
    )
    assert refused(operator.run("get", "configmap", "kube-root-ca.crt", "-n", ns, check=False))


def test_hub_identity_may_only_create_and_watch_builds(testenv, kubectl, release):
    ns, other = release["namespace"], release["other"]
    hub = token_for(kubectl, ns, "jupyterhub")
    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    spec = contract.BuildSpec("https://example.org/a/b", "main", commit, f"r2d-test-b:{commit}")
    manifest = json.dumps(contract.build_manifest(spec, ns))
    name = contract.build_name(spec.repo_url, commit)

    assert hub.run("create", "-f", "-", input=manifest, check=False).returncode == 0
    assert name in hub("get", contract.PLURAL, "-n", ns)
    assert hub.json("get", contract.PLURAL, name, "-n", ns)["spec"]["commit"] == commit
    watch = hub.run("get", contract.PLURAL, "-n", ns, "--watch", "--request-timeout=2s", check=False)
    assert "forbidden" not in watch.stderr.lower() and name in watch.stdout
    status_patch = hub.run(
        "patch",
        contract.PLURAL,
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Succeeded", "image": "evil:1"}}),
        check=False,
    )
    assert refused(status_patch), "the hub must not be able to forge a build's result"
    assert refused(hub.run("get", "secrets", "-n", ns, check=False))
    assert refused(hub.run("create", "secret", "generic", "x", "-n", ns, check=False))  # build.userCredentials is off
    # For the builds page: events and the images' last use, read only.
    assert hub.run("get", "events", "-n", ns, check=False).returncode == 0
    assert hub.run("get", "configmap", "r2d-repo2docker-operator-image-use", "-n", ns, check=False).returncode == 0
    assert refused(
        hub.run(
            "patch",
            "configmap",
            "r2d-repo2docker-operator-image-use",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"data": {"last-used.json": "{}"}}),
            check=False,
        )
    )
    assert refused(hub.run("get", "configmap", "kube-root-ca.crt", "-n", ns, check=False))
    assert refused(hub.run("get", "pods", "-n", ns, check=False))
    assert refused(hub.run("get", contract.PLURAL, "-n", other, check=False))
    assert refused(hub.run("create", "-f", "-", input=json.dumps(contract.build_manifest(spec, other)), check=False))
    assert hub.run("delete", contract.PLURAL, name, "-n", ns, "--wait=false", check=False).returncode == 0


def test_operator_image_builds_from_the_dockerfile_and_answers_help(operator_image, docker_client):
    help_text = docker_client.containers.run(operator_image, ["--help"], remove=True).decode()
    assert "repo2docker-operator" in help_text and "--concurrency" in help_text
    user = docker_client.containers.run(operator_image, [], entrypoint=["id", "-u"], remove=True).decode().strip()
    assert user == "10001"
