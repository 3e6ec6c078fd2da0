"""Reading and writing Repo2DockerBuild resources through the Kubernetes API.

Both sides use this: the spawner to create and watch builds, the operator to write status
while a build runs (kopf applies a handler's patch only when the handler returns, and a
build's daemon runs for minutes). The client is kubeapi.KubeApi: plain JSON, no call blocks a loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from . import contract
from .backoff import Backoff, retry
from .kubeapi import MERGE_PATCH, ApiError, KubeApi, core_path, custom_path

# Field selectors on the resource's `status.finishedAt` (a selectable field of the CRD; an
# absent field reads as ""): builds the operator has not released yet, and those it has.
UNFINISHED_SELECTOR = f"status.{contract.STATUS_FINISHED_AT}="
FINISHED_SELECTOR = f"status.{contract.STATUS_FINISHED_AT}!="


class OutdatedCRD(RuntimeError):
    """The cluster's CRD lacks what this version relies on; the message says what to apply."""


# What the API server answers when asking again later may help.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def worth_asking_again(exc: BaseException) -> bool:
    """The API server said "not now" (busy, a CRD still initialising, a timeout), or the
    connection failed: asking again later may help. Anything else (403, 404, 422) will not."""
    if isinstance(exc, ApiError):
        return exc.status in _RETRY_STATUSES
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError))


