"""The repository in a persistent home: where it lives in the image, what the user sees.

repo2docker puts the repository's files in the image's home directory (or in its
``--target-repo-dir``). A hub that gives each user a volume for their files mounts it over
the home directory, or over a folder of it. Docker copies the image's files into a volume only
while the volume is new, so without help the first repository launched stays in the home for
good, and every later one is hidden behind it.

What this module decides, for one launch:

* ``default_repo_dir``: where builds put the repository. With a volume on the home directory
  the repository is built into ``/srv/repo`` (outside the home, so the volume does not hide it
  in buildpack images); without one, repo2docker's default is kept, and images are exactly
  what they were before this option existed.
* ``plan_copy``: when a volume holds the home directory (or hides the directory that holds the
  repository in the image), the repository's files are copied into the volume, into a folder
  named after the repository (``~/<repository>``), before the server starts. Files already in that folder are never
  overwritten: what the user edited, they keep; files a newer commit adds appear. A folder of
  that name that holds another repository (or the user's own files) is left alone, and the
  copy goes to ``~/<repository>-<hash>``. The user lands in the copied folder, with the whole
  home (everything they saved) in JupyterLab's file browser.

The copy runs in a short-lived container of the launched image itself (the same code the
server runs, as the server's user, never root) that sees the image's files and the volume at
another path; helpers.py says how helpers are confined.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from repo2docker_buildcore import contract

# Where builds put the repository when a volume is mounted on the home directory.
REPO_DIR_BESIDE_HOME = "/srv/repo"
# Where the copying container sees the volume.
VOLUME_IN_HELPER = "/r2d-volume"
# In each copied folder: which repository it holds, so that another one is never mixed in.
MARKER = ".repo2docker-repository"

# Arguments arrive as "$1".."$4"; nothing is interpolated into the script. tar, not cp -n:
# coreutils changed what `cp -n` returns when it skips a file, tar's --skip-old-files did not.
COPY_SCRIPT = r"""
set -eu
src=$1 parent=$2 name=$3 other=$4 url=$5
[ -d "$src" ] || { echo "r2d-copy: nothing at $src"; exit 0; }
dest=$parent/$name
if [ -e "$dest" ] && [ "$(cat "$dest/.repo2docker-repository" 2>/dev/null || true)" != "$url" ]; then
  dest=$parent/$other
  if [ -e "$dest" ] && [ "$(cat "$dest/.repo2docker-repository" 2>/dev/null || true)" != "$url" ]; then
    echo "r2d-copy: $parent/$name and $dest hold other files; nothing copied" >&2; exit 3
  fi
fi
mkdir -p "$dest"
(cd "$src" && tar -cf - --exclude=./.repo2docker-repository .) | (cd "$dest" && tar -xf - --skip-old-files --no-same-owner)
printf '%s\n' "$url" > "$dest/.repo2docker-repository"
echo "r2d-copy: into $dest"
"""


# Run as root for volumes that this launch created: Docker makes a new volume's root owned by
# root when the image lacks its mount point (a repo2docker image has no ~/work), and the user
# could not save anything in it. Only a root still owned by root is given to the user. It runs
# in the trusted helper image (helpers.py), never the launched one, with absolute paths;
# "$1" is uid:gid (numbers, resolved beforehand), the rest are the volumes.
OWNER_SCRIPT = r"""
set -eu
owner=$1; shift
for dir in "$@"; do
  [ "$(/usr/bin/stat -c %u "$dir")" = 0 ] && /bin/chown "$owner" "$dir" && echo "r2d-owner: $dir"
done
"""


def covers(mount_point: str, path: str) -> bool:
    """Whether a mount at `mount_point` hides `path` (it is that directory or inside it)."""
    mount_point, path = posixpath.normpath(mount_point), posixpath.normpath(path)
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def mounts_home(mount_points: Iterable[str]) -> bool:
    """Whether a volume is mounted on the home directories (`/home`) or on one of them
    (`/home/<user>`): repo2docker images keep the user's home in /home/<user>."""
    return any(re.fullmatch(r"/home(/[^/]+)?/?", point) for point in mount_points)


def default_repo_dir(mount_points: Iterable[str]) -> str:
    """The repository's directory in images this hub builds, unless `repo_dir` is set."""
    return REPO_DIR_BESIDE_HOME if mounts_home(mount_points) else ""


def folder_names(repo_url: str) -> tuple[str, str]:
    """The folder a repository is copied into, and the one used when that name is taken:
    its last path component ('course' of https://host/org/course.git), then with a hash of
    the normalised URL ('course-1a2b3c4d'), which no other repository shares."""
    path = contract.normalize_repo_url(repo_url).split("://", 1)[1].partition("/")[2]
    last = path.rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip(".-")[:64] or "repository"
    return name, f"{name}-{hashlib.sha256(contract.normalize_repo_url(repo_url).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Mounted:
    """One volume or bind of the server container: its source and where it is mounted."""

    source: str
    target: str
    read_only: bool = False


