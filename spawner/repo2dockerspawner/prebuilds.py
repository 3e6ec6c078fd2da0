"""Which repositories the hub prebuilds: `prebuild_repos`, validated as a user's request would be.

The prebuilder itself (a hub-wide service) is hub/prebuilder.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tornado import web

from repo2docker_buildcore import contract

from .options import RepoPolicy, parse_options


@dataclass(frozen=True)
class WatchedRepo:
    repo: str
    refs: tuple[str, ...]

    @property
    def key(self) -> str:
        return contract.normalize_repo_url(self.repo)


def watched_repos(entries: Any, policy: RepoPolicy) -> tuple[WatchedRepo, ...]:
    """`prebuild_repos` validated as a user's request would be (URL, allow-lists, refs); a
    ValueError names the entry that is wrong."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError('prebuild_repos must be a list of {"repo": URL, "refs": [...]}')
    watched: dict[str, WatchedRepo] = {}
    for index, entry in enumerate(entries):
        where = f"prebuild_repos[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("repo"), str):
            raise ValueError(f'{where} must be {{"repo": URL, "refs": [...]}}')
        refs = entry.get("refs", [policy.default_ref])
        if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"{where}: refs must be a non-empty list of branch or tag names")
        requests = []
        for ref in refs:
            try:
                requests.append(parse_options({"repo": entry["repo"], "ref": ref}, policy))
            except web.HTTPError as exc:
                raise ValueError(f"{where}: {getattr(exc, 'jupyterhub_message', exc)}") from None
        repo = WatchedRepo(requests[0].repo, tuple(dict.fromkeys(r.ref for r in requests)))
        if repo.key in watched:
            raise ValueError(f"{where}: {repo.repo} is listed twice")
        watched[repo.key] = repo
    return tuple(watched.values())
