"""The Repo2DockerBuild contract: the one place that names the resource, its fields and phases.

Both sides import this module: the spawner creates resources and reads their status, the
operator reconciles them. Keeping names, the naming function and validation here means the two
can never disagree about which resource a (repository, commit) pair maps to, and the CRD in
``crds/`` is checked against these constants by a unit test.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from . import repourl
from .errors import InvalidBuildRequest  # noqa: F401 - part of the contract's interface

GROUP = "repo2dockerspawner.jupyter.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Repo2DockerBuild"
PLURAL = "repo2dockerbuilds"
SINGULAR = "repo2dockerbuild"
SHORT_NAMES = ("r2dbuilds", "r2dbuild", "r2db")
CATEGORIES = ("repo2docker",)
CRD_NAME = f"{PLURAL}.{GROUP}"

# Labels on resources and build containers. The container labels are how a restarted
# operator finds the builds it started: they are the only state that survives in Docker.
LABEL_PREFIX = GROUP
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_BUILD_NAME = f"{LABEL_PREFIX}/build-name"
LABEL_BUILD_NAMESPACE = f"{LABEL_PREFIX}/build-namespace"
LABEL_BUILD_UID = f"{LABEL_PREFIX}/build-uid"
LABEL_INSTANCE = f"{LABEL_PREFIX}/instance"
# On a build resource the operator built and released: when (unix seconds), for people and
# label selectors. Anyone who may create a resource may set a label, so the operator never
# trusts it: what takes a resource out of its watch, and what its TTL counts from, is the
# status field STATUS_FINISHED_AT (a selectable field of the CRD), which only it can write.
LABEL_FINISHED_AT = f"{LABEL_PREFIX}/finished-at"
STATUS_FINISHED_AT = "finishedAt"
# The CRD's printer column of `status.finishedAt`: the TTL sweep reads it from a Table listing.
COLUMN_FINISHED_AT = "Released"
LABEL_REPO_HASH = f"{LABEL_PREFIX}/repo-hash"
LABEL_COMMIT = f"{LABEL_PREFIX}/commit"
# On build containers only: enough of the spec to follow a build after a restart when no
# resource holds it (the hub's embedded backend keeps its builds in memory).
LABEL_REPO_URL = f"{LABEL_PREFIX}/repo-url"
LABEL_REF = f"{LABEL_PREFIX}/ref"
LABEL_IMAGE = f"{LABEL_PREFIX}/image"
LABEL_REPO_DIR = f"{LABEL_PREFIX}/repo-dir"
# On short-lived helper containers (the image GC's disk probe), valued with the instance that
# measures; never a build, so no instance label (build listings select on that).
LABEL_PROBE = f"{LABEL_PREFIX}/probe"
MANAGED_BY = "repo2docker-operator"
# Who first asked for a build (the hub's user name), on the resource.
ANNOTATION_REQUESTED_BY = f"{LABEL_PREFIX}/requested-by"
# The requester of a hub's prebuilds: not a possible JupyterHub user name (those have no '/').
# Its builds queue behind every user's launch; a launch that joins one becomes its requester.
PREBUILD_REQUESTER = "hub/prebuild"
# The commit the build's ref pointed to before (the newest earlier build of that repository
# and ref the hub knew of), on a resource the hub created.
ANNOTATION_REPLACES = f"{LABEL_PREFIX}/replaces"
# status.provenance: what made a built image (the CRD's schema declares each).
PROVENANCE_FIELDS = ("repo2dockerVersion", "buildImageDigest", "baseImageDigest", "durationSeconds", "builder")


class Phase(str, enum.Enum):
    PENDING = "Pending"
    QUEUED = "Queued"
    BUILDING = "Building"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})

# Validation limits, mirrored by the CRD's OpenAPI schema (server side) and enforced again
# here because the operator must never pass an unvalidated value to Docker.
MAX_URL_LENGTH = repourl.MAX_URL_LENGTH
MAX_REF_LENGTH = 255
MAX_IMAGE_LENGTH = 255
ALLOWED_URL_SCHEMES = repourl.SCHEMES
URL_PATTERN = repourl.URL_PATTERN
SHA_PATTERN = r"^[0-9a-f]{40}$"
# Git ref names (git-check-ref-format, simplified and stricter): no spaces, no control chars,
# no shell or option syntax; may not start with '-' or '/'.
REF_PATTERN = r"^[A-Za-z0-9_.][A-Za-z0-9_./+-]*$"
# A Docker image reference: [registry[:port]/]path[:tag], lower-case path components.
IMAGE_PATTERN = (
    r"^([a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*"
    r"(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
IMAGE_PREFIX_PATTERN = r"^([a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?/)*([a-z0-9]+([._-]+[a-z0-9]+)*[._-]?)?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?([KMGT]i?|[kmgt])?$"
# Where repo2docker puts the repository in the image (--target-repo-dir): an absolute path of
# plain segments, never the root; empty means repo2docker's own default (the home directory).
MAX_REPO_DIR_LENGTH = 255
REPO_DIR_PATTERN = r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$"

_SHA_RE = re.compile(SHA_PATTERN)
_REF_RE = re.compile(REF_PATTERN)
_IMAGE_RE = re.compile(IMAGE_PATTERN)
_IMAGE_PREFIX_RE = re.compile(IMAGE_PREFIX_PATTERN)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_REPO_DIR_RE = re.compile(REPO_DIR_PATTERN)
_DNS_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_label(name: str) -> bool:
    """A Kubernetes node name (a DNS subdomain): what `status.builder` and a Lease name hold."""
    return len(name) <= 253 and bool(_DNS_NAME_RE.fullmatch(name))


def validate_repo_url(url: str) -> str:
    """The canonical spelling of a repository URL (repourl.py), or a refusal."""
    return repourl.canonical(url)


def url_host(url: str) -> tuple[str, int | None]:
    """The host (lower case, IPv6 without brackets) and port (None: the scheme's default) of
    a repository URL, or a refusal: every reader of the URL sees the same host."""
    parsed = repourl.parse(url)
    return parsed.host, parsed.port


def validate_ref(ref: str) -> str:
    if not isinstance(ref, str) or not ref:
        raise InvalidBuildRequest("a git ref (branch, tag or commit) is required")
    if len(ref) > MAX_REF_LENGTH:
        raise InvalidBuildRequest(f"the git ref is longer than {MAX_REF_LENGTH} characters")
    if not _REF_RE.fullmatch(ref) or ".." in ref or ref.endswith((".lock", "/", ".")) or "//" in ref:
        raise InvalidBuildRequest(
            "the git ref may contain only letters, digits and . _ / + - and may not start with - or /"
        )
    return ref


def validate_commit(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise InvalidBuildRequest("the commit must be a full 40-character lower-case hex SHA")
    return sha


def validate_image(image: str, what: str = "image") -> str:
    if not isinstance(image, str) or not image or len(image) > MAX_IMAGE_LENGTH or not _IMAGE_RE.fullmatch(image):
        raise InvalidBuildRequest(f"{what} {image!r} is not a valid Docker image reference")
    return image


def validate_image_prefix(prefix: str) -> str:
    """A prefix is required: built images (which users of other repositories may be served)
    and the image GC's reach are both defined by it, so an empty one would claim every name."""
    if not isinstance(prefix, str) or not prefix or len(prefix) > 128 or not _IMAGE_PREFIX_RE.fullmatch(prefix):
        raise InvalidBuildRequest(
            f"image prefix {prefix!r} must be lower-case [registry/]path segments, e.g. 'r2d-' or 'registry:5000/binder/'"
        )
    return prefix


def validate_repo_dir(path: str) -> str:
    """'' (repo2docker's default, the home directory) or an absolute directory such as
    '/srv/repo': it reaches repo2docker as an option value and the image as a path."""
    if path == "":
        return path
    # No segment may start with '.', so '.' and '..' never pass.
    if not isinstance(path, str) or len(path) > MAX_REPO_DIR_LENGTH or not _REPO_DIR_RE.fullmatch(path):
        raise InvalidBuildRequest(
            f"repository directory {str(path)[:80]!r} must be an absolute path of letters, "
            f"digits and . _ - such as /srv/repo"
        )
    return path


DOCKER_HUB = "docker.io"


def registry_of(image: str) -> str:
    """The registry host of an image reference or prefix ('127.0.0.1:5000/binder/x:t' →
    '127.0.0.1:5000'), as Docker decides: a first path component with a dot or a port, or
    'localhost'; Docker Hub for a name without one."""
    first, slash, _rest = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def prefix_names_registry(prefix: str) -> bool:
    """Whether images under this prefix go to a registry of their own (else a push would go
    to Docker Hub)."""
    return registry_of(prefix) != DOCKER_HUB


def parse_quantity(value: str | int | float | None) -> int | None:
    """Bytes from a Kubernetes-style quantity ('512Mi', '2G', '1000000'); None stays None."""
    if value is None or value == "":
        return None
    text = str(value)
    if not _QUANTITY_RE.fullmatch(text):
        raise InvalidBuildRequest(f"{text!r} is not a memory quantity such as 512Mi or 2G")
    number = re.match(r"^[0-9.]+", text).group(0)  # type: ignore[union-attr]
    suffix = text[len(number) :]
    factors = {
        "": 1,
        "k": 10**3,
        "K": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "m": 10**6,
        "g": 10**9,
        "t": 10**12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    return int(float(number) * factors[suffix])


def normalize_repo_url(url: str) -> str:
    """The form of a URL used for naming: same repository, same name (`RepoUrl.key`: the
    canonical URL without a trailing '.git')."""
    return repourl.repo_key(url)


def repo_hash(url: str) -> str:
    return hashlib.sha256(normalize_repo_url(url).encode()).hexdigest()[:10]


def _shape(repo_dir: str) -> str:
    """The build options that shape an image, as they enter names: nothing for the defaults,
    so images and resources named before these options existed keep their names."""
    return f"\nrepo-dir={validate_repo_dir(repo_dir)}" if repo_dir else ""


def _slug(url: str, max_len: int) -> str:
    """A readable, DNS-safe fragment from the repo's last path components ('org-repo')."""
    words = list(repourl.parse(url).key_segments[-2:]) or ["repo"]
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(words).lower()).strip("-")
    return (slug[:max_len].rstrip("-")) or "repo"


def build_name(repo_url: str, commit: str, repo_dir: str = "") -> str:
    """The resource name for (repository, commit, build options): deterministic, DNS-1123, at
    most 63 chars.

    Readable prefix for `kubectl get`, then the short commit, then a hash of all of them so
    that two repositories with the same slug (github.com/a/b vs gitlab.com/a/b), or one
    commit built with its files elsewhere, never collide.
    """
    validate_commit(commit)
    digest = hashlib.sha256(f"{normalize_repo_url(repo_url)}\n{commit}{_shape(repo_dir)}".encode()).hexdigest()[:10]
    return f"{_slug(repo_url, 40)}-{commit[:7]}-{digest}"


def image_name(prefix: str, repo_url: str, commit: str, repo_dir: str = "") -> str:
    """The image for (repository, commit, build options): one image repository per git
    repository and set of options, the commit as tag. Options that change what the image
    holds change its name, so an image built with other options is never taken for it."""
    validate_commit(commit)
    validate_image_prefix(prefix)
    budget = MAX_IMAGE_LENGTH - len(prefix) - len(commit) - 12
    shaped = hashlib.sha256(f"{normalize_repo_url(repo_url)}{_shape(repo_dir)}".encode()).hexdigest()[:10]
    return validate_image(f"{prefix}{_slug(repo_url, min(60, budget))}-{shaped}:{commit}")


def check_image_of(spec: BuildSpec, prefix: str) -> BuildSpec:
    """Refuse a spec whose image is not the one derived from its own repository and commit.

    The image name is what the hub serves to every user of that repository and commit, so a
    resource that may name any image under the prefix could build its author's repository
    under someone else's name. Deriving it here, from the spec's own fields, leaves the name
    nothing to choose."""
    expected = image_name(prefix, spec.repo_url, spec.commit, spec.repo_dir)
    if spec.image != expected:
        where = f" with its files in {spec.repo_dir}" if spec.repo_dir else ""
        raise InvalidBuildRequest(
            f"the image of a build of {spec.repo_url} at {spec.commit}{where} must be {expected}, not {spec.image}"
        )
    return spec


def same_build(ours: BuildSpec, theirs: BuildSpec) -> bool:
    """Whether an existing resource builds what we would ask for: same repository (as named
    for naming), same commit, same build options, same image, and the same build image and
    limits. The ref is for display. A resource someone else created for the commit we want
    with another (allowed) build image or other limits builds another image under our name,
    so it is not joined as is."""
    return (
        normalize_repo_url(ours.repo_url) == normalize_repo_url(theirs.repo_url)
        and ours.commit == theirs.commit
        and ours.repo_dir == theirs.repo_dir
        and ours.image == theirs.image
        and ours.build_image == theirs.build_image
        and ours.memory_limit == theirs.memory_limit
        and ours.cpu_limit == theirs.cpu_limit
    )


def lower_only(asked: float | int | None, allowed: float | int | None) -> float | int | None:
    """A limit a resource asks for, within the one its operator allows: it may lower it, never
    raise it (nor lift it). No limit on either side is no limit."""
    if allowed is None:
        return asked
    return allowed if asked is None else min(asked, allowed)


@dataclass(frozen=True)
class BuildSpec:
    """A resource's spec, validated. Field names map 1:1 to the CRD's camelCase fields."""

    repo_url: str
    ref: str
    commit: str
    image: str
    build_image: str | None = None
    memory_limit: int | None = None
    cpu_limit: float | None = None
    repo_dir: str = ""  # repo2docker's --target-repo-dir; '' is its default (the home directory)
    # The clone uses a credential the hub handed over in the build's own Secret
    # (gitcredentials.secret_name); not part of what is built, so joining ignores it.
    user_credentials: bool = False

    @property
    def name(self) -> str:
        """The resource (and embedded build) name of this spec."""
        return build_name(self.repo_url, self.commit, self.repo_dir)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> BuildSpec:
        resources = spec.get("resources") or {}
        cpu = resources.get("cpu")
        if cpu is not None and (not isinstance(cpu, (int, float)) or cpu <= 0):
            raise InvalidBuildRequest("resources.cpu must be a positive number of CPUs")
        build_image = spec.get("buildImage")
        user_credentials = spec.get("userCredentials", False)
        if not isinstance(user_credentials, bool):
            raise InvalidBuildRequest("userCredentials must be true or false")
        return cls(
            repo_url=validate_repo_url(spec.get("repoUrl", "")),
            ref=validate_ref(spec.get("ref", "")),
            commit=validate_commit(spec.get("commit", "")),
            image=validate_image(spec.get("image", "")),
            build_image=validate_image(build_image, "build image") if build_image else None,
            memory_limit=parse_quantity(resources.get("memory")),
            cpu_limit=float(cpu) if cpu is not None else None,
            repo_dir=validate_repo_dir(spec.get("repoDir") or ""),
            user_credentials=user_credentials,
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"repoUrl": self.repo_url, "ref": self.ref, "commit": self.commit, "image": self.image}
        if self.build_image:
            spec["buildImage"] = self.build_image
        if self.repo_dir:
            spec["repoDir"] = self.repo_dir
        if self.user_credentials:
            spec["userCredentials"] = True
        resources: dict[str, Any] = {}
        if self.memory_limit is not None:
            resources["memory"] = str(self.memory_limit)
        if self.cpu_limit is not None:
            resources["cpu"] = self.cpu_limit
        if resources:
            spec["resources"] = resources
        return spec


def build_manifest(spec: BuildSpec, namespace: str, requested_by: str = "", replaces: str = "") -> dict[str, Any]:
    """The full resource for a build request, named by `build_name` so identical requests meet."""
    metadata: dict[str, Any] = {
        "name": spec.name,
        "namespace": namespace,
        "labels": {LABEL_REPO_HASH: repo_hash(spec.repo_url), LABEL_COMMIT: spec.commit},
    }
    annotations = {}
    if requested_by:
        annotations[ANNOTATION_REQUESTED_BY] = requested_by
    if replaces:
        annotations[ANNOTATION_REPLACES] = validate_commit(replaces)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec.to_spec()}


