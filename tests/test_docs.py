"""The documentation site's generated reference pages cover every setting, and the README
stays a front page that links into the site (`make docs` builds it with warnings as errors)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from traitlets.config import Configurable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import settings_pages  # noqa: E402

pytestmark = pytest.mark.unit


def test_the_hub_settings_page_lists_every_trait_this_project_adds():
    from dockerspawner import DockerSpawner

    from repo2dockerspawner import Repo2DockerSpawner
    from repo2dockerspawner.backends import BuildBackend
    from repo2dockerspawner.backends.kubernetes import KubernetesBackend
    from repo2dockerspawner.backends.local import LocalBackend
    from repo2dockerspawner.hub.settings import Repo2DockerHub

    page = settings_pages.hub_settings()
    for cls, base in (
        (Repo2DockerSpawner, DockerSpawner),
        (LocalBackend, BuildBackend),
        (KubernetesBackend, BuildBackend),
        (Repo2DockerHub, Configurable),
    ):
        names = set(cls.class_traits(config=True)) - set(base.class_traits(config=True))
        assert names, cls
        for name in names:
            assert f"`c.{cls.__name__}.{name}`" in page, name
    assert "`c.Repo2DockerSpawner.concurrent_builds_limit` | `c.LocalBackend.concurrency`" in page


def test_the_build_settings_page_has_a_row_per_setting_of_the_table():
    from repo2docker_buildcore.settings import SETTINGS

    rows = [line for line in settings_pages.build_settings().splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `(\w+)`", row)[1] for row in rows] == [row.name for row in SETTINGS]


def test_the_chart_values_page_has_every_value_with_its_comment():
    values = yaml.safe_load((ROOT / "charts/repo2docker-operator/values.yaml").read_text())
    page = settings_pages.chart_values()
    for key, _ in settings_pages.flatten(values):
        assert f"| `{key}` |" in page, key
    assert "| `build.concurrency` | `2` | builds at once on this node (0: no limit) (operator `--concurrency`" in page
    assert "| `docker.socketGroupId` | unset | The socket's group id on the nodes" in page


def test_a_value_without_a_comment_fails_the_docs_build():
    comments = settings_pages.value_comments("build:\n  # what it is\n  known: 1\n  other: 2   # said after\n")
    assert comments == {"build": "", "build.known": "what it is", "build.other": "said after"}


def test_the_readme_is_a_front_page_whose_links_reach_the_site():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 80
    assert "make demo" in readme and "make test" in readme
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 8
    for link in links:
        assert (ROOT / link).is_file(), link
    pages = {path.stem for path in (ROOT / "docs").glob("*.md")}
    index = (ROOT / "docs/index.md").read_text()
    for page in pages - {"index"}:
        assert f"\n{page}\n" in index, f"{page}.md is in no toctree"
