"""What a user may ask for: one repository URL and one ref, validated in one place.

All three ways JupyterHub hands us options (the HTML form, ``/hub/spawn?repo=…&ref=…`` and
REST ``user_options``) end in ``parse_options``. Anything it returns has passed the contract's
validation plus this hub's allow-lists, so it is safe to pass to ``git`` or Docker as a
separate argument; anything else is an ``HTTPError(400)`` with a message for the user.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tornado import web

from repo2docker_buildcore import contract, repourl
from repo2docker_buildcore.contract import InvalidBuildRequest
from repo2docker_buildcore.repourl import RepoUrl


@dataclass(frozen=True)
class RepoRequest:
    """A launch's repository (parsed once: repourl.py) and ref."""

    url: RepoUrl
    ref: str

    @property
    def repo(self) -> str:
        """The canonical URL: what git, names, resources and every later check are given."""
        return self.url.url

    def as_user_options(self) -> dict[str, str]:
        return {"repo": self.repo, "ref": self.ref}


@dataclass(frozen=True)
class RepoPolicy:
    """This hub's allow-lists. Host patterns are fnmatch-style ('github.com', '*.example.org').

    A host matched by a pattern that names hosts (no wildcard, or a literal domain after the
    last: `repourl.names_hosts`) is one the admin *named*: it may be on an internal network.
    Hosts admitted only by catch-alls ('*', '*.*', '?*', '*.org') must be public (``hosts.py``)."""

    schemes: tuple[str, ...] = ("https",)
    hosts: tuple[str, ...] = ("*",)
    default_ref: str = "HEAD"

    def check(self, url: RepoUrl) -> None:
        if url.scheme not in self.schemes:
            raise InvalidBuildRequest(
                f"repositories must be given as {' or '.join(s + '://' for s in self.schemes)} URLs on this hub"
            )
        if not any(fnmatch.fnmatchcase(url.host, pattern.lower()) for pattern in self.hosts):
            raise InvalidBuildRequest(f"repositories from {url.host} are not allowed on this hub")

    def names(self, host: str) -> bool:
        """Whether an admin named this host (a pattern that is not a catch-all matches it)."""
        return any(
            repourl.names_hosts(pattern) and fnmatch.fnmatchcase(host.lower(), pattern.lower())
            for pattern in self.hosts
        )


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
        url = repourl.parse(repo)
        policy.check(url)
        contract.validate_ref(ref or policy.default_ref)
    except InvalidBuildRequest as exc:
        raise bad_request(str(exc)[:1].upper() + str(exc)[1:] + ".") from None
    return RepoRequest(url=url, ref=ref or policy.default_ref)


# How a form or a REST client says yes to starting the previous version (progress.py offers it).
TRUE = ("1", "true", "yes", "on")


def asks_for_previous(options: Mapping[str, Any] | None) -> bool:
    """Whether user_options ask for the previous build (REST: true; a form: 'on', '1')."""
    value = (options or {}).get("previous_ok")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return value is True or (isinstance(value, str) and value.strip().lower() in TRUE)
