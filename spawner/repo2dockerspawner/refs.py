"""Resolving a ref to a commit SHA with `git ls-remote`, bounded, without blocking the hub.

The build is named after the commit, not the ref: a branch that moved is a new build, one
that did not is a cache hit. A full SHA is taken as is (ls-remote cannot list arbitrary
commits), but the repository is still asked for its HEAD with the launching user's
credentials: an image of a private repository is served only to users who can read it, and a
user who gives a commit SHA must not skip that check.

The repository URL comes from a user, so the lookup is treated as hostile I/O: its host must
pass ``hosts.contact_addresses`` (git is pinned to the addresses checked and follows no
redirects), git runs in a process group of its own that goes as a whole on timeout (git's
`git-remote-https` helper included), a low-speed limit cuts off a server that trickles, the
output and git's heap are capped, and the ref is passed as a pattern, so with protocol v2 the server lists
only matching refs (cheap for a repository with a million branches). What the user is told
is one of a few fixed sentences; git's own words go to the hub's log only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from urllib.parse import urlsplit

from repo2docker_buildcore.contract import InvalidBuildRequest
from repo2docker_buildcore.gitcredentials import CloneCredentials, GitCredential, helper_environment

from .hosts import contact_addresses, curl_resolve
from .options import RepoPolicy, bad_request

log = logging.getLogger(__name__)
FULL_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class LookupLimits:
    timeout: float = 30.0  # seconds for the whole lookup
    low_speed_limit: int = 1000  # bytes per second, below which ...
    low_speed_time: int = 10  # ... for this many seconds, curl gives up
    max_output: int = 4 * 2**20  # bytes of listing; a few refs are a few hundred bytes
    # Heap of git's processes. With protocol v0 a server sends every ref whatever the pattern,
    # and git keeps them all (about 300 MB per million); a lookup needs under 32 MiB.
    max_memory: int = 128 * 2**20


def pick_commit(listing: str, ref: str) -> str | None:
    """The commit `ref` names in `git ls-remote` output: HEAD, a branch, a tag (peeled), or
    any ref whose full name matches. Branches win over tags, as in git itself."""
    refs: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        if FULL_SHA.fullmatch(sha) and name:
            refs[name.strip()] = sha
    for candidate in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"):
        if candidate in refs:
            return refs[candidate]
    return None


TOO_MANY_REFS = "lists more refs than this hub reads"
REFUSED = "refused access"
NOT_FOUND = "was not found"
# git's stderr, classified into what the user is told (first match wins). Never shown as is:
# it names internal addresses and ports, which is what an attacker would compare.
_FAILURES = (
    (re.compile(r"Out of memory|Cannot allocate memory|calloc failed|malloc failed", re.I), TOO_MANY_REFS),
    (re.compile(r"Operation too slow|Operation timed out|timed out", re.I), "answered too slowly"),
    (
        re.compile(
            r"could not read (Username|Password)|Authentication failed|returned error: 40[13]"
            r"|Permission denied|terminal prompts disabled",
            re.I,
        ),
        REFUSED,
    ),
    (
        re.compile(
            r"repository .* not found|returned error: 404|does not appear to be a git repository"
            r"|Repository not found|not found",
            re.I,
        ),
        NOT_FOUND,
    ),
    (
        re.compile(
            r"Could not resolve|Failed to connect|Couldn't connect|Connection refused|Connection reset"
            r"|No route to host|Network is unreachable|unable to connect|SSL|TLS|certificate|gnutls"
            r"|handshake|Empty reply|Recv failure|Send failure",
            re.I,
        ),
        "could not be reached",
    ),
)


def describe_failure(stderr: str) -> str:
    """The fixed phrase for a failed lookup: '... was not found', '... refused access', ..."""
    for pattern, phrase in _FAILURES:
        if pattern.search(stderr):
            return phrase
    return "could not be read"


class LookupFailed(Exception):
    """git failed or was stopped; `phrase` completes "The repository URL ..." for the user."""

    def __init__(self, phrase: str) -> None:
        super().__init__(phrase)
        self.phrase = phrase


def failure_message(repo: str, phrase: str, credential: GitCredential | None) -> str:
    """What the user is told. A server that refuses access says so the same way whether the
    repository is private or missing (as GitHub does), so these name what the user can change."""
    if phrase == REFUSED:
        return (
            f"The credentials for {repo} were refused (check that the token is valid and may read it)."
            if credential
            else f"The repository {repo} needs credentials, and none are set up for it."
        )
    return f"The repository {repo} {phrase}."


async def resolve_ref(
    repo: str,
    ref: str,
    policy: RepoPolicy,
    limits: LookupLimits = LookupLimits(),
    git: str = "git",
    credential: GitCredential | None = None,
    probe: bool = False,
) -> str:
    """The full commit SHA for `ref` in `repo` (both already validated and allow-listed), read
    with `credential` if given, or an HTTPError(400) with a message for the user (with
    `probe`, NeedsCredential where the repository refused an anonymous lookup)."""
    given_sha = FULL_SHA.fullmatch(ref) is not None
    listing = await list_refs(repo, ("HEAD",) if given_sha else (ref,), policy, limits, git, credential, probe)
    if given_sha:
        return ref  # the repository could be read with these credentials
    commit = pick_commit(listing, ref)
    if commit is None:
        raise bad_request(f"The ref {ref!r} was not found in {repo} (try a branch, a tag or a full commit SHA).")
    return commit


class NeedsCredential(Exception):
    """An anonymous lookup was refused (or told 'not found', as forges say of private ones)."""


async def resolve_launch_ref(
    repo: str, ref: str, policy: RepoPolicy, limits: LookupLimits, credentials: CloneCredentials, git: str = "git"
) -> tuple[str, CloneCredentials]:
    """The commit for a launch, and what its build may clone with.

    With a user's own token, the repository is asked without it first: a public one is built
    without it (no token in a build that needs none, no Secret on the cluster), and only a
    refusal makes the token go out, for that repository alone. Otherwise the hub's
    credential for the host (if any) is used, as it is for everybody."""
    own = credentials.repository
    if own is None:
        return await resolve_ref(repo, ref, policy, limits, git, credentials.host), credentials
    try:
        commit = await resolve_ref(repo, ref, policy, limits, git, None, probe=True)
        return commit, CloneCredentials(repository=None, host=credentials.host)
    except NeedsCredential:
        return await resolve_ref(repo, ref, policy, limits, git, own), credentials


async def resolve_refs(
    repo: str,
    refs: tuple[str, ...],
    policy: RepoPolicy,
    limits: LookupLimits = LookupLimits(),
    git: str = "git",
    credential: GitCredential | None = None,
) -> dict[str, str | None]:
    """The commit of each of `refs` (None for one the repository lacks), from one listing."""
    listing = await list_refs(repo, refs, policy, limits, git, credential)
    return {ref: pick_commit(listing, ref) for ref in refs}


async def list_refs(
    repo: str,
    refs: tuple[str, ...],
    policy: RepoPolicy,
    limits: LookupLimits,
    git: str = "git",
    credential: GitCredential | None = None,
    probe: bool = False,
) -> str:
    """One `ls-remote`-style listing of the refs that may name any of `refs`, or an
    HTTPError(400) with a message for the user."""
    try:
        addresses = await contact_addresses(repo, policy)
    except InvalidBuildRequest as exc:
        text = str(exc)
        raise bad_request(text[:1].upper() + text[1:] + ".") from None
    lookup = RefLookup(repo, refs, addresses, policy, limits, git, credential)
    try:
        return await asyncio.wait_for(lookup.run(), limits.timeout)
    except asyncio.TimeoutError:
        log.warning("listing the refs of %s: no answer within %s s; stopped", repo, limits.timeout)
        raise bad_request(f"The repository {repo} did not answer within {limits.timeout:.0f} s.") from None
    except LookupFailed as exc:
        if probe and exc.phrase in (REFUSED, NOT_FOUND):
            raise NeedsCredential() from None
        raise bad_request(failure_message(repo, exc.phrase, credential)) from None


def ref_prefixes(ref: str) -> list[str]:
    """What protocol v2's `ls-refs` is asked for: every full name `pick_commit` may choose
    (the server matches them as prefixes; the exact one is picked here)."""
    return [ref] if ref.startswith("refs/") or ref == "HEAD" else [ref, f"refs/heads/{ref}", f"refs/tags/{ref}"]


def ls_refs_listing(lines: list[bytes]) -> str:
    """`ls-refs` answer lines ('<oid> <name>[ symref-target:<t>][ peeled:<oid>]') in
    `git ls-remote`'s format, which `pick_commit` reads."""
    out = []
    for raw in lines:
        oid, _, rest = raw.decode(errors="replace").strip().partition(" ")
        name, *attributes = rest.split(" ")
        if not FULL_SHA.fullmatch(oid):
            continue  # 'unborn HEAD'
        out.append(f"{oid}\t{name}")
        for attribute in attributes:
            if attribute.startswith("peeled:"):
                out.append(f"{attribute[len('peeled:') :]}\t{name}^{{}}")
    return "\n".join(out)


