"""Built images on the hub's Docker daemon, as the builds page sees them: sizes, and removal
by an admin under the same rules the garbage collector follows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

from repo2docker_buildcore.collector import usage_from_df
from repo2docker_buildcore.contract import Phase
from repo2docker_buildcore.daemon_images import ImageStore
from repo2docker_buildcore.docker_api import RunnerError
from repo2docker_buildcore.imagegc import ImageInfo
from repo2docker_buildcore.imageuse import UseLedger

from .records import ActionRefused, BuildRecord


async def image_facts(images: ImageStore | None) -> dict[str, ImageInfo]:
    """Every tagged image on the daemon by tag; empty when there is no daemon to ask."""
    if images is None:
        return {}
    try:
        usage = usage_from_df(await images.disk_usage(), "", UseLedger())
    except (RunnerError, OSError):
        return {}
    return {tag: image for image in usage.images for tag in image.tags}


class ImageFacts:
    """`image_facts` as the builds page asks for it: at most one `docker system df` per
    `max_age` seconds, shared by every page load meanwhile. The daemon walks every layer to
    answer it, and the list refreshes every few seconds while builds run, per open page."""

    def __init__(self, images: ImageStore | None, max_age: float = 15.0, min_age: float = 2.0) -> None:
        self.images = images
        self.max_age = max_age
        self.min_age = min_age  # a missing image is asked about again after this long
        self._pending: asyncio.Future | None = None
        self._at = 0.0

    async def get(self, expect: Iterable[str] = ()) -> dict[str, ImageInfo]:
        """`expect`: images of succeeded builds; one that is missing (built since the last
        answer, most likely) makes the answer stale once it is `min_age` old."""
        now = time.monotonic()
        if self._pending is not None and self._pending.done() and not self._pending.exception():
            age, known = now - self._at, self._pending.result()
            if age > self.max_age or (age > self.min_age and any(i not in known for i in expect)):
                self._pending = None
        elif self._pending is not None and self._pending.done():
            self._pending = None
        if self._pending is None:
            self._pending, self._at = asyncio.ensure_future(image_facts(self.images)), now
        return await asyncio.shield(self._pending)

    def invalidate(self) -> None:
        """An image was removed: the next page shows it gone."""
        self._pending = None


def add_image_facts(
    records: Iterable[BuildRecord], facts: Mapping[str, ImageInfo], uses: Mapping[str, float]
) -> list[BuildRecord]:
    """Each record with its image's size on the daemon and its last use, where known."""
    records = list(records)
    for record in records:
        info = facts.get(record.image)
        record.image_size = info.unique_size if info else None
        record.last_used = uses.get(record.image)
    return records


def succeeded_images(records: Iterable[BuildRecord]) -> set[str]:
    return {r.image for r in records if r.phase == Phase.SUCCEEDED and r.image}


def newest_first(records: Iterable[BuildRecord]) -> list[BuildRecord]:
    return sorted(records, key=lambda r: r.created or 0, reverse=True)


async def remove_built_image(images: ImageStore | None, image: str, phase: Phase) -> ImageInfo:
    """Remove a succeeded build's image unless a container (a server, running or stopped)
    uses it. A build under way may already have a tag of that name (an earlier image of the
    commit, being built again): never while it runs."""
    if not phase.terminal:
        raise ActionRefused("The build is still under way; cancel it first.")
    if phase != Phase.SUCCEEDED:
        raise ActionRefused("Only a succeeded build has an image to delete.")
    if images is None:
        raise ActionRefused("This hub has no Docker daemon to remove images from.")
    info = (await image_facts(images)).get(image)
    if info is None:
        raise ActionRefused(f"The image {image} is not on this hub's Docker daemon.")
    if info.containers:
        raise ActionRefused(f"A server uses the image {image} ({info.containers} container(s)); stop it first.")
    if not await images.remove_image(info.id):
        raise ActionRefused(f"Docker refused to remove {image}: a container started using it meanwhile.")
    return info
