"""Operator configuration from environment and flags (pure logic)."""

from __future__ import annotations

import pytest

from repo2docker_operator import cli
from repo2docker_operator.config import ConfigError, OperatorConfig, from_sources
from repo2docker_operator.contract import BuildSpec
from repo2docker_operator.runner import RunnerConfig, build_args

pytestmark = pytest.mark.unit


def test_environment_then_flags():
    args = cli.parser().parse_args(["--namespace", "a", "--namespace", "b", "--concurrency", "5"])
    config = from_sources({"R2D_NAMESPACES": "x,y", "R2D_CONCURRENT_BUILDS": "3", "R2D_PUSH": "false",
                           "R2D_BUILD_MEMORY_LIMIT": "2Gi"}, args)
    assert config.namespaces == ("a", "b") and config.concurrency == 5 and config.memory_limit == "2Gi"
    assert from_sources({"R2D_ALL_NAMESPACES": "true"}).all_namespaces
    args = cli.parser().parse_args(["--all-namespaces", "--allow-build-image", "a/b:1", "--allow-build-image", "c:2"])
    assert from_sources({}, args).allowed_build_images == ("a/b:1", "c:2")
    assert from_sources({"R2D_NAMESPACES": "a", "R2D_ALLOWED_BUILD_IMAGES": "x:1,y:2"}).allowed_build_images == ("x:1", "y:2")


@pytest.mark.parametrize("env, message", [
    ({}, "namespaces to watch"),
    ({"R2D_NAMESPACES": "a", "R2D_CONCURRENT_BUILDS": "two"}, "not a valid int"),
    ({"R2D_NAMESPACES": "a", "R2D_CONCURRENT_BUILDS": "-1"}, "concurrency"),
    ({"R2D_NAMESPACES": "a", "R2D_BUILD_IMAGE": "Bad Image"}, "not a valid Docker image"),
    ({"R2D_NAMESPACES": "a", "R2D_PUSH": "maybe"}, "not a boolean"),
    ({"R2D_NAMESPACES": "a", "R2D_BUILD_MEMORY_LIMIT": "lots"}, "memory quantity"),
    ({"R2D_NAMESPACES": "a", "R2D_DOCKER_CONFIG": "/x"}, "only makes sense with --push"),
    ({"R2D_NAMESPACES": "a", "R2D_ALLOWED_BUILD_IMAGES": "Not An Image"}, "allowed build image"),
])
def test_bad_configuration_is_one_clear_error(env, message):
    with pytest.raises(ConfigError, match=message):
        from_sources(env)


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert cli.main([]) == 2
    assert "namespaces to watch" in capsys.readouterr().err


def test_zero_concurrency_means_unlimited_not_a_crash():
    assert OperatorConfig(namespaces=("a",), concurrency=0).concurrency == 0


def test_build_args_put_the_url_after_double_dash():
    spec = BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-x:" + "a" * 40, memory_limit=1024)
    args = build_args(RunnerConfig(build_image="b:1", push=True), spec)
    assert args[-2:] == ["--", "https://h/a/b"]
    assert args[args.index("--ref") + 1] == "a" * 40  # the resolved commit, never the user's ref
    assert "--push" in args and args[args.index("--build-memory-limit") + 1] == "1024"
