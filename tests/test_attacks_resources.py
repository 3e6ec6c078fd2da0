"""Attacks through build resources, made with the tokens of the people who hold them.

Whoever may create a Repo2DockerBuild (the hub's identity, a namespace user given `create`)
must not decide what another user runs. Each test creates the attacker's resource with the
exact manifest below through `kubectl` under that identity's own token, then launches the
victim's repository through a hub that has only the chart's hub identity, with an operator
that has only the chart's operator identity.
"""

from __future__ import annotations

import json
import uuid

import pytest

from repo2docker_buildcore import contract
from support.builds import dockerfile_repo, get_build, head, image_exists, wait_phase
from support.operator import ContainerWatcher
from support.tenants import chart_identities, token_kubeconfig, uninstall_chart
from support.waiting import wait_until

PREFIX = "r2d-e2e-"


@pytest.fixture
def identities(testenv, kubectl, namespace):
    ids = chart_identities(testenv, kubectl, namespace)
    yield ids
    uninstall_chart(testenv, namespace)


@pytest.fixture
def victim_hub(hubs, identities, testenv, tmp_path):
    """A hub that knows the cluster only as the chart's hub identity; its operator runs as the
    chart's operator identity."""
    kubeconfig = token_kubeconfig(testenv, identities.hub.token, tmp_path / "hub.kubeconfig", identities.namespace)
    return hubs("kubernetes", kubeconfig=str(kubeconfig), operator_options={"token": identities.operator.token})


def attack(kubectl, manifest: dict) -> str:
    """Create the attacker's resource exactly as given; its name."""
    kubectl("create", "-f", "-", input=json.dumps(manifest))
    return manifest["metadata"]["name"]


def launch(hub, repo, refused: bool = False) -> tuple[str, list[dict]]:
    """A launch through REST; its events. A refusal within the hub's slow_spawn_timeout is the
    REST answer itself (a 4xx with the message), later one the stream's last event."""
    name = f"victim{uuid.uuid4().hex[:6]}"
    response, events = hub.spawn_and_follow(name, {"repo": repo.url, "ref": "main"})
    if refused and response.status_code == 409:
        return name, [{"failed": True, "message": response.json()["message"]}]
    assert response.status_code in (201, 202), response.text
    return name, events


@pytest.mark.e2e
@pytest.mark.parametrize("who", ["hub", "student"])
def test_a_resource_cannot_build_the_image_of_another_repository(
    who, identities, victim_hub, kubectl, git_repos, testenv, docker_client
):
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    victim = dockerfile_repo(git_repos, base, marker="the victim's own files")
    attacker = dockerfile_repo(git_repos, base, marker="the attacker's files")
    victim_image = contract.image_name(PREFIX, victim.url, head(victim))
    # The attack: my repository and commit, built under the name the hub derives for the victim's.
    name = attack(
        identities.as_(who),
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": f"attack-{uuid.uuid4().hex[:6]}", "namespace": identities.namespace},
            "spec": {"repoUrl": attacker.url, "ref": "main", "commit": head(attacker), "image": victim_image},
        },
    )
    status = wait_phase(kubectl, identities.namespace, name, "Succeeded", "Failed", timeout=180)["status"]
    assert status["phase"] == "Failed", status
    expected = contract.image_name(PREFIX, attacker.url, head(attacker))
    assert expected in status["message"] and "image" in status["message"], status["message"]
    assert not image_exists(docker_client, victim_image)

    user, events = launch(victim_hub, victim)
    assert events[-1].get("ready"), events[-3:]
    assert victim_hub.user_file(user, "marker.txt") == "the victim's own files\n"
    victim_hub.stop_server(user)


