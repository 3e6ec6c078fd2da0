"""Reading `.testenv/env`, the one file that says where the test environment is."""

from __future__ import annotations

from pathlib import Path

TestEnv = dict[str, str]


def load_env(path: Path) -> TestEnv:
    """Parse KEY=VALUE lines (comments and blanks ignored), as a shell would source them."""
    env: TestEnv = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip()
    return env
