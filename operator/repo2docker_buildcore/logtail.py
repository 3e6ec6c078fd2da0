"""Turning repo2docker's output into lines a person can read, keeping only a bounded tail.

repo2docker with ``--json-logs`` prints one JSON object per line, ``{"message": ..., "phase": ...}``,
but a message may itself hold several lines (or none), Docker's build output arrives as
JSON-in-JSON, and anything on stderr (tracebacks) is plain text. Since 2025.08 the build
steps come from ``docker buildx build --progress plain``, BuildKit's numbered progress lines,
which ``BuildOutput`` turns into the lines a person wants to read. The tail is bounded by lines
*and* bytes because it lives in the resource's status, and etcd objects must stay small.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .settings import setting

MAX_LINE_CHARS = 1000


@dataclass(frozen=True)
class LogEvent:
    lines: tuple[str, ...]
    phase: str | None = None


def _clean(text: str) -> list[str]:
    out = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.rstrip()
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            line = line[: MAX_LINE_CHARS - 1] + "…"
        out.append(line)
    return out


def _docker_aux(message: str) -> str | None:
    """repo2docker forwards some raw Docker API objects as messages; show only their text."""
    try:
        obj = json.loads(message)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if "stream" in obj:
        return str(obj["stream"])
    if "error" in obj:
        return f"error: {obj['error']}"
    if "status" in obj:
        return str(obj["status"])
    return ""  # aux objects such as {"aux": {"ID": ...}} carry nothing for a person


def parse_line(raw: str) -> LogEvent:
    """One line of the build container's output → the readable lines it holds, and its phase."""
    text = raw.rstrip("\n")
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "message" in obj:
            message = str(obj.get("message") or "")
            aux = _docker_aux(message.strip()) if message.strip().startswith("{") else None
            lines = _clean(aux if aux is not None else message)
            return LogEvent(tuple(lines), obj.get("phase"))
    return LogEvent(tuple(_clean(text)))


class LogTail:
    """The last lines of a build's log, bounded by count and by total UTF-8 bytes.

    `total` counts every line ever added, so readers can tell which lines they have not
    seen yet (see ``BuildStatus.new_lines``).
    """

    def __init__(
        self, max_lines: int = setting("tail_lines").default, max_bytes: int = setting("tail_bytes").default
    ) -> None:
        if max_lines < 1 or max_bytes < 1:
            raise ValueError("the log tail needs room for at least one line")
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: deque[str] = deque()
        self._bytes = 0
        self.total = 0

    def add(self, lines: Iterable[str]) -> None:
        for line in lines:
            size = len(line.encode())
            if size > self.max_bytes:
                line = line.encode()[: self.max_bytes - 3].decode(errors="ignore") + "…"
                size = len(line.encode())
            self._lines.append(line)
            self._bytes += size
            self.total += 1
            while len(self._lines) > self.max_lines or self._bytes > self.max_bytes:
                self._bytes -= len(self._lines.popleft().encode())

    def lines(self) -> list[str]:
        return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


# BuildKit's plain progress: every line of vertex N starts with "#N ". A vertex has a header
# ("#5 [2/3] RUN pip install ."), output lines with seconds since it started ("#5 1.234 text"),
# and an end ("#5 DONE 3.2s", "#5 CACHED", "#5 ERROR: ...").
_VERTEX_RE = re.compile(r"^#(\d+) (.*)$")
_OUTPUT_RE = re.compile(r"^\d+\.\d+ (.*)$")
_END_RE = re.compile(r"^(DONE \d+(\.\d+)?s|CACHED)$")
_STEP_RE = re.compile(r"^\[[^\]]*\d+/\d+\] ")
# The classic builder (repo2docker before 2025.08): "Step 3/6 : RUN ...", bookkeeping lines
# (" ---> 8e32", "Removing intermediate container"), and "The command ... returned a non-zero code".
# The final stage's base: BuildKit's "[1/N] FROM ref" (other stages are "[name 1/N]") or the
# classic builder's "Step 1/N : FROM ref"; the ref may carry "@sha256:…" and " AS name".
_BASE_RE = re.compile(r"^(?:\[1/\d+\]|Step 1/\d+ :) FROM (\S+)")
_CLASSIC_STEP_RE = re.compile(r"^Step \d+/\d+ : ")
_CLASSIC_NOISE_RE = re.compile(r"^( ---> |Removing intermediate container )")
_CLASSIC_FAILED_RE = re.compile(r"returned a non-zero code: \d+")
# Transfer progress ("pushing layer 087d 113.77MB / 147.39MB 13.0s"), repeated every half
# second per layer; only its final "... done" line is worth a reader's time.
_TRANSFER_RE = re.compile(r" [0-9.]+\s?[kKMGT]?i?B / [0-9.]+\s?[kKMGT]?i?B [0-9.]+s$")
FAILED_STEP_LINES = 8