@pytest.mark.integration
def test_a_resource_may_lower_the_operators_limits_but_never_raise_them(
    identities, operator_factory, kubectl, git_repos, testenv, docker_client
):
    # The classic builder (2024.7.0) honours a memory limit; the operator sets 512Mi and 0.5 CPU
    # (Docker itself refuses more CPUs than the machine has: this one has 2).
    op = operator_factory(
        token=identities.operator.token,
        image_prefix="r2d-test-",
        build_image=testenv["R2D_BUILD_IMAGE_2024"],
        memory_limit="512Mi",
        cpu_limit=0.5,
    )
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    greedy, modest = dockerfile_repo(git_repos, base, sleep=20), dockerfile_repo(git_repos, base, sleep=20)

    def manifest(repo, resources: dict) -> dict:
        spec = contract.BuildSpec(repo.url, "main", head(repo), contract.image_name("r2d-test-", repo.url, head(repo)))
        body = contract.build_manifest(spec, identities.namespace)
        body["spec"]["resources"] = resources
        return body

    with ContainerWatcher(docker_client, op.instance):
        names = [
            attack(identities.student, manifest(greedy, {"cpu": 2, "memory": "64Gi"})),
            attack(identities.student, manifest(modest, {"cpu": 0.25, "memory": "256Mi"})),
        ]
        for name in names:
            wait_phase(kubectl, identities.namespace, name, "Building", "Succeeded", "Failed", timeout=120)
        limits = {}
        for name in names:
            container = wait_until(
                lambda: docker_client.containers.list(filters={"label": f"{contract.LABEL_BUILD_NAME}={name}"}),
                timeout=60,
                what=f"{name}'s container",
            )[0]
            host = container.attrs["HostConfig"]
            limits[name] = (host["NanoCpus"], host["Memory"])
    assert limits[names[0]] == (500_000_000, 512 * 2**20), "asked for more than the operator allows: capped"
    assert limits[names[1]] == (250_000_000, 256 * 2**20), "asked for less: granted"


@pytest.mark.e2e
def test_a_squatted_build_name_fails_the_launch_at_once_and_never_serves_its_image(
    identities, victim_hub, kubectl, git_repos, testenv, docker_client
):
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    victim = dockerfile_repo(git_repos, base, marker="the victim's own files")
    attacker = dockerfile_repo(git_repos, base, marker="the attacker's files")
    # The victim's repository was launched before: its image is on the daemon, and its
    # resource has expired after its TTL (here: deleted by the admin), as happens every day.
    user, events = launch(victim_hub, victim)
    assert events[-1].get("ready"), events[-3:]
    victim_hub.stop_server(user)
    kubectl("delete", contract.PLURAL, contract.build_name(victim.url, head(victim)), "-n", identities.namespace)
    # The attack: the name the hub derives for the victim's repository and commit, taken by
    # a resource that builds the attacker's (with the image that one may have).
    name = attack(
        identities.student,
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": contract.build_name(victim.url, head(victim)), "namespace": identities.namespace},
            "spec": {
                "repoUrl": attacker.url,
                "ref": "main",
                "commit": head(attacker),
                "image": contract.image_name(PREFIX, attacker.url, head(attacker)),
            },
        },
    )
    assert wait_phase(kubectl, identities.namespace, name, "Succeeded", "Failed")["status"]["phase"] == "Succeeded"

    user, events = launch(victim_hub, victim, refused=True)
    assert events[-1].get("failed"), events[-3:]
    message = events[-1]["message"]
    assert "not the build this hub asked for" in message and name in message, message
    assert not victim_hub.server_ready(user)
    assert f"build resource {identities.namespace}/{name} is not the build" in victim_hub.log()
    assert get_build(kubectl, identities.namespace, name)["spec"]["repoUrl"] == attacker.url  # left for the admin


@pytest.mark.e2e
def test_a_forged_finished_label_neither_stalls_the_launch_nor_skips_the_build(
    identities, victim_hub, kubectl, git_repos, testenv, docker_client
):
    victim = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="the victim's own files")
    commit = head(victim)
    # The attack: exactly the resource the hub would create, but labelled finished, which
    # would keep it out of the operator's watch for good.
    spec = contract.BuildSpec(victim.url, "main", commit, contract.image_name(PREFIX, victim.url, commit))
    manifest = contract.build_manifest(spec, identities.namespace)
    manifest["metadata"]["labels"][contract.LABEL_FINISHED_AT] = "1"
    name = attack(identities.student, manifest)

    user, events = launch(victim_hub, victim)
    assert events[-1].get("ready"), events[-3:]
    assert victim_hub.user_file(user, "marker.txt") == "the victim's own files\n"
    obj = get_build(kubectl, identities.namespace, name)
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["metadata"]["labels"].get(contract.LABEL_FINISHED_AT) != "1", "the forged mark was removed"
    victim_hub.stop_server(user)


