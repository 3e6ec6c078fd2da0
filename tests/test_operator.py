"""The operator as a process against the real kube-apiserver and dockerd.

Build containers are observed from Docker (``ContainerWatcher``), never from the operator's
own counters, so the cap and the no-second-build guarantees are checked where they matter.
"""

from __future__ import annotations

import datetime
import json
import socket
import time

import docker.errors
import pytest

from repo2docker_buildcore import contract
from support.builds import (
    IMAGE_PREFIX,
    create_build,
    dockerfile_repo,
    expected_provenance,
    get_build,
    head,
    image_exists,
    table_columns,
    tagged,
    wait_phase,
)
from support.env import both_repo2docker_versions
from support.operator import ContainerWatcher
from support.waiting import wait_until

pytestmark = pytest.mark.integration


@both_repo2docker_versions
def test_build_reaches_succeeded_with_an_existing_image(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    op = operator_factory()
    repo = dockerfile_repo(git_repos, base, marker="hello from the repo")
    name = create_build(kubectl, namespace, repo.url, head(repo))

    obj = wait_phase(kubectl, namespace, name, "Succeeded", "Failed")
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["image"] == obj["spec"]["image"]
    assert status["shortCommit"] == head(repo)[:7]
    assert tagged(status["logTail"])
    assert status["logLineCount"] >= len(status["logTail"]) > 0
    assert status["startTime"] and status["completionTime"] and status["containerId"]
    marker = docker_client.containers.run(status["image"], ["cat", "/home/jovyan/marker.txt"], remove=True)
    assert marker.decode() == "hello from the repo\n"
    # The finished build container is removed; the image stays.
    assert not docker_client.containers.list(all=True, filters={"label": [f"{contract.LABEL_INSTANCE}={op.instance}"]})

    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    reasons = {e["reason"] for e in events["items"]}
    assert {"Queued", "Building", "Succeeded"} <= reasons
    assert 'repo2docker_builds_total{outcome="succeeded"} 1.0' in op.metrics()


def test_existing_image_succeeds_without_running_repo2docker(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    op = operator_factory()
    repo = dockerfile_repo(git_repos, base)
    commit = head(repo)
    image = contract.image_name(IMAGE_PREFIX, repo.url, commit)
    repository, tag = image.rsplit(":", 1)
    docker_client.images.get(base).tag(repository, tag)
    try:
        with ContainerWatcher(docker_client, op.instance) as watcher:
            name = create_build(kubectl, namespace, repo.url, commit)
            status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed")["status"]
        assert status["phase"] == "Succeeded"
        assert "already exists" in status["message"]
        assert status["image"] == image
        assert "containerId" not in status
        assert watcher.seen_ids == {}
        assert 'repo2docker_builds_total{outcome="cached"} 1.0' in op.metrics()
    finally:
        docker_client.images.remove(image, force=True)


@both_repo2docker_versions
def test_concurrency_cap_holds_across_six_builds(kubectl, namespace, operator_factory, git_repos, base, docker_client):
    op = operator_factory(concurrency=2)
    repos = [dockerfile_repo(git_repos, base, sleep=3) for _ in range(6)]
    positions: dict[str, set[int]] = {}
    with ContainerWatcher(docker_client, op.instance) as watcher:
        names = [create_build(kubectl, namespace, r.url, head(r)) for r in repos]

        def all_done() -> bool:
            items = kubectl.json("get", contract.PLURAL, "-n", namespace)["items"]
            for item in items:
                pos = item.get("status", {}).get("queuePosition")
                if pos:
                    positions.setdefault(item["metadata"]["name"], set()).add(pos)
            return len(items) == 6 and all(i.get("status", {}).get("phase") in ("Succeeded", "Failed") for i in items)

        wait_until(all_done, timeout=240, interval=0.3, what="six builds to finish")
    phases = [get_build(kubectl, namespace, n)["status"]["phase"] for n in names]
    assert phases == ["Succeeded"] * 6
    assert watcher.max_running == 2, f"at most 2 build containers at once, Docker showed {watcher.max_running}"
    assert len(watcher.seen_ids) == 6 and all(len(ids) == 1 for ids in watcher.seen_ids.values())
    # Builds waited in a FIFO queue and said where they stood.
    assert max(p for ps in positions.values() for p in ps) >= 2, positions


def test_one_users_many_builds_do_not_all_go_before_anothers_first(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    op = operator_factory(concurrency=1)
    ann = [dockerfile_repo(git_repos, base, sleep=4) for _ in range(4)]
    bob = dockerfile_repo(git_repos, base)
    with ContainerWatcher(docker_client, op.instance) as watcher:
        anns = [create_build(kubectl, namespace, r.url, head(r), requested_by="ann") for r in ann]

        def phases(names):
            return [get_build(kubectl, namespace, n).get("status", {}).get("phase") for n in names]

        wait_until(
            lambda: sorted(phases(anns)) == ["Building", "Queued", "Queued", "Queued"],
            timeout=60,
            what="one of Ann's builds running, three queued",
        )
        bobs = create_build(kubectl, namespace, bob.url, head(bob), requested_by="bob")
        # Every reader of the status sees the order Bob's build will really have.
        wait_until(
            lambda: get_build(kubectl, namespace, bobs).get("status", {}).get("queuePosition") == 1,
            timeout=30,
            what="Bob's build to be first in the queue",
        )
        for name in [*anns, bobs]:
            assert (
                wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=240)["status"]["phase"]
                == "Succeeded"
            )
    started = [watcher.names[cid] for cid in sorted(watcher.running_since, key=watcher.running_since.get)]
    # Bob's one build started right after the build of Ann's that was running when he asked,
    # before any of her queued ones (first come, first served had put it fifth).
    assert len(started) == 5 and started.index(bobs) == 1, started
    assert watcher.max_running == 1


@both_repo2docker_versions
async def test_tag_branch_and_sha_resolved_as_the_spawner_does_build_their_own_commits(
    kubectl, namespace, operator_factory, git_repos, base, docker_client, testenv
):
    from repo2dockerspawner.options import RepoPolicy
    from repo2dockerspawner.refs import resolve_ref

    operator_factory()
    repo = dockerfile_repo(git_repos, base, marker="at the tag")
    repo.tag("v1")
    repo.commit({"marker.txt": "on the branch\n"})
    repo.branch("feature")
    sha = repo.commit({"marker.txt": "at the sha\n"})
    repo.commit({"marker.txt": "main moved on\n"})
    expected = {"v1": "at the tag\n", "feature": "on the branch\n", sha: "at the sha\n"}
    names = {}
    for ref in expected:
        commit = await resolve_ref(repo.url, ref, RepoPolicy(schemes=("http",), hosts=(testenv["R2D_BRIDGE_IP"],)))
        names[ref] = create_build(kubectl, namespace, repo.url, commit, ref=ref)
    for ref, marker in expected.items():
        status = wait_phase(kubectl, namespace, names[ref], "Succeeded", "Failed")["status"]
        assert status["phase"] == "Succeeded", status
        assert (
            docker_client.containers.run(status["image"], ["cat", "/home/jovyan/marker.txt"], remove=True).decode()
            == marker
        )


@both_repo2docker_versions
def test_deleting_a_building_resource_removes_its_container(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    op = operator_factory()
    repo = dockerfile_repo(git_repos, base, sleep=120)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    container_id = wait_phase(kubectl, namespace, name, "Building")["status"]["containerId"]
    assert docker_client.containers.get(container_id).status == "running"

    started = time.monotonic()
    kubectl("delete", contract.PLURAL, name, "-n", namespace, "--wait=false")

    def container_gone() -> bool:
        try:
            docker_client.containers.get(container_id)
            return False
        except docker.errors.NotFound:
            return True

    wait_until(container_gone, timeout=10, interval=0.1, what="the build container to be removed")
    assert time.monotonic() - started < 10
    wait_until(
        lambda: kubectl.run("get", contract.PLURAL, name, "-n", namespace, check=False).returncode != 0,
        timeout=15,
        what="the resource to be deleted (finalizer released)",
    )
    assert 'repo2docker_builds_total{outcome="cancelled"} 1.0' in op.metrics()


def test_sigkill_mid_build_then_restart_reattaches_without_a_second_build(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    op = operator_factory()
    repo = dockerfile_repo(git_repos, base, sleep=8)
    with ContainerWatcher(docker_client, op.instance) as watcher:
        name = create_build(kubectl, namespace, repo.url, head(repo))
        first = wait_phase(kubectl, namespace, name, "Building")["status"]
        op.kill()
        assert docker_client.containers.get(first["containerId"]).status == "running"  # the build lives on
        op.start()
        status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["containerId"] == first["containerId"]
    assert status["startTime"] == first["startTime"]
    uid = get_build(kubectl, namespace, name)["metadata"]["uid"]
    assert watcher.seen_ids[uid] == {first["containerId"]}, "a second build container was started"
    assert tagged(status["logTail"])


def test_build_that_finished_while_the_operator_was_down_is_completed(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    op = operator_factory()
    repo = dockerfile_repo(git_repos, base, sleep=2)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    container_id = wait_phase(kubectl, namespace, name, "Building")["status"]["containerId"]
    op.kill()
    wait_until(
        lambda: docker_client.containers.get(container_id).status == "exited",
        timeout=60,
        what="the build to finish while no operator runs",
    )
    op.start()
    status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded"
    assert image_exists(docker_client, status["image"])
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)


def test_build_past_its_timeout_is_killed_and_failed(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    operator_factory(build_timeout=4)
    repo = dockerfile_repo(git_repos, base, sleep=60)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    building = wait_phase(kubectl, namespace, name, "Building")["status"]
    status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=60)["status"]
    assert status["phase"] == "Failed"
    assert "longer than the 4 s limit" in status["message"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(building["containerId"])
    assert "image" not in status


@both_repo2docker_versions
def test_failing_dockerfile_fails_with_its_log(kubectl, namespace, operator_factory, git_repos, base, docker_client):
    operator_factory()
    repo = dockerfile_repo(git_repos, base, fail=True)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    obj = wait_phase(kubectl, namespace, name, "Succeeded", "Failed")
    status = obj["status"]
    assert status["phase"] == "Failed"
    assert "repo2docker exited with code" in status["message"]
    # The message carries the failing step: its instruction and its own output.
    failing = status["message"].split("Last log lines:\n", 1)[1].splitlines()
    assert "RUN echo 'this build is meant to fail'" in failing[0], status["message"]
    assert "this build is meant to fail" in failing[1:], status["message"]
    assert any("this build is meant to fail" in line for line in status["logTail"])
    assert not image_exists(docker_client, obj["spec"]["image"])
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    assert any(e["reason"] == "Failed" and e["type"] == "Warning" for e in events["items"])


def test_repository_that_does_not_exist_fails_with_the_clone_error(kubectl, namespace, operator_factory, testenv):
    operator_factory()
    url = f"{testenv['R2D_GIT_URL']}/no-such-repo.git"
    name = create_build(kubectl, namespace, url, "0" * 40)
    status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed")["status"]
    assert status["phase"] == "Failed"
    # The clone's own error reaches the user: git names the repository it could not find.
    assert "no-such-repo.git" in status["message"] and "not found" in status["message"].lower(), status["message"]


def test_image_outside_the_prefix_is_refused(kubectl, namespace, operator_factory, git_repos, base):
    operator_factory(image_prefix="r2d-test-")
    repo = dockerfile_repo(git_repos, base)
    commit = head(repo)
    manifest = contract.build_manifest(contract.BuildSpec(repo.url, "main", commit, "python:3"), namespace)
    kubectl("create", "-f", "-", input=json.dumps(manifest))
    status = wait_phase(kubectl, namespace, manifest["metadata"]["name"], "Failed")["status"]
    assert f"must be {contract.image_name('r2d-test-', repo.url, commit)}, not python:3" in status["message"]


def test_build_image_outside_the_allow_list_is_refused(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    """Build containers hold the node's Docker socket: whoever may create a resource must not
    choose what runs with it."""
    op = operator_factory()
    repo = dockerfile_repo(git_repos, base)
    with ContainerWatcher(docker_client, op.instance) as watcher:
        name = create_build(kubectl, namespace, repo.url, head(repo), buildImage=base)
        status = wait_phase(kubectl, namespace, name, "Failed", "Succeeded")["status"]
    assert status["phase"] == "Failed" and "is not one this operator allows" in status["message"]
    assert watcher.seen_ids == {}


def test_api_server_rejects_invalid_specs(kubectl, namespace, crd):
    manifest = {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"repoUrl": "file:///etc", "ref": "--upload-pack=touch /tmp/x", "commit": "abc", "image": "r2d-x:1"},
    }
    proc = kubectl.run("create", "-f", "-", input=json.dumps(manifest), check=False)
    assert proc.returncode != 0
    for field in ("spec.repoUrl", "spec.ref", "spec.commit"):
        assert field in proc.stderr, proc.stderr


def test_spec_is_immutable(kubectl, namespace, crd):
    commit = "a" * 40
    name = create_build(kubectl, namespace, "https://example.org/a/b", commit)
    proc = kubectl.run(
        "patch",
        contract.PLURAL,
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"commit": "b" * 40}}),
        check=False,
    )
    assert proc.returncode != 0 and "immutable" in proc.stderr


def test_kubectl_get_shows_the_printer_columns(kubectl, namespace, operator_factory, git_repos, base):
    operator_factory()
    repo = dockerfile_repo(git_repos, base)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    wait_phase(kubectl, namespace, name, "Succeeded")
    for kind in ("r2dbuilds", "r2dbuild", "r2db", "repo2dockerbuilds"):
        out = kubectl("get", kind, "-n", namespace).splitlines()
        assert out[0].split() == ["NAME", "REPO", "COMMIT", "PHASE", "IMAGE", "NODE", "AGE"]
        row = out[1].split()
        assert row[:4] == [name, repo.url, head(repo)[:7], "Succeeded"]
        assert row[4].startswith(IMAGE_PREFIX)
        assert row[5] == socket.gethostname()  # the builder that claimed it: the operator's host
    wide = kubectl("get", "r2dbuilds", "-n", namespace, "-o", "wide").splitlines()[0].split()
    assert "REF" in wide and "QUEUE" in wide
    assert name in kubectl("get", "repo2docker", "-n", namespace)  # the category


def test_finished_resources_are_deleted_after_their_ttl_and_images_stay(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    operator_factory(finished_ttl=2)
    repo = dockerfile_repo(git_repos, base)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    image = wait_phase(kubectl, namespace, name, "Succeeded")["status"]["image"]
    wait_until(
        lambda: kubectl.run("get", contract.PLURAL, name, "-n", namespace, check=False).returncode != 0,
        timeout=30,
        what="the finished resource to expire",
    )
    assert image_exists(docker_client, image)


def test_cap_holds_across_a_restart(kubectl, namespace, operator_factory, git_repos, base, docker_client):
    """Two builds run and one waits when the operator dies; its successor must count the two
    running containers before starting the third, and must not start them again."""
    op = operator_factory(concurrency=2)
    # Long enough that the moment with two running and one queued outlasts a loaded machine's
    # slow start of the third resource's handling.
    repos = [dockerfile_repo(git_repos, base, sleep=20) for _ in range(3)]
    with ContainerWatcher(docker_client, op.instance) as watcher:
        names = [create_build(kubectl, namespace, r.url, head(r)) for r in repos]

        def two_building_one_queued() -> bool:
            phases = sorted(get_build(kubectl, namespace, n).get("status", {}).get("phase", "") for n in names)
            return phases == ["Building", "Building", "Queued"]

        wait_until(two_building_one_queued, timeout=60, what="two builds running and one queued")
        op.kill()
        op.start()
        for n in names:
            assert (
                wait_phase(kubectl, namespace, n, "Succeeded", "Failed", timeout=120)["status"]["phase"] == "Succeeded"
            )
    assert watcher.max_running == 2
    assert len(watcher.seen_ids) == 3 and all(len(ids) == 1 for ids in watcher.seen_ids.values())


def test_the_next_build_waits_in_a_created_container_that_a_freed_slot_only_starts(
    kubectl, namespace, operator_factory, git_repos, base, docker_client
):
    # Alone (no other builder's Lease) a lease duration after its start: then it makes ahead.
    op = operator_factory(concurrency=1, lease_duration=3)
    # The first runs long enough for the queue to be looked at on a loaded machine.
    repos = [dockerfile_repo(git_repos, base, sleep=s) for s in (40, 1, 1, 60, 1)]

    def containers(name: str) -> list:
        return docker_client.containers.list(all=True, filters={"label": f"{contract.LABEL_BUILD_NAME}={name}"})

    with ContainerWatcher(docker_client, op.instance) as watcher:
        first = create_build(kubectl, namespace, repos[0].url, head(repos[0]))
        wait_phase(kubectl, namespace, first, "Building", timeout=60)
        second = create_build(kubectl, namespace, repos[1].url, head(repos[1]))
        ahead = wait_until(lambda: containers(second), timeout=30, what="the next build's container, made ahead")[0]
        assert ahead.status == "created" and get_build(kubectl, namespace, second)["status"]["phase"] == "Queued"
        time.sleep(1.1)  # creation times have whole seconds: the third is created after the second
        third = create_build(kubectl, namespace, repos[2].url, head(repos[2]))
        wait_until(
            lambda: get_build(kubectl, namespace, third).get("status", {}).get("queuePosition") == 2,
            timeout=30,
            what="the third build to queue behind the second",
        )
        assert not containers(third)  # one slot: only the next in line
        # Its operator dies: the created container holds no slot, and it is the one that runs.
        op.kill()
        op.start()
        for name in (first, second, third):
            assert (
                wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=120)["status"]["phase"]
                == "Succeeded"
            )
        uid = get_build(kubectl, namespace, second)["metadata"]["uid"]
        assert watcher.seen_ids[uid] == {ahead.id}

        # A queued build deleted while its container waits: the container goes with it.
        running = create_build(kubectl, namespace, repos[3].url, head(repos[3]))
        wait_phase(kubectl, namespace, running, "Building", timeout=60)
        deleted = create_build(kubectl, namespace, repos[4].url, head(repos[4]))
        wait_until(lambda: containers(deleted), timeout=30, what="the queued build's container, made ahead")
        kubectl("delete", contract.PLURAL, deleted, "-n", namespace, "--wait=false")
        wait_until(lambda: not containers(deleted), timeout=30, what="the deleted build's container to go")
    assert watcher.max_running == 1  # created containers are not running builds


@both_repo2docker_versions
def test_a_built_image_s_provenance_is_in_status_and_in_kubectl_s_wide_columns(
    kubectl, namespace, operator_factory, git_repos, base, docker_client, build_image
):
    operator_factory(node_name="prov-node")
    repo = dockerfile_repo(git_repos, base, sleep=2)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    provenance = dict(status["provenance"])
    duration = provenance.pop("durationSeconds")
    assert provenance == expected_provenance(docker_client, build_image, base, "prov-node")
    assert 2 <= duration < 120
    columns = table_columns(kubectl("get", contract.PLURAL, name, "-n", namespace, "-o", "wide"))[0]
    assert columns["REPO2DOCKER"] == provenance["repo2dockerVersion"] and float(columns["DURATION"]) == duration
    assert "REPO2DOCKER" not in table_columns(kubectl("get", contract.PLURAL, "-n", namespace))[0]  # wide only


async def test_a_queued_prebuild_waits_behind_launches_until_a_launch_joins_it(
    kubectl, namespace, operator_factory, git_repos, base, testenv
):
    from repo2docker_buildcore.kubeapi import connect
    from repo2docker_buildcore.resources import BuildResources

    operator_factory(concurrency=1)
    slow, watched, other = (dockerfile_repo(git_repos, base, sleep=s) for s in (30, 0, 0))
    create_build(kubectl, namespace, slow.url, head(slow), requested_by="ann")
    prebuild = create_build(kubectl, namespace, watched.url, head(watched), requested_by=contract.PREBUILD_REQUESTER)
    time.sleep(1.1)  # whole-second creation times: Bob's is the younger
    bobs = create_build(kubectl, namespace, other.url, head(other), requested_by="bob")

    def positions() -> tuple:
        return tuple(get_build(kubectl, namespace, n).get("status", {}).get("queuePosition") for n in (prebuild, bobs))

    wait_until(lambda: positions() == (2, 1), timeout=60, what="the prebuild to queue behind Bob's younger launch")
    api = await connect(testenv["KUBECONFIG"])
    try:
        resources = BuildResources(api)
        uid_of = lambda n: get_build(kubectl, namespace, n)["metadata"]["uid"]  # noqa: E731
        assert not await resources.take_over_prebuild(namespace, bobs, uid_of(bobs), "carol")  # not a prebuild
        # Carol launches the prebuilt commit (what KubernetesBackend.ensure does when it joins).
        assert await resources.take_over_prebuild(namespace, prebuild, uid_of(prebuild), "carol")
    finally:
        await api.close()
    wait_until(lambda: positions() == (1, 2), timeout=30, what="Carol's joined build to go first (it is older)")
    annotations = get_build(kubectl, namespace, prebuild)["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_REQUESTED_BY] == "carol"


def test_unreachable_docker_daemon_fails_the_build_with_a_message(kubectl, namespace, operator_factory):
    operator_factory(docker_host="unix:///nonexistent/docker.sock")
    name = create_build(kubectl, namespace, "https://example.org/a/b", "c" * 40)
    status = wait_phase(kubectl, namespace, name, "Failed", "Succeeded")["status"]
    assert status["phase"] == "Failed"
    assert "Docker daemon did not answer" in status["message"]


def test_memory_limit_is_refused_for_buildx_releases_and_applied_for_older_ones(
    kubectl, namespace, operator_factory, git_repos, base, testenv, docker_client
):
    # Configured for every build, with the default (buildx) image: refused at start, in words.
    with pytest.raises(AssertionError, match="cannot limit a build's memory"):
        operator_factory(memory_limit="1Gi")
    op = operator_factory(allow_build_image=testenv["R2D_BUILD_IMAGE_2024"])
    repo = dockerfile_repo(git_repos, base)
    new = create_build(kubectl, namespace, repo.url, head(repo), resources={"memory": "1Gi"})
    status = wait_phase(kubectl, namespace, new, "Succeeded", "Failed")["status"]
    assert status["phase"] == "Failed" and "cannot limit a build's memory" in status["message"], status
    assert "containerId" not in status  # refused before any container ran

    old_repo = dockerfile_repo(git_repos, base)
    with ContainerWatcher(docker_client, op.instance) as watcher:
        old = create_build(
            kubectl,
            namespace,
            old_repo.url,
            head(old_repo),
            resources={"memory": "1Gi"},
            buildImage=testenv["R2D_BUILD_IMAGE_2024"],
        )
        building = wait_phase(kubectl, namespace, old, "Building")["status"]
        config = docker_client.containers.get(building["containerId"]).attrs
        status = wait_phase(kubectl, namespace, old, "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    assert config["HostConfig"]["Memory"] == 2**30
    assert config["Config"]["Cmd"][config["Config"]["Cmd"].index("--build-memory-limit") + 1] == str(2**30)
    assert len(watcher.seen_ids) == 1


def test_finished_resources_leave_the_watch_and_still_expire_after_a_restart(
    kubectl, namespace, operator_factory, git_repos, base
):
    """A finished build is marked (label with its finish time, no finalizer, status.finishedAt),
    so a restarted operator neither watches nor re-handles it, and still deletes it when its
    TTL ends."""
    op = operator_factory(finished_ttl=15)
    repo = dockerfile_repo(git_repos, base)
    name = create_build(kubectl, namespace, repo.url, head(repo))
    wait_phase(kubectl, namespace, name, "Succeeded")
    meta = wait_until(
        lambda: (
            (m := get_build(kubectl, namespace, name)["metadata"]).get("labels", {}).get(contract.LABEL_FINISHED_AT)
            and m
        ),
        timeout=10,
        what="the finished mark",
    )
    assert not meta.get("finalizers"), meta.get("finalizers")
    released = wait_until(
        lambda: get_build(kubectl, namespace, name)["status"].get(contract.STATUS_FINISHED_AT),
        timeout=10,
        what="status.finishedAt",
    )
    assert released == int(meta["labels"][contract.LABEL_FINISHED_AT])
    op.kill()
    op.start()  # its watch excludes the marked resource: only the finished-listing knows it
    wait_until(
        lambda: kubectl.run("get", contract.PLURAL, name, "-n", namespace, check=False).returncode != 0,
        timeout=40,
        what="the restarted operator to delete the expired resource",
    )


def test_a_queued_build_carries_an_estimated_start_from_the_builds_before_it(
    kubectl, namespace, operator_factory, git_repos, base
):
    operator_factory(concurrency=1)
    first = dockerfile_repo(git_repos, base, sleep=3)
    name = create_build(kubectl, namespace, first.url, head(first))
    assert wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=120)["status"]["phase"] == "Succeeded"
    running, queued = dockerfile_repo(git_repos, base, sleep=8), dockerfile_repo(git_repos, base)
    running_name = create_build(kubectl, namespace, running.url, head(running))
    wait_phase(kubectl, namespace, running_name, "Building", timeout=60)
    queued_name = create_build(kubectl, namespace, queued.url, head(queued))
    status = wait_until(
        lambda: (
            get_build(kubectl, namespace, queued_name).get("status", {}).get("estimatedStart")
            and get_build(kubectl, namespace, queued_name)["status"]
        ),
        timeout=30,
        what="an estimated start",
    )
    assert status["phase"] == "Queued"
    # From the one build this operator has seen (its slot time, a few seconds), less what the
    # running build has had: within a minute from now, not in the past by more than a moment.
    when = datetime.datetime.fromisoformat(status["estimatedStart"].replace("Z", "+00:00"))
    ahead = (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert -5 < ahead < 60, ahead
    done = wait_phase(kubectl, namespace, queued_name, "Succeeded", "Failed", timeout=120)["status"]
    assert "estimatedStart" not in done
