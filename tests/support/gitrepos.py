"""Test repositories: real git repos served by the test environment's HTTP git server.

Each repo is built in a work tree, then pushed to a bare repo under R2D_GIT_ROOT, so a
build container clones it by URL exactly as it would clone from a forge.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "r2d tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "r2d tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/nonexistent",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


@dataclass
class GitRepo:
    name: str
    work: Path
    bare: Path
    url: str
    commits: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, str], message: str = "update") -> str:
        """Write files, commit, push everything (branches and tags); return the new SHA."""
        for rel, content in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        sha = git(self.work, "rev-parse", "HEAD")
        self.push()
        return sha

    def tag(self, name: str) -> None:
        git(self.work, "tag", name)
        self.push()

    def branch(self, name: str) -> None:
        git(self.work, "branch", "-f", name)
        self.push()

    def push(self) -> None:
        git(self.work, "push", "-q", "--force", "--all", str(self.bare))
        git(self.work, "push", "-q", "--force", "--tags", str(self.bare))


class GitRepoFactory:
    def __init__(self, root: Path, url_prefix: str) -> None:
        self.root = root
        self.url_prefix = url_prefix.rstrip("/")
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, files: dict[str, str], prefix: str = "repo") -> GitRepo:
        """A new repository with one commit on `main` holding `files`."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        bare = self.root / f"{name}.git"
        work = self.root / "_work" / name
        work.mkdir(parents=True)
        git(work, "init", "-q", "-b", "main")
        git(self.root, "init", "-q", "--bare", str(bare))
        repo = GitRepo(name=name, work=work, bare=bare, url=f"{self.url_prefix}/{name}.git")
        repo.commit(files, "initial")
        return repo