@pytest.mark.integration
def test_the_operator_removes_a_forged_finished_label_and_builds(
    identities, operator_factory, kubectl, git_repos, testenv
):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    spec = contract.BuildSpec(repo.url, "main", head(repo), contract.image_name("r2d-test-", repo.url, head(repo)))
    manifest = contract.build_manifest(spec, identities.namespace)
    # An old forged time: an operator that trusted it would also expire the resource at once
    # (its TTL sweep learns finished resources from a listing at start: made before it starts).
    manifest["metadata"]["labels"][contract.LABEL_FINISHED_AT] = "1"
    name = attack(identities.hub, manifest)
    operator_factory(token=identities.operator.token, image_prefix="r2d-test-", **{"finished-ttl": 3600})
    status = wait_phase(kubectl, identities.namespace, name, "Succeeded", "Failed", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    events = kubectl.json(
        "get", "events", "-n", identities.namespace, "--field-selector", f"involvedObject.name={name}"
    )
    assert "ForgedMark" in {e["reason"] for e in events["items"]}
    # Marked again by the operator itself once built, with a real time, and kept for its TTL.
    wait_until(
        lambda: (
            int(
                get_build(kubectl, identities.namespace, name)["metadata"]["labels"].get(
                    contract.LABEL_FINISHED_AT, "0"
                )
            )
            > 1
        ),
        timeout=30,
        what="the operator's own mark",
    )


def planted_secret(kubectl, namespace: str, name: str, token: str, owner: dict | None = None) -> None:
    """A basic-auth Secret somebody else made (an admin, another tool), holding a token that
    reads every private repository."""
    meta = {"name": name, "namespace": namespace}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": contract.API_VERSION,
                "kind": contract.KIND,
                "controller": True,
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    kubectl.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/basic-auth",
                "metadata": meta,
                "stringData": {"username": "hub", "password": token},
            }
        )
    )


