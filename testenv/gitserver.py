"""A read-only git server speaking the smart HTTP protocol, for the test environment.

Why not `git daemon`: users paste https URLs, and the spawner validates URL schemes,
so tests should clone over HTTP like production does. `git http-backend` does the
protocol work; this file only adapts HTTP requests to its CGI interface.

Private repositories, as forges serve them: ROOT/private/<owner>/<name>.git needs HTTP basic
auth with a token from USERS (lines 'user:token'; the token names the user, the username is
not checked, as with forges' tokens). The user 'hub' reads every private
repository, any other user those under private/<that user>/. Like GitHub, a request without
credentials, or with a wrong token, gets 401 (whether or not the repository exists), and a
user who may not read it gets 404, the same as for a missing one.

Usage: python3 gitserver.py ROOT HOST PORT [USERS]
  (serves ROOT/<name>.git as http://HOST:PORT/<name>.git)
"""

from __future__ import annotations

import base64
import hmac
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


def read_users(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    lines = open(path).read().split()
    return dict(line.split(":", 1) for line in lines if ":" in line)


class GitHandler(BaseHTTPRequestHandler):
    root: str = "."
    users: dict[str, str] = {}
    protocol_version = "HTTP/1.0"

    def user(self) -> str | None:
        """The user whose token the request carries, else None."""
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _name, _, token = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        # The token says who it is, as on forges (GitHub takes any username with a token,
        # GitLab and Gitea 'oauth2' with an OAuth token).
        return next((user for user, known in self.users.items() if hmac.compare_digest(known, token)), None)

    def allowed(self, path: str) -> bool:
        """Whether the request may read `path`; answered (401/404) when it may not."""
        parts = path.strip("/").split("/")
        if parts[0] != "private":
            return True
        user = self.user()
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private repositories"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        if user != "hub" and (len(parts) < 2 or parts[1] != user):
            self.send_error(404, "Repository not found")
            return False
        return True

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
        if not self.allowed(url.path):
            return
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
    GitHandler.users = read_users(argv[4] if len(argv) > 4 else None)
    server = ThreadingHTTPServer((host, port), GitHandler)
    print(f"serving {root} on http://{host}:{port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
