"""Operator configuration: one dataclass, filled from the environment, overridden by CLI flags.

Environment variables make the operator configurable from a Helm chart without templating a
command line; flags make it convenient by hand. Both are validated before kopf starts, so a
bad value is one clear line on stderr, not a traceback from the first build.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from . import contract
from .runner import build_environment

# The newest release. Its image tag is the PEP 440 form of the version (setuptools-scm in
# repo2docker's release workflow): 2026.4.0, where releases up to 2024 were tagged 2024.07.0.
DEFAULT_BUILD_IMAGE = "quay.io/jupyterhub/repo2docker:2026.4.0"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    build_image: str = DEFAULT_BUILD_IMAGE
    # Images a resource may name in spec.buildImage. A build container gets the node's Docker
    # socket, i.e. root on the node, so whoever may create resources must not pick its image.
    allowed_build_images: tuple[str, ...] = ()
    concurrency: int = 2
    build_timeout: float = 3600.0
    memory_limit: str | None = None
    cpu_limit: float | None = None
    tail_lines: int = 100
    tail_bytes: int = 16 * 1024
    image_prefix: str = "r2d-"
    push: bool = False
    docker_config: str | None = None
    docker_socket: str = "/var/run/docker.sock"
    finished_ttl: float = 86400.0
    status_interval: float = 1.0
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    metrics_port: int = 9090
    instance: str = "default"
    user_id: int = 1000
    user_name: str = "jovyan"
    build_env: tuple[str, ...] = ()
    verbose: bool = False

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
        checks = [
            (self.concurrency >= 0, "the concurrency limit must be 0 (no limit) or more"),
            (self.build_timeout > 0, "the build timeout must be positive"),
            (self.tail_lines >= 1 and self.tail_bytes >= 256, "the log tail needs at least 1 line and 256 bytes"),
            (self.finished_ttl >= 0, "the TTL of finished builds must be 0 (keep) or more"),
            (self.status_interval >= 0.1, "the status interval must be at least 0.1 s"),
            (self.cpu_limit is None or self.cpu_limit > 0, "the CPU limit must be positive"),
            (0 <= self.metrics_port < 65536, "the metrics port must be 0 (off) to 65535"),
            (self.push or not self.docker_config, "a registry credentials file only makes sense with --push"),
            (not self.push or contract.prefix_names_registry(self.image_prefix),
             "--push needs an image prefix that names a registry (e.g. registry.example.org/binder/r2d-)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


# Options that take several values: their flag (repeatable) and a comma-separated variable.
_LIST_FLAGS = {"namespaces": "--namespace", "allowed_build_images": "--allow-build-image", "build_env": "--build-env"}

# name → (environment variable, type, help)
_OPTIONS: dict[str, tuple[str, type, str]] = {
    "namespaces": ("R2D_NAMESPACES", str, "namespace to watch (repeatable; env: comma-separated)"),
    "all_namespaces": ("R2D_ALL_NAMESPACES", bool, "watch build resources in every namespace"),
    "build_image": ("R2D_BUILD_IMAGE", str, "repo2docker image that runs the builds"),
    "allowed_build_images": ("R2D_ALLOWED_BUILD_IMAGES", str,
                             "other images spec.buildImage may name (repeatable; env: comma-separated)"),
    "concurrency": ("R2D_CONCURRENT_BUILDS", int, "builds running at once on this node (0: no limit)"),
    "build_timeout": ("R2D_BUILD_TIMEOUT", float, "seconds before a build is stopped and failed"),
    "memory_limit": ("R2D_BUILD_MEMORY_LIMIT", str,
                     "memory limit of builds (e.g. 4Gi); only build images with repo2docker before 2025.08 can honour it"),
    "cpu_limit": ("R2D_BUILD_CPU_LIMIT", float,
                  "CPUs of the repo2docker container (clone, build preparation); build steps run in the daemon"),
    "tail_lines": ("R2D_LOG_TAIL_LINES", int, "log lines kept in a resource's status"),
    "tail_bytes": ("R2D_LOG_TAIL_BYTES", int, "bytes of log kept in a resource's status"),
    "image_prefix": ("R2D_IMAGE_PREFIX", str, "images may only be built under this prefix"),
    "push": ("R2D_PUSH", bool, "push built images to the registry in their prefix; 'built' then means 'in the registry'"),
    "docker_config": ("R2D_DOCKER_CONFIG", str, "docker config.json with push credentials (e.g. a mounted Secret), copied into build containers"),
    "docker_socket": ("R2D_DOCKER_SOCKET", str, "node path of the Docker socket mounted into build containers"),
    "finished_ttl": ("R2D_FINISHED_TTL", float, "seconds to keep finished resources (0: forever); images stay"),
    "status_interval": ("R2D_STATUS_INTERVAL", float, "minimum seconds between log updates in status"),
    "liveness": ("R2D_LIVENESS", str, "kopf liveness endpoint URL ('' to disable)"),
    "metrics_port": ("R2D_METRICS_PORT", int, "port of the Prometheus metrics endpoint (0: off)"),
    "instance": ("R2D_INSTANCE", str, "label value separating operators that share one Docker daemon"),
    "user_id": ("R2D_USER_ID", int, "user id inside built images"),
    "user_name": ("R2D_USER_NAME", str, "user name inside built images"),
    "build_env": ("R2D_BUILD_ENV", str, "NAME=VALUE in build containers' environment, e.g. HTTPS_PROXY or "
                  "R2D_DATAVERSE_INSTALLATIONS_URL (repeatable; env: a JSON object)"),
    "verbose": ("R2D_VERBOSE", bool, "debug logging"),
}


def _convert(name: str, kind: type, raw: Any) -> Any:
    if name == "build_env" and isinstance(raw, str):  # the variable: a JSON object (values may hold commas)
        try:
            mapping = json.loads(raw) if raw.strip() else {}
        except ValueError:
            mapping = None
        if not isinstance(mapping, dict):
            raise ConfigError(f"R2D_BUILD_ENV={raw[:80]!r} is not a JSON object of names to values")
        return tuple(f"{k}={v}" for k, v in mapping.items())
    if name in _LIST_FLAGS:
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
        return tuple(n.strip() for n in items if n and n.strip())
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).strip().lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{_OPTIONS[name][0]}={raw!r} is not a boolean (true/false)")
    if raw in ("", None) and name in ("memory_limit", "cpu_limit", "docker_config", "liveness"):
        return None
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{_OPTIONS[name][0]}={raw!r} is not a valid {kind.__name__}") from None


def from_sources(environ: Mapping[str, str], args: argparse.Namespace | None = None) -> OperatorConfig:
    values: dict[str, Any] = {}
    for name, (env, kind, _help) in _OPTIONS.items():
        if env in environ:
            values[name] = _convert(name, kind, environ[env])
        raw = getattr(args, name, None) if args is not None else None
        if raw not in (None, [], False):
            values[name] = _convert(name, kind, raw)
    return OperatorConfig(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in fields(OperatorConfig)}
    for name, (env, kind, help_text) in _OPTIONS.items():
        flag = _LIST_FLAGS.get(name, "--" + name.replace("_", "-"))
        text = f"{help_text} [env {env}; default {defaults[name]!r}]"
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=text)
        elif name in _LIST_FLAGS:
            parser.add_argument(flag, dest=name, action="append", help=text)
        else:
            parser.add_argument(flag, dest=name, default=None, help=text)


def from_environ() -> OperatorConfig:
    return from_sources(os.environ)


__all__ = ["OperatorConfig", "ConfigError", "add_arguments", "from_sources", "from_environ"]
