"""Ages and sizes as people read them, for the builds page and the pending page's offer."""

from __future__ import annotations


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}" if unit != "h" or seconds >= 36000 else f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def human_size(size: int | None) -> str:
    if size is None:
        return "—"
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
