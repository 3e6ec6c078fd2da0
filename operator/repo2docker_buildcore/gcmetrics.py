"""Prometheus metrics of the image garbage collector, the same for the operator (its own
registry and endpoint) and the hub's embedded backend (the hub's registry, /hub/metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from .imagegc import ImageInfo


class GCMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.images_removed = Counter(
            "repo2docker_images_removed", "Built images the garbage collector removed.", registry=registry
        )
        self.image_bytes_removed = Counter(
            "repo2docker_image_bytes_removed",
            "Bytes those removals freed (each image's own layers).",
            registry=registry,
        )
        self.image_bytes = Gauge(
            "repo2docker_image_bytes",
            "Bytes held by built images under the prefix (their own layers), at the last garbage collection pass.",
            registry=registry,
        )

    def removed(self, image: ImageInfo, reason: str) -> None:
        self.images_removed.inc()
        self.image_bytes_removed.inc(image.unique_size)

    def usage(self, ours: int) -> None:
        self.image_bytes.set(ours)
