"""Short-lived helper containers that prepare a server's volumes before it starts.

Two jobs need a container of their own (homes.py says why): giving a volume this launch
created to the server's user, which needs root, and copying the repository's files from the
image into the user's home, which needs the launched image. The launched image is whatever a
repository's Dockerfile made it, `/bin/sh`, `id` and `chown` included, so:

* what needs root runs in a *trusted* image the admin controls (`helper_image`, by default the
  hub's own default server image), with absolute paths, a fixed PATH, every capability
  dropped but CHOWN, no new privileges, a read-only root and no network. The user is given to
  it as numbers, read beforehand from the launched image's /etc/passwd without running
  anything of it (Docker resolves a user name the same way when the server starts);
* the launched image runs only as the server's own user, never as root;
* every helper gets the server's container policy (extra_host_config: runtime, security
  options, capabilities; mem_limit, cpu_limit) plus a pids limit and a time limit.
"""

from __future__ import annotations

import copy
import io
import tarfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from repo2docker_buildcore import contract

# Seconds a helper may take (a large repository's copy on a slow disk, say) before it is
# stopped; the server starts anyway, with the repository still in the image.
HELPER_TIMEOUT = 120.0
# Processes a helper may have: a shell, tar twice, a few coreutils.
HELPER_PIDS_LIMIT = 64
FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_PASSWD_BYTES = 1 << 20

Call = Callable[..., Awaitable[Any]]  # the spawner's `docker(method, *args)`


@dataclass(frozen=True)
class ServerPolicy:
    """What the admin set for servers' containers, which helpers obey too."""

    extra_host_config: Mapping[str, Any] = field(default_factory=dict)
    mem_limit: Any = None
    cpu_limit: float | None = None
    pids_limit: int = HELPER_PIDS_LIMIT
    timeout: float = HELPER_TIMEOUT


def host_config(policy: ServerPolicy, binds: Mapping[str, str], privileged_step: bool) -> dict[str, Any]:
    """The keyword arguments of `create_host_config` for one helper: the server's policy, no
    network, the volumes at `binds`, and for a step that needs root (`privileged_step`, in the
    trusted image) only CHOWN. The admin's settings are merged in as DockerSpawner merges
    them, then the helper's own limits are applied on top: a policy can narrow, not widen."""
    config: dict[str, Any] = {"binds": {source: {"bind": path, "mode": "rw"} for source, path in binds.items()}}
    if policy.mem_limit is not None:
        config["mem_limit"] = policy.mem_limit
    if policy.cpu_limit is not None:
        period = int(policy.extra_host_config.get("cpu_period", 100_000))
        config["cpu_period"], config["cpu_quota"] = period, int(policy.cpu_limit * period)
    for key, value in policy.extra_host_config.items():
        if key not in ("binds", "mounts", "port_bindings", "network_mode", "links"):
            config[key] = copy.deepcopy(value)
    config["network_mode"] = "none"
    config["pids_limit"] = min(int(config.get("pids_limit") or policy.pids_limit), policy.pids_limit)
    config["privileged"] = False
    config["security_opt"] = sorted({*config.get("security_opt", []), "no-new-privileges"})
    if privileged_step:
        config["cap_drop"], config["cap_add"], config["read_only"] = ["ALL"], ["CHOWN"], True
    return config


@dataclass(frozen=True)
class UserIds:
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"

    @property
    def root(self) -> bool:
        return self.uid == 0


def parse_passwd(text: str) -> dict[str, UserIds]:
    """name → ids of an /etc/passwd (an image's, hence untrusted: malformed lines are skipped)."""
    users: dict[str, UserIds] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] and fields[2].isdigit() and fields[3].isdigit():
            users.setdefault(fields[0], UserIds(int(fields[2]), int(fields[3])))
    return users


def resolve_user(spec: str | None, passwd: Mapping[str, UserIds]) -> UserIds | None:
    """The ids Docker runs `spec` ('jovyan', '1000', '1000:100', 'jovyan:users'; empty: root)
    as in an image with this passwd; None when the image does not know the name (Docker would
    refuse to start the server)."""
    name, _, group = (spec or "0").partition(":")
    if name.isdigit():
        uid = int(name)
        entry = next((ids for ids in passwd.values() if ids.uid == uid), None)
        gid = entry.gid if entry else 0
    elif name in passwd:
        uid, gid = passwd[name].uid, passwd[name].gid
    else:
        return None
    if group:
        if not group.isdigit():
            return None  # a group name would need /etc/group; nothing here sets one
        gid = int(group)
    return UserIds(uid, gid)


async def image_passwd(call: Call, image: str) -> dict[str, UserIds]:
    """The image's /etc/passwd, read from a container that is created and never started."""
    created = await call(
        "create_container",
        image=image,
        entrypoint=["/r2d-never-run"],
        network_disabled=True,
        labels={contract.LABEL_PROBE: "server-passwd"},
    )
    try:
        stream, _stat = await call("get_archive", created["Id"], "/etc/passwd")
        data = b"".join(stream) if not isinstance(stream, bytes) else stream
        with tarfile.open(fileobj=io.BytesIO(data[: MAX_PASSWD_BYTES + 4096])) as tar:
            member = tar.next()
            if member is None or not member.isfile() or member.size > MAX_PASSWD_BYTES:
                return {}
            return parse_passwd(tar.extractfile(member).read().decode(errors="replace"))
    except (docker.errors.NotFound, tarfile.TarError):
        return {}
    finally:
        await call("remove_container", created["Id"], force=True)


async def run_helper(
    call: Call,
    client: Any,
    *,
    name: str,
    image: str,
    argv: list[str],
    binds: Mapping[str, str],
    user: UserIds,
    policy: ServerPolicy,
    role: str,
    privileged_step: bool = False,
) -> tuple[int, str]:
    """Run `argv` in a helper container; its exit code and output. Named after the server, so
    one left by a hub that died is replaced, never run twice."""
    try:
        await call("remove_container", name, force=True)
    except docker.errors.NotFound:
        pass
    helper = await call(
        "create_container",
        image=image,
        entrypoint=argv[:1],
        command=argv[1:],
        name=name,
        user=str(user),
        environment={"PATH": FIXED_PATH},
        labels={contract.LABEL_PROBE: f"server-{role}"},
        network_disabled=True,
        host_config=client.create_host_config(**host_config(policy, binds, privileged_step)),
    )
    try:
        await call("start", helper["Id"])
        try:
            exit_code = (await call("wait", helper["Id"], timeout=policy.timeout))["StatusCode"]
        except Exception:  # noqa: BLE001 - docker-py raises its transport's timeout
            return -1, f"stopped after {policy.timeout:.0f} s"
        output = (await call("logs", helper["Id"], stdout=True, stderr=True)).decode(errors="replace")
    finally:
        await call("remove_container", helper["Id"], force=True)
    return exit_code, output