@pytest.mark.e2e
def test_a_resource_cannot_clone_with_a_secret_its_build_does_not_own(
    testenv, kubectl, namespace, hubs, tmp_path, git_repos, docker_client
):
    from test_private_repos import auth_state_hub, private_repo, tokens

    ids = chart_identities(testenv, kubectl, namespace, "--set", "build.userCredentials=true")
    try:
        kubeconfig = token_kubeconfig(testenv, ids.hub.token, tmp_path / "hub.kubeconfig", namespace)
        hub = auth_state_hub(
            hubs, "kubernetes", testenv, kubeconfig=str(kubeconfig), operator_options={"token": ids.operator.token}
        )
        repo = private_repo(git_repos, testenv, "alice", "alice's course")
        image = contract.image_name(PREFIX, repo.url, head(repo))
        spec = {"repoUrl": repo.url, "ref": "main", "commit": head(repo), "image": image, "userCredentials": True}
        # Secrets the student cannot read, named as the operator names a build's hand-over:
        # one nobody's build owns, and one another build owns.
        other = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
        owner = json.loads(
            kubectl(
                "create",
                "-o",
                "json",
                "-f",
                "-",
                input=json.dumps(
                    contract.build_manifest(
                        contract.BuildSpec(
                            other.url, "main", head(other), contract.image_name(PREFIX, other.url, head(other))
                        ),
                        namespace,
                    )
                ),
            )
        )
        planted_secret(kubectl, namespace, "course-git", tokens(testenv)["hub"])
        planted_secret(kubectl, namespace, "course2-git", tokens(testenv)["hub"], owner=owner)
        assert refused(ids.student.run("get", "secrets", "-n", namespace, check=False))

        # The attack: builds of Alice's private repository named so that they take those Secrets.
        # The chart's admission policy refuses a hand-over asked for by anyone but the hub ...
        for name in ("course", "course2"):
            asked = ids.student.run(
                "create",
                "-f",
                "-",
                check=False,
                input=json.dumps(
                    {
                        "apiVersion": contract.API_VERSION,
                        "kind": contract.KIND,
                        "metadata": {"name": name, "namespace": namespace},
                        "spec": spec,
                    }
                ),
            )
            assert refused(asked) and "only the hub may hand a user's credential" in asked.stderr, asked.stderr
        # ... and the operator, behind it, takes no Secret its build does not own, even from a
        # resource the hub's identity made.
        for name in ("course", "course2"):
            attack(
                ids.hub,
                {
                    "apiVersion": contract.API_VERSION,
                    "kind": contract.KIND,
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": spec,
                },
            )
        for name in ("course", "course2"):
            status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=180)["status"]
            assert status["phase"] == "Failed" and f"the Secret {name}-git" in status["message"], status
        assert not image_exists(docker_client, image)

        # Alice, with her own token, through the chart's identities: the hub hands it over, the
        # operator reads it; neither may do more with Secrets.
        events = launch_as(hub, "alice", repo)
        assert events[-1].get("ready"), events[-3:]
        assert hub.user_file("alice", "marker.txt") == "alice's course\n"
        assert refused(ids.hub.run("get", "secrets", "-n", namespace, check=False))
        assert ids.operator.run("get", "secret", "course-git", "-n", namespace, check=False).returncode == 0
        assert refused(ids.operator.run("get", "secrets", "-n", namespace, check=False))  # a list
        assert refused(ids.operator.run("create", "secret", "generic", "x", "-n", namespace, check=False))
        assert refused(ids.operator.run("delete", "secret", "course-git", "-n", namespace, check=False))
    finally:
        uninstall_chart(testenv, namespace)


def launch_as(hub, user: str, repo) -> list[dict]:
    response, events = hub.spawn_and_follow(user, {"repo": repo.url, "ref": "main"})
    assert response.status_code in (201, 202), response.text
    return events


def refused(result) -> bool:
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


@pytest.mark.e2e
def test_the_hub_identity_may_say_who_asked_for_a_build_but_not_change_what_it_builds_or_its_outcome(
    identities, kubectl, git_repos, testenv
):
    """Its `patch` is for a launch that joins a prebuild (the requested-by annotation): the
    spec stays immutable and the status stays the operator's."""
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    hub, namespace = identities.as_("hub"), identities.namespace
    spec = contract.BuildSpec(repo.url, "main", head(repo), contract.image_name(PREFIX, repo.url, head(repo)))
    name = attack(hub, contract.build_manifest(spec, namespace, contract.PREBUILD_REQUESTER))
    hub("annotate", "--overwrite", contract.PLURAL, name, "-n", namespace, f"{contract.ANNOTATION_REQUESTED_BY}=carol")
    annotations = kubectl.json("get", contract.PLURAL, name, "-n", namespace)["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_REQUESTED_BY] == "carol"
    other = contract.image_name(PREFIX, repo.url, "f" * 40)
    spec_patch = hub.run(
        "patch",
        contract.PLURAL,
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"commit": "f" * 40, "image": other}}),
        check=False,
    )
    assert spec_patch.returncode != 0 and "immutable" in spec_patch.stderr, spec_patch.stderr
    status_patch = hub.run(
        "patch",
        contract.PLURAL,
        name,
        "-n",
        namespace,
        "--type=merge",
        "--subresource=status",
        "-p",
        json.dumps({"status": {"phase": "Succeeded", "image": other}}),
        check=False,
    )
    assert status_patch.returncode != 0 and "forbidden" in status_patch.stderr.lower(), status_patch.stderr


def forged(namespace: str, spec: contract.BuildSpec, name: str, **annotations: str) -> dict:
    manifest = contract.build_manifest(spec, namespace)
    manifest["metadata"]["name"] = name
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    return manifest


