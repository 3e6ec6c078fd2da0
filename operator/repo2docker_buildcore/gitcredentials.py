"""Credentials for private repositories: which one a URL gets, and how git receives it.

A token is a secret of the hub (or of one user), and a build runs a stranger's code. So a
token never travels in a URL, a command line, a resource, a label, a log line or a
container's environment (all of which others can read, `docker inspect` included). git gets
it from a credential helper scoped by git's own URL matching:

* the hub's own lookups (`git ls-remote`) run a helper that prints it from the environment of
  that one git process;
* a build container gets git-credential-store files, written into the container before it
  starts (like the registry's Docker config), and an environment that only names them.

Two scopes (`CloneCredentials`), because a build clones more than one repository (its
submodules) and the two kinds of credential are for different readers:

* a user's own token opens *the launched repository only*: it is configured for that URL with
  `credential.useHttpPath`, so a submodule (or LFS store, or redirect) on another path of the
  same host is fetched without it. Otherwise a public repository with a private submodule of
  the launching user's would be built with that user's files, and served to everyone;
* the hub's (or operator's) credential for the host opens every repository of that host:
  the admin decided that every user may read what the hub reads, submodules included.

Table patterns are `repourl` patterns: a bare host pattern ('git.example.org') covers https
repositories of that host; plain http only when the admin writes the scheme
('http://git.internal'), and a catch-all ('*', '*.*') is refused: a token for every host is a
token for whoever runs a server.

A user's own token reaches a build on the cluster in a Secret of the build's namespace,
named after the build and owned by its resource (the API server deletes it with the
resource); see `secret_manifest` and `from_secret`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import contract, repourl
from .repourl import RepoPattern, RepoUrl

# In build containers: where the store files go. One per scope (see CloneCredentials).
STORE_DIR = "/r2d-git"
REPO_STORE = f"{STORE_DIR}/repository"
HOST_STORE = f"{STORE_DIR}/host"


@dataclass(frozen=True)
class GitCredential:
    username: str
    token: str = field(repr=False)  # never in a repr, hence never in a log line
    # A user's own (from their auth_state), not the hub's: on the cluster it is handed to the
    # build, where the operator would otherwise clone with its own credentials.
    personal: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("username", self.username), ("token", self.token)):
            if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
                raise ValueError(f"a repository credential's {name} must be one line of text")


@dataclass(frozen=True)
class CloneCredentials:
    """What one build may authenticate with, by scope: `repository` for the launched URL
    only (a user's own token), `host` for every repository of its origin (the hub's)."""

    repository: GitCredential | None = None
    host: GitCredential | None = None

    def __bool__(self) -> bool:
        return self.repository is not None or self.host is not None


def _url(url: str | RepoUrl) -> RepoUrl:
    return url if isinstance(url, RepoUrl) else repourl.parse(url)


def origin(url: str | RepoUrl) -> str:
    """scheme://host[:port] of a repository URL: what a host-wide credential is scoped to."""
    return _url(url).origin


def credential_pattern(text: str, what: str) -> RepoPattern:
    """A table key as a pattern, refusing the ones that would send a token to any host."""
    try:
        pattern = repourl.parse_pattern(text, default_scheme="https")
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if pattern.scheme not in ("https", "http") or not repourl.names_hosts(pattern.host):
        raise ValueError(
            f"{what}[{text!r}]: credentials need a host pattern that names hosts "
            f"('git.example.org', '*.example.org'), with https (or http://, said explicitly); "
            f"a catch-all would send the token to whoever runs a server"
        )
    return pattern


def host_matches(url: str | RepoUrl, pattern: str) -> bool:
    """Whether a credential pattern ('github.com', 'http://git.internal/org/*') covers the URL."""
    return repourl.parse_pattern(pattern, default_scheme="https").matches(_url(url))


def match(url: str | RepoUrl, table: Iterable[tuple[str, GitCredential]]) -> GitCredential | None:
    """The credential of the first pattern that covers the URL, else None."""
    parsed = _url(url)
    return next((cred for pattern, cred in table if host_matches(parsed, pattern)), None)


def load_table(entries: Mapping[str, Mapping[str, Any]], what: str) -> list[tuple[str, GitCredential]]:
    """{pattern: {"username": …, and "token", "token_env" or "token_file"}} as
    (pattern, credential) pairs. Tokens named by a variable or file are read now: callers
    load the table at each use, so a rotated token is used from the next build on."""
    table = []
    for pattern, entry in entries.items():
        credential_pattern(str(pattern), what)
        if not isinstance(entry, Mapping) or not entry.get("username"):
            raise ValueError(f"{what}[{pattern!r}] needs a username and one of token, token_env, token_file")
        sources = [key for key in ("token", "token_env", "token_file") if entry.get(key)]
        if len(sources) != 1:
            raise ValueError(f"{what}[{pattern!r}] needs exactly one of token, token_env, token_file")
        if sources[0] == "token":
            token = str(entry["token"])
        elif sources[0] == "token_env":
            token = os.environ.get(str(entry["token_env"]), "")
            if not token:
                raise ValueError(f"{what}[{pattern!r}]: the variable {entry['token_env']} is not set")
        else:
            token = Path(str(entry["token_file"])).read_text().strip()
        table.append((str(pattern), GitCredential(str(entry["username"]), token)))
    return table


