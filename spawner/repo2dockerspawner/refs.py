"""Resolving a ref to a commit SHA with `git ls-remote`, without blocking the hub.

The build is named after the commit, not the ref: a branch that moved is a new build, one
that did not is a cache hit. A full SHA is taken as is (ls-remote cannot list arbitrary
commits, and asking would only cost a round trip).
"""

from __future__ import annotations

import asyncio
import os
import re

from .options import bad_request

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def pick_commit(listing: str, ref: str) -> str | None:
    """The commit `ref` names in `git ls-remote` output: HEAD, a branch, a tag (peeled), or
    any ref whose full name matches. Branches win over tags, as in git itself."""
    refs: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        if FULL_SHA.match(sha) and name:
            refs[name.strip()] = sha
    for candidate in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"):
        if candidate in refs:
            return refs[candidate]
    return None


async def resolve_ref(repo: str, ref: str, timeout: float = 30.0, git: str = "git") -> str:
    """The full commit SHA for `ref` in `repo` (both already validated)."""
    if FULL_SHA.match(ref):
        return ref
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C"}
    try:
        proc = await asyncio.create_subprocess_exec(
            git, "ls-remote", "--", repo,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, env=env,
        )
    except FileNotFoundError:
        raise RuntimeError("git is not installed on the hub; it is needed to resolve refs") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise bad_request(f"The repository {repo} did not answer within {int(timeout)} s.") from None
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"git ls-remote exited with {proc.returncode}"
        raise bad_request(f"Could not read the repository {repo}: {reason}")
    commit = pick_commit(out.decode(errors="replace"), ref)
    if commit is None:
        raise bad_request(f"The ref {ref!r} was not found in {repo} (try a branch, a tag or a full commit SHA).")
    return commit
