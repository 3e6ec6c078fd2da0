"""Builds that push to a real registry (the CNCF distribution registry of `make testenv`),
checked through the registry's own API, never through the operator's word for it."""

from __future__ import annotations

import json

import pytest
import requests

from repo2docker_buildcore import contract
from repo2docker_buildcore.build import ALREADY_PUSHED, PUSHED_EXISTING
from support.builds import create_build, dockerfile_repo, get_build, head, image_exists, tagged, wait_phase
from support.env import both_repo2docker_versions
from support.operator import ContainerWatcher, free_port
from support.registry import empty_registry, login_config, registry_tags
from support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(testenv, namespace) -> str:
    """Images of this test live in a repository path of their own in the registry."""
    return f"{testenv['R2D_REGISTRY']}/{namespace}/r2d-test-"


def repository(image: str) -> str:
    """'127.0.0.1:5000/ns/r2d-test-x:sha' → 'ns/r2d-test-x', the registry's name for it."""
    return image.split("/", 1)[1].rsplit(":", 1)[0]


def everything_said(kubectl, namespace: str, name: str, op) -> str:
    """Status, events and the operator's log: where a leaked secret would show."""
    events = kubectl("get", "events", "-n", namespace, "-o", "json")
    return json.dumps(get_build(kubectl, namespace, name)) + events + op.log()


@both_repo2docker_versions
def test_push_puts_the_tag_in_the_registry(
    kubectl, namespace, operator_factory, git_repos, base, prefix, testenv, tmp_path, docker_client
):
    op = operator_factory(push=True, docker_config=login_config(testenv, tmp_path / "push"), image_prefix=prefix)
    repo = dockerfile_repo(git_repos, base, marker="pushed")
    commit = head(repo)
    name = create_build(kubectl, namespace, repo.url, commit, prefix=prefix)
    obj = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=300)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["message"] == f"Built and pushed {obj['spec']['image']}."
    assert tagged(status["logTail"])
    assert registry_tags(testenv, repository(obj["spec"]["image"])) == [commit]
    assert testenv["R2D_REGISTRY_PASSWORD"] not in everything_said(kubectl, namespace, name, op)


def test_wrong_credentials_fail_the_build_saying_the_push_was_refused(
    kubectl, namespace, operator_factory, git_repos, base, prefix, testenv, tmp_path
):
    op = operator_factory(
        push=True,
        docker_config=login_config(testenv, tmp_path / "bad", password="Not-The-Password"),
        image_prefix=prefix,
    )
    repo = dockerfile_repo(git_repos, base)
    name = create_build(kubectl, namespace, repo.url, head(repo), prefix=prefix)
    obj = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=120)
    assert obj["status"]["phase"] == "Failed"
    assert f"The registry {testenv['R2D_REGISTRY']} refused the push" in obj["status"]["message"], obj["status"]
    assert registry_tags(testenv, repository(obj["spec"]["image"])) == []
    said = everything_said(kubectl, namespace, name, op)
    assert "Not-The-Password" not in said and testenv["R2D_REGISTRY_PASSWORD"] not in said


def test_local_image_is_pushed_not_rebuilt_and_a_registry_image_is_not_rebuilt(
    kubectl, namespace, operator_factory, git_repos, base, prefix, testenv, tmp_path, docker_client
):
    op = operator_factory(push=True, docker_config=login_config(testenv, tmp_path / "push"), image_prefix=prefix)
    repo = dockerfile_repo(git_repos, base)
    commit = head(repo)
    image = contract.image_name(prefix, repo.url, commit)
    name_in_docker, tag = image.rsplit(":", 1)
    docker_client.images.get(testenv["R2D_BASE_IMAGE"]).tag(name_in_docker, tag)  # built before push was on
    with ContainerWatcher(docker_client, op.instance) as watcher:
        name = create_build(kubectl, namespace, repo.url, commit, prefix=prefix)
        status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=120)["status"]
        assert (status["phase"], status["message"]) == ("Succeeded", PUSHED_EXISTING)
        assert registry_tags(testenv, repository(image)) == [commit]

        # In the registry but not in this daemon (another node built it): still no build.
        docker_client.images.remove(image, force=True)
        kubectl("delete", contract.PLURAL, name, "-n", namespace)
        name = create_build(kubectl, namespace, repo.url, commit, prefix=prefix)
        status = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=120)["status"]
        assert (status["phase"], status["message"]) == ("Succeeded", ALREADY_PUSHED)
    assert watcher.seen_ids == {}, "a build container ran for an image that needed none"
    assert not image_exists(docker_client, image)  # servers pull it; the operator does not


def test_unreachable_registry_is_retried_with_backoff_until_it_answers(
    kubectl, namespace, operator_factory, git_repos, base, testenv, tmp_path
):
    port = free_port()
    prefix = f"127.0.0.1:{port}/{namespace}/r2d-test-"
    operator_factory(push=True, image_prefix=prefix)
    repo = dockerfile_repo(git_repos, base)
    name = create_build(kubectl, namespace, repo.url, head(repo), prefix=prefix)

    def says_unreachable():
        status = get_build(kubectl, namespace, name).get("status", {})
        return status if "could not be reached" in status.get("message", "") else None

    status = wait_until(says_unreachable, timeout=60, interval=0.3, what="the status to say the registry is down")
    assert status["phase"] == "Pending" and "Retrying in" in status["message"], status

    with empty_registry(testenv, port, tmp_path, wait=False):
        obj = wait_phase(kubectl, namespace, name, "Succeeded", "Failed", timeout=180)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        repo_name = repository(obj["spec"]["image"])
        tags = requests.get(f"http://127.0.0.1:{port}/v2/{repo_name}/tags/list", timeout=10).json()["tags"]
        assert tags == [head(repo)]
