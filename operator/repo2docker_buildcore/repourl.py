"""A repository URL, parsed once into the one value every decision and consumer uses.

A URL string can name one repository in many spellings, and each reader resolves them its own
way: git (libcurl) removes dot-segments before it sends a request, so
``https://host/trusted-x/../other.git`` fetches ``/other.git`` while a pattern match or a
name derivation on the string still sees ``trusted-x``. So a URL is never passed on as typed:
``parse`` turns it into a ``RepoUrl`` (scheme, host, port, path segments) or refuses it, and
the allow-lists, ``autolaunch_repos``, credentials, names and images, ``git ls-remote``, the
build resource, prebuilds and webhooks all read that value.

Refused outright (each has no meaning a user needs, and each is a second spelling of a path):
``.`` and ``..`` segments, empty segments (``a//b``), percent-encoded ``.``, ``/`` and ``\\``,
control characters (raw or encoded), a query or fragment, and userinfo (credentials in a
URL end up in resources, labels and logs; an ``ssh://`` URL may name a user, never a
password). Kept and made canonical: the scheme and host in lower case, the scheme's default
port left out, other percent-encodings of unreserved characters decoded and the rest in upper
case, one trailing ``/`` dropped. The path keeps its case: not every host folds it.

Patterns (``autolaunch_repos``, ``prebuild_repos``, credential scopes) are matched on these
values segment by segment: ``*`` and ``?`` never cross a ``/``; a whole segment ``**`` matches
any number of segments. Host patterns are fnmatch patterns on the host name.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from .errors import InvalidBuildRequest

MAX_URL_LENGTH = 2048
SCHEMES = ("https", "http", "git", "ssh")
DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}

# What a path segment may hold as typed: RFC 3986 pchar (unreserved, sub-delims, ':', '@')
# and percent-encodings; a percent-encoding of '.', '/', '\' or a control character is refused.
_PCT_REFUSED = "%(2[Ee]|2[Ff]|5[Cc]|[01][0-9A-Fa-f]|7[Ff])"
_PCT_OK = "%(2[0-9A-Da-d]|3[0-9A-Fa-f]|4[0-9A-Fa-f]|5[0-9ABabD-Fd-f]|6[0-9A-Fa-f]|7[0-9A-Ea-e]|[89A-Fa-f][0-9A-Fa-f])"
_CHAR = rf"([A-Za-z0-9_~!$&'()*+,;=:@-]|{_PCT_OK})"
# A segment that is not '.' or '..' (RE2 has no look-ahead: spelled out).
_SEGMENT = rf"({_CHAR}({_CHAR}|\.)*|\.{_CHAR}({_CHAR}|\.)*|\.\.({_CHAR}|\.)+)"
_HOST = r"([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*|\[[0-9A-Fa-f:.]+\])"
_PORT = r"(:[0-9]{1,5})?"
# The CRD's pattern for spec.repoUrl: the API server refuses what the operator would.
URL_PATTERN = rf"^((https?|git)://|ssh://([A-Za-z0-9._-]+@)?){_HOST}{_PORT}(/{_SEGMENT})*/?$"

_URL_RE = re.compile(URL_PATTERN)
_SEGMENT_RE = re.compile(_SEGMENT)
_HOST_RE = re.compile(_HOST)
_PCT_REFUSED_RE = re.compile(_PCT_REFUSED)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")


@dataclass(frozen=True)
class RepoUrl:
    """A repository URL in canonical form. `str()` of it is the URL git is given."""

    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int | None  # None for the scheme's default port
    segments: tuple[str, ...]  # the path, percent-encoding normalised; never '.', '..' or ''
    user: str = ""  # ssh:// only

    def __str__(self) -> str:
        return self.url

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")

    @property
    def path(self) -> str:
        return "".join(f"/{s}" for s in self.segments)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"

    @property
    def origin(self) -> str:
        """scheme://host[:port]: what a host-wide credential is scoped to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port else "")

    @property
    def key_segments(self) -> tuple[str, ...]:
        """The path as it names the repository: a trailing '.git' names the same one."""
        if self.segments and self.segments[-1].endswith(".git") and len(self.segments[-1]) > 4:
            return (*self.segments[:-1], self.segments[-1][:-4])
        return self.segments

    @property
    def key(self) -> str:
        """The form images and resources are named after: same repository, same key."""
        return f"{self.scheme}://{self.netloc}" + "".join(f"/{s}" for s in self.key_segments)


