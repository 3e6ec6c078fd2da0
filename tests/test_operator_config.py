"""Operator configuration from environment and flags (pure logic)."""

from __future__ import annotations

import dataclasses

import pytest

from repo2docker_buildcore.build import BuildSettings
from repo2docker_buildcore.contract import BuildSpec, registry_of
from repo2docker_buildcore.runner import RunnerConfig, build_args
from repo2docker_buildcore.versions import Repo2DockerVersion, UnsupportedSetting
from repo2docker_operator import cli
from repo2docker_operator.config import ConfigError, OperatorConfig, from_sources

pytestmark = pytest.mark.unit


def test_environment_then_flags():
    args = cli.parser().parse_args(["--namespace", "a", "--namespace", "b", "--concurrency", "5"])
    config = from_sources(
        {"R2D_NAMESPACES": "x,y", "R2D_CONCURRENT_BUILDS": "3", "R2D_PUSH": "false", "R2D_BUILD_MEMORY_LIMIT": "2Gi"},
        args,
    )
    assert config.namespaces == ("a", "b") and config.concurrency == 5 and config.memory_limit == "2Gi"
    assert from_sources({"R2D_ALL_NAMESPACES": "true"}).all_namespaces
    args = cli.parser().parse_args(["--all-namespaces", "--allow-build-image", "a/b:1", "--allow-build-image", "c:2"])
    assert from_sources({}, args).allowed_build_images == ("a/b:1", "c:2")
    assert from_sources({"R2D_NAMESPACES": "a", "R2D_ALLOWED_BUILD_IMAGES": "x:1,y:2"}).allowed_build_images == (
        "x:1",
        "y:2",
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "namespaces to watch"),
        ({"R2D_NAMESPACES": "a", "R2D_CONCURRENT_BUILDS": "two"}, "not a valid int"),
        ({"R2D_NAMESPACES": "a", "R2D_CONCURRENT_BUILDS": "-1"}, "concurrency"),
        ({"R2D_NAMESPACES": "a", "R2D_BUILD_IMAGE": "Bad Image"}, "not a valid Docker image"),
        ({"R2D_NAMESPACES": "a", "R2D_PUSH": "maybe"}, "not a boolean"),
        ({"R2D_NAMESPACES": "a", "R2D_BUILD_MEMORY_LIMIT": "lots"}, "memory quantity"),
        ({"R2D_NAMESPACES": "a", "R2D_DOCKER_CONFIG": "/x"}, "only makes sense with --push"),
        ({"R2D_NAMESPACES": "a", "R2D_PUSH": "true", "R2D_IMAGE_PREFIX": "binder/r2d-"}, "names a registry"),
        ({"R2D_NAMESPACES": "a", "R2D_ALLOWED_BUILD_IMAGES": "Not An Image"}, "allowed build image"),
        ({"R2D_NAMESPACES": "a", "R2D_IMAGE_PREFIX": ""}, "image prefix"),
    ],
)
def test_bad_configuration_is_one_clear_error(env, message):
    with pytest.raises(ConfigError, match=message):
        from_sources(env)


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert cli.main([]) == 2
    assert "namespaces to watch" in capsys.readouterr().err


def test_zero_concurrency_means_unlimited_not_a_crash():
    assert OperatorConfig(namespaces=("a",), concurrency=0).concurrency == 0


OLD = Repo2DockerVersion.parse("2024.07.0")
NEW = Repo2DockerVersion.parse("2026.4.0")


def test_build_command_names_repo2docker_and_puts_the_url_after_double_dash():
    spec = BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-x:" + "a" * 40)
    # The whole command: the program first (official images' entrypoint runs "$@"), the
    # resolved commit (never the user's ref), the URL after "--".
    assert build_args(RunnerConfig(build_image="b:1", push=True), spec, NEW) == [
        "repo2docker",
        "--no-run",
        "--json-logs",
        "--user-id",
        "1000",
        "--user-name",
        "jovyan",
        "--ref",
        "a" * 40,
        "--image-name",
        "r2d-x:" + "a" * 40,
        "--push",
        "--",
        "https://h/a/b",
    ]
    assert build_args(RunnerConfig(build_image="b:1"), spec, OLD) == [
        "repo2docker",
        "--no-run",
        "--json-logs",
        "--user-id",
        "1000",
        "--user-name",
        "jovyan",
        "--ref",
        "a" * 40,
        "--image-name",
        "r2d-x:" + "a" * 40,
        "--",
        "https://h/a/b",
    ]


