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

from traitlets import Any as AnyTrait
from traitlets import Dict, List, TraitError, Unicode, validate
from traitlets.config import Configurable

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

from .errors import BuildFailed

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


class CredentialSettings(Configurable):
    """The spawner's settings for private repositories, and the credential of one launch.

    A mixin of Repo2DockerSpawner (its traits are configured as the spawner's); the spawner
    gives `user` (for auth_state) and `log`."""

    repo_credentials = Dict(
        config=True,
        help="""Credentials for private repositories, for every user of this hub: pattern →
        {"username": …, and one of "token", "token_env" (a variable of the hub's environment),
        "token_file"}. A pattern is a host pattern ('git.example.org', '*.example.org': https
        repositories of those hosts, submodules included) or a URL pattern
        ('http://git.internal/org/*': plain http only when written so); a catch-all ('*',
        '*.*') is refused. Used by the hub's ref lookups and by the embedded backend's builds,
        through a git credential helper (never in a URL, the build resource, labels, logs or
        `docker inspect`). The operator has its own: the chart's build.gitCredentials.""",
    )
    repo_credentials_file = Unicode(
        "",
        config=True,
        help="A JSON file of the same shape as repo_credentials (e.g. a mounted Secret), read at each launch.",
    )
    user_credentials_from_auth_state = AnyTrait(
        "",
        config=True,
        help="""Where a user's own token is in their auth_state (an OAuth authenticator's, with
        enable_auth_state): a key path such as 'access_token', or a callable of auth_state
        returning {"username": …, "token": …} or None. Used only for user_credentials_hosts.""",
    )
    user_credentials_hosts = List(
        Unicode(),
        config=True,
        help="""Where users' own tokens are for: host patterns, e.g. ['github.com'] (https
        repositories of that host), or URL patterns ('https://git.example.org/course/*'; plain
        http only when written so). A catch-all ('*') is refused. A token is never sent
        elsewhere, whatever URL a user (or a link) gives; within those, it is sent only for
        the launched repository (never for its submodules), and a build gets it only when the
        repository refuses an anonymous lookup (a private one).""",
    )

    @validate("user_credentials_hosts")
    def _validate_user_hosts(self, proposal: Any) -> Any:
        try:
            return check_user_hosts(list(proposal["value"]))
        except ValueError as exc:
            raise TraitError(str(exc)) from None

    user_credentials_username = Unicode(
        "oauth2",
        config=True,
        help="The git username sent with a token from a key path (GitLab, GitHub and Gitea accept 'oauth2').",
    )

    @validate("repo_credentials")
    def _validate_credentials(self, proposal: Any) -> Any:
        try:
            hub_table(proposal["value"], "")
        except (ValueError, OSError) as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    async def credential(self, repo: str | RepoUrl) -> CloneCredentials:
        """What this user reads `repo` with: their own token where user_credentials_hosts
        covers it, and the hub's credential for the host (credentials.py)."""

        async def own() -> GitCredential | None:
            return await from_auth_state(
                await self.user.get_auth_state(), self.user_credentials_from_auth_state, self.user_credentials_username
            )

        try:
            table = hub_table(self.repo_credentials, self.repo_credentials_file)
        except (ValueError, OSError) as exc:
            self.log.error("repository credentials: %s", exc)
            raise BuildFailed("This hub's repository credentials could not be read; the admin has been told.") from None
        user = own if self.user_credentials_from_auth_state else None
        return await credential_for(repo, hub=table, user=user, user_hosts=list(self.user_credentials_hosts))