def parse(url: str) -> RepoUrl:
    """The canonical value of a repository URL, or InvalidBuildRequest saying what is wrong."""
    if not isinstance(url, str) or not url:
        raise InvalidBuildRequest("a repository URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidBuildRequest(f"the repository URL is longer than {MAX_URL_LENGTH} characters")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise InvalidBuildRequest(f"the repository URL must start with one of {', '.join(s + '://' for s in SCHEMES)}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidBuildRequest("the repository URL contains control characters, which are not allowed")
    netloc, slash, path = rest.partition("/")
    user = ""
    if "@" in netloc:
        user, _, netloc = netloc.rpartition("@")
        if scheme != "ssh" or ":" in user or not re.fullmatch(r"[A-Za-z0-9._-]+", user):
            raise InvalidBuildRequest("the repository URL must not contain credentials")
    host, port = _host_port(netloc, scheme)
    segments = _segments(path) if slash else ()
    parsed = RepoUrl(scheme, host, port, segments, user)
    if not _URL_RE.fullmatch(parsed.url):  # the CRD's own pattern: what it refuses, this refuses
        raise InvalidBuildRequest("the repository URL contains characters that are not allowed")
    return parsed


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    host, port_text = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        host, port_text = netloc[1:end] if end > 0 else netloc, netloc[end + 1 :] if end > 0 else ""
        if end < 0 or (port_text and not port_text.startswith(":")) or not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            raise InvalidBuildRequest("the repository URL is not a valid URL (check its host and port)")
        port_text = port_text[1:]
    elif ":" in netloc:
        host, _, port_text = netloc.partition(":")
    if not host:
        raise InvalidBuildRequest("the repository URL names no host")
    if ":" not in host and not _HOST_RE.fullmatch(host):
        raise InvalidBuildRequest("the repository URL is not a valid URL (check its host and port)")
    port = None
    if port_text or netloc.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidBuildRequest("the repository URL is not a valid URL (check its host and port)")
        port = int(port_text)
    if port == DEFAULT_PORTS[scheme]:
        port = None
    return host.lower(), port


def _segments(path: str) -> tuple[str, ...]:
    if "?" in path or "#" in path:
        raise InvalidBuildRequest("a repository URL has no query or fragment ('?', '#')")
    if path.endswith("/"):
        path = path[:-1]
    if not path:
        return ()
    segments = []
    for raw in path.split("/"):
        if raw in ("", ".", ".."):
            raise InvalidBuildRequest("the repository URL's path may not contain '.', '..' or empty segments")
        if _PCT_REFUSED_RE.search(raw) or "\\" in raw:
            raise InvalidBuildRequest(
                "the repository URL's path may not contain an encoded '.', '/', '\\' or control character"
            )
        segment = _normalise_percent(raw)
        if segment in (".", "..") or not _SEGMENT_RE.fullmatch(segment):
            raise InvalidBuildRequest("the repository URL contains characters that are not allowed")
        segments.append(segment)
    return tuple(segments)


def _normalise_percent(segment: str) -> str:
    """'%61' is 'a' and '%c3' is '%C3': one spelling per segment."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    if "%" in segment and not re.fullmatch(r"([^%]|%[0-9A-Fa-f]{2})*", segment):
        raise InvalidBuildRequest("the repository URL has a '%' that is not a percent-encoding")
    return re.sub(r"%([0-9A-Fa-f]{2})", one, segment)


def canonical(url: str) -> str:
    """`parse(url).url`: the spelling every consumer is given."""
    return parse(url).url


def repo_key(url: str) -> str:
    return parse(url).key


# ---- patterns ---------------------------------------------------------------------------------

WILDCARDS = "*?["


@dataclass(frozen=True)
class RepoPattern:
    """scheme://host-pattern[/segment-pattern...]: which repositories a setting covers.

    The scheme and host are fnmatch patterns (a pattern without a port covers any port);
    path segments are matched one by one ('*' never
    crosses '/'), a segment '**' matches any number of them, and a pattern without a path
    covers every repository of the host. A trailing '.git' on either side is ignored."""

    text: str
    scheme: str
    host: str
    segments: tuple[str, ...] | None  # None: any path
    port: int | None = None  # None: any port

    def matches(self, repo: RepoUrl) -> bool:
        if not fnmatch.fnmatchcase(repo.scheme, self.scheme) or not fnmatch.fnmatchcase(repo.host, self.host):
            return False
        if self.port is not None and repo.port != self.port:
            return False
        return self.segments is None or _match_segments(self.segments, repo.key_segments)


def parse_pattern(text: str, default_scheme: str | None = None) -> RepoPattern:
    """A pattern of whole URLs ('https://github.com/my-course/*'), or, with a
    `default_scheme`, also a bare host pattern ('github.com', '*.example.org'), which covers
    every repository of matching hosts under that scheme. ValueError says what is wrong."""
    text = text.strip()
    if "://" in text:
        scheme, _, rest = text.partition("://")
    elif default_scheme:
        scheme, rest = default_scheme, text
    else:
        raise ValueError(f"{text!r} must be a pattern of whole URLs, e.g. 'https://github.com/my-course/*'")
    netloc, slash, path = rest.partition("/")
    if not netloc or "@" in netloc:
        raise ValueError(f"{text!r} names no host pattern (and may name no user)")
    host, port = netloc.lower(), None
    if re.fullmatch(r".*:[0-9]+", host) and not host.endswith("]"):
        host, _, port_text = host.rpartition(":")
        port = int(port_text)
        if port == DEFAULT_PORTS.get(scheme.lower()):
            port = None
    host = host.strip("[]")
    path = path.rstrip("/")
    segments: tuple[str, ...] | None = None
    if slash and path:
        segments = tuple(path.split("/"))
        if any(s in ("", ".", "..") for s in segments):
            raise ValueError(f"{text!r}: path patterns may not contain '.', '..' or empty segments")
        if segments[-1].endswith(".git") and len(segments[-1]) > 4:
            segments = (*segments[:-1], segments[-1][:-4])
    return RepoPattern(text, scheme.lower(), host, segments, port)


def _match_segments(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_segments(rest, segments[i:]) for i in range(len(segments) + 1))
    return bool(segments) and fnmatch.fnmatchcase(segments[0], head) and _match_segments(rest, segments[1:])


def names_hosts(host_pattern: str) -> bool:
    """Whether a host pattern names particular hosts rather than matching nearly any: no
    wildcard, or a literal domain of at least two labels after the last one
    ('*.example.org'). '*', '*.*', '?*', '*.org' match (nearly) every host: catch-alls."""
    pattern = host_pattern.strip().lower()
    last = max(pattern.rfind(c) for c in WILDCARDS + "]")
    if last < 0:
        return bool(pattern)
    suffix = pattern[last + 1 :]
    labels = suffix.split(".")
    return suffix.startswith(".") and len([label for label in labels[1:] if label]) >= 2 and all(labels[1:])
