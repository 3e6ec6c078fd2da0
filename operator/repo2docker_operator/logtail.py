"""Turning repo2docker's output into lines a person can read, keeping only a bounded tail.

repo2docker with ``--json-logs`` prints one JSON object per line, ``{"message": ..., "phase": ...}``,
but a message may itself hold several lines (or none), Docker's build output arrives as
JSON-in-JSON, and anything on stderr (tracebacks) is plain text. The tail is bounded by lines
*and* bytes because it lives in the resource's status, and etcd objects must stay small.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Iterable

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

    def __init__(self, max_lines: int = 100, max_bytes: int = 16 * 1024) -> None:
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

    def last(self, n: int) -> list[str]:
        return list(self._lines)[-n:] if n > 0 else []

    def __len__(self) -> int:
        return len(self._lines)
