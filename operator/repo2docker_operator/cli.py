"""`repo2docker-operator`: parse configuration, then run kopf with the handlers module."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .config import ConfigError, add_arguments, from_sources


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repo2docker-operator",
        description="Reconcile Repo2DockerBuild resources: build images with repo2docker through the node's Docker daemon.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--docker-host", help="Docker endpoint (default: DOCKER_HOST or the local socket)")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = from_sources(os.environ, args)
    except ConfigError as exc:
        print(f"repo2docker-operator: {exc}", file=sys.stderr)
        return 2
    if args.docker_host:
        os.environ["DOCKER_HOST"] = args.docker_host

    import kopf  # imported late: `--help` and config errors need none of it

    from . import handlers, login  # noqa: F401 - registers the handlers and the login

    kopf.configure(verbose=config.verbose, log_format=kopf.LogFormat.PLAIN)
    try:
        kopf.run(
            standalone=True,  # one replica (the chart uses Recreate): no peering objects needed
            clusterwide=config.all_namespaces,
            namespaces=() if config.all_namespaces else config.namespaces,
            liveness_endpoint=config.liveness or None,
            memo=kopf.Memo(config=config),
        )
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
