"""A fake Docker runner for the build job's pure-logic tests: only what BuildJob calls, with
each answer scripted. Real-daemon behaviour is proven in the integration tiers."""

from __future__ import annotations

import asyncio
import json

from repo2docker_buildcore.build import BuildJob, BuildOutcome, BuildSettings
from repo2docker_buildcore.contract import BuildSpec
from repo2docker_buildcore.queue import BuildQueue
from repo2docker_buildcore.runner import BuildContainer, BuildRef, RunnerConfig
from repo2docker_buildcore.status import StatusPublisher
from repo2docker_buildcore.versions import Repo2DockerVersion

SHA = "a" * 40


class Clock:
    """A clock a test moves by hand (`clock.now += 15`), for code that takes `clock=`."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """`in_registry` may be a list of answers, one per call (an exception: the registry is down).
    `existing` is a container the runner already has for the build (a restart's survivor).
    While `hold` is unset, a running build's log stream stays open (the build runs on).
    `image_after`: the build leaves the image in the daemon (a push may still fail after)."""

    def __init__(
        self,
        *,
        push: bool = False,
        local: bool = False,
        in_registry=False,
        exit_code: int = 0,
        log: tuple[str, ...] = (),
        image_after: bool = True,
        existing: BuildContainer | None = None,
        hold: bool = False,
    ) -> None:
        self.config = RunnerConfig(build_image="b:1", push=push)
        self.local = local
        self.answers = list(in_registry) if isinstance(in_registry, list) else None
        self.in_registry = in_registry
        self.exit = exit_code
        self.log = [json.dumps({"message": line}) for line in log]
        self.image_after = image_after
        self.existing = existing
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.started: list[BuildRef] = []
        self.prepared: list[BuildRef] = []
        self.pushed: list[str] = []
        self.removed: list[tuple[str, bool]] = []
        self.images = self  # the runner's ImageStore: the same fake answers both
        self.reading = False  # a job follows a container's log (the build runs)

    async def find(self, uid):
        return self.existing if self.existing and self.existing.ref.uid == uid else None

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

    async def repo2docker_version(self, image):
        return Repo2DockerVersion.parse("2026.4.0")

    async def digest(self, image):
        return "sha256:" + "d" * 64 if image == self.config.build_image else None

    async def prepare(self, ref, spec, command=None, credential=None):
        self.prepared.append(ref)
        return BuildContainer(f"p{len(self.prepared)}", "n", "created", None, ref)

    async def start(self, ref, spec, command=None, credential=None, prepared=None):
        self.started.append(ref)
        return BuildContainer(prepared.id if prepared else f"c{len(self.started)}", "n", "running", None, ref)

    async def logs(self, container_id):
        self.reading = True
        for line in self.log:
            yield line
        await self.release.wait()
        self.local = self.local or self.image_after  # what the build left in the daemon

    async def exit_code(self, container_id):
        return self.exit

    async def remove(self, container_id, kill=False):
        self.removed.append((container_id, kill))


def make_job(
    runner: FakeRunner,
    sent: list[dict],
    queue: BuildQueue | None = None,
    uid: str = "uid-1",
    image: str = "r2d-x:" + SHA,
    timeout: float = 60,
    recorded_start: str | None = None,
) -> BuildJob:
    async def send(fields):
        sent.append(dict(fields))

    return BuildJob(
        runner=runner,
        queue=queue or BuildQueue(1),
        ref=BuildRef("ns", "b", uid),
        spec=BuildSpec("https://h/a/b", "main", SHA, image),
        publisher=StatusPublisher(send, 0.0),
        settings=BuildSettings(build_timeout=timeout),
        recorded_start=recorded_start,
    )


async def run_job(runner: FakeRunner, **kwargs) -> tuple[BuildOutcome, list[dict]]:
    sent: list[dict] = []
    return await make_job(runner, sent, **kwargs).run(), sent
