"""kubectl from the test environment, with its kubeconfig, as a small callable."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from .env import TestEnv


class Kubectl:
    def __init__(self, env: TestEnv, token: str | None = None) -> None:
        self.binary = env["KUBECTL"]
        self.kubeconfig = env["KUBECONFIG"]
        self.token = token

    def as_token(self, token: str) -> Kubectl:
        """The same cluster, authenticated only by `token` (the kubeconfig's admin token is dropped)."""
        other = Kubectl.__new__(Kubectl)
        other.binary, other.kubeconfig, other.token = self.binary, self.kubeconfig, token
        return other

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.binary, "--kubeconfig", self.kubeconfig]
        if self.token:
            # --token overrides the kubeconfig user's token; the CA still comes from it.
            cmd += ["--token", self.token]
        proc = subprocess.run(cmd + list(args), input=input, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.run(*args, input=input, check=check).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, manifest: str, *args: str) -> str:
        return self("apply", "-f", "-", *args, input=manifest)
