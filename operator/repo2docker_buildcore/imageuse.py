"""When each built image was last used, kept across restarts.

Where use is recorded, and why there: the collector follows the Docker daemon's container
events (a container created or started from an image under the prefix is a use). That is
where every use happens, whoever starts the server (any spawner, a second hub, an admin with
`docker run`), it needs no extra API rights for the hub, and it works the same for the operator
and for the hub's embedded backend. A timestamp on the build resource would not do: resources
expire long before their images, and the embedded backend has none.

Events are not history, though: the daemon forgets them, and DockerSpawner removes a server's
container when it stops. So the ledger is saved (a ConfigMap for the operator, a file for the
hub), at most one collector interval behind. What a crash loses in between is recovered in
part by each pass, which counts every image with a container as used now.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from typing import Protocol

from .kubeapi import MERGE_PATCH, ApiError, core_path

log = logging.getLogger(__name__)
KEY = "last-used.json"


class LedgerStore(Protocol):
    async def load(self) -> dict[str, float]: ...

    async def save(self, uses: dict[str, float]) -> None: ...


class UseLedger:
    """Image reference (tag, or id) → unix time of its last use."""

    def __init__(self, store: LedgerStore | None = None) -> None:
        self.store = store
        self.uses: dict[str, float] = {}
        self.dirty = False

    async def load(self) -> None:
        if self.store is None:
            return
        try:
            loaded = await self.store.load()
        except Exception as exc:  # noqa: BLE001 - a broken record costs LRU order, never the collector
            log.warning("could not read the images' last use (%s); starting without it", exc)
            return
        for ref, when in loaded.items():
            if isinstance(ref, str) and isinstance(when, (int, float)):
                self.touch(ref, float(when))
        self.dirty = False

    async def save(self) -> None:
        if self.store is None or not self.dirty:
            return
        try:
            await self.store.save(dict(self.uses))
            self.dirty = False
        except Exception as exc:  # noqa: BLE001 - saved again after the next pass
            log.warning("could not save the images' last use: %s", exc)

    def touch(self, ref: str, when: float | None = None) -> None:
        when = time.time() if when is None else when
        if when > self.uses.get(ref, 0.0):
            self.uses[ref] = when
            self.dirty = True

    def last_used(self, refs: Iterable[str]) -> float | None:
        times = [self.uses[r] for r in refs if r in self.uses]
        return max(times) if times else None

    def forget(self, refs: Iterable[str]) -> None:
        """A removed image's uses: nothing can use it any more."""
        for ref in refs:
            if self.uses.pop(ref, None) is not None:
                self.dirty = True

    def keep_only(self, refs: set[str]) -> None:
        """Forget images that no longer exist, so the record stays as small as the image store."""
        gone = [r for r in self.uses if r not in refs]
        for ref in gone:
            del self.uses[ref]
        self.dirty = self.dirty or bool(gone)


class FileStore:
    """A JSON file, replaced atomically (the hub's embedded backend)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def load(self) -> dict[str, float]:
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    async def save(self, uses: dict[str, float]) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".last-used-", dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(uses, f, sort_keys=True)
        os.replace(tmp, self.path)


class ConfigMapStore:
    """One key of a ConfigMap the operator may read and update (the chart creates it).

    A ConfigMap holds up to 1 MiB: about 10,000 images, far more than a node's disk."""

    def __init__(self, api, namespace: str, name: str, key: str = KEY) -> None:
        self.api = api  # created lazily: building a store from settings checks them, nothing more
        self.namespace = namespace
        self.name = name
        self.key = key

    async def load(self) -> dict[str, float]:
        try:
            obj = await self.api.request("GET", core_path(self.namespace, "configmaps", self.name))
        except ApiError as exc:
            if exc.status == 404:
                return {}
            raise
        return json.loads((obj.get("data") or {}).get(self.key) or "{}")

    async def save(self, uses: dict[str, float]) -> None:
        body = {"data": {self.key: json.dumps(uses, sort_keys=True)}}  # a merge: other keys stay
        try:
            await self.api.request(
                "PATCH", core_path(self.namespace, "configmaps", self.name), body=body, content_type=MERGE_PATCH
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            await self.api.request(
                "POST", core_path(self.namespace, "configmaps"), body={"metadata": {"name": self.name}, **body}
            )


def store_from_setting(value: str | None, api=None) -> LedgerStore | None:
    """'configmap:NAMESPACE/NAME[#KEY]' or a file path; empty: keep the record in memory only.
    A key of its own per builder (the chart's DaemonSet: the node's name) lets the builders of
    several nodes share one ConfigMap: each node's daemon has its own images."""
    if not value:
        return None
    if value.startswith("configmap:"):
        where, _, key = value[len("configmap:") :].partition("#")
        namespace, _, name = where.partition("/")
        if not namespace or not name:
            raise ValueError(f"{value!r}: write configmap:NAMESPACE/NAME")
        return ConfigMapStore(api, namespace, name, f"{key}.{KEY}" if key else KEY)
    return FileStore(value)
