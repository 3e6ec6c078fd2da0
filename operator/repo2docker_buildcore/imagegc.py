"""Which built images to remove: the garbage collector's decision, as a pure function.

Kept apart from Docker so every rule can be tested on plain data. The collector
(``collector.py``) gathers the facts from the daemon and carries the decision out.

The rules, in the order they protect an image:

* only images whose every tag is under the image prefix are ours: a base image, or a built
  image someone has also tagged under another name, is never touched;
* an image any container uses (running or stopped) stays: removing it would fail anyway, and
  a stopped server may be started again;
* an image a pending or running build will produce stays: its build would "succeed" into
  nothing;
* an image built or used within the grace period stays: a spawn in progress has just been told
  that it exists and is about to create its container.

What remains is removed if it is older than ``max_age`` (when set), and otherwise least
recently used first while the daemon's image disk usage is above the high watermark, until it
is at or below the low one. Hysteresis: a single new image must not trigger a pass each time.

A watermark is a size ('100Gi': bytes of images and build cache) or, as kubelet's image GC
thresholds are, a share of the filesystem that holds Docker's data root ('85%': of everything
on it, logs and volumes included). A share is turned into bytes for each pass (``for_disk``):
what images may hold once everything else on that filesystem is counted. The size of a node's
disk is then no setting of ours, which is what makes a share the safe default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .contract import InvalidBuildRequest, parse_quantity
from .settings import setting


@dataclass(frozen=True)
class DiskUsage:
    """The filesystem that holds Docker's data root, in bytes (as `df` counts it)."""

    size: int
    available: int  # to unprivileged writers: blocks reserved for root count as used, as kubelet counts them

    @property
    def used(self) -> int:
        return self.size - self.available


