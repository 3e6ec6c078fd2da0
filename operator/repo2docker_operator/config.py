"""Operator configuration: one dataclass, filled from the environment, overridden by CLI flags.

Environment variables make the operator configurable from a Helm chart without templating a
command line; flags make it convenient by hand. Both are validated before kopf starts, so a
bad value is one clear line on stderr, not a traceback from the first build.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, NamedTuple, get_args, get_origin, get_type_hints

from repo2docker_buildcore import contract
from repo2docker_buildcore.build import BuildSettings
from repo2docker_buildcore.imagegc import GCPolicy
from repo2docker_buildcore.imageuse import store_from_setting
from repo2docker_buildcore.runner import RunnerConfig, build_environment
from repo2docker_buildcore.versions import DEFAULT_BUILD_IMAGE



class ConfigError(ValueError):
    pass


def option(default: Any, env: str, help: str, flag: str | None = None) -> Any:
    """A setting: its default, its environment variable, its help text, and for a setting that
    takes several values its repeatable flag. Flags, variables and `--help` all derive from this."""
    return field(default=default, metadata={"env": env, "help": help, "flag": flag})


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = option(
        (), "R2D_NAMESPACES", "namespace to watch (repeatable; env: comma-separated)", flag="--namespace")
    all_namespaces: bool = option(False, "R2D_ALL_NAMESPACES", "watch build resources in every namespace")
    build_image: str = option(DEFAULT_BUILD_IMAGE, "R2D_BUILD_IMAGE", "repo2docker image that runs the builds")
    # A build container gets the node's Docker socket, i.e. root on the node, so whoever may
    # create resources must not pick its image.
    allowed_build_images: tuple[str, ...] = option(
        (), "R2D_ALLOWED_BUILD_IMAGES", "other images spec.buildImage may name (repeatable; env: comma-separated)",
        flag="--allow-build-image")
    concurrency: int = option(2, "R2D_CONCURRENT_BUILDS", "builds running at once on this node (0: no limit)")
    build_timeout: float = option(3600.0, "R2D_BUILD_TIMEOUT", "seconds before a build is stopped and failed")
    memory_limit: str | None = option(
        None, "R2D_BUILD_MEMORY_LIMIT",
        "memory limit of builds (e.g. 4Gi); only build images with repo2docker before 2025.08 can honour it")
    cpu_limit: float | None = option(
        None, "R2D_BUILD_CPU_LIMIT", "CPUs of the repo2docker container (clone, build preparation); build steps run in the daemon")
    tail_lines: int = option(100, "R2D_LOG_TAIL_LINES", "log lines kept in a resource's status")
    tail_bytes: int = option(16 * 1024, "R2D_LOG_TAIL_BYTES", "bytes of log kept in a resource's status")
    image_prefix: str = option("r2d-", "R2D_IMAGE_PREFIX", "images may only be built under this prefix")
    push: bool = option(False, "R2D_PUSH", "push built images to the registry in their prefix; 'built' then means 'in the registry'")
    docker_config: str | None = option(
        None, "R2D_DOCKER_CONFIG", "docker config.json with push credentials (e.g. a mounted Secret), copied into build containers")
    docker_socket: str = option(
        "/var/run/docker.sock", "R2D_DOCKER_SOCKET", "node path of the Docker socket mounted into build containers")
    finished_ttl: float = option(
        86400.0, "R2D_FINISHED_TTL", "seconds to keep finished resources (0: forever); images stay")
    status_interval: float = option(1.0, "R2D_STATUS_INTERVAL", "minimum seconds between log updates in status")
    liveness: str | None = option(
        "http://0.0.0.0:8080/healthz", "R2D_LIVENESS", "kopf liveness endpoint URL ('' to disable)")
    metrics_port: int = option(9090, "R2D_METRICS_PORT", "port of the Prometheus metrics endpoint (0: off)")
    metrics_address: str = option("0.0.0.0", "R2D_METRICS_ADDRESS", "address the metrics endpoint listens on")
    instance: str = option("default", "R2D_INSTANCE", "label value separating operators that share one Docker daemon")
    user_id: int = option(1000, "R2D_USER_ID", "user id inside built images")
    user_name: str = option("jovyan", "R2D_USER_NAME", "user name inside built images")
    build_env: tuple[str, ...] = option(
        (), "R2D_BUILD_ENV", "NAME=VALUE in build containers' environment, e.g. HTTPS_PROXY or "
        "R2D_DATAVERSE_INSTALLATIONS_URL (repeatable; env: a JSON object)", flag="--build-env")
    gc_interval: float = option(
        300.0, "R2D_GC_INTERVAL", "seconds between image garbage collection passes (0: no image GC)")
    gc_high_watermark: str | None = option(
        "85%", "R2D_GC_HIGH_WATERMARK",
        "use of the disk that holds Docker's data root (85%), or image and build cache storage (100Gi), above "
        "which built images are removed, least recently used first ('' : never by size)")
    gc_low_watermark: str | None = option(
        "80%", "R2D_GC_LOW_WATERMARK", "what to remove built images down to once over the high watermark")
    gc_max_age: float = option(
        0.0, "R2D_GC_MAX_AGE", "seconds without use after which a built image is removed whatever the storage (0: never)")
    gc_grace: float = option(
        3600.0, "R2D_GC_GRACE", "seconds after its build or last use during which an image is never removed")
    gc_use_record: str | None = option(
        None, "R2D_GC_USE_RECORD",
        "where images' last use is kept across restarts: configmap:NAMESPACE/NAME or a file path ('' : memory only)")
    verbose: bool = option(False, "R2D_VERBOSE", "debug logging")

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

    def runner_config(self) -> RunnerConfig:
        return derive(RunnerConfig, self, environment=build_environment(self.build_env))

    def build_settings(self) -> BuildSettings:
        return derive(BuildSettings, self)

    def gc_policy(self) -> GCPolicy:
        return GCPolicy.from_settings(self.image_prefix, self.gc_high_watermark, self.gc_low_watermark,
                                      self.gc_max_age, self.gc_grace)


def derive(cls: type, source: Any, **overrides: Any) -> Any:
    """An instance of the dataclass `cls` from `source`'s same-named fields: the core's settings
    are a subset of the operator's, under the same names, so nothing is copied by hand."""
    values = {f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)}
    return cls(**{**values, **overrides})


