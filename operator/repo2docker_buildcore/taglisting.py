"""Many "is this image on the daemon?" questions answered by few listings of its tags.

Why: a burst of new build resources (a hub's prebuilds after a restart, a class launching
one commit) asks the question once per resource, all at once. One inspect per resource cost
the daemon about 6 ms of CPU each and the operator a thread hand-off each; a listing of every
tag costs about as much as a few inspects and answers all the questions asked while it was
being waited for.

A question never gets an answer older than itself: it shares the next listing to start, and
one asked while a listing is in flight waits for the one after (an image tagged a moment
before the question is seen). A tag missing from a listing is only "probably absent": the
caller confirms it exactly (a name may be spelled differently from the daemon's familiar
form).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class TagListing:
    """`list_tags()` returns every tag the daemon has; `tags()` shares its calls."""

    def __init__(self, list_tags: Callable[[], Awaitable[frozenset[str]]]) -> None:
        self._list_tags = list_tags
        self._pending: asyncio.Future | None = None  # what questions asked now will be answered by
        self._lister: asyncio.Task | None = None

    async def tags(self) -> frozenset[str]:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_future()
        pending = self._pending
        if self._lister is None:
            self._lister = asyncio.create_task(self._run(), name="list the daemon's image tags")
        return await asyncio.shield(pending)

    async def _run(self) -> None:
        """List while questions wait; each listing answers those asked before it started."""
        try:
            await asyncio.sleep(0)  # the questions of this moment join the first listing
            while self._pending is not None:
                answering, self._pending = self._pending, None
                try:
                    answering.set_result(await self._list_tags())
                except Exception as exc:  # noqa: BLE001 - each waiting question gets it
                    answering.set_exception(exc)
                    answering.exception()  # retrieved: nobody may be waiting any more
        finally:
            self._lister = None
