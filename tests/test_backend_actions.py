"""The builds page's actions, once in BuildBackend, over a backend's three hooks (pure logic)."""

from __future__ import annotations

import pytest

from repo2docker_buildcore.contract import BuildSpec, Phase
from repo2dockerspawner.backends import ActionRefused, BuildBackend, Known

pytestmark = pytest.mark.unit
SPEC = BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-a-b:" + "a" * 40)


class Images:
    def __init__(self) -> None:
        self.removed: list[str] = []

    async def disk_usage(self) -> dict:
        return {
            "Images": [
                {"Id": "sha256:x", "RepoTags": [SPEC.image], "Size": 10, "SharedSize": 0, "Created": 1, "Containers": 0}
            ]
        }

    async def remove_image(self, image_id: str) -> bool:
        self.removed.append(image_id)
        return True


class Backend(BuildBackend):
    def __init__(self, phase: Phase | None) -> None:
        super().__init__()
        self.phase = phase
        self.image_store = Images()
        self.calls: list[str] = []

    async def _known(self, namespace, name):
        return Known(SPEC, self.phase) if self.phase else None

    async def _stop(self, namespace, name):
        self.calls.append("stop")

    async def _forget_built(self, namespace, name, tags):
        self.calls.append(f"forget {','.join(tags)}")

    async def ensure(self, spec, requested_by="", image_gone=False, credential=None):
        self.calls.append(f"ensure for {requested_by}")


@pytest.mark.parametrize(
    "phase, action, refusal",
    [
        (Phase.SUCCEEDED, "cancel", "Only a queued or running build can be cancelled"),
        (Phase.BUILDING, "rebuild", "Only a failed or cancelled build can be built again"),
        (Phase.BUILDING, "delete", "still under way"),
        (Phase.FAILED, "delete", "Only a succeeded build has an image"),
        (None, "cancel", "There is no build ns/b"),
    ],
)
async def test_an_action_that_does_not_fit_the_build_is_refused_and_does_nothing(phase, action, refusal):
    backend = Backend(phase)
    act = {
        "cancel": backend.cancel("ns", "b"),
        "rebuild": backend.rebuild("ns", "b", "admin"),
        "delete": backend.delete_image("ns", "b"),
    }
    for name, coroutine in act.items():
        if name != action:
            coroutine.close()
    with pytest.raises(ActionRefused, match=refusal):
        await act[action]
    assert backend.calls == [] and backend.image_store.removed == []


async def test_each_action_goes_through_the_backends_hook():
    queued, failed, succeeded = Backend(Phase.QUEUED), Backend(Phase.CANCELLED), Backend(Phase.SUCCEEDED)
    await queued.cancel("ns", "b")
    await failed.rebuild("ns", "b", "admin")
    await succeeded.delete_image("ns", "b")
    assert (queued.calls, failed.calls) == (["stop"], ["ensure for admin"])
    assert succeeded.image_store.removed == ["sha256:x"] and succeeded.calls == [f"forget {SPEC.image}"]
