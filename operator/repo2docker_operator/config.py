"""Operator configuration: one dataclass, filled from the environment, overridden by CLI flags.

Environment variables make the operator configurable from a Helm chart without templating a
command line; flags make it convenient by hand. Both are validated before kopf starts, so a
bad value is one clear line on stderr, not a traceback from the first build.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from repo2docker_buildcore import contract
from repo2docker_buildcore.build import BuildSettings
from repo2docker_buildcore.imagegc import GCPolicy
from repo2docker_buildcore.imageuse import store_from_setting
from repo2docker_buildcore.runner import RunnerConfig, build_environment
from repo2docker_buildcore.settings import ENV, Setting, derive, setting


class ConfigError(ValueError):
    pass


def from_table(name: str) -> Any:
    """A field whose default, variable, flag and help are the settings table's row."""
    row = setting(name)
    return field(default=row.default, metadata={"setting": row})


@dataclass(frozen=True)
class OperatorConfig:
    """The operator's settings, one field per row of `repo2docker_buildcore.settings`."""

    namespaces: tuple[str, ...] = from_table("namespaces")
    all_namespaces: bool = from_table("all_namespaces")
    build_image: str = from_table("build_image")
    allowed_build_images: tuple[str, ...] = from_table("allowed_build_images")
    concurrency: int = from_table("concurrency")
    cluster_concurrency: int = from_table("cluster_concurrency")
    node_name: str | None = from_table("node_name")
    lease_namespace: str | None = from_table("lease_namespace")
    lease_duration: float = from_table("lease_duration")
    affinity_window: float = from_table("affinity_window")
    prepare_next: bool = from_table("prepare_next")
    build_timeout: float = from_table("build_timeout")
    memory_limit: str | None = from_table("memory_limit")
    cpu_limit: float | None = from_table("cpu_limit")
    tail_lines: int = from_table("tail_lines")
    tail_bytes: int = from_table("tail_bytes")
    image_prefix: str = from_table("image_prefix")
    push: bool = from_table("push")
    docker_config: str | None = from_table("docker_config")
    git_credentials: str | None = from_table("git_credentials")
    docker_socket: str = from_table("docker_socket")
    finished_ttl: float = from_table("finished_ttl")
    status_interval: float = from_table("status_interval")
    liveness: str | None = from_table("liveness")
    metrics_port: int = from_table("metrics_port")
    metrics_address: str = from_table("metrics_address")
    instance: str = from_table("instance")
    user_id: int = from_table("user_id")
    user_name: str = from_table("user_name")
    build_env: tuple[str, ...] = from_table("build_env")
    gc_interval: float = from_table("gc_interval")
    gc_high_watermark: str | None = from_table("gc_high_watermark")
    gc_low_watermark: str | None = from_table("gc_low_watermark")
    gc_max_age: float = from_table("gc_max_age")
    gc_grace: float = from_table("gc_grace")
    gc_use_record: str | None = from_table("gc_use_record")
    verbose: bool = from_table("verbose")

    def __post_init__(self) -> None:
        if not self.all_namespaces and not self.namespaces:
            raise ConfigError("name the namespaces to watch (--namespace / R2D_NAMESPACES) or pass --all-namespaces")
        try:
            build_environment(self.build_env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            contract.validate_image(self.build_image, "build image")
            for image in self.allowed_build_images:
                contract.validate_image(image, "allowed build image")
            contract.validate_image_prefix(self.image_prefix)
            contract.parse_quantity(self.memory_limit)
        except contract.InvalidBuildRequest as exc:
            raise ConfigError(str(exc)) from exc
        try:
            self.gc_policy()
            store_from_setting(self.gc_use_record)
        except ValueError as exc:
            raise ConfigError(f"image GC: {exc}") from None
        checks = [
            (self.gc_interval >= 0, "the image GC interval must be 0 (off) or more seconds"),
            (self.concurrency >= 0, "the concurrency limit must be 0 (no limit) or more"),
            (self.cluster_concurrency >= 0, "the cluster's concurrency limit must be 0 (no limit) or more"),
            (self.affinity_window >= 0, "the affinity window must be 0 (off) or more seconds"),
            (self.lease_duration >= 3, "the lease duration must be at least 3 s (it is renewed every third of it)"),
            (
                self.node_name is None or contract.is_dns_label(self.node_name),
                "the node name must be a DNS name of at most 253 characters (lower case letters, digits, '-', '.')",
            ),
            (self.build_timeout > 0, "the build timeout must be positive"),
            (self.tail_lines >= 1 and self.tail_bytes >= 256, "the log tail needs at least 1 line and 256 bytes"),
            (self.finished_ttl >= 0, "the TTL of finished builds must be 0 (keep) or more"),
            (self.status_interval >= 0.1, "the status interval must be at least 0.1 s"),
            (self.cpu_limit is None or self.cpu_limit > 0, "the CPU limit must be positive"),
            (0 <= self.metrics_port < 65536, "the metrics port must be 0 (off) to 65535"),
            (self.push or not self.docker_config, "a registry credentials file only makes sense with --push"),
            (
                not self.push or contract.prefix_names_registry(self.image_prefix),
                "--push needs an image prefix that names a registry (e.g. registry.example.org/binder/r2d-)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def builder(self) -> str:
        """This builder's name: the node it runs on, or the host's name."""
        return self.node_name or socket.gethostname()

    @property
    def leases_in(self) -> str:
        return self.lease_namespace or (self.namespaces[0] if self.namespaces else "default")

    def watched(self) -> list[str | None]:
        """The namespaces to list and watch; [None] means all of them."""
        return [None] if self.all_namespaces else list(self.namespaces)

    def runner_config(self) -> RunnerConfig:
        return derive(RunnerConfig, self, environment=build_environment(self.build_env))

    def build_settings(self) -> BuildSettings:
        return derive(BuildSettings, self)

    def gc_policy(self) -> GCPolicy:
        return GCPolicy.from_settings(
            self.image_prefix, self.gc_high_watermark, self.gc_low_watermark, self.gc_max_age, self.gc_grace
        )


_OPTIONS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(OperatorConfig)}


def _convert(name: str, raw: Any) -> Any:
    option = _OPTIONS[name]
    kind = option.kind
    if kind == ENV:
        if isinstance(raw, str):  # the variable: a JSON object (values may hold commas)
            try:
                mapping = json.loads(raw) if raw.strip() else {}
            except ValueError:
                mapping = None
            if not isinstance(mapping, dict):
                raise ConfigError(f"R2D_BUILD_ENV={raw[:80]!r} is not a JSON object of names to values")
            return tuple(f"{k}={v}" for k, v in mapping.items())
        return tuple(raw)  # the repeatable flag's NAME=VALUE strings
    if option.many:
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
        return tuple(n.strip() for n in items if n and n.strip())
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).strip().lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{option.env}={raw!r} is not a boolean (true/false)")
    if raw in ("", None) and option.optional:
        return None
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{option.env}={raw!r} is not a valid {kind.__name__}") from None


def from_sources(environ: Mapping[str, str], args: argparse.Namespace | None = None) -> OperatorConfig:
    values: dict[str, Any] = {}
    for name, option in _OPTIONS.items():
        if option.env in environ:
            values[name] = _convert(name, environ[option.env])
        raw = getattr(args, name, None) if args is not None else None
        if raw is not None and raw != []:
            values[name] = _convert(name, raw)
    return OperatorConfig(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, option in _OPTIONS.items():
        # argparse %-formats help texts: a literal % (as in '85%') must be doubled.
        text = f"{option.help} [env {option.env}; default {option.default!r}]".replace("%", "%%")
        if option.kind is bool:  # on by default: --no-… turns it off
            action = argparse.BooleanOptionalAction if option.default else "store_true"
            parser.add_argument(option.option, dest=name, action=action, default=None, help=text)
        elif option.many or option.kind == ENV:
            parser.add_argument(option.option, dest=name, action="append", help=text)
        else:
            parser.add_argument(option.option, dest=name, default=None, help=text)


def from_environ() -> OperatorConfig:
    return from_sources(os.environ)


__all__ = ["OperatorConfig", "ConfigError", "add_arguments", "from_sources", "from_environ"]
