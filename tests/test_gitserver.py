"""The test git server's request-body handling (pure logic)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "testenv"))
import gitserver  # noqa: E402

pytestmark = pytest.mark.unit


class FakeHandler:
    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.rfile = io.BytesIO(body)
        self.headers = headers


def test_plain_body_is_read_by_content_length():
    assert gitserver.read_body(FakeHandler(b"abcdef", {"Content-Length": "4"})) == b"abcd"


def test_chunked_body_is_reassembled():
    body = b"3\r\nabc\r\n5;ext=1\r\ndefgh\r\n0\r\n\r\n"
    assert gitserver.read_body(FakeHandler(body, {"Transfer-Encoding": "chunked"})) == b"abcdefgh"
