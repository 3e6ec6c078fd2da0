"""Build containers that outlived the process that started them.

Build containers are detached on purpose: an operator pod that is replaced, or a hub that
restarts, must not kill builds users wait for. So whoever starts next finds containers it did
not start, and must, before starting anything new:

* count the running ones whose build is still wanted as holding slots, or the cap breaks;
* remove the ones nobody will ever read (their build is gone, finished, or replaced),
  killing them if they still run; they would otherwise hold slots and disk forever;
* hand the wanted ones, running or already exited, to a job that re-attaches to them, so
  their outcome is recorded and the container removed.

The operator and the embedded backend differ only in what "wanted" means (a resource with
that uid that has not finished, versus any build of this hub), so both call ``adopt``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .queue import BuildQueue
from .runner import BuildContainer, BuildRunner

log = logging.getLogger(__name__)

Wanted = Callable[[BuildContainer], Awaitable[bool]]


async def adopt(runner: BuildRunner, queue: BuildQueue, wanted: Wanted) -> list[BuildContainer]:
    """Sort this instance's build containers into adopted and removed; return the adopted.

    Runs before any new build may start (the caller holds that guarantee), so the slots the
    survivors take are counted before a queued build could take them."""
    adopted = []
    for container in await runner.list_builds(running_only=False):
        ref = container.ref
        if await wanted(container):
            if container.running:
                queue.adopt(ref.uid)
            log.info(
                "build container %s of %s/%s survived (%s): re-attaching",
                container.id[:12],
                ref.namespace,
                ref.name,
                container.status,
            )
            adopted.append(container)
        else:
            log.warning(
                "removing build container %s of %s/%s: nobody will read its result",
                container.id[:12],
                ref.namespace,
                ref.name,
            )
            await runner.remove(container.id, kill=True)
    return adopted