@pytest.mark.parametrize("version", [OLD, NEW])
def test_the_repository_directory_reaches_repo2docker_as_its_target_repo_dir(version):
    spec = BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-x:" + "a" * 40, repo_dir="/srv/repo")
    args = build_args(RunnerConfig(build_image="b:1"), spec, version)
    assert args[args.index("--target-repo-dir") + 1] == "/srv/repo" and args[-2:] == ["--", "https://h/a/b"]
    assert "--target-repo-dir" not in build_args(
        RunnerConfig(build_image="b:1"), dataclasses.replace(spec, repo_dir=""), version
    )


def test_memory_limit_is_passed_to_old_repo2docker_and_refused_for_buildx_releases():
    spec = BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-x:" + "a" * 40, memory_limit=1024)
    args = build_args(RunnerConfig(build_image="b:1"), spec, OLD)
    assert args[-4:] == ["--build-memory-limit", "1024", "--", "https://h/a/b"]
    with pytest.raises(UnsupportedSetting, match=r"b:1 has repo2docker 2026\.4\.0.*cannot limit a build's memory"):
        build_args(RunnerConfig(build_image="b:1"), spec, NEW)
    # Without a memory limit every version builds.
    assert "--build-memory-limit" not in build_args(
        RunnerConfig(build_image="b:1"), dataclasses.replace(spec, memory_limit=None), NEW
    )


@pytest.mark.parametrize(
    "text, expected, buildx",
    [
        ("2024.07.0\n", (2024, 7, 0), False),
        ("2025.08.0", (2025, 8, 0), True),
        ("2025.7.3", (2025, 7, 3), False),
        ("2026.4.0", (2026, 4, 0), True),
        ("some warning\n2026.4.1.dev3+gd3893dba2\n", (2026, 4, 1), True),
    ],
)
def test_repo2docker_versions_parse_and_say_whether_they_build_with_buildx(text, expected, buildx):
    version = Repo2DockerVersion.parse(text)
    assert (version.year, version.month, version.patch) == expected
    assert version.uses_buildx is buildx


def test_output_without_a_version_is_refused():
    with pytest.raises(ValueError, match="not a repo2docker version"):
        Repo2DockerVersion.parse("exec: --version: not found")


@pytest.mark.parametrize(
    "image, registry",
    [
        ("127.0.0.1:5000/binder/r2d-x:1", "127.0.0.1:5000"),
        ("registry.example.org/binder/r2d-x:1", "registry.example.org"),
        ("localhost/x:1", "localhost"),
        ("r2d-x:1", "docker.io"),
        ("binder/r2d-x:1", "docker.io"),
    ],
)
def test_registry_of_an_image_is_decided_as_docker_decides(image, registry):
    assert registry_of(image) == registry