def _pkt(text: str) -> bytes:
    data = text.encode()
    return b"%04x" % (len(data) + 4) + data


FLUSH, DELIMITER, RESPONSE_END = 0, 1, 2


class RefLookup:
    """The refs of one repository that may name any of `refs`, listed by git within `limits`.

    Over http(s), through git's own remote helper (`git remote-https`: git's HTTP stack,
    proxies, CAs, the address pinning and credential helpers all apply) with the protocol v2
    request written here, so that the server lists only refs under the prefixes asked for:
    `git ls-remote` cannot ask for that (its patterns match ends of names, so it lists every
    ref, a million branches or GitHub's hundreds of thousands of pull refs, and filters them
    itself). A server that speaks only protocol v0 sends every ref whatever is asked; then,
    and for git:// and ssh://, `git ls-remote` with the ref as pattern, within the caps."""

    def __init__(
        self,
        repo: str,
        refs: tuple[str, ...],
        addresses: list[str],
        policy: RepoPolicy,
        limits: LookupLimits,
        git: str = "git",
        credential: GitCredential | None = None,
    ) -> None:
        self.repo, self.refs, self.limits, self.git = repo, refs, limits, git
        self.env = git_environment(policy, limits)
        if credential is not None:
            self.env.update(helper_environment(repo, credential))
        self.config = git_config(repo, addresses)

    async def run(self) -> str:
        scheme = urlsplit(self.repo).scheme.lower()
        if scheme in ("http", "https"):
            listing = await self.ls_refs(f"remote-{scheme}")
            if listing is not None:
                return listing
        return await self.ls_remote()

    async def ls_refs(self, helper: str) -> str | None:
        """The listing through protocol v2, or None when the server speaks only v0."""
        async with GitProcess(
            [self.git, *self.config, helper, self.repo, self.repo], self.env, self.limits.max_memory
        ) as git:
            git.send(b"stateless-connect git-upload-pack\n")
            reply = await git.readline()
            if reply == b"fallback\n":
                return None
            if reply != b"\n":
                raise await git.failed()
            capabilities = await self._until(git, FLUSH)
            if not any(c.startswith(b"ls-refs") for c in capabilities):
                return None
            git.send(
                _pkt("command=ls-refs\n")
                + _pkt("object-format=sha1\n")
                + b"0001"
                + _pkt("peel\n")
                + _pkt("symrefs\n")
                + b"".join(_pkt(f"ref-prefix {p}\n") for ref in self.refs for p in ref_prefixes(ref))
                + b"0000"
            )
            lines = await self._until(git, FLUSH)
            await self._until(git, RESPONSE_END)
            git.close_input()
            return ls_refs_listing(lines)

    async def _until(self, git: GitProcess, end: int) -> list[bytes]:
        """Packet lines up to the special packet `end`, within the output cap."""
        lines: list[bytes] = []
        while (packet := await git.read_packet()) != end:
            if isinstance(packet, bytes):
                lines.append(packet)
            if git.received > self.limits.max_output:
                log.warning("listing the refs of %s: over %d bytes; stopped", self.repo, self.limits.max_output)
                raise LookupFailed(TOO_MANY_REFS)
        return lines

    async def ls_remote(self) -> str:
        # '--' ends options; the refs are patterns (HEAD itself for the default branch).
        async with GitProcess(
            [self.git, *self.config, "ls-remote", "--", self.repo, *self.refs], self.env, self.limits.max_memory
        ) as git:
            out = await git.read_all(self.limits.max_output)
            if out is None:
                log.warning("git ls-remote %s: listing over %d bytes; stopped", self.repo, self.limits.max_output)
                raise LookupFailed(TOO_MANY_REFS)
            if await git.wait() != 0:
                raise await git.failed()
            return out.decode(errors="replace")


