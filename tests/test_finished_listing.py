"""The finished builds the TTL sweep learns at start, from the real API server: an empty
namespace (the API server answers `"rows": null`), paging, and the time read from
`status.finishedAt` (which only the operator writes), never from a label anyone may set."""

from __future__ import annotations

import json
import time

import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.kubeapi import connect
from repo2docker_buildcore.resources import BuildResources
from support.operator import OperatorProcess
from support.waiting import wait_until

pytestmark = pytest.mark.integration


def a_build(kubectl, namespace: str, index: int, labels: dict | None = None) -> dict:
    url = f"https://example.org/finished/repo-{index}"
    commit = f"{index:040x}"
    spec = contract.BuildSpec(url, "main", commit, contract.image_name("r2d-test-finished-", url, commit))
    manifest = contract.build_manifest(spec, namespace, requested_by="ann")
    manifest["metadata"]["labels"].update(labels or {})
    return json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)))


def released(kubectl, namespace: str, obj: dict, finished_at: int) -> None:
    """As the operator releases a new build whose image exists: phase and finish in one write."""
    kubectl(
        "patch",
        contract.PLURAL,
        obj["metadata"]["name"],
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Succeeded", contract.STATUS_FINISHED_AT: finished_at}}),
    )


async def finished(testenv, namespace: str) -> list[tuple]:
    api = await connect(testenv["KUBECONFIG"])
    try:
        return [item async for item in BuildResources(api).list_finished(namespace, page=2)]
    finally:
        await api.close()


async def test_an_empty_namespace_has_no_finished_builds(testenv, kubectl, namespace, crd):
    assert await finished(testenv, namespace) == []


async def test_released_builds_are_listed_page_by_page_with_the_time_from_status(testenv, kubectl, namespace, crd):
    objs = [
        a_build(kubectl, namespace, index, {contract.LABEL_FINISHED_AT: "1"} if index == 0 else None)
        for index in range(5)
    ]
    finished_at = int(time.time())
    for obj in objs[:4]:  # the fifth is not released
        released(kubectl, namespace, obj, finished_at)
    listed = await finished(testenv, namespace)
    # The first one's forged label ("1") is not what its TTL counts from.
    assert sorted(listed) == sorted(
        (namespace, o["metadata"]["name"], o["metadata"]["uid"], finished_at) for o in objs[:4]
    )


async def test_a_stale_version_is_not_written_over(testenv, kubectl, namespace, crd):
    obj = a_build(kubectl, namespace, 1)
    released(kubectl, namespace, obj, int(time.time()))
    api = await connect(testenv["KUBECONFIG"])
    try:
        resources = BuildResources(api)
        meta = obj["metadata"]
        assert (
            await resources.patch_status_at(namespace, meta["name"], meta["resourceVersion"], {"phase": "Failed"})
            is False
        )
    finally:
        await api.close()


def test_a_restarted_operator_expires_released_builds_by_their_status(testenv, kubectl, namespace, crd, tmp_path):
    """Released (as a cached build is: status only, no label) before this operator started,
    with a TTL that has passed: deleted. And it starts without the warning it logged at every
    start in a namespace without finished builds ("cannot list finished builds yet
    ('NoneType' object is not iterable)", retried for ever)."""
    quiet = OperatorProcess(testenv, namespace, tmp_path, **{"finished-ttl": 30}).start()
    time.sleep(3)  # the sweep's first listing (it retried after 1 s, 2 s, ... with the warning)
    quiet.stop()
    assert "cannot list finished builds" not in quiet.log(), quiet.log()[-2000:]
    old, recent = a_build(kubectl, namespace, 1), a_build(kubectl, namespace, 2)
    released(kubectl, namespace, old, int(time.time()) - 60)
    released(kubectl, namespace, recent, int(time.time()))
    operator = OperatorProcess(testenv, namespace, tmp_path, **{"finished-ttl": 30}).start()
    try:
        wait_until(
            lambda: old["metadata"]["name"] not in kubectl("get", contract.PLURAL, "-n", namespace, "-o", "name"),
            timeout=30,
            what="the expired build to be deleted",
        )
        assert recent["metadata"]["name"] in kubectl("get", contract.PLURAL, "-n", namespace, "-o", "name")
    finally:
        operator.stop()
    assert "cannot list finished builds" not in operator.log(), operator.log()[-2000:]
