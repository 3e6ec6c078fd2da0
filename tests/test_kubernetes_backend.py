"""KubernetesBackend.ensure with an in-memory API (pure logic): join a build that exists,
retry one that failed or was cancelled with a fresh resource, and never delete a success.
The real API server path is proven in test_spawner_e2e.py."""

from __future__ import annotations

import itertools

import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildSpec
from repo2dockerspawner.backends.kubernetes import KubernetesBackend

pytestmark = pytest.mark.unit

SPEC = BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-x:" + "a" * 40)
_uids = itertools.count(1)


class FakeApi:
    """Resources by name, the way the API server and the shared watch would show them."""

    def __init__(self, existing_phase: str | None = None) -> None:
        self.objects: dict[str, dict] = {}
        self.created: list[dict] = []
        self.deleted: list[str] = []
        if existing_phase:
            obj = self._new(contract.build_manifest(SPEC, "ns"))
            obj["status"] = {"phase": existing_phase}

    def _new(self, manifest: dict) -> dict:
        obj = {**manifest, "metadata": {**manifest["metadata"], "uid": f"uid-{next(_uids)}"}}
        self.objects[obj["metadata"]["name"]] = obj
        return obj

    # BuildResources
    async def create(self, manifest):
        name = manifest["metadata"]["name"]
        if name in self.objects:
            return self.objects[name], False
        self.created.append(manifest)
        return self._new(manifest), True

    async def delete(self, namespace, name, uid=None):
        self.deleted.append(name)
        if uid is None or self.objects.get(name, {}).get("metadata", {}).get("uid") == uid:
            self.objects.pop(name, None)

    # BuildWatcher
    def start(self):
        pass

    async def ready(self):
        pass

    def get(self, name):
        return self.objects.get(name)

    async def wait_for(self, predicate, timeout=None):
        assert predicate(), "ensure() would wait for a change that never comes"


def backend(api: FakeApi) -> KubernetesBackend:
    b = KubernetesBackend(namespace="ns")
    b.resources = b.watcher = api  # as _connect() would have set them
    return b


async def test_a_new_build_is_created_with_who_asked():
    api = FakeApi()
    handle = await backend(api).ensure(SPEC, requested_by="alice")
    assert handle.name == contract.build_name(SPEC.repo_url, SPEC.commit)
    assert api.created[0]["metadata"]["annotations"] == {contract.ANNOTATION_REQUESTED_BY: "alice"}


@pytest.mark.parametrize("phase", ["Pending", "Queued", "Building", "Succeeded"])
async def test_a_build_that_exists_is_joined_not_restarted(phase):
    api = FakeApi(existing_phase=phase)
    uid = next(iter(api.objects.values()))["metadata"]["uid"]
    handle = await backend(api).ensure(SPEC, requested_by="bob")
    assert handle.uid == uid and api.deleted == [] and api.created == []


@pytest.mark.parametrize("phase", ["Failed", "Cancelled"])
async def test_a_finished_failure_is_retried_with_a_fresh_resource(phase):
    api = FakeApi(existing_phase=phase)
    old_uid = next(iter(api.objects.values()))["metadata"]["uid"]
    handle = await backend(api).ensure(SPEC, requested_by="bob")
    assert api.deleted == [handle.name] and len(api.created) == 1
    assert handle.uid != old_uid and handle.current().phase.value == "Pending"


async def test_a_success_whose_image_is_gone_is_replaced_and_a_successor_is_joined():
    api = FakeApi(existing_phase="Succeeded")
    old_uid = next(iter(api.objects.values()))["metadata"]["uid"]
    handle = await backend(api).ensure(SPEC, requested_by="bob", image_gone=True)
    assert api.deleted == [handle.name] and handle.uid != old_uid and handle.current().phase.value == "Pending"
    # Another spawn saw the same missing image a moment later: it joins the new build.
    again = await backend(api).ensure(SPEC, requested_by="carol", image_gone=True)
    assert again.uid == handle.uid and api.deleted == [handle.name]
