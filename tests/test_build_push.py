"""The build job's rules for builds that push, with a fake runner (pure logic).

The real registry paths are proven in test_registry.py; these pin each rule on its own, so
removing one fails exactly one test here.
"""

from __future__ import annotations

import json

import pytest

from repo2docker_operator import build
from repo2docker_operator.build import ALREADY_PUSHED, PUSHED_EXISTING, BuildJob, BuildSettings
from repo2docker_operator.contract import BuildSpec, Phase
from repo2docker_operator.queue import BuildQueue
from repo2docker_operator.runner import BuildContainer, BuildRef, RegistryUnavailable, RunnerConfig
from repo2docker_operator.status import StatusPublisher

pytestmark = pytest.mark.unit

IMAGE = "127.0.0.1:5000/binder/r2d-x:" + "a" * 40


class FakeRunner:
    """Only what BuildJob calls; `in_registry` may be a list of answers (an exception = down)."""

    def __init__(self, local: bool = False, in_registry=False, exit_code: int = 0, log: list[str] = ()) -> None:
        self.config = RunnerConfig(build_image="b:1", push=True)
        self.local = local
        self.answers = list(in_registry) if isinstance(in_registry, list) else None
        self.in_registry = in_registry
        self.exit = exit_code
        self.log = [json.dumps({"message": line}) for line in log]
        self.started = 0
        self.pushed: list[str] = []

    async def find(self, uid):
        return None

    async def image_exists(self, image):
        return self.local

    async def registry_has(self, image):
        answer = self.answers.pop(0) if self.answers is not None else self.in_registry
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def push(self, image):
        self.pushed.append(image)

    async def command(self, spec):
        return ["repo2docker"]

    async def start(self, ref, spec):
        self.started += 1
        self.local = True  # the build tagged the image in the daemon
        return BuildContainer("c1", "n", "running", None, ref)

    async def logs(self, container_id):
        for line in self.log:
            yield line

    async def exit_code(self, container_id):
        return self.exit

    async def remove(self, container_id, kill=False):
        pass


async def run(runner: FakeRunner) -> tuple[build.BuildOutcome, list[dict]]:
    sent: list[dict] = []

    async def send(fields):
        sent.append(dict(fields))

    job = BuildJob(runner=runner, queue=BuildQueue(1), ref=BuildRef("ns", "b", "uid-1"),
                   spec=BuildSpec("https://h/a/b", "main", "a" * 40, IMAGE), publisher=StatusPublisher(send, 0.0),
                   settings=BuildSettings(timeout=60))
    return await job.run(), sent


async def test_an_image_in_the_registry_needs_no_build_and_no_local_copy():
    runner = FakeRunner(local=False, in_registry=True)
    outcome, _ = await run(runner)
    assert (outcome.phase, outcome.message, runner.started, runner.pushed) == (Phase.SUCCEEDED, ALREADY_PUSHED, 0, [])


async def test_a_local_image_missing_from_the_registry_is_pushed_not_rebuilt():
    runner = FakeRunner(local=True, in_registry=False)
    outcome, _ = await run(runner)
    assert (outcome.phase, outcome.message, runner.started, runner.pushed) == (Phase.SUCCEEDED, PUSHED_EXISTING, 0, [IMAGE])


async def test_an_unreachable_registry_is_retried_with_back_off_and_said(monkeypatch):
    monkeypatch.setattr(build, "REGISTRY_BACKOFF", (0.01, 0.02))
    down = RegistryUnavailable("The registry 127.0.0.1:5000 could not be reached while reading from it: refused")
    runner = FakeRunner(in_registry=[down, down, True])
    outcome, sent = await run(runner)
    assert outcome.message == ALREADY_PUSHED
    retries = [f["message"] for f in sent if "Retrying in" in f.get("message", "")]
    assert len(retries) == 2 and "could not be reached" in retries[0]


async def test_a_registry_down_past_the_timeout_fails_the_build(monkeypatch):
    monkeypatch.setattr(build, "REGISTRY_BACKOFF", (70.0,))  # one wait would pass the 60 s timeout
    down = RegistryUnavailable("The registry 127.0.0.1:5000 could not be reached while reading from it: refused")
    outcome, _ = await run(FakeRunner(in_registry=[down, down, down]))
    assert outcome.phase == Phase.FAILED and "could not be reached" in outcome.message


async def test_success_needs_the_tag_in_the_registry():
    outcome, _ = await run(FakeRunner(in_registry=[False, False, False]))
    assert outcome.phase == Phase.FAILED and "is not in the registry" in outcome.message


async def test_a_built_image_whose_push_was_refused_says_so():
    log = ["pushing 127.0.0.1:5000/binder/r2d-x with docker", "ERROR: unauthorized: authentication required"]
    outcome, _ = await run(FakeRunner(in_registry=[False, False], exit_code=1, log=log))
    assert outcome.phase == Phase.FAILED
    assert outcome.message.startswith("The registry 127.0.0.1:5000 refused the push"), outcome.message