class BuildResources:
    """CRUD on build resources; `api` is shared and owned by the caller."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    @staticmethod
    def _path(namespace: str | None, name: str = "", subresource: str = "") -> str:
        return custom_path(namespace, contract.GROUP, contract.VERSION, contract.PLURAL, name, subresource)

    async def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the resource; if it exists already, return that one. (obj, created)."""
        namespace = manifest["metadata"]["namespace"]
        try:
            return await self.api.request("POST", self._path(namespace), body=manifest), True
        except ApiError as exc:
            if exc.status != 409:
                raise
        return await self.get(namespace, manifest["metadata"]["name"]), False

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.api.request("GET", self._path(namespace, name))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        # A merge patch: None values remove fields (e.g. queuePosition once building).
        return await self.api.request(
            "PATCH", self._path(namespace, name, "status"), body={"status": status}, content_type=MERGE_PATCH
        )

    async def patch_status_at(self, namespace: str, name: str, resource_version: str, status: dict[str, Any]) -> bool:
        """Write `status` if the resource is still at `resource_version` (as a watch event
        showed it): one request, no read. False if it changed since (another builder decided
        first, or someone else wrote) or is gone."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return bool(await self._send_at(self._path(namespace, name, "status"), body))

    async def _send_at(self, path: str, patch: dict[str, Any]) -> bool | None:
        """Send a merge patch that carries its resourceVersion precondition: True if written,
        False if the resource is gone, None if it changed since (409)."""
        try:
            await self.api.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            if exc.status != 409:
                raise
        return None

    async def patch_status_where(
        self, namespace: str, name: str, uid: str, decide: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> bool:
        """Write `decide(status)` into this incarnation's status if it is not None, guarded by
        the resourceVersion the status was read with: whoever wrote in between makes this one
        read again and decide anew (a claim that lost sees the winner's name). False if
        nothing was written (decided so, gone, or another incarnation)."""

        def patch(obj: dict[str, Any]) -> dict[str, Any] | None:
            fields = decide(obj.get("status") or {})
            return None if fields is None else {"status": fields}

        return await self._guarded_patch(namespace, name, uid, patch, "status")

    async def _patch_metadata(self, namespace: str, name: str, uid: str, change) -> bool:
        """Apply `change(meta) -> metadata patch` to this incarnation (uid) of a resource, in a
        write guarded by its resourceVersion. False if the resource is gone or is another
        incarnation."""
        return await self._guarded_patch(namespace, name, uid, lambda obj: {"metadata": change(obj["metadata"])})

    async def _guarded_patch(
        self,
        namespace: str,
        name: str,
        uid: str,
        make: Callable[[dict[str, Any]], dict[str, Any] | None],
        subresource: str = "",
    ) -> bool:
        """Read the resource, `make` a merge patch from it (None: write nothing) and `send` it
        with the resourceVersion read as its precondition; on a conflict read again and make
        it anew. False if nothing was written (made so, gone, or another incarnation)."""
        for _attempt in range(10):
            try:
                obj = await self.get(namespace, name)
            except ApiError as exc:
                if exc.status == 404:
                    return False
                raise
            meta = obj["metadata"]
            patch = make(obj) if meta["uid"] == uid else None
            if patch is None:
                return False
            patch.setdefault("metadata", {})["resourceVersion"] = meta["resourceVersion"]
            sent = await self._send_at(self._path(namespace, name, subresource), patch)
            if sent is not None:
                return sent
        raise RuntimeError(f"{namespace}/{name} kept changing; it stays as it was until the next relist")

    async def mark_finished(self, namespace: str, name: str, uid: str, finished_at: int, finalizer: str) -> bool:
        """Record that a finished resource needs the operator no more, in two writes.

        First its metadata: the finish time as a label (for people and label selectors) and
        `finalizer` dropped, so a deletion needs nobody. Then `status.finishedAt`, which takes
        it out of the operator's watch and is what its TTL counts from. The watch and the
        sweep read that status field, not the label, because anyone who may create a
        resource may also label it, and only the operator may write status. In this order a crash in
        between leaves it in the watch, to be marked again. Two markers at once (the build's
        end and the watch seeing its terminal phase) agree: the first time written is kept,
        in the label and in status. False if it is gone."""
        kept = [finished_at]

        def change(meta: dict) -> dict:
            earlier = (meta.get("labels") or {}).get(contract.LABEL_FINISHED_AT, "")
            kept[0] = int(earlier) if earlier.isdigit() else finished_at
            return {
                "labels": {contract.LABEL_FINISHED_AT: str(kept[0])},
                "finalizers": [f for f in meta.get("finalizers", []) if f != finalizer],
            }

        marked = await self._patch_metadata(namespace, name, uid, change)
        if marked:
            try:
                await self.patch_status(namespace, name, {contract.STATUS_FINISHED_AT: kept[0]})
            except ApiError as exc:
                if exc.status != 404:
                    raise
                return False
        return marked

    async def take_over_prebuild(self, namespace: str, name: str, uid: str, requester: str) -> bool:
        """Record `requester` as whom a hub's prebuild is for (a launch joined it), so it queues
        as that user's build; False if it was no prebuild (anymore)."""

        def make(obj: dict[str, Any]) -> dict[str, Any] | None:
            annotations = obj["metadata"].get("annotations") or {}
            if annotations.get(contract.ANNOTATION_REQUESTED_BY) != contract.PREBUILD_REQUESTER:
                return None
            return {"metadata": {"annotations": {contract.ANNOTATION_REQUESTED_BY: requester}}}

        return await self._guarded_patch(namespace, name, uid, make)

    async def remove_finished_label(self, namespace: str, name: str, uid: str) -> bool:
        """Drop a finished-at label from a resource that has not finished (put there by whoever
        created it): the label means nothing to the operator's watch, but the TTL sweep and
        people reading `kubectl get` would take it at its word."""
        return await self._patch_metadata(
            namespace, name, uid, lambda meta: {"labels": {contract.LABEL_FINISHED_AT: None}}
        )

    async def check_selectable_fields(self, namespace: str | None, within: float = 60.0) -> None:
        """Raise OutdatedCRD if the API server cannot select on `status.finishedAt` (a CRD
        from before this field; Helm installs a chart's CRD only once). A CRD installed a
        moment ago answers 429 ("storage is (re)initializing") for a while: asked again."""

        async def ask() -> None:
            try:
                await self.list(namespace, field_selector=UNFINISHED_SELECTOR, limit=1)
            except ApiError as exc:
                if exc.status == 400:
                    raise OutdatedCRD(
                        f"the {contract.CRD_NAME} CustomResourceDefinition on this cluster is older than this "
                        f"operator: it cannot select builds by {contract.STATUS_FINISHED_AT!r} ({exc.reason}). Apply "
                        f"this release's CRD (kubectl apply -f crds/repo2dockerbuilds.yaml; Helm never upgrades CRDs)"
                    ) from None
                raise

        await retry(ask, retry_on=Exception, when=worth_asking_again, backoff=Backoff.doubling(0.5, 5.0), within=within)

    async def list_finished(self, namespace: str | None, page: int = 500) -> AsyncIterator[tuple[str, str, str, int]]:
        """(namespace, name, uid, finished_at) of every resource the operator released, from
        `status.finishedAt`, page by page. Read as a Table of metadata and the CRD's printer
        column of that field (contract.COLUMN_FINISHED_AT): thousands of finished builds
        with their log tails would be megabytes, and the field only the operator writes says
        when (a label anyone may set would not). `namespace` None: all namespaces."""
        token = ""
        while True:
            query = {
                "fieldSelector": FINISHED_SELECTOR,
                "includeObject": "Metadata",
                "limit": page,
                "continue": token or None,
            }
            table = await self.api.request(
                "GET", self._path(namespace), params=query, accept="application/json;as=Table;g=meta.k8s.io;v=v1"
            )
            column = _column(table, contract.COLUMN_FINISHED_AT)
            for row in table.get("rows") or []:  # an empty list is `"rows": null`
                finished_at = row["cells"][column]
                meta = row["object"]["metadata"]
                if isinstance(finished_at, int):
                    yield meta["namespace"], meta["name"], meta["uid"], finished_at
            token = table.get("metadata", {}).get("continue") or ""
            if not token:
                return

    async def delete(
        self, namespace: str, name: str, uid: str | None = None, resource_version: str | None = None
    ) -> None:
        """Delete; with `uid`, only that incarnation (a same-named successor is left alone,
        and the API server's 409 for it counts as already gone). With `resource_version`, only
        if unchanged since: a 409 then is raised (it changed), not taken for gone."""
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        options = {"preconditions": preconditions} if preconditions else None
        try:
            await self.api.request("DELETE", self._path(namespace, name), body=options)
        except ApiError as exc:
            successor = exc.status == 409 and uid is not None and resource_version is None
            if not (exc.status == 404 or successor):
                raise

    async def watch(self, namespace: str, resource_version: str, timeout: int) -> AsyncIterator[dict[str, Any]]:
        """Raw watch events ({"type", "object"}) from `resource_version` until the server ends
        the stream after `timeout` seconds. Bookmarks included; a 410 arrives as an ApiError
        or an ERROR event, for the caller to relist."""
        params = {"resourceVersion": resource_version, "allowWatchBookmarks": True}
        async for event in self.api.watch(self._path(namespace), params, timeout):
            yield event

    async def list(
        self,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        params = {"fieldSelector": field_selector, "labelSelector": label_selector, "limit": limit}
        return await self.api.request("GET", self._path(namespace), params=params)


def _column(table: dict[str, Any], name: str) -> int:
    """The index of a Table's column `name`; OutdatedCRD if the CRD does not print it."""
    names = [column.get("name") for column in table.get("columnDefinitions") or []]
    if name not in names:
        raise OutdatedCRD(
            f"the {contract.CRD_NAME} CustomResourceDefinition on this cluster has no {name!r} column: "
            f"apply this release's CRD (kubectl apply -f crds/repo2dockerbuilds.yaml; Helm never "
            f"upgrades CRDs)"
        )
    return names.index(name)


class BuildSecrets:
    """The Secrets that hand a user's own credential to a build (gitcredentials.py says how
    they are shaped and checked): the hub creates and deletes them, the operator reads them."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def create(self, manifest: dict[str, Any]) -> None:
        await self.api.request("POST", core_path(manifest["metadata"]["namespace"], "secrets"), body=manifest)

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as the API server's JSON (camelCase), or None if there is none."""
        try:
            return await self.api.request("GET", core_path(namespace, "secrets", name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, namespace: str, name: str) -> None:
        try:
            await self.api.request("DELETE", core_path(namespace, "secrets", name))
        except ApiError as exc:
            if exc.status != 404:
                raise
