"""Every default that code states outside the settings table is the table's (pure logic): the
table is the one owner of a default, and code that needs one asks it. A default written out
again here and there drifted before (the Kubernetes backend's live log kept 100 lines
whatever `build.logTailLines` said)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from repo2docker_buildcore.build import BuildSettings
from repo2docker_buildcore.collector import ImageCollector
from repo2docker_buildcore.imagegc import GCPolicy
from repo2docker_buildcore.livelog import LiveLog
from repo2docker_buildcore.logtail import LogTail
from repo2docker_buildcore.settings import BY_NAME, setting
from repo2dockerspawner.backends import BuildBackend
from repo2dockerspawner.backends.kubernetes import KubernetesBackend, KubernetesBuild
from repo2dockerspawner.spawner import Repo2DockerSpawner

pytestmark = pytest.mark.unit


def _parameter(function, name: str):
    return inspect.signature(function).parameters[name].default


def _trait(cls, name: str):
    return cls.class_traits()[name].default_value


CODE_DEFAULTS = {
    "BuildSettings fields": lambda: [
        (f.name, f.default) for f in dataclasses.fields(BuildSettings) if f.name in BY_NAME
    ],
    "LogTail()": lambda: [
        ("tail_lines", _parameter(LogTail, "max_lines")),
        ("tail_bytes", _parameter(LogTail, "max_bytes")),
    ],
    "LiveLog()": lambda: [("tail_lines", _parameter(LiveLog, "tail_lines"))],
    "KubernetesBuild()": lambda: [("tail_lines", _parameter(KubernetesBuild, "tail_lines"))],
    "GCPolicy.grace": lambda: [("gc_grace", GCPolicy(prefix="r2d-").grace)],
    "ImageCollector(interval)": lambda: [("gc_interval", _parameter(ImageCollector, "interval"))],
    "BuildBackend.longest_build()": lambda: [("build_timeout", BuildBackend.longest_build(None))],
    "KubernetesBackend traits": lambda: [
        ("build_timeout", _trait(KubernetesBackend, "build_timeout")),
        ("tail_lines", _trait(KubernetesBackend, "tail_lines")),
    ],
    "Repo2DockerSpawner.image_prefix": lambda: [("image_prefix", _trait(Repo2DockerSpawner, "image_prefix"))],
}


@pytest.mark.parametrize("where", sorted(CODE_DEFAULTS))
def test_a_default_stated_in_code_is_the_settings_tables(where):
    pairs = CODE_DEFAULTS[where]()
    assert pairs, f"{where}: nothing compared"
    for name, value in pairs:
        assert value == setting(name).default, f"{where}: {name} = {value!r}, the table says {setting(name).default!r}"
