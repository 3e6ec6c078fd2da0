"""`make bench`: every measurement against its baseline from the same run, as one table.

Usage: .venv/bin/python bench/table.py   (needs `make testenv`; about ten minutes)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import affinity  # noqa: E402
import build_overhead  # noqa: E402
import estimate  # noqa: E402
import hub_latency  # noqa: E402
import image_gc  # noqa: E402
import makespan  # noqa: E402
import operator_scale  # noqa: E402
import prebuild  # noqa: E402
import two_nodes  # noqa: E402

from support.env import load_env  # noqa: E402


def main() -> None:
    env = load_env(ROOT / ".testenv" / "env")
    rows = []
    for name, measure in [
        ("build overhead", build_overhead.measure),
        ("makespan", makespan.measure),
        ("hub latency", hub_latency.measure),
        ("operator scale", operator_scale.measure),
        ("image GC", image_gc.measure),
        ("two nodes", two_nodes.measure),
        ("wait estimate", estimate.measure),
        ("cache affinity", affinity.measure),
        ("prebuilds", prebuild.measure),
    ]:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows += measure(env)
    header = ("measure", "this project", "baseline (same run)", "ratio / difference")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
