"""What the operator asks of the API server for builds that need no build, counted on the real
API server (its own request counters), so that the cost of a cached resource cannot grow with
the number of resources unnoticed.

Serial: the API server's counters are the whole server's, so nothing else may run meanwhile.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter

import docker
import pytest

from repo2docker_buildcore import contract
from support.operator import OperatorProcess
from support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.serial]
PREFIX = "r2d-test-cached-"


def build_requests(
    kubectl, key=lambda labels: (labels["verb"], labels.get("subresource", "")), where=lambda labels: True
) -> Counter:
    """apiserver_request_total for build resources `where` it holds, summed by `key` (of the
    metric's labels; by default (verb, subresource))."""
    counts: Counter = Counter()
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        if line.startswith("apiserver_request_total{") and f'resource="{contract.PLURAL}"' in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if where(labels):
                counts[key(labels)] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def settled(kubectl, namespace: str, base: str, count: int, counter) -> tuple[Counter, list[str]]:
    """Create `count` cached resources, wait until all are Succeeded; what `counter` counted
    meanwhile, and the images to remove."""
    before = counter()
    images = cached_resources(kubectl, namespace, base, count)
    try:
        wait_until(
            lambda: (
                kubectl("get", contract.PLURAL, "-n", namespace, "-o", "jsonpath={.items[*].status.phase}")
                .split()
                .count("Succeeded")
                == count
            ),
            timeout=300,
            interval=0.5,
            what=f"{count} cached builds to succeed",
        )
        time.sleep(2)  # anything the operator would still write
        return counter() - before, images
    except BaseException:
        remove(images)
        raise


def remove(images: list[str]) -> None:
    client = docker.from_env()
    for image in images:
        client.images.remove(image)


def cached_resources(kubectl, namespace: str, base: str, count: int) -> list[str]:
    """`count` resources of distinct repositories whose images are on the daemon already."""
    client, names = docker.from_env(), []
    for index in range(count):
        url = f"https://example.org/cached/repo-{uuid.uuid4().hex[:8]}-{index}"
        spec = contract.BuildSpec(url, "main", uuid.uuid4().hex + uuid.uuid4().hex[:8], "")
        spec = contract.BuildSpec(url, "main", spec.commit, contract.image_name(PREFIX, url, spec.commit))
        client.images.get(base).tag(spec.image)
        manifest = contract.build_manifest(spec, namespace, requested_by=f"user{index % 7}")
        kubectl("create", "-f", "-", input=json.dumps(manifest))
        names.append(spec.image)
    return names


@pytest.mark.parametrize("count", [10, 100])
def test_a_resource_whose_image_exists_costs_a_constant_number_of_requests(
    count, testenv, kubectl, namespace, crd, base, tmp_path
):
    operator = OperatorProcess(testenv, namespace, tmp_path, image_prefix=PREFIX).start()
    try:
        made, images = settled(kubectl, namespace, base, count, lambda: build_requests(kubectl))
    finally:
        operator.stop()
    remove(images)
    lists = made[("LIST", "")]
    # Deletions are not counted: the namespaces of earlier tests are removed meanwhile (this
    # operator collects nothing: its TTL is off).
    per_resource = {key: value / count for key, value in made.items() if key[0] not in ("LIST", "WATCH", "DELETE")}
    print(f"{count} cached resources: {dict(made)}")
    # Listing is not per resource: each LIST of a custom resource filters every object of the
    # namespace on the API server, so one per resource costs O(N²) for a burst of N.
    assert lists <= 3, made
    # The test's own create, then the operator's one write: the outcome with its release in
    # status (guarded by the version the watch showed: no read). No label, finalizer, claim,
    # queue position, Event or read. (At f7ac276: 3.4 GET, 3.0 PATCH and 3.4
    # status PATCH per resource, and a daemon each.)
    assert per_resource == {("POST", ""): 1, ("PATCH", "status"): 1}, made


def status_writes(kubectl) -> Counter:
    """Status writes of build resources by HTTP code (accepted 200, refused 409)."""
    return build_requests(
        kubectl,
        key=lambda labels: labels["code"],
        where=lambda labels: (labels["verb"], labels.get("subresource")) == ("PATCH", "status"),
    )


def test_with_two_builders_each_cached_resource_is_decided_by_exactly_one(
    testenv, kubectl, namespace, crd, base, tmp_path
):
    """Both builders see every new resource and both decide it; the API server accepts the
    first decision (guarded by the version both saw) and refuses the other: one outcome per
    resource, never two writers."""
    count = 30
    instance = f"t{uuid.uuid4().hex[:8]}"
    operators = [
        OperatorProcess(
            testenv,
            namespace,
            tmp_path,
            instance=instance,
            image_prefix=PREFIX,
            node_name=node,
            docker_socket=testenv["R2D_NODE_DOCKER_SOCKET"],
        ).start()
        for node in ("r2d-node", "r2d-node-b")
    ]
    try:
        made, images = settled(kubectl, namespace, base, count, lambda: status_writes(kubectl))
        builders = Counter(
            kubectl("get", contract.PLURAL, "-n", namespace, "-o", "jsonpath={.items[*].status.builder}").split()
        )
    finally:
        for operator in operators:
            operator.stop()
    remove(images)
    print(f"two builders, {count} cached resources: status writes {dict(made)}, decided by {dict(builders)}")
    assert made["200"] == count, made
    assert sum(builders.values()) == count, builders
