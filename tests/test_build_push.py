"""The build job's rules for builds that push, with a fake runner (pure logic).

The real registry paths are proven in test_registry.py; these pin each rule on its own, so
removing one fails exactly one test here.
"""

from __future__ import annotations

import pytest

from repo2docker_buildcore import build
from repo2docker_buildcore.build import ALREADY_PUSHED, PUSHED_EXISTING
from repo2docker_buildcore.contract import Phase
from repo2docker_buildcore.docker_api import RegistryUnavailable
from support.fakes import FakeRunner, run_job

pytestmark = pytest.mark.unit

IMAGE = "127.0.0.1:5000/binder/r2d-x:" + "a" * 40


async def run(runner: FakeRunner):
    return await run_job(runner, image=IMAGE)


async def test_an_image_in_the_registry_needs_no_build_and_no_local_copy():
    runner = FakeRunner(push=True, local=False, in_registry=True)
    outcome, _ = await run(runner)
    assert (outcome.phase, outcome.message, len(runner.started), runner.pushed) == (
        Phase.SUCCEEDED,
        ALREADY_PUSHED,
        0,
        [],
    )


async def test_a_local_image_missing_from_the_registry_is_pushed_not_rebuilt():
    runner = FakeRunner(push=True, local=True, in_registry=False)
    outcome, _ = await run(runner)
    assert (outcome.phase, outcome.message, len(runner.started), runner.pushed) == (
        Phase.SUCCEEDED,
        PUSHED_EXISTING,
        0,
        [IMAGE],
    )


async def test_an_unreachable_registry_is_retried_with_back_off_and_said(monkeypatch):
    monkeypatch.setattr(build, "REGISTRY_BACKOFF", (0.01, 0.02))
    down = RegistryUnavailable("The registry 127.0.0.1:5000 could not be reached while reading from it: refused")
    runner = FakeRunner(push=True, in_registry=[down, down, True])
    outcome, sent = await run(runner)
    assert outcome.message == ALREADY_PUSHED
    retries = [f["message"] for f in sent if "Retrying in" in f.get("message", "")]
    assert len(retries) == 2 and "could not be reached" in retries[0]


async def test_a_registry_down_past_the_timeout_fails_the_build(monkeypatch):
    monkeypatch.setattr(build, "REGISTRY_BACKOFF", (70.0,))  # one wait would pass the 60 s timeout
    down = RegistryUnavailable("The registry 127.0.0.1:5000 could not be reached while reading from it: refused")
    outcome, _ = await run(FakeRunner(push=True, in_registry=[down, down, down]))
    assert outcome.phase == Phase.FAILED and "could not be reached" in outcome.message


async def test_success_needs_the_tag_in_the_registry():
    outcome, _ = await run(FakeRunner(push=True, in_registry=[False, False, False]))
    assert outcome.phase == Phase.FAILED and "is not in the registry" in outcome.message


async def test_a_built_image_whose_push_was_refused_says_so():
    log = ["pushing 127.0.0.1:5000/binder/r2d-x with docker", "ERROR: unauthorized: authentication required"]
    outcome, _ = await run(FakeRunner(push=True, in_registry=[False, False], exit_code=1, log=log))
    assert outcome.phase == Phase.FAILED
    assert outcome.message.startswith("The registry 127.0.0.1:5000 refused the push"), outcome.message
