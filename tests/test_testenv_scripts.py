"""The test environment's own scripts, on a folder of the test's (pure logic: no daemon)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_node_down_succeeds_when_nothing_of_the_node_runs(tmp_path):
    """`make testenv-down` goes on to stop the control plane and dockerd only if stopping a
    node that has no pods (or none at all) succeeds."""
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "kubelet.pid").write_text("999999999\n")  # a pid file of a gone process
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["bash", str(root / "testenv" / "node-down.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "TESTENV_DIR": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "node" / "kubelet.pid").exists()
