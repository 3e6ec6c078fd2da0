"""What a persistent home adds to a launch: the helper container that copies the repository
into the user's volume (homes.py), against a helper container that does nothing, both run the
same way as the spawner runs them (create, start, wait, logs, remove), in this run.

The image is shaped like a repo2docker image built with repo_dir=/srv/repo: the repository's
files (FILES small files and one DATA_MB file) in /srv/repo, REPO_DIR set, user jovyan. Each
round takes a fresh volume filled from the image's home (as Docker fills a new volume), then
times: a do-nothing helper, the first launch's copy, and a relaunch's copy (everything is
there: nothing is written). Prints the medians and the ratios against the do-nothing helper.

Usage: .venv/bin/python bench/home_copy.py [rounds]   (needs `make testenv`)
"""

from __future__ import annotations

import io
import statistics
import sys
import tarfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402

from repo2dockerspawner.homes import VOLUME_IN_HELPER, Mounted, plan_copy  # noqa: E402
from support.env import load_env  # noqa: E402

FILES, DATA_MB = 500, 20
DOCKERFILE = """FROM {base}
USER root
RUN mkdir -p /srv/repo/notebooks && cd /srv/repo && for i in $(seq {files}); do head -c 4096 /dev/urandom > notebooks/n$i.ipynb; done \\
 && head -c {data}M /dev/urandom > /srv/repo/data.bin && chown -R 1000:100 /srv/repo
ENV REPO_DIR=/srv/repo
USER 1000
WORKDIR /srv/repo
"""


def context(base: str) -> io.BytesIO:
    data = DOCKERFILE.format(base=base, files=FILES, data=DATA_MB).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def helper(client, image: str, argv: list[str], volume: str, user: str) -> float:
    """One helper container as the spawner runs it; seconds until it is removed."""
    start = time.perf_counter()
    created = client.api.create_container(
        image,
        entrypoint=argv[:1],
        command=argv[1:],
        user=user,
        network_disabled=True,
        host_config=client.api.create_host_config(
            binds={volume: {"bind": VOLUME_IN_HELPER, "mode": "rw"}}, network_mode="none"
        ),
    )
    try:
        client.api.start(created["Id"])
        code = client.api.wait(created["Id"], timeout=600)["StatusCode"]
        output = client.api.logs(created["Id"]).decode(errors="replace")
    finally:
        client.api.remove_container(created["Id"], force=True)
    if code != 0:
        raise RuntimeError(f"helper {argv[:1]} exited {code}: {output[-500:]}")
    return time.perf_counter() - start


def main(rounds: int) -> None:
    env = load_env(ROOT / ".testenv" / "env")
    client = docker.from_env()
    image = f"r2d-bench-home:{uuid.uuid4().hex[:8]}"
    client.images.build(fileobj=context(env["R2D_SINGLEUSER_IMAGE"]), custom_context=True, tag=image, rm=True)
    config = client.api.inspect_image(image)["Config"]
    times: dict[str, list[float]] = {"nothing": [], "first copy": [], "relaunch copy": []}
    try:
        for _ in range(rounds):
            volume = f"r2d-bench-home-{uuid.uuid4().hex[:8]}"
            try:
                # As for a new user: the volume filled from the image's home by a first container.
                client.containers.run(
                    image, ["true"], volumes={volume: {"bind": "/home/jovyan", "mode": "rw"}}, remove=True
                )
                plan = plan_copy(config, [Mounted(volume, "/home/jovyan")], "https://example.org/course/notebooks")
                assert plan is not None
                times["nothing"].append(helper(client, image, ["true"], volume, "1000"))
                times["first copy"].append(helper(client, image, plan.helper_command(), volume, "1000"))
                times["relaunch copy"].append(helper(client, image, plan.helper_command(), volume, "1000"))
            finally:
                client.volumes.get(volume).remove(force=True)
    finally:
        client.images.remove(image, force=True)
    base = statistics.median(times["nothing"])
    print(f"home copy of a repository of {FILES} files + {DATA_MB} MB, {rounds} rounds (median seconds)")
    for what, values in times.items():
        median = statistics.median(values)
        print(f"  {what:14s} {median:6.2f} s   x{median / base:5.2f} of a do-nothing helper")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
