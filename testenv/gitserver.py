"""A read-only git server speaking the smart HTTP protocol, for the test environment.

Why not `git daemon`: users paste https URLs, and the spawner validates URL schemes,
so tests should clone over HTTP like production does. `git http-backend` does the
protocol work; this file only adapts HTTP requests to its CGI interface.

Usage: python3 gitserver.py ROOT HOST PORT   (serves ROOT/<name>.git as http://HOST:PORT/<name>.git)
"""

from __future__ import annotations

import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Return the request body, de-chunking it: git sends large pushes/fetches chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


# Files the test environment serves besides repositories. repo2docker 2025.08 and later
# download the list of Dataverse installations before every build (its Dataverse content
# provider runs first); a hub without internet access points R2D_DATAVERSE_INSTALLATIONS_URL
# at a copy it can reach, and this is the test environment's (with no installations).
STATIC = {"/dataverse-installations.json": b'{"installations": []}\n'}


class GitHandler(BaseHTTPRequestHandler):
    root: str = "."
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in STATIC:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(STATIC[path])))
            self.end_headers()
            self.wfile.write(STATIC[path])
            return
        self.run_backend(b"")

    def do_POST(self) -> None:
        self.run_backend(read_body(self))

    def run_backend(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if "/git-receive-pack" in url.path or "service=git-receive-pack" in url.query:
            self.send_error(403, "this server is read-only")
            return
        env = {
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "PATH": "/usr/bin:/bin",
        }
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if proc.returncode and proc.stderr:
            self.log_message("git http-backend: %s", proc.stderr.decode(errors="replace").strip())


def main(argv: list[str]) -> None:
    root, host, port = argv[1], argv[2], int(argv[3])
    GitHandler.root = root
    server = ThreadingHTTPServer((host, port), GitHandler)
    print(f"serving {root} on http://{host}:{port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