def server_mounts(binds: Mapping[str, Mapping[str, str]], mounts: Iterable[Any] = ()) -> list[Mounted]:
    """DockerSpawner's `volume_binds` ({source: {'bind': target, 'mode': …}}) and `mounts`
    (docker Mount objects) as one list."""
    found = [Mounted(source, bind["bind"], bind.get("mode", "rw") == "ro") for source, bind in binds.items()]
    for mount in mounts:
        if mount.get("Type", "volume") in ("volume", "bind") and mount.get("Source"):
            found.append(Mounted(mount["Source"], mount["Target"], bool(mount.get("ReadOnly"))))
    return found


@dataclass(frozen=True)
class CopyPlan:
    """How the repository reaches a volume that hides it: which directory of the image, into
    which volume, and where the user lands."""

    source: str  # the repository's directory in the image
    mount: Mounted  # the volume that hides it
    parent: str  # the folder (in the server) that receives ~/<name>
    name: str
    other_name: str
    repo_url: str

    def helper_command(self) -> list[str]:
        inside = posixpath.join(VOLUME_IN_HELPER, posixpath.relpath(self.parent, self.mount.target))
        return [
            "/bin/sh",
            "-c",
            COPY_SCRIPT,
            "r2d-copy",
            self.source,
            posixpath.normpath(inside),
            self.name,
            self.other_name,
            contract.normalize_repo_url(self.repo_url),
        ]

    def folder(self, chosen: str | None = None) -> str:
        """The copied folder in the server, as the helper chose it (else the first choice)."""
        return posixpath.join(self.parent, chosen or self.name)


def image_paths(image_config: Mapping[str, Any]) -> tuple[str, str]:
    """(home, repository directory) of an image, from its configuration: HOME and REPO_DIR
    of its environment (repo2docker sets both); a Dockerfile image without REPO_DIR keeps its
    files in its working directory, else in its home."""
    env = dict(item.partition("=")[::2] for item in image_config.get("Env") or [])
    user = (image_config.get("User") or "jovyan").split(":")[0]
    home = env.get("HOME") or (f"/home/{user}" if not user.isdigit() else "/home/jovyan")
    workdir = image_config.get("WorkingDir") or ""
    repo = env.get("REPO_DIR") or (workdir if workdir not in ("", "/") else home)
    return posixpath.normpath(home), posixpath.normpath(repo)


def plan_copy(image_config: Mapping[str, Any], mounted: list[Mounted], repo_url: str) -> CopyPlan | None:
    """The copy this launch needs, or None when no writable volume holds the home directory
    or hides the repository (a volume on a folder of the home, as in Jupyter's docker-stacks,
    leaves both in view: nothing to do)."""
    home, source = image_paths(image_config)
    writable = [m for m in mounted if not m.read_only]
    holding = [m for m in writable if covers(m.target, home)] or [m for m in writable if covers(m.target, source)]
    if not holding:
        return None
    mount = max(holding, key=lambda m: len(posixpath.normpath(m.target)))
    parent = home if covers(mount.target, home) else posixpath.normpath(mount.target)
    name, other = folder_names(repo_url)
    return CopyPlan(source, mount, parent, name, other, repo_url)


def landing_url(folder: str, root: str) -> str | None:
    """JupyterLab's URL for `folder` when the server's root directory is `root`."""
    if not covers(root, folder):
        return None
    relative = posixpath.relpath(folder, root)
    return "/lab" if relative == "." else f"/lab/tree/{relative}"


@dataclass(frozen=True)
class OwnerFix:
    """Volumes this launch created inside the home, to be given to the server's user."""

    owner: str  # uid:gid
    volumes: tuple[Mounted, ...]

    def helper_command(self) -> list[str]:
        return ["/bin/sh", "-c", OWNER_SCRIPT, "r2d-owner", self.owner, *self.helper_binds().values()]

    def helper_binds(self) -> dict[str, str]:
        """{volume: where the helper sees it}."""
        return {m.source: f"{VOLUME_IN_HELPER}-{n}" for n, m in enumerate(self.volumes)}


def owner_fix(image_config: Mapping[str, Any], new_volumes: list[Mounted], uid: int, gid: int) -> OwnerFix | None:
    """What gives the server's user (uid, gid) the volumes this launch created strictly
    inside their home (`~/work`, which the image lacks), or None when there are none or the
    user is root."""
    home, _repo = image_paths(image_config)
    inside = tuple(
        m for m in new_volumes if covers(home, m.target) and posixpath.normpath(m.target) != home and not m.read_only
    )
    if not inside or uid == 0:
        return None
    return OwnerFix(f"{uid}:{gid}", inside)
