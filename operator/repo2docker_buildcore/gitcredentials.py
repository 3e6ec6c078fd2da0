"""Credentials for private repositories: which one a URL gets, and how git receives it.

A token is a secret of the hub (or of one user), and a build runs a stranger's code. So a
token never travels in a URL, a command line, a resource, a label, a log line or a
container's environment (all of which others can read, `docker inspect` included). git gets
it from a credential helper scoped to the repository's host:

* the hub's own lookups (`git ls-remote`) run a helper that prints it from the environment of
  that one git process;
* a build container gets a git-credential-store file, written into the container before it
  starts (like the registry's Docker config), and an environment that only names the file.

The file holds an entry for the one host the build clones from: a submodule or redirect to
another host never receives it.

A user's own token reaches a build on the cluster in a Secret of the build's namespace,
named after the build and owned by its resource (the API server deletes it with the
resource); see `secret_manifest` and `from_secret`.
"""

from __future__ import annotations

import base64
import fnmatch
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlsplit

from . import contract

# In build containers: where the store file goes, and the git configuration naming it.
STORE_DIR = "/r2d-git"
STORE_FILE = f"{STORE_DIR}/credentials"


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


def origin(url: str) -> str:
    """scheme://host[:port] of a repository URL: what a credential is scoped to."""
    parts = urlsplit(url)
    host, port = contract.url_host(url)
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def host_matches(url: str, pattern: str) -> bool:
    """Whether the URL's host matches a host pattern (fnmatch, like allowed_repo_hosts)."""
    return fnmatch.fnmatchcase(contract.url_host(url)[0], pattern.lower())


def match(url: str, table: Iterable[tuple[str, GitCredential]]) -> GitCredential | None:
    """The credential of the first host pattern that matches the URL's host, else None."""
    return next((cred for pattern, cred in table if host_matches(url, pattern)), None)


def load_table(entries: Mapping[str, Mapping[str, Any]], what: str) -> list[tuple[str, GitCredential]]:
    """{host pattern: {"username": …, and "token", "token_env" or "token_file"}} as
    (pattern, credential) pairs. Tokens named by a variable or file are read now: callers
    load the table at each use, so a rotated token is used from the next build on."""
    table = []
    for pattern, entry in entries.items():
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


def store_line(url: str, credential: GitCredential) -> str:
    """One git-credential-store entry for the URL's origin."""
    parts = urlsplit(origin(url))
    return (f"{parts.scheme}://{quote(credential.username, safe='')}:{quote(credential.token, safe='')}"
            f"@{parts.netloc}\n")


def store_archive(url: str, credential: GitCredential) -> bytes:
    """A tar holding STORE_DIR/credentials (0600) for put_archive at '/'."""
    data = store_line(url, credential).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(STORE_DIR.lstrip("/"))
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
        tar.addfile(directory)
        entry = tarfile.TarInfo(STORE_FILE.lstrip("/"))
        entry.size, entry.mode, entry.mtime = len(data), 0o600, int(time.time())
        tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def store_environment(url: str) -> dict[str, str]:
    """A build container's environment naming the store file, for the URL's origin only."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"credential.{origin(url)}.helper",
            "GIT_CONFIG_VALUE_0": f"store --file={STORE_FILE}"}


# The hub's own git: a helper that answers `get` from two variables of that git's environment.
ENV_HELPER = '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" "$R2D_GIT_USERNAME" "$R2D_GIT_TOKEN"; }; f'


def helper_environment(url: str, credential: GitCredential) -> dict[str, str]:
    """Environment for one git process of the hub that may use `credential` for `url`'s origin."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"credential.{origin(url)}.helper",
            "GIT_CONFIG_VALUE_0": ENV_HELPER, "R2D_GIT_USERNAME": credential.username,
            "R2D_GIT_TOKEN": credential.token}


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
        "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name(meta["name"]), "namespace": meta["namespace"],
            "labels": {contract.LABEL_BUILD_NAME: meta["name"], contract.LABEL_MANAGED_BY: "repo2dockerspawner"},
            # The API server's garbage collector deletes it with its build.
            "ownerReferences": [{"apiVersion": contract.API_VERSION, "kind": contract.KIND, "name": meta["name"],
                                 "uid": meta["uid"], "controller": True}],
        },
        "stringData": {"username": credential.username, "password": credential.token},
    }


def from_secret(secret: Mapping[str, Any], build_name: str, uid: str) -> GitCredential:
    """The credential in a build's Secret, if that very resource (uid) owns it. Whoever may
    create build resources cannot borrow another build's credential by naming its Secret,
    and a Secret left by an earlier resource of the same name is not taken for a new one."""
    meta = secret.get("metadata") or {}
    owned = any(ref.get("uid") == uid and ref.get("kind") == contract.KIND and ref.get("controller")
                for ref in meta.get("ownerReferences") or [])
    if not owned or meta.get("name") != secret_name(build_name) or secret.get("type") != SECRET_TYPE:
        raise ForeignSecret(f"the Secret {meta.get('name')} is not this build's credential")
    data = secret.get("data") or {}
    try:
        return GitCredential(base64.b64decode(data.get("username", "")).decode(),
                             base64.b64decode(data.get("password", "")).decode(), personal=True)
    except ValueError as exc:  # includes binascii and unicode errors, and an empty field
        raise ForeignSecret(f"the Secret {meta.get('name')} holds no usable credential") from exc