def git_config(repo: str, addresses: list[str]) -> list[str]:
    config = ["-c", "protocol.version=2"]
    pin = curl_resolve(repo, addresses)
    if pin:  # a host admitted by '*': only the addresses checked, and no redirect elsewhere
        config += ["-c", f"http.curloptResolve={pin}", "-c", "http.followRedirects=false"]
    return config


def git_environment(policy: RepoPolicy, limits: LookupLimits) -> dict[str, str]:
    return {
        **os.environ,
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "GIT_HTTP_LOW_SPEED_LIMIT": str(limits.low_speed_limit),
        "GIT_HTTP_LOW_SPEED_TIME": str(limits.low_speed_time),
        # Transports git may use at all, redirects and helpers included: the policy's schemes.
        "GIT_ALLOW_PROTOCOL": ":".join(policy.schemes),
    }


@functools.lru_cache(maxsize=1)
def _prlimit() -> str | None:
    found = shutil.which("prlimit")
    if not found:
        log.warning("prlimit (util-linux) is not installed: git runs without a memory limit when resolving refs")
    return found


def memory_limit(max_memory: int) -> list[str]:
    """A prefix that caps the heap (RLIMIT_DATA) of the command and its children: util-linux's
    prlimit, which the hub's images have, rather than a preexec_fn (unsafe in a threaded hub)."""
    prlimit = _prlimit()
    return [prlimit, f"--data={max_memory}", "--"] if prlimit else []


