"""Images on a Docker daemon and in the registry it pushes to: what builds check and push, and
what the image garbage collector measures and removes.

The registry is asked through the daemon (Docker's distribution inspect), not over its HTTP
API: the daemon already reaches the registry (it pushes and pulls) with the same network,
proxies and TLS trust as the servers that will pull, so the operator pod needs no route to
the registry of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import docker.auth
import docker.errors

from .contract import registry_of
from .docker_api import DockerAPI, RegistryError, RegistryUnavailable, RunnerError
from .imagegc import DiskUsage
from .taglisting import TagListing

# What a registry (through the daemon or a build's log) says when it refuses credentials.
_REFUSED_WORDS = ("unauthorized", "authentication required", "denied", "forbidden", "no basic auth")
# statvfs of argv[1]: fragment size, blocks, blocks available to unprivileged users.
_STATVFS = "import os, sys; s = os.statvfs(sys.argv[1]); print(s.f_frsize, s.f_blocks, s.f_bavail)"


def registry_refused(text: str) -> bool:
    """Whether a registry's message says it refused the credentials or the access."""
    lowered = text.lower()
    return any(word in lowered for word in _REFUSED_WORDS)


def _registry_error(image: str, text: str, doing: str) -> RunnerError:
    """A daemon's registry error, classified for the user. Never includes credentials: the
    daemon's messages name the registry and the repository, not the auth it was given."""
    registry = registry_of(image)
    if registry_refused(text):
        return RegistryError(
            f"The registry {registry} refused the push: {text.strip()[:300]} "
            f"(check the registry credentials the builds are given)"
        )
    return RegistryUnavailable(f"The registry {registry} could not be reached while {doing} it: {text.strip()[:300]}")


class ImageStore:
    """`build_image` runs the disk probe (it has Python: repo2docker is a Python program);
    `instance` labels probes; `docker_config` holds the credentials pushes use."""

    def __init__(self, api: DockerAPI, build_image: str, instance: str, docker_config: str | None = None) -> None:
        self.api = api
        self.build_image = build_image
        self.instance = instance
        self.docker_config = docker_config
        self._listing = TagListing(self._all_tags)

    async def image_exists(self, image: str) -> bool:
        try:
            await self.api.call((await self.api.client()).images.get, image)
            return True
        except docker.errors.ImageNotFound:
            return False

    async def image_exists_in_burst(self, image: str) -> bool:
        """`image_exists`, for questions that come many at once (new resources): answered by a
        listing of the daemon's tags they share (taglisting.py), an absence confirmed exactly."""
        return image in await self._listing.tags() or await self.image_exists(image)

    async def _all_tags(self) -> frozenset[str]:
        images = await self.api.call((await self.api.client()).api.images)
        return frozenset(tag for image in images for tag in image.get("RepoTags") or ())

    async def digest(self, image: str) -> str | None:
        """What names this image's content: its registry digest ('name@sha256:…') when it came
        from a registry, else the daemon's image id ('sha256:…'); None if the daemon lacks it
        (or the reference is not one Docker takes)."""
        try:
            found = await self.api.call((await self.api.client()).images.get, image)
        except (docker.errors.ImageNotFound, docker.errors.APIError):
            return None
        digests = found.attrs.get("RepoDigests") or []
        return digests[0] if digests else found.id

    # ---- the registry -------------------------------------------------------------------------

    def _auth(self, image: str) -> dict | None:
        """Credentials for the image's registry from the configured docker config.json, or None
        (docker-py then uses this process's own Docker client configuration)."""
        if not self.docker_config:
            return None
        found = docker.auth.load_config(config_path=self.docker_config).resolve_authconfig(registry_of(image))
        return dict(found) if found else None

    async def registry_has(self, image: str) -> bool:
        """Whether the registry holds this tag (Docker's distribution inspect)."""
        client = await self.api.client()
        try:
            await self.api.call(client.api.inspect_distribution, image, auth_config=self._auth(image))
            return True
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if exc.status_code == 404 or "manifest unknown" in text or "not found" in text.lower():
                return False
            raise _registry_error(image, text, "reading from") from None

    async def push(self, image: str) -> None:
        """Push a local image (e.g. one built before push was switched on)."""
        repository, _, tag = image.rpartition(":")
        client = await self.api.client()
        stream = await self.api.call(
            client.api.push, repository, tag, stream=True, decode=True, auth_config=self._auth(image)
        )
        for item in await self.api.call(list, stream):
            if isinstance(item, dict) and item.get("error"):
                raise _registry_error(image, str(item["error"]), "pushing to")

    # ---- what the garbage collector needs ------------------------------------------------------

    async def disk_usage(self) -> dict:
        """The daemon's own accounting (`docker system df`): images with their unique sizes
        and container counts, the total image layer bytes, and the build cache."""
        return await self.api.call((await self.api.client()).api.df)

    async def data_root_usage(self) -> DiskUsage:
        """The filesystem that holds the daemon's data root, measured by a short container of
        the build image with that directory mounted read-only.

        The daemon names its own data root (`docker info`), so the answer is right wherever this
        process runs, in a pod or a hub in a container, with no host path or mount of its own.
        Before the first build the build image may be missing; there is nothing to remove then."""
        client = await self.api.client()
        try:
            root = (await self.api.call(client.info)).get("DockerRootDir") or "/var/lib/docker"
            await self.api.call(client.images.get, self.build_image)  # containers.run would pull a missing one
            output = await self.api.run_probe(
                self.build_image,
                ["python3", "-c", _STATVFS, "/data-root"],
                self.instance,
                volumes={root: {"bind": "/data-root", "mode": "ro"}},
            )
            frsize, blocks, available = (int(n) for n in output.decode().split()[:3])
        except docker.errors.ImageNotFound:
            raise RunnerError(f"the build image {self.build_image} is not on the daemon yet") from None
        except (docker.errors.DockerException, ValueError) as exc:
            raise RunnerError(f"could not measure the disk of Docker's data root: {exc}") from exc
        return DiskUsage(size=frsize * blocks, available=frsize * available)

    async def remove_image(self, image_id: str) -> bool:
        """Remove an image by id, every tag of it. False when Docker refuses because a container
        started using it meanwhile (409), or it is already gone."""
        try:
            await self.api.call((await self.api.client()).api.remove_image, image_id, force=False, noprune=False)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return False
            raise RunnerError(f"could not remove image {image_id[:19]}: {exc.explanation or exc}") from exc

    async def prune_build_cache(self, keep_storage: int) -> int:
        """Shrink BuildKit's cache in the daemon to `keep_storage` bytes; returns bytes freed."""
        result = await self.api.call((await self.api.client()).api.prune_builds, keep_storage=keep_storage)
        return int((result or {}).get("SpaceReclaimed") or 0)

    async def container_uses(
        self,
        on_image: Callable[[str, float], None],
        since: float | None = None,
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        """Call `on_image(image reference, unix time)` for every container created or started,
        until the stream ends (the daemon went away) or this task is cancelled. `since` replays
        what the daemon still remembers from that time on; `on_subscribed` is called once the
        daemon has accepted the subscription (it answers before the first event)."""
        client = await self.api.client()
        filters = {"type": "container", "event": ["create", "start"]}
        stream = await self.api.call(client.events, decode=True, filters=filters, since=int(since) if since else None)
        if on_subscribed:
            on_subscribed()
        async for event in self.api.iterate(lambda: stream, close=stream.close):
            image = event.get("from") or event.get("Actor", {}).get("Attributes", {}).get("image")
            if image:
                on_image(image, float(event.get("timeNano", 0)) / 1e9 or float(event.get("time", 0)))
