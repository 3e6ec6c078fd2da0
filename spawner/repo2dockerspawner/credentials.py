"""Which credential a launch reads a repository with: the user's own, else the hub's.

The hub's credentials (`repo_credentials`, `repo_credentials_file`) are for everybody: any
user may launch what they can read. A user's own token (from their authenticator's
`auth_state`) is theirs alone, and is sent only to hosts the admin names for it
(`user_credentials_hosts`): a link to a repository on another host must never collect it.
Where a user has their own, it is the one used, so a user whose token cannot read a private
repository is refused even where the hub's could.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Mapping, Union

from repo2docker_buildcore.gitcredentials import GitCredential, host_matches, load_file, load_table, match

# A key path into auth_state ("access_token", "oauth.token"), or a callable of auth_state
# returning {"username": …, "token": …} or None (it may be async).
AuthStateSource = Union[str, Callable[[Mapping[str, Any]], Any]]


def lookup_path(auth_state: Mapping[str, Any], path: str) -> Any:
    value: Any = auth_state
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


async def from_auth_state(auth_state: Mapping[str, Any] | None, source: AuthStateSource,
                          username: str) -> GitCredential | None:
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


async def credential_for(url: str, *, hub: list[tuple[str, GitCredential]],
                         user: Callable[[], Awaitable[GitCredential | None]] | None,
                         user_hosts: list[str]) -> GitCredential | None:
    """The user's own credential for a host named for it, else the hub's, else None."""
    if user is not None and any(host_matches(url, pattern) for pattern in user_hosts):
        own = await user()
        if own is not None:
            return own
    return match(url, hub)