class BuildOutput:
    """Readable lines from a build's output, and the failing step's own lines if one failed.

    BuildKit's plain progress is made for machines: vertex numbers, timings, and bookkeeping
    steps (``[internal] load .dockerignore``). Each output line loses its prefix, bookkeeping
    and end markers are dropped, step headers keep their ``[2/3] RUN …``. Lines that are not
    BuildKit's (repo2docker's own messages, the classic builder's ``Step 2/3 :``) pass through
    unchanged, so one class serves every repo2docker version.
    """

    def __init__(self) -> None:
        self._headers: dict[str, str] = {}
        self._output: dict[str, list[str]] = {}
        self._internal: set[str] = set()
        self._classic: list[str] = []  # the current classic step: header, then its output
        self.failed_step: list[str] = []
        self.base_image: str | None = None  # what the image was built FROM, as the build named it

    def feed(self, lines: Iterable[str]) -> list[str]:
        readable: list[str] = []
        for line in lines:
            text = self._readable(line)
            if text:
                readable.append(text)
        return readable

    def _readable(self, line: str) -> str | None:
        match = _VERTEX_RE.match(line)
        if not match:
            self._follow_classic(line)
            return line
        vertex, rest = match.groups()
        if vertex not in self._headers:  # the first line of a vertex is its header
            self._headers[vertex] = rest
            self._note_base(rest)
            if rest.startswith("[internal]") or rest.startswith("[auth]"):
                self._internal.add(vertex)
                return None
            return rest
        if vertex in self._internal or _END_RE.match(rest) or _TRANSFER_RE.search(rest):
            return None
        if rest.startswith("ERROR:"):
            self.failed_step = [self._headers[vertex], *self._output.get(vertex, [])[-FAILED_STEP_LINES:], rest]
            return rest
        output = _OUTPUT_RE.match(rest)
        text = output.group(1) if output else rest
        if output:
            self._output.setdefault(vertex, []).append(text)
            del self._output[vertex][:-FAILED_STEP_LINES]
        return text

    def _note_base(self, header: str) -> None:
        if self.base_image is None and (match := _BASE_RE.match(header)):
            self.base_image = match.group(1)

    def _follow_classic(self, line: str) -> None:
        if _CLASSIC_STEP_RE.match(line):
            self._classic = [line]
            self._note_base(line)
        elif _CLASSIC_FAILED_RE.search(line) and self._classic:
            self.failed_step = [self._classic[0], *self._classic[1:][-FAILED_STEP_LINES:], line]
        elif self._classic and not _CLASSIC_NOISE_RE.match(line):
            self._classic.append(line)
            del self._classic[1:-FAILED_STEP_LINES]

    def failure_lines(self, tail: list[str], lines: int = 5) -> list[str]:
        """What a failure message should show: the failing build step (header, its last
        output, its error) when there is one, else the last lines of the log."""
        if self.failed_step and (_STEP_RE.match(self.failed_step[0]) or _CLASSIC_STEP_RE.match(self.failed_step[0])):
            return self.failed_step
        return [line for line in tail if line.strip()][-lines:]
