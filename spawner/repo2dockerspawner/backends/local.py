"""The embedded backend: the operator's build job, run inside the hub, for hubs without Kubernetes.

Same runner, same FIFO queue and cap (``concurrent_builds_limit``), same log tail and status
fields, with status kept in memory instead of a resource. Build containers carry the same
labels (instance ``hub-local`` by default), and the build's uid is its deterministic name,
so a restarted hub re-attaches to a build that is still running instead of starting another.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from repo2docker_operator import contract
from repo2docker_operator.build import BuildJob, BuildSettings
from repo2docker_operator.contract import BuildSpec, BuildStatus, Phase
from repo2docker_operator.queue import BuildQueue
from repo2docker_operator.runner import BuildRef, BuildRunner, RunnerConfig
from repo2docker_operator.status import StatusPublisher

log = logging.getLogger(__name__)
NAMESPACE = "local"


class LocalBuild:
    def __init__(self, name: str) -> None:
        self.name = name
        self.namespace = NAMESPACE
        self.fields: dict[str, Any] = {}
        self.version = 0
        self._changed = asyncio.Condition()
        self.task: asyncio.Task | None = None

    async def publish(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                self.fields.pop(key, None)  # merge-patch semantics, as on a resource
            else:
                self.fields[key] = value
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    def current(self) -> BuildStatus:
        return BuildStatus.from_status(self.fields)

    async def statuses(self) -> AsyncIterator[BuildStatus]:
        seen = -1
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self.version != seen)
                seen = self.version
            status = self.current()
            yield status
            if status.phase.terminal:
                return


class LocalBackend:
    def __init__(self, runner_config: RunnerConfig, limit: int, settings: BuildSettings) -> None:
        self.runner = BuildRunner(runner_config)
        self.queue = BuildQueue(limit)
        self.settings = settings
        self.builds: dict[str, LocalBuild] = {}
        self._adopted = False
        self._lock = asyncio.Lock()

    async def _adopt_running(self) -> None:
        """After a hub restart, count surviving build containers before starting new ones."""
        for container in await self.runner.list_builds(running_only=True):
            self.queue.adopt(container.ref.uid)
        self._adopted = True

    async def ensure(self, spec: BuildSpec, requested_by: str = "") -> LocalBuild:
        name = contract.build_name(spec.repo_url, spec.commit)
        async with self._lock:
            if not self._adopted:
                await self._adopt_running()
            build = self.builds.get(name)
            if build is not None and build.current().phase not in (Phase.FAILED, Phase.CANCELLED):
                return build  # running, queued or done: join it
            build = LocalBuild(name)  # new, or a retry after a failure
            self.builds[name] = build
            await build.publish({"phase": Phase.PENDING.value, "shortCommit": spec.commit[:7]})
            job = BuildJob(
                runner=self.runner, queue=self.queue, ref=BuildRef(NAMESPACE, name, name), spec=spec,
                publisher=StatusPublisher(build.publish, interval=0.5), settings=self.settings,
                order=(asyncio.get_running_loop().time(), name),
            )
            # Not tied to any spawner: a user who stops waiting does not cancel it for others.
            build.task = asyncio.create_task(self._run(job, build), name=f"build {name}")
            return build

    async def _run(self, job: BuildJob, build: LocalBuild) -> None:
        try:
            outcome = await job.run()
            log.info("build %s: %s", build.name, outcome.phase.value)
        except Exception as exc:  # noqa: BLE001 - reported to every waiting user
            log.exception("build %s crashed", build.name)
            await build.publish({"phase": Phase.FAILED.value, "message": f"The build crashed: {exc}"})

    async def close(self) -> None:
        for build in self.builds.values():
            if build.task and not build.task.done():
                build.task.cancel()  # detach: the container keeps running for the next hub
        self.runner.close()