def test_the_core_settings_are_derived_from_the_operators():
    config = from_sources(
        {
            "R2D_NAMESPACES": "a",
            "R2D_BUILD_IMAGE": "img:1",
            "R2D_DOCKER_SOCKET": "/run/d.sock",
            "R2D_USER_ID": "1001",
            "R2D_USER_NAME": "u",
            "R2D_PUSH": "1",
            "R2D_DOCKER_CONFIG": "/c.json",
            "R2D_IMAGE_PREFIX": "reg:5000/b/r2d-",
            "R2D_INSTANCE": "i",
            "R2D_BUILD_TIMEOUT": "60",
            "R2D_LOG_TAIL_LINES": "7",
            "R2D_LOG_TAIL_BYTES": "512",
            "R2D_BUILD_ENV": '{"NO_PROXY": "a,b", "HTTPS_PROXY": "http://p:3128"}',
        }
    )
    assert config.runner_config() == RunnerConfig(
        build_image="img:1",
        docker_socket="/run/d.sock",
        user_id=1001,
        user_name="u",
        push=True,
        docker_config="/c.json",
        instance="i",
        environment=(("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "a,b")),
    )
    assert config.build_settings() == BuildSettings(build_timeout=60.0, tail_lines=7, tail_bytes=512)


def test_every_setting_has_a_variable_a_flag_and_help():
    from dataclasses import fields

    from repo2docker_buildcore.settings import SETTINGS
    from repo2docker_operator.config import _OPTIONS

    assert [f.name for f in fields(OperatorConfig)] == [s.name for s in SETTINGS], "one field per row of the table"
    for name, option in _OPTIONS.items():
        assert option.env.startswith("R2D_") and option.option.startswith("--") and option.help, name
    assert _OPTIONS["build_env"].option == "--build-env" and _OPTIONS["namespaces"].option == "--namespace"
    assert _OPTIONS["cpu_limit"].kind is float and not _OPTIONS["cpu_limit"].many
    args = cli.parser().parse_args(["--all-namespaces", "--build-env", "A=1", "--build-env", "B=x,y"])
    assert from_sources({}, args).build_env == ("A=1", "B=x,y")
    text = cli.parser().format_help()  # what `--help` prints: every text, defaults with '%' too
    assert "--gc-high-watermark" in text and "default '85%'" in text.replace("\n", " ").replace("  ", " ")


def test_the_operator_builds_only_the_image_of_a_specs_own_repository_and_commit():
    from repo2docker_buildcore.contract import InvalidBuildRequest, image_name
    from repo2docker_operator.handlers import _build_spec

    config = OperatorConfig(
        namespaces=("a",),
        image_prefix="reg:5000/b/r2d-",
        build_image="r2d/build:2",
        allowed_build_images=("r2d/build:1",),
        memory_limit="1Gi",
        cpu_limit=2.0,
    )
    own = image_name("reg:5000/b/r2d-", "https://h/a/b", "a" * 40)
    spec = {"repoUrl": "https://h/a/b", "ref": "main", "commit": "a" * 40, "image": own}
    built = _build_spec(spec, config)
    assert (built.image, built.build_image, built.memory_limit, built.cpu_limit) == (own, None, 2**30, 2.0)
    assert _build_spec({**spec, "buildImage": "r2d/build:1", "resources": {"cpu": 0.5}}, config).cpu_limit == 0.5
    assert _build_spec({**spec, "resources": {"cpu": 8, "memory": "64Gi"}}, config).cpu_limit == 2.0
    assert _build_spec({**spec, "resources": {"memory": "64Gi"}}, config).memory_limit == 2**30
    assert _build_spec({**spec, "buildImage": "r2d/build:2"}, config).build_image == "r2d/build:2"
    for image in (
        "reg:5000/other/r2d-x:1",
        "reg:5000/b/r2d-x:1",
        image_name("reg:5000/b/r2d-", "https://h/victim/c", "a" * 40),
    ):
        with pytest.raises(InvalidBuildRequest, match=f"must be {own}"):
            _build_spec({**spec, "image": image}, config)
    with pytest.raises(InvalidBuildRequest, match="not one this operator allows"):
        _build_spec({**spec, "buildImage": "evil/image:1"}, config)


def test_container_labels_are_the_whole_set_a_restart_needs():
    from repo2docker_buildcore.runner import BuildRef, container_labels

    spec = BuildSpec("https://h/a/b", "v1", "a" * 40, "r2d-x:" + "a" * 40)
    assert container_labels(
        RunnerConfig(build_image="b:1", instance="hub-1"), BuildRef("ns", "b-1", "uid-1"), spec
    ) == {
        "app.kubernetes.io/managed-by": "repo2docker-operator",
        "repo2dockerspawner.jupyter.org/instance": "hub-1",
        "repo2dockerspawner.jupyter.org/build-namespace": "ns",
        "repo2dockerspawner.jupyter.org/build-name": "b-1",
        "repo2dockerspawner.jupyter.org/build-uid": "uid-1",
        "repo2dockerspawner.jupyter.org/commit": "a" * 40,
        "repo2dockerspawner.jupyter.org/repo-url": "https://h/a/b",
        "repo2dockerspawner.jupyter.org/ref": "v1",
        "repo2dockerspawner.jupyter.org/image": "r2d-x:" + "a" * 40,
    }


def test_each_attempt_at_a_build_has_its_own_container_name():
    from repo2docker_buildcore.runner import BuildRef, container_name

    first, retry = (
        BuildRef("local", "repo-abc", "repo-abc-1a2b3c4d"),
        BuildRef("local", "repo-abc", "repo-abc-5e6f7a8b"),
    )
    assert container_name(first) != container_name(retry)
    assert container_name(first) == container_name(BuildRef("local", "repo-abc", "repo-abc-1a2b3c4d"))  # stable


def test_an_empty_variable_unsets_an_optional_setting():
    config = from_sources(
        {"R2D_NAMESPACES": "a", "R2D_LIVENESS": "", "R2D_BUILD_MEMORY_LIMIT": "", "R2D_BUILD_CPU_LIMIT": ""}
    )
    assert (config.liveness, config.memory_limit, config.cpu_limit) == (None, None, None)


@pytest.mark.parametrize(
    "text, kind",
    [
        ("unauthorized: authentication required", "RegistryError"),
        ('Head "http://127.0.0.1:5000/v2/x/manifests/1": no basic auth credentials', "RegistryError"),
        ("denied: requested access to the resource is denied", "RegistryError"),
        (
            'Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused',
            "RegistryUnavailable",
        ),
    ],
)
def test_registry_errors_are_told_apart(text, kind):
    from repo2docker_buildcore.daemon_images import _registry_error

    error = _registry_error("127.0.0.1:5000/b/r2d-x:1", text, "reading from")
    assert type(error).__name__ == kind
    assert ("refused the push" in str(error)) == (kind == "RegistryError")