def parse_watermark(value: str | int | None) -> tuple[int | None, float | None]:
    """(bytes, None) for a size such as '100Gi', (None, percent) for a share such as '85%',
    (None, None) for '' or None. Raises ValueError with the message for the person who set it."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None, None
    if text.endswith("%"):
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?%", text):
            raise ValueError(f"{text!r} is not a percentage such as 85%")
        percent = float(text[:-1])
        if percent > 100:
            raise ValueError(f"{text!r}: a share of the disk is between 0% and 100%")
        return None, percent
    try:
        return parse_quantity(text), None
    except InvalidBuildRequest:
        raise ValueError(f"{text!r} is neither a size such as 100Gi nor a share of the disk such as 85%") from None


@dataclass(frozen=True)
class GCPolicy:
    prefix: str
    # Bytes of image (and build cache) storage above which images are removed; None: never by size.
    high_watermark: int | None = None
    # Bytes to remove down to; at most the high watermark.
    low_watermark: int | None = None
    # Seconds since the last use after which an image goes whatever the disk usage; None: never.
    max_age: float | None = None
    # Seconds after a build or a use during which an image always stays.
    grace: float = setting("gc_grace").default
    # Watermarks as shares (0-100) of the data root's filesystem, instead of the two above.
    high_percent: float | None = None
    low_percent: float | None = None

    def __post_init__(self) -> None:
        if self.high_watermark is not None and self.high_watermark < 0:
            raise ValueError("the high watermark must be positive")
        if (
            self.low_watermark is not None
            and self.high_watermark is not None
            and self.low_watermark > self.high_watermark
        ):
            raise ValueError("the low watermark must not be above the high watermark")
        if self.low_percent is not None and self.high_percent is not None and self.low_percent > self.high_percent:
            raise ValueError("the low watermark must not be above the high watermark")
        # Without a high watermark the low one means nothing (its default stays as it is).
        if (
            self.high_percent is not None
            and self.low_watermark is not None
            or self.high_watermark is not None
            and self.low_percent is not None
        ):
            raise ValueError("give both watermarks as sizes (100Gi) or both as shares of the disk (85%)")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError("the maximum age must be positive (or unset)")
        if self.grace < 0:
            raise ValueError("the grace period must not be negative")

    @classmethod
    def from_settings(cls, prefix: str, high: str | None, low: str | None, max_age: float, grace: float) -> GCPolicy:
        """From settings as users write them: sizes ('100Gi') or shares of the disk ('85%'),
        '' for none; 0 for no max age. Raises ValueError with the message for them."""
        (high_bytes, high_percent), (low_bytes, low_percent) = parse_watermark(high), parse_watermark(low)
        return cls(
            prefix=prefix,
            high_watermark=high_bytes,
            low_watermark=low_bytes,
            max_age=max_age or None,
            grace=grace,
            high_percent=high_percent,
            low_percent=low_percent,
        )

    @property
    def by_disk_share(self) -> bool:
        return self.high_percent is not None

    def for_disk(self, disk: DiskUsage, images: int) -> GCPolicy:
        """This policy with its shares as bytes that `images` (image layers and build cache,
        now) may grow to: the share of the disk, less what everything else on it holds."""
        others = max(disk.used - images, 0)

        def budget(percent: float | None) -> int | None:
            return None if percent is None else max(int(disk.size * percent / 100) - others, 0)

        return dataclasses.replace(
            self,
            high_watermark=budget(self.high_percent),
            low_watermark=budget(self.low_percent),
            high_percent=None,
            low_percent=None,
        )

    def without_size_limits(self) -> GCPolicy:
        """For a pass that could not measure the disk: only the maximum age applies."""
        return dataclasses.replace(self, high_watermark=None, low_watermark=None, high_percent=None, low_percent=None)

    @property
    def target(self) -> int | None:
        """Usage to bring the daemon down to once it is over the high watermark."""
        if self.high_watermark is None:
            return None
        return self.low_watermark if self.low_watermark is not None else self.high_watermark

    def describe(self) -> str:
        """One line for the start-up log: what will be removed, and when."""
        if not self.enabled:
            return "off"
        rules = []
        if self.high_percent is not None:
            low = self.low_percent if self.low_percent is not None else self.high_percent
            rules.append(f"above {self.high_percent:g}% of the disk of Docker's data root, down to {low:g}%")
        elif self.high_watermark is not None:
            rules.append(f"above {self.high_watermark} bytes of images and build cache, down to {self.target}")
        if self.max_age is not None:
            rules.append(f"unused for {self.max_age:g} s")
        return f"images under {self.prefix!r} {' or '.join(rules)}; never within {self.grace:g} s of a build or use"

    @property
    def enabled(self) -> bool:
        return self.high_watermark is not None or self.high_percent is not None or self.max_age is not None


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    # Bytes only this image holds: what removing it frees (layers shared with others stay).
    unique_size: int
    created: float
    containers: int = 0
    last_used: float | None = None
    labels: dict[str, str] = field(default_factory=dict, compare=False)  # repo2docker's: repository, ref

    @property
    def recency(self) -> float:
        """When the image was last built or used, whichever is later."""
        return max(self.created, self.last_used or 0.0)

    def ours(self, prefix: str) -> bool:
        return bool(self.tags) and all(tag.startswith(prefix) for tag in self.tags)


@dataclass
class Decision:
    remove: list[ImageInfo] = field(default_factory=list)
    # Reason per removed image id: "unused for …" or "over the high watermark".
    reasons: dict[str, str] = field(default_factory=dict)
    usage_before: int = 0
    # The usage expected once the removals are done (shared layers make it an estimate).
    usage_after: int = 0

    @property
    def freed(self) -> int:
        return self.usage_before - self.usage_after


def removable(image: ImageInfo, policy: GCPolicy, wanted: set[str], now: float) -> bool:
    return (
        image.ours(policy.prefix)
        and not image.containers
        and not wanted.intersection(image.tags)
        and now - image.recency >= policy.grace
    )


def choose(images: Iterable[ImageInfo], usage: int, policy: GCPolicy, wanted: Iterable[str], now: float) -> Decision:
    """The images to remove, oldest use first, given the daemon's image `usage` in bytes."""
    decision = Decision(usage_before=usage, usage_after=usage)
    wanted = set(wanted)
    candidates = sorted((i for i in images if removable(i, policy, wanted, now)), key=lambda i: (i.recency, i.id))
    for image in candidates:
        idle = now - image.recency
        if policy.max_age is not None and idle >= policy.max_age:
            reason = f"unused for {idle / 86400:.1f} days (maximum {policy.max_age / 86400:.1f})"
        elif policy.target is not None and usage > policy.high_watermark and decision.usage_after > policy.target:
            reason = f"image storage over its high watermark (least recently used, idle {idle / 3600:.1f} h)"
        else:
            continue
        decision.remove.append(image)
        decision.reasons[image.id] = reason
        decision.usage_after -= image.unique_size
    return decision