class _Option(NamedTuple):
    env: str
    kind: type
    help: str
    flag: str
    many: bool
    optional: bool  # `X | None`: an empty value means "not set"


def _options() -> dict[str, _Option]:
    """Every setting's variable, type, help and flag, read off OperatorConfig's fields."""
    hints = get_type_hints(OperatorConfig)
    table = {}
    for f in fields(OperatorConfig):
        hint = hints[f.name]
        args = [a for a in get_args(hint) if a is not type(None) and a is not Ellipsis]
        many = get_origin(hint) is tuple
        kind = args[0] if args else hint
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        table[f.name] = _Option(f.metadata["env"], kind, f.metadata["help"], flag, many, type(None) in get_args(hint))
    return table


_OPTIONS = _options()


def _convert(name: str, raw: Any) -> Any:
    option = _OPTIONS[name]
    kind = option.kind
    if name == "build_env" and isinstance(raw, str):  # the variable: a JSON object (values may hold commas)
        try:
            mapping = json.loads(raw) if raw.strip() else {}
        except ValueError:
            mapping = None
        if not isinstance(mapping, dict):
            raise ConfigError(f"R2D_BUILD_ENV={raw[:80]!r} is not a JSON object of names to values")
        return tuple(f"{k}={v}" for k, v in mapping.items())
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
        if raw not in (None, [], False):
            values[name] = _convert(name, raw)
    return OperatorConfig(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in fields(OperatorConfig)}
    for name, option in _OPTIONS.items():
        # argparse %-formats help texts: a literal % (as in '85%') must be doubled.
        text = f"{option.help} [env {option.env}; default {defaults[name]!r}]".replace("%", "%%")
        if option.kind is bool:
            parser.add_argument(option.flag, dest=name, action="store_true", default=None, help=text)
        elif option.many:
            parser.add_argument(option.flag, dest=name, action="append", help=text)
        else:
            parser.add_argument(option.flag, dest=name, default=None, help=text)


def from_environ() -> OperatorConfig:
    return from_sources(os.environ)


__all__ = ["OperatorConfig", "ConfigError", "add_arguments", "from_sources", "from_environ"]