class GitProcess:
    """git (and the helpers it starts) in a process group of its own, with its heap capped:
    leaving the block early (a timeout, a cap, a cancelled spawn) kills the whole group, and
    what git wrote to stderr is kept (bounded) to classify a failure."""

    def __init__(self, command: list[str], env: dict[str, str], max_memory: int) -> None:
        self.command = [*memory_limit(max_memory), *command]
        self.env = env
        self.received = 0
        self._stderr = bytearray()

    async def __aenter__(self) -> GitProcess:
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise RuntimeError("git is not installed on the hub; it is needed to resolve refs") from None
        self._errors = asyncio.ensure_future(self._read_stderr())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Stopped early: git is not yet reaped, so its process group id is still its own;
        # after a normal exit nothing is left to kill.
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await asyncio.shield(self._finish())

    async def _finish(self) -> None:
        """Until the process is reaped. asyncio's wait() also waits for every pipe to report
        its end, and a pipe whose reader stopped early (a cap) is paused by flow control and
        never would: what is left in it is read and dropped."""
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        while await self.proc.stdout.read(65536):
            pass
        await self._errors
        await self.proc.wait()

    async def _read_stderr(self) -> None:
        while chunk := await self.proc.stderr.read(65536):
            self._stderr += chunk[: max(64 * 1024 - len(self._stderr), 0)]

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)

    def close_input(self) -> None:
        self.proc.stdin.close()

    async def readline(self) -> bytes:
        line = await self.proc.stdout.readline()
        self.received += len(line)
        return line

    async def read_packet(self) -> bytes | int:
        """One pkt-line's payload, or FLUSH, DELIMITER, RESPONSE_END; a failure at EOF."""
        try:
            head = await self.proc.stdout.readexactly(4)
            size = int(head, 16)
            if size < 4:
                return size
            payload = await self.proc.stdout.readexactly(size - 4)
        except (asyncio.IncompleteReadError, ValueError):
            raise await self.failed() from None
        self.received += size
        return payload

    async def read_all(self, cap: int) -> bytes | None:
        """All of stdout, or None past `cap` bytes."""
        data = bytearray()
        while chunk := await self.proc.stdout.read(65536):
            data += chunk
            if len(data) > cap:
                return None
        return bytes(data)

    async def wait(self) -> int:
        return await self.proc.wait()

    async def failed(self) -> LookupFailed:
        """The failure of a git that stopped talking (it exits; its stderr says why)."""
        await self.proc.wait()
        await asyncio.gather(self._errors, return_exceptions=True)
        return self.failure()

    def failure(self) -> LookupFailed:
        text = self._stderr.decode(errors="replace").strip()
        log.info("git (%s) exited with %s: %s", " ".join(self.command[-3:]), self.proc.returncode, text[-1000:])
        return LookupFailed(describe_failure(text))
