"""Which credential a launch reads a repository with: the user's own, else the hub's.

The hub's credentials (`repo_credentials`, `repo_credentials_file`) are for everybody: any
user may launch what they can read. A user's own token (from their authenticator's
`auth_state`) is theirs alone, and is sent only to hosts the admin names for it
(`user_credentials_hosts`): a link to a repository on another host must never collect it.
Where a user has their own, it is the one the hub's lookup uses, so a user whose token cannot
read a private repository is refused even where the hub's could. A build gets the user's own
token only for a private repository, and for that repository's URL only (gitcredentials.py):
a public repository is looked up without it first and built without it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from repo2docker_buildcore.gitcredentials import (
    CloneCredentials,
    GitCredential,
    credential_pattern,
    host_matches,
    load_file,
    load_table,
    match,
)
from repo2docker_buildcore.repourl import RepoUrl

# A key path into auth_state ("access_token", "oauth.token"), or a callable of auth_state
# returning {"username": …, "token": …} or None (it may be async).
AuthStateSource = str | Callable[[Mapping[str, Any]], Any]


def lookup_path(auth_state: Mapping[str, Any], path: str) -> Any:
    value: Any = auth_state
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


async def from_auth_state(
    auth_state: Mapping[str, Any] | None, source: AuthStateSource, username: str
) -> GitCredential | None:
    """The user's credential from their auth_state, or None when it holds none."""
    if not auth_state or not source:
        return None
    if callable(source):
        found = source(auth_state)
        if inspect.isawaitable(found):
            found = await found
        if not found:
            return None
        return GitCredential(str(found.get("username") or username), str(found["token"]), personal=True)
    token = lookup_path(auth_state, source)
    return GitCredential(username, str(token), personal=True) if token else None


def hub_table(entries: Mapping[str, Mapping[str, Any]], path: str) -> list[tuple[str, GitCredential]]:
    """The hub's credentials, read now (a rotated token file is used from the next launch)."""
    table = load_table(entries, "Repo2DockerSpawner.repo_credentials")
    if path:
        table += load_file(path, f"Repo2DockerSpawner.repo_credentials_file ({path})")
    return table


def check_user_hosts(patterns: list[str]) -> list[str]:
    """`user_credentials_hosts`, refusing patterns that would send a user's token anywhere."""
    for pattern in patterns:
        credential_pattern(pattern, "Repo2DockerSpawner.user_credentials_hosts")
    return patterns


async def credential_for(
    url: str | RepoUrl,
    *,
    hub: list[tuple[str, GitCredential]],
    user: Callable[[], Awaitable[GitCredential | None]] | None,
    user_hosts: list[str],
) -> CloneCredentials:
    """The user's own credential (for this repository) where a pattern of `user_hosts` covers
    it, and the hub's for its host."""
    own = None
    if user is not None and any(host_matches(url, pattern) for pattern in user_hosts):
        own = await user()
    return CloneCredentials(repository=own, host=match(url, hub))