@pytest.mark.e2e
def test_only_the_hub_says_who_asked_for_a_build(identities, victim_hub, kubectl, git_repos, testenv, tmp_path):
    """The attack of the first pass's main, with the limit at 3: a namespace user created three
    slow builds annotated `requested-by: alice`, and Alice's own launch was refused at once
    (429 "You already have 3 builds waiting or running", naming builds she never asked for)."""
    namespace, base = identities.namespace, testenv["R2D_SINGLEUSER_IMAGE"]
    repos = [dockerfile_repo(git_repos, base) for _ in range(3)]
    specs = [contract.BuildSpec(r.url, "main", head(r), contract.image_name(PREFIX, r.url, head(r))) for r in repos]
    requested_by, replaces = contract.ANNOTATION_REQUESTED_BY, contract.ANNOTATION_REPLACES
    for index, spec in enumerate(specs):
        for forged_annotations in (
            {requested_by: "alice"},
            {requested_by: contract.PREBUILD_REQUESTER},
            {replaces: "f" * 40},
        ):
            answer = identities.student.run(
                "create",
                "-f",
                "-",
                check=False,
                input=json.dumps(
                    forged(namespace, spec, f"forged-{index}-{uuid.uuid4().hex[:4]}", **forged_annotations)
                ),
            )
            assert refused(answer) and "only the hub may" in answer.stderr, answer.stderr
        # Without them the student's builds may exist: they queue as one shared "others" turn.
        attack(identities.student, forged(namespace, spec, f"plain-{index}"))
    # The hub's identity may say who asked; nobody else may change it afterwards, not even an admin.
    hub_made = attack(identities.hub, forged(namespace, specs[0], "by-the-hub", **{requested_by: "bob"}))
    for who in (kubectl, identities.operator):
        changed = who.run(
            "annotate",
            "--overwrite",
            contract.PLURAL,
            hub_made,
            "-n",
            namespace,
            f"{requested_by}=mallory",
            check=False,
        )
        assert changed.returncode != 0, changed.stdout
    status = kubectl.run(
        "patch",
        contract.PLURAL,
        hub_made,
        "-n",
        namespace,
        "--type=merge",
        "--subresource=status",
        "-p",
        json.dumps({"status": {"phase": "Failed"}}),
        check=False,
    )
    assert refused(status) and "only the operator writes" in status.stderr, status.stderr

    # Alice's launch is hers alone to count: not refused.
    alice = dockerfile_repo(git_repos, base, marker="alice's own")
    response, events = victim_hub.spawn_and_follow("alice", {"repo": alice.url, "ref": "main"})
    assert response.status_code in (201, 202), response.text
    assert events[-1].get("ready"), events[-3:]


@pytest.mark.e2e
def test_the_operators_credentials_clone_only_what_the_hub_asked_for(
    identities, hubs, kubectl, git_repos, testenv, tmp_path, docker_client
):
    """A namespace user's resource for a private repository was cloned with the operator's own
    credentials: the image of a repository its author may not read, built for them."""
    from test_private_repos import private_repo, tokens

    namespace = identities.namespace
    credentials = tmp_path / "operator-git.json"
    credentials.write_text(
        json.dumps({f"http://{testenv['R2D_BRIDGE_IP']}": {"username": "hub", "token": tokens(testenv)["hub"]}})
    )
    kubeconfig = token_kubeconfig(testenv, identities.hub.token, tmp_path / "hub.kubeconfig", namespace)
    hubs(
        "kubernetes",
        kubeconfig=str(kubeconfig),
        operator_options={"token": identities.operator.token, "git_credentials": str(credentials)},
    )
    repo = private_repo(git_repos, testenv, "alice", "alice's private course")
    spec = contract.BuildSpec(repo.url, "main", head(repo), contract.image_name(PREFIX, repo.url, head(repo)))
    name = attack(identities.student, forged(namespace, spec, f"tenant-{uuid.uuid4().hex[:6]}"))
    status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=180)["status"]
    assert status["phase"] == "Failed", status
    assert not image_exists(docker_client, spec.image)
