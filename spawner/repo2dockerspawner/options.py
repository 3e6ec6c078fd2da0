"""What a user may ask for: one repository URL and one ref, validated in one place.

All three ways JupyterHub hands us options (the HTML form, ``/hub/spawn?repo=…&ref=…`` and
REST ``user_options``) end in ``parse_options``. Anything it returns has passed the contract's
validation plus this hub's allow-lists, so it is safe to pass to ``git`` or Docker as a
separate argument; anything else is an ``HTTPError(400)`` with a message for the user.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from tornado import web

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import InvalidBuildRequest



@dataclass(frozen=True)
class RepoRequest:
    repo: str
    ref: str

    def as_user_options(self) -> dict[str, str]:
        return {"repo": self.repo, "ref": self.ref}


@dataclass(frozen=True)
class RepoPolicy:
    """This hub's allow-lists. Host patterns are fnmatch-style ('github.com', '*.example.org').

    A host matched by a pattern other than the catch-all ('*') is one the admin *named*: it
    may be on an internal network. Hosts admitted only by '*' must be public (``hosts.py``)."""

    schemes: tuple[str, ...] = ("https",)
    hosts: tuple[str, ...] = ("*",)
    default_ref: str = "HEAD"

    def check(self, url: str) -> None:
        if urlsplit(url).scheme.lower() not in self.schemes:
            raise InvalidBuildRequest(
                f"repositories must be given as {' or '.join(s + '://' for s in self.schemes)} URLs on this hub"
            )
        host, _port = contract.url_host(url)
        if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in self.hosts):
            raise InvalidBuildRequest(f"repositories from {host} are not allowed on this hub")

    def names(self, host: str) -> bool:
        """Whether an admin named this host (a pattern other than '*' matches it)."""
        return any(pattern.strip("*") and fnmatch.fnmatchcase(host.lower(), pattern.lower()) for pattern in self.hosts)


def bad_request(message: str, status: int = 400) -> web.HTTPError:
    """A 400 whose message JupyterHub shows as is: on the form, in the REST answer, on the
    pending page. ('%s' keeps tornado from %-formatting a URL that contains '%'.)"""
    exc = web.HTTPError(status, "%s", message)
    exc.jupyterhub_message = message  # type: ignore[attr-defined]
    return exc


def conflict(message: str) -> web.HTTPError:
    """A 409: the request is fine, but something in the way (a foreign build) must go first."""
    return bad_request(message, 409)


def first_value(value: Any) -> Any:
    """Form and query data arrive as lists of strings; REST as plain values."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else ""
    return value


def parse_options(raw: Mapping[str, Any] | None, policy: RepoPolicy) -> RepoRequest | None:
    """The validated request, or None for 'no repository: start the default image'."""
    raw = raw or {}
    repo = first_value(raw.get("repo", ""))
    ref = first_value(raw.get("ref", ""))
    if repo is None:
        repo = ""
    if not isinstance(repo, str) or not isinstance(ref, (str, type(None))):
        raise bad_request("repo and ref must be strings")
    repo, ref = repo.strip(), (ref or "").strip()
    if not repo:
        if ref:
            raise bad_request("A ref was given without a repository URL.")
        return None
    try:
        contract.validate_repo_url(repo)
        policy.check(repo)
        contract.validate_ref(ref or policy.default_ref)
    except InvalidBuildRequest as exc:
        raise bad_request(str(exc)[:1].upper() + str(exc)[1:] + ".") from None
    return RepoRequest(repo=repo, ref=ref or policy.default_ref)

