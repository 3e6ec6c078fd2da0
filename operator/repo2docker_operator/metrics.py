"""Prometheus metrics of the operator, on a registry of its own (tests start several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from repo2docker_buildcore.contract import Phase
from repo2docker_buildcore.gcmetrics import GCMetrics
from repo2docker_buildcore.queue import BuildQueue

DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class OperatorMetrics:
    def __init__(self, queue: BuildQueue) -> None:
        self.registry = CollectorRegistry()
        self.builds = Counter(
            "repo2docker_builds",
            "Finished builds by outcome (cached: the image already existed).",
            ["outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "repo2docker_build_duration_seconds",
            "Wall time of builds that ran, from container start to result.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        queued = Gauge("repo2docker_builds_queued", "Builds waiting for a slot.", registry=self.registry)
        queued.set_function(lambda: queue.waiting)
        running = Gauge("repo2docker_builds_running", "Builds holding a slot.", registry=self.registry)
        running.set_function(lambda: queue.running)
        limit = Gauge("repo2docker_build_slots", "The concurrency limit (0: none).", registry=self.registry)
        limit.set_function(lambda: queue.limit)

        self.gc = GCMetrics(self.registry)

    def finished(self, phase: Phase, duration: float | None, cached: bool) -> None:
        outcome = "cached" if cached else phase.value.lower()
        self.builds.labels(outcome).inc()
        if duration is not None:
            self.duration.labels(outcome).observe(duration)

    def serve(self, port: int, addr: str) -> None:
        start_http_server(port, addr=addr, registry=self.registry)