def load_file(path: str, what: str) -> list[tuple[str, GitCredential]]:
    """A table from a JSON file of the same shape (a mounted Kubernetes Secret)."""
    return load_table(json.loads(Path(path).read_text()), what)


def _userinfo(credential: GitCredential) -> str:
    return f"{quote(credential.username, safe='')}:{quote(credential.token, safe='')}"


def store_files(url: str | RepoUrl, credentials: CloneCredentials) -> dict[str, str]:
    """{path in the container: git-credential-store content}: the repository's entry carries
    its path (matched exactly, with useHttpPath), the host's none (any path of the origin)."""
    parsed = _url(url)
    files = {}
    if credentials.repository is not None:
        host = parsed.origin.split("://", 1)[1]
        files[REPO_STORE] = f"{parsed.scheme}://{_userinfo(credentials.repository)}@{host}{parsed.path}\n"
    if credentials.host is not None:
        scheme, host = parsed.origin.split("://", 1)
        files[HOST_STORE] = f"{scheme}://{_userinfo(credentials.host)}@{host}\n"
    return files


def store_archive(url: str | RepoUrl, credentials: CloneCredentials) -> bytes:
    """A tar holding the store files (0600, in a 0700 STORE_DIR) for put_archive at '/'."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(STORE_DIR.lstrip("/"))
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
        tar.addfile(directory)
        for path, text in store_files(url, credentials).items():
            data = text.encode()
            entry = tarfile.TarInfo(path.lstrip("/"))
            entry.size, entry.mode, entry.mtime = len(data), 0o600, int(time.time())
            tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def _git_config(pairs: list[tuple[str, str]]) -> dict[str, str]:
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for index, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{index}"], env[f"GIT_CONFIG_VALUE_{index}"] = key, value
    return env


def scoped_helpers(url: str | RepoUrl, repository_helper: str | None, host_helper: str | None) -> list[tuple[str, str]]:
    """git configuration for the two scopes. git tries helpers in configuration order, so the
    repository's comes first; `credential.<URL>.*` applies to that URL's path and below only,
    and useHttpPath makes the store match the path exactly (no submodule under it)."""
    parsed = _url(url)
    pairs = []
    if repository_helper:
        pairs += [
            (f"credential.{parsed.url}.helper", repository_helper),
            (f"credential.{parsed.url}.useHttpPath", "true"),
        ]
    if host_helper:
        pairs.append((f"credential.{parsed.origin}.helper", host_helper))
    return pairs


def store_environment(url: str | RepoUrl, credentials: CloneCredentials) -> dict[str, str]:
    """A build container's environment naming the store files (never a token)."""
    return _git_config(
        scoped_helpers(
            url,
            f"store --file={REPO_STORE}" if credentials.repository else None,
            f"store --file={HOST_STORE}" if credentials.host else None,
        )
    )


# The hub's own git: a helper that answers `get` from two variables of that git's environment.
ENV_HELPER = (
    '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" "$R2D_GIT_USERNAME" "$R2D_GIT_TOKEN"; }; f'
)


def helper_environment(url: str | RepoUrl, credential: GitCredential) -> dict[str, str]:
    """Environment for one git process of the hub that may use `credential` for `url`: a
    user's own for that repository only, the hub's for its origin."""
    helper = [ENV_HELPER, None] if credential.personal else [None, ENV_HELPER]
    return {
        **_git_config(scoped_helpers(url, *helper)),
        "R2D_GIT_USERNAME": credential.username,
        "R2D_GIT_TOKEN": credential.token,
    }


# ---- a user's own credential for a build on the cluster --------------------------------------
SECRET_TYPE = "kubernetes.io/basic-auth"


class ForeignSecret(ValueError):
    """A Secret by the build's credential name that its resource does not own."""


def secret_name(build_name: str) -> str:
    return f"{build_name}-git"


def secret_manifest(build: Mapping[str, Any], credential: GitCredential) -> dict[str, Any]:
    """The Secret that hands `credential` to the build resource `build` (as created)."""
    meta = build["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {contract.LABEL_BUILD_NAME: meta["name"], contract.LABEL_MANAGED_BY: "repo2dockerspawner"},
            # The API server's garbage collector deletes it with its build.
            "ownerReferences": [
                {
                    "apiVersion": contract.API_VERSION,
                    "kind": contract.KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "stringData": {"username": credential.username, "password": credential.token},
    }


def from_secret(secret: Mapping[str, Any], build_name: str, uid: str) -> GitCredential:
    """The credential in a build's Secret, if that very resource (uid) owns it. Whoever may
    create build resources cannot borrow another build's credential by naming its Secret,
    and a Secret left by an earlier resource of the same name is not taken for a new one."""
    meta = secret.get("metadata") or {}
    owned = any(
        ref.get("uid") == uid and ref.get("kind") == contract.KIND and ref.get("controller")
        for ref in meta.get("ownerReferences") or []
    )
    if not owned or meta.get("name") != secret_name(build_name) or secret.get("type") != SECRET_TYPE:
        raise ForeignSecret(f"the Secret {meta.get('name')} is not this build's credential")
    data = secret.get("data") or {}
    try:
        return GitCredential(
            base64.b64decode(data.get("username", "")).decode(),
            base64.b64decode(data.get("password", "")).decode(),
            personal=True,
        )
    except ValueError as exc:  # includes binascii and unicode errors, and an empty field
        raise ForeignSecret(f"the Secret {meta.get('name')} holds no usable credential") from exc
