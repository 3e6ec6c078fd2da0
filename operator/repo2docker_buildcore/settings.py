"""Every build setting, once: name, type, default, help, environment variable, flag, and where
else it is set (the chart's values, the hub's embedded backend).

The operator's configuration (flags, variables, `--help`) and the `LocalBackend` traits are
made from this table, and a test checks the chart's `values.yaml` and its Deployment against
it. A setting that one side lacks says why, next to it: a reader (and that test) can tell a
deliberate difference from a forgotten one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .versions import DEFAULT_BUILD_IMAGE

ENV = "env"  # the kind of `build_env`: NAME=VALUE pairs (a JSON object in the variable)


@dataclass(frozen=True)
class Setting:
    name: str  # the operator's field and the LocalBackend trait
    kind: Any  # str, int, float, bool, tuple (several strings), ENV
    default: Any
    help: str
    env: str  # the operator's environment variable
    chart: str | None  # the values.yaml key, or None ...
    no_chart: str = ""  # ... and why
    hub: bool = True  # a LocalBackend trait of the same name, or not ...
    no_hub: str = ""  # ... and why
    hub_default: Any = None  # where the hub's default differs from the operator's (see `hub_value`)
    optional: bool = False  # None (or '' in a variable) means "not set"
    flag: str = ""  # default: --name-with-dashes
    old_hub_names: tuple[str, ...] = ()  # LocalBackend's earlier names, still read (deprecated)

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def many(self) -> bool:
        return self.kind is tuple

    @property
    def hub_value(self) -> Any:
        return self.default if self.hub_default is None else self.hub_default


_OPERATOR_ONLY = "the operator's process, not a build setting: the hub has no such thing"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "namespaces",
        tuple,
        (),
        "namespace to watch (repeatable; env: comma-separated)",
        "R2D_NAMESPACES",
        "watch.namespaces",
        flag="--namespace",
        hub=False,
        no_hub="the hub's KubernetesBackend.namespace names the one it creates builds in",
    ),
    Setting(
        "all_namespaces",
        bool,
        False,
        "watch build resources in every namespace",
        "R2D_ALL_NAMESPACES",
        "watch.allNamespaces",
        hub=False,
        no_hub=_OPERATOR_ONLY,
    ),
    Setting(
        "build_image",
        str,
        DEFAULT_BUILD_IMAGE,
        "repo2docker image that runs the builds",
        "R2D_BUILD_IMAGE",
        "build.image",
    ),
    # A build container gets the node's Docker socket, i.e. root on the node, so whoever may
    # create resources must not pick its image.
    Setting(
        "allowed_build_images",
        tuple,
        (),
        "other images spec.buildImage may name (repeatable; env: comma-separated)",
        "R2D_ALLOWED_BUILD_IMAGES",
        "build.allowedBuildImages",
        flag="--allow-build-image",
        hub=False,
        no_hub="the hub's builds are its own: nothing asks for another build image",
    ),
    Setting(
        "concurrency",
        int,
        2,
        "builds running at once (0: no limit); further builds wait in a queue and are told their position",
        "R2D_CONCURRENT_BUILDS",
        "build.concurrency",
        old_hub_names=("concurrent_builds_limit",),
    ),
    Setting(
        "cluster_concurrency",
        int,
        0,
        "builds running at once across every builder of the cluster (0: only each builder's own cap)",
        "R2D_CLUSTER_CONCURRENCY",
        "build.clusterConcurrency",
        hub=False,
        no_hub="the hub's embedded backend is one builder: `concurrency` is its cap",
    ),
    Setting(
        "node_name",
        str,
        None,
        "this builder's name, recorded in the builds it claims (status.builder) and in "
        "its Lease (default: the host name)",
        "R2D_NODE_NAME",
        None,
        optional=True,
        no_chart="the chart sets the node's name (daemonset) or the release's (deployment)",
        hub=False,
        no_hub=_OPERATOR_ONLY,
    ),
    Setting(
        "lease_namespace",
        str,
        None,
        "namespace of the builders' Leases (default: the first watched namespace, else 'default')",
        "R2D_LEASE_NAMESPACE",
        None,
        optional=True,
        no_chart="the release's namespace, where its Role grants Leases",
        hub=False,
        no_hub=_OPERATOR_ONLY,
    ),
    Setting(
        "lease_duration",
        float,
        15.0,
        "seconds without a renewal of a builder's Lease after which the other "
        "builders count it lost and queue its unfinished builds again",
        "R2D_LEASE_DURATION",
        "builders.leaseDuration",
        hub=False,
        no_hub="the hub's embedded backend is one builder in the hub itself",
    ),
    Setting(
        "affinity_window",
        float,
        5.0,
        "seconds from a build's creation during which the builder that built its "
        "repository last (whose node has the layers) gets the first claim (0: off)",
        "R2D_AFFINITY_WINDOW",
        "builders.affinityWindow",
        hub=False,
        no_hub="the hub's embedded backend is one builder",
    ),
    Setting(
        "prepare_next",
        bool,
        True,
        "create the containers of the builds next in line ahead of their slot, so a "
        "freed slot only starts one (while no other builder is alive: several claim first)",
        "R2D_PREPARE_NEXT",
        "build.prepareNext",
    ),
    Setting(
        "build_timeout",
        float,
        3600.0,
        "seconds before a build is stopped and failed",
        "R2D_BUILD_TIMEOUT",
        "build.timeout",
    ),
    Setting(
        "memory_limit",
        str,
        None,
        "memory limit of builds (e.g. 4Gi); only build images with repo2docker before "
        "2025.08 can honour it, later ones fail every build at once with a message that says so",
        "R2D_BUILD_MEMORY_LIMIT",
        "build.memoryLimit",
        optional=True,
        old_hub_names=("build_memory_limit",),
    ),
    Setting(
        "cpu_limit",
        float,
        None,
        "CPUs of the repo2docker container: it bounds cloning and build preparation; the "
        "build steps run in the Docker daemon and are not bounded by it",
        "R2D_BUILD_CPU_LIMIT",
        "build.cpuLimit",
        optional=True,
        old_hub_names=("build_cpu_limit",),
    ),
    Setting(
        "tail_lines",
        int,
        100,
        "build log lines kept per build (in a resource's status)",
        "R2D_LOG_TAIL_LINES",
        "build.logTailLines",
        old_hub_names=("log_tail_lines",),
    ),
    Setting(
        "tail_bytes", int, 16 * 1024, "bytes of build log kept per build", "R2D_LOG_TAIL_BYTES", "build.logTailBytes"
    ),
    Setting(
        "image_prefix",
        str,
        "r2d-",
        "images are only built under this prefix (never empty; include a registry when builds are pushed)",
        "R2D_IMAGE_PREFIX",
        "build.imagePrefix",
        hub=False,
        no_hub="the hub's is Repo2DockerSpawner.image_prefix, for both backends (it names the images)",
    ),
    Setting(
        "push",
        bool,
        False,
        "push built images to the registry in their prefix; 'built' then means 'in the "
        "registry', and servers on any Docker host pull them",
        "R2D_PUSH",
        "build.push.enabled",
    ),
    Setting(
        "docker_config",
        str,
        None,
        "docker config.json with push credentials (e.g. a mounted Secret), copied into build containers",
        "R2D_DOCKER_CONFIG",
        None,
        no_chart="the chart mounts build.push.secretName and points the variable at it",
        optional=True,
    ),
    Setting(
        "git_credentials",
        str,
        None,
        "JSON file of credentials for private repositories (pattern: "
        "{username, token | token_file}; a host pattern is for https, 'http://host' for http, a catch-all is "
        "refused), e.g. a mounted Secret, read at each build; builds clone with the matching one, for every "
        "repository of its host (submodules too), through a git credential store file",
        "R2D_GIT_CREDENTIALS",
        None,
        no_chart="the chart mounts build.gitCredentials.secretName (key credentials.json) and points the variable at it",
        hub=False,
        no_hub="the hub's are Repo2DockerSpawner.repo_credentials, for its lookups and LocalBackend's builds",
        optional=True,
    ),
    Setting(
        "docker_socket",
        str,
        "/var/run/docker.sock",
        "host path of the Docker socket mounted into build containers",
        "R2D_DOCKER_SOCKET",
        "docker.socketPath",
    ),
    Setting(
        "finished_ttl",
        float,
        86400.0,
        "seconds to keep finished build resources (0: forever); images stay",
        "R2D_FINISHED_TTL",
        "build.finishedTTL",
        hub=False,
        no_hub="the hub keeps builds in memory only, for LocalBackend.keep_finished",
    ),
    Setting(
        "status_interval",
        float,
        1.0,
        "minimum seconds between log updates in a resource's status",
        "R2D_STATUS_INTERVAL",
        None,
        no_chart="a test knob: each write is an API call and an etcd revision",
        hub=False,
        no_hub="the hub's status is in memory: it publishes every 50 ms",
    ),
    Setting(
        "liveness",
        str,
        "http://0.0.0.0:8080/healthz",
        "kopf liveness endpoint URL ('' to disable)",
        "R2D_LIVENESS",
        None,
        no_chart="made from livenessPort and bindAddress",
        optional=True,
        hub=False,
        no_hub=_OPERATOR_ONLY,
    ),
    Setting(
        "metrics_port",
        int,
        9090,
        "port of the Prometheus metrics endpoint (0: off)",
        "R2D_METRICS_PORT",
        "metrics.port",
        hub=False,
        no_hub="the hub's metrics are on /hub/metrics",
    ),
    Setting(
        "metrics_address",
        str,
        "0.0.0.0",
        "address the metrics endpoint listens on",
        "R2D_METRICS_ADDRESS",
        "bindAddress",
        hub=False,
        no_hub="the hub's metrics are on /hub/metrics",
    ),
    Setting(
        "instance",
        str,
        "default",
        "label value on build containers, separating operators and hubs that share a Docker daemon",
        "R2D_INSTANCE",
        None,
        no_chart="the chart makes it from the release's namespace and name",
        hub_default="hub-local",
    ),
    Setting("user_id", int, 1000, "user id inside built images", "R2D_USER_ID", "build.userId"),
    Setting("user_name", str, "jovyan", "user name inside built images", "R2D_USER_NAME", "build.userName"),
    Setting(
        "build_env",
        ENV,
        (),
        "environment of build containers (NAME=VALUE, repeatable; env: a JSON object): "
        "proxies, or R2D_DATAVERSE_INSTALLATIONS_URL without internet access (repo2docker 2025.08 and later "
        "download that list before every build)",
        "R2D_BUILD_ENV",
        "build.env",
    ),
    Setting(
        "gc_interval",
        float,
        300.0,
        "seconds between image garbage collection passes (0: no image GC)",
        "R2D_GC_INTERVAL",
        "imageGC.interval",
        old_hub_names=("image_gc_interval",),
    ),
    Setting(
        "gc_high_watermark",
        str,
        "85%",
        "use of the disk that holds Docker's data root (85%), or image and build "
        "cache storage (100Gi), above which built images are removed, least recently used first ('': never by "
        "size)",
        "R2D_GC_HIGH_WATERMARK",
        "imageGC.highWatermark",
        optional=True,
        old_hub_names=("image_gc_high_watermark",),
    ),
    Setting(
        "gc_low_watermark",
        str,
        "80%",
        "what to remove built images down to once over the high watermark",
        "R2D_GC_LOW_WATERMARK",
        "imageGC.lowWatermark",
        optional=True,
        old_hub_names=("image_gc_low_watermark",),
    ),
    Setting(
        "gc_max_age",
        float,
        0.0,
        "seconds without use after which a built image is removed whatever the storage (0: never)",
        "R2D_GC_MAX_AGE",
        "imageGC.maxAge",
        old_hub_names=("image_gc_max_age",),
    ),
    Setting(
        "gc_grace",
        float,
        3600.0,
        "seconds after its build or last use during which an image is never removed",
        "R2D_GC_GRACE",
        "imageGC.grace",
        old_hub_names=("image_gc_grace",),
    ),
    Setting(
        "gc_use_record",
        str,
        None,
        "where images' last use is kept across restarts: configmap:NAMESPACE/NAME or "
        "a file path, relative to the working directory ('': memory only)",
        "R2D_GC_USE_RECORD",
        None,
        no_chart="the chart's own ConfigMap, <release>-repo2docker-operator-image-use",
        optional=True,
        hub_default="repo2docker-image-use.json",
        old_hub_names=("image_use_file",),
    ),
    Setting(
        "verbose",
        bool,
        False,
        "debug logging",
        "R2D_VERBOSE",
        None,
        no_chart="extraEnv sets it when needed",
        hub=False,
        no_hub="the hub's log level is JupyterHub's",
    ),
)

BY_NAME = {s.name: s for s in SETTINGS}
HUB_SETTINGS = tuple(s for s in SETTINGS if s.hub)


def setting(name: str) -> Setting:
    return BY_NAME[name]


def derive(cls: type, source: Any, **overrides: Any) -> Any:
    """An instance of the dataclass `cls` from `source`'s same-named attributes: the core's
    settings (RunnerConfig, BuildSettings) are rows of the table, under the same names on the
    operator's configuration and on LocalBackend, so nothing is copied by hand."""
    values = {f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)}
    return cls(**{**values, **overrides})
