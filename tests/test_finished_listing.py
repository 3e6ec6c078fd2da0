"""The finished builds the TTL sweep learns at start, from the real API server: an empty
namespace (the API server answers `"items": null`), and a build released without its label
(an operator stopped between the two writes)."""

from __future__ import annotations

import json
import time

import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.resources import BuildResources, api_client
from support.operator import OperatorProcess
from support.waiting import wait_until

pytestmark = pytest.mark.integration


def a_build(kubectl, namespace: str, index: int) -> dict:
    url = f"https://example.org/finished/repo-{index}"
    commit = f"{index:040x}"
    spec = contract.BuildSpec(url, "main", commit, contract.image_name("r2d-test-finished-", url, commit))
    manifest = contract.build_manifest(spec, namespace, requested_by="ann")
    return json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)))


async def finished(resources: BuildResources, namespace: str) -> list[tuple]:
    return [item async for item in resources.list_finished(namespace, page=2)]


async def test_an_empty_namespace_has_no_finished_builds(testenv, kubectl, namespace, crd):
    api = await api_client(testenv["KUBECONFIG"])
    try:
        assert await finished(BuildResources(api), namespace) == []
    finally:
        await api.close()


async def test_released_builds_are_listed_page_by_page_and_an_unlabelled_one_is_labelled(
        testenv, kubectl, namespace, crd):
    api = await api_client(testenv["KUBECONFIG"])
    try:
        resources = BuildResources(api)
        objs = [a_build(kubectl, namespace, index) for index in range(5)]
        finished_at = int(time.time())
        for obj in objs:  # released, as the operator's first write of a new build's outcome does
            meta = obj["metadata"]
            written = await resources.patch_status_at(namespace, meta["name"], meta["resourceVersion"], {
                "phase": "Succeeded", contract.STATUS_FINISHED_AT: finished_at})
            assert written is not None
            if meta["name"] != objs[0]["metadata"]["name"]:  # the first one's operator stopped here
                assert await resources.label_finished(written, finished_at)
        # A stale version is refused: nothing is written over a change it has not seen.
        assert await resources.patch_status_at(namespace, objs[1]["metadata"]["name"],
                                               objs[1]["metadata"]["resourceVersion"], {"phase": "Failed"}) is None
        assert len(await finished(resources, namespace)) == 4
        assert await resources.label_unlabelled(namespace) == 1
        assert await resources.label_unlabelled(namespace) == 0
        listed = await finished(resources, namespace)
        assert sorted(listed) == sorted((namespace, o["metadata"]["name"], o["metadata"]["uid"], finished_at)
                                        for o in objs)
    finally:
        await api.close()


def test_the_operator_starts_without_listing_warnings_and_labels_what_lacks_its_label(
        testenv, kubectl, namespace, crd, tmp_path):
    """It logged "cannot list finished builds yet ('NoneType' object is not iterable)" at every
    start in a namespace without finished builds, and retried for ever."""
    obj = a_build(kubectl, namespace, 1)
    finished_at = int(time.time())
    kubectl("patch", contract.PLURAL, obj["metadata"]["name"], "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"phase": "Succeeded", contract.STATUS_FINISHED_AT: finished_at}}))
    operator = OperatorProcess(testenv, namespace, tmp_path, **{"finished-ttl": 10**9}).start()
    try:
        wait_until(lambda: "lacked their finish label" in operator.log(), timeout=30,
                   what="the released build without a label to be labelled")
        labels = json.loads(kubectl("get", contract.PLURAL, obj["metadata"]["name"], "-n", namespace, "-o", "json")
                            )["metadata"].get("labels", {})
        assert labels.get(contract.LABEL_FINISHED_AT) == str(finished_at)
    finally:
        operator.stop()
    assert "cannot list finished builds" not in operator.log()


def test_an_empty_namespace_starts_quietly(testenv, kubectl, namespace, crd, tmp_path):
    operator = OperatorProcess(testenv, namespace, tmp_path, **{"finished-ttl": 10**9}).start()
    try:
        time.sleep(3)  # the sweep's first listing (it retried after 1 s, 2 s, ... with the warning)
    finally:
        operator.stop()
    assert "cannot list finished builds" not in operator.log(), operator.log()[-2000:]