@dataclass
class BuildStatus:
    """A resource's status as read by watchers. Unknown or missing fields get safe defaults."""

    phase: Phase = Phase.PENDING
    queue_position: int | None = None
    image: str | None = None
    message: str = ""
    log_tail: list[str] = field(default_factory=list)
    log_line_count: int = 0
    container_id: str | None = None
    # The builder (node) that claimed the build; only it writes the status from then on.
    builder: str | None = None
    # While queued: when the build is expected to start (RFC 3339), if that can be told.
    estimated_start: str | None = None
    # What made the image (PROVENANCE_FIELDS), once a build succeeded.
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: dict[str, Any] | None) -> BuildStatus:
        status = status or {}
        try:
            phase = Phase(status.get("phase") or Phase.PENDING)
        except ValueError:
            phase = Phase.PENDING
        return cls(
            phase=phase,
            queue_position=status.get("queuePosition"),
            image=status.get("image"),
            message=status.get("message") or "",
            log_tail=list(status.get("logTail") or []),
            container_id=status.get("containerId"),
            log_line_count=int(status.get("logLineCount") or 0),
            builder=status.get("builder") or None,
            estimated_start=status.get("estimatedStart") or None,
            provenance={k: v for k, v in (status.get("provenance") or {}).items() if k in PROVENANCE_FIELDS},
        )

    def new_lines(self, seen: int) -> list[str]:
        """The log lines after the first `seen` ones that are still in the tail.

        `logLineCount` counts every line the build printed; the tail holds the last of them.
        A watcher that remembers how many it has seen gets each line once, and skips lines
        that fell out of the tail between two updates rather than repeating old ones.
        """
        first_in_tail = self.log_line_count - len(self.log_tail)
        start = max(seen - first_in_tail, 0)
        return self.log_tail[start:]
