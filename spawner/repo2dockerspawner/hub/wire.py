"""What crosses the bridge (hub/bridge.py) to the hub service: builds and prebuilds as JSON.

The service renders from these plain values; it never imports the build machinery.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..backends import BuildRecord
from .prebuilder import Prebuilder


def build_to_wire(record: BuildRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["phase"] = record.phase.value
    data["events"] = [list(event) for event in record.events]
    return data


def prebuilds_to_wire(prebuilder: Prebuilder | None) -> dict[str, Any] | None:
    """The watched repositories with each ref's last resolution, for the builds page."""
    if prebuilder is None or not prebuilder.watched:
        return None
    repos = []
    for key, repo in prebuilder.watched.items():
        state = prebuilder.state[key]
        refs = []
        for ref in repo.refs:
            r = state.refs[ref]
            refs.append(
                {
                    "ref": ref,
                    "commit": r.commit,
                    "build": r.build,
                    "phase": r.phase.value if r.phase else None,
                    "resolvedAt": r.resolved_at,
                    "error": r.error,
                }
            )
        repos.append({"repo": repo.repo, "error": state.error, "resolutions": state.resolutions, "refs": refs})
    return {"interval": prebuilder.interval, "repos": repos}
