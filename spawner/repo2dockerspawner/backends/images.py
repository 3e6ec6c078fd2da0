"""Built images on the hub's Docker daemon, as the builds page sees them: sizes, and removal
by an admin under the same rules the garbage collector follows."""

from __future__ import annotations

from typing import Iterable, Mapping

from repo2docker_buildcore.collector import usage_from_df
from repo2docker_buildcore.contract import Phase
from repo2docker_buildcore.imagegc import ImageInfo
from repo2docker_buildcore.imageuse import UseLedger
from repo2docker_buildcore.runner import BuildRunner, RunnerError

from . import ActionRefused, BuildRecord


async def image_facts(runner: BuildRunner | None) -> dict[str, ImageInfo]:
    """Every tagged image on the daemon by tag; empty when there is no daemon to ask."""
    if runner is None:
        return {}
    try:
        usage = usage_from_df(await runner.disk_usage(), "", UseLedger())
    except (RunnerError, OSError):
        return {}
    return {tag: image for image in usage.images for tag in image.tags}


def add_image_facts(records: Iterable[BuildRecord], facts: Mapping[str, ImageInfo],
                    uses: Mapping[str, float]) -> list[BuildRecord]:
    """Each record with its image's size on the daemon and its last use, where known."""
    records = list(records)
    for record in records:
        info = facts.get(record.image)
        record.image_size = info.unique_size if info else None
        record.last_used = uses.get(record.image)
    return records


def newest_first(records: Iterable[BuildRecord]) -> list[BuildRecord]:
    return sorted(records, key=lambda r: r.created or 0, reverse=True)


async def remove_built_image(runner: BuildRunner | None, image: str, phase: Phase) -> ImageInfo:
    """Remove a finished build's image unless a container (a server, running or stopped) uses it."""
    if not phase.terminal:
        raise ActionRefused("The build is still under way; cancel it first.")
    if runner is None:
        raise ActionRefused("This hub has no Docker daemon to remove images from.")
    info = (await image_facts(runner)).get(image)
    if info is None:
        raise ActionRefused(f"The image {image} is not on this hub's Docker daemon.")
    if info.containers:
        raise ActionRefused(f"A server uses the image {image} ({info.containers} container(s)); stop it first.")
    if not await runner.remove_image(info.id):
        raise ActionRefused(f"Docker refused to remove {image}: a container started using it meanwhile.")
    return info
