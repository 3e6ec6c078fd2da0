"""Servers a test starts on loopback to stand in for hostile or broken git hosts.

Each runs in a thread of the test process, on 127.0.0.1 and a free port, and counts what
reached it, so a test can tell "refused before any connection" from "connected, then failed".
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable


class LoopbackServer:
    """Accepts connections on 127.0.0.1 and hands each to `serve(conn)` in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None] | None = None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.serve = serve or (lambda conn: None)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.serve(conn)
        except OSError:
            pass


def read_request(conn: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


def answer_with(status: str) -> Callable[[socket.socket], None]:
    """Every request gets this status line (e.g. '401 Unauthorized') and an empty body."""

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        headers = 'WWW-Authenticate: Basic realm="git"\r\n' if status.startswith("401") else ""
        conn.sendall(f"HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())

    return serve


def trickle(byte_every: float = 5.0) -> Callable[[socket.socket], None]:
    """Answers git's first request with headers, then one byte every `byte_every` seconds for
    as long as the client stays: a server that never says no and never finishes."""

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while True:
            conn.sendall(b"1\r\n0\r\n")
            time.sleep(byte_every)

    return serve


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def advertise_refs(count: int) -> Callable[[socket.socket], None]:
    """A smart HTTP advertisement of `count` branches in git's protocol v0, which sends every
    ref whatever the client asks for, generated as it is sent."""

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n"
            b"Connection: close\r\nCache-Control: no-cache\r\n\r\n"
        )
        body = [pkt(b"# service=git-upload-pack\n"), b"0000"]
        sha = hashlib.sha1(b"flood").hexdigest().encode()
        body.append(pkt(sha + b" HEAD\0multi_ack side-band-64k ofs-delta\n"))
        conn.sendall(b"".join(body))
        send_branches(conn, sha, count)

    return serve


def send_branches(conn: socket.socket, sha: bytes, count: int) -> None:
    """`count` branch lines (pkt-lines '<sha> refs/heads/branch-N'), then a flush, in batches."""
    batch = []
    for i in range(count):
        batch.append(pkt(sha + b" refs/heads/branch-%07d\n" % i))
        if len(batch) == 2000:
            conn.sendall(b"".join(batch))
            batch = []
    conn.sendall(b"".join(batch) + b"0000")


def git_children(marker: str) -> list[str]:
    """Command lines of processes (git and its helpers) whose arguments mention `marker`."""
    import os

    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "git" in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def v2_refs_ignoring_prefixes(count: int) -> Callable[[socket.socket], None]:
    """A protocol v2 server whose `ls-refs` answers `count` branches whatever prefixes the
    client asks for (a server may ignore them), streamed as it goes."""
    sha = hashlib.sha1(b"flood").hexdigest().encode()

    def serve(conn: socket.socket) -> None:
        request = read_request(conn)
        kind = b"advertisement" if request.startswith("GET") else b"result"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-"
            + kind
            + b"\r\nConnection: close\r\nCache-Control: no-cache\r\n\r\n"
        )
        if request.startswith("GET"):
            conn.sendall(pkt(b"version 2\n") + pkt(b"ls-refs\n") + pkt(b"object-format=sha1\n") + b"0000")
            return
        send_branches(conn, sha, count)

    return serve
