"""Reference pages written from the code at build time, never by hand.

`reference/hub-settings.md` lists every configurable trait of the hub's classes from the
traits themselves (name, type, default, help), as JupyterHub's own docs do;
`reference/build-settings.md` and `reference/chart-values.md` come from the build settings
table (`repo2docker_buildcore.settings`) and the chart's `values.yaml`. A setting added in
code is on these pages the next time `make docs` runs; one with no help fails the build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from sphinx.application import Sphinx
from traitlets import HasTraits, TraitType

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("hub-settings.md", "build-settings.md", "chart-values.md")


def cell(text: Any) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def literal(value: Any) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, tuple):
        value = list(value)
    return "`" + json.dumps(value) + "`"


def trait_default(trait: TraitType) -> str:
    try:
        value = trait.default()
    except Exception:  # dynamic defaults (`@default`) are computed per instance
        return "computed"
    return literal(value) if isinstance(value, (str, int, float, bool, list, dict, tuple, type(None))) else "computed"


def type_name(trait: TraitType) -> str:
    """`List of Unicode`, `Float`: the traitlets type, which says more than its info text."""
    inner = getattr(trait, "_trait", None)
    return type(trait).__name__ + (f" of {type(inner).__name__}" if inner is not None else "")


def own_traits(cls: type[HasTraits], base: type[HasTraits] | None) -> list[tuple[str, TraitType]]:
    """`cls`'s configurable traits that `base` does not already have."""
    inherited = set(base.class_traits(config=True)) if base else set()
    return sorted((name, trait) for name, trait in cls.class_traits(config=True).items() if name not in inherited)


def trait_table(cls: type[HasTraits], base: type[HasTraits] | None) -> list[str]:
    rows = ["| setting | type | default | what it does |", "| --- | --- | --- | --- |"]
    for name, trait in own_traits(cls, base):
        if trait.help.startswith("Deprecated"):
            continue  # listed under the names of earlier releases
        if not trait.help:
            raise ValueError(f"{cls.__name__}.{name} has no help text")
        rows.append(
            f"| `c.{cls.__name__}.{name}` | {type_name(trait)} | {cell(trait_default(trait))} | {cell(trait.help)} |"
        )
    return rows


def hub_settings() -> str:
    from dockerspawner import DockerSpawner

    from repo2dockerspawner import Repo2DockerSpawner
    from repo2dockerspawner.backends import BuildBackend
    from repo2dockerspawner.backends.kubernetes import KubernetesBackend
    from repo2dockerspawner.backends.local import LocalBackend
    from repo2dockerspawner.backends.traits import RENAMED
    from repo2dockerspawner.hub.settings import Repo2DockerHub

    out = [
        "# Hub settings",
        "",
        "Generated from the traits at every docs build. Set them in `jupyterhub_config.py`.",
        "Everything `DockerSpawner` offers works too (see its documentation); listed here is",
        "what this project adds.",
        "",
        "## Repo2DockerSpawner",
        "",
        *trait_table(Repo2DockerSpawner, DockerSpawner),
        "",
        "## Repo2DockerHub",
        "",
        "The hub as a whole, apart from any user's spawner; they take effect through",
        "`repo2dockerspawner.hub.setup(c)`.",
        "",
        *trait_table(Repo2DockerHub, None),
        "",
        "## LocalBackend",
        "",
        'Builds inside the hub process (`c.Repo2DockerSpawner.backend = "local"`, the default).',
        "Its build settings are rows of the [build settings table](build-settings.md).",
        "",
        *trait_table(LocalBackend, BuildBackend),
        "",
        "## KubernetesBackend",
        "",
        'Builds as `Repo2DockerBuild` resources that the operator runs (`backend = "kubernetes"`).',
        "",
        *trait_table(KubernetesBackend, BuildBackend),
        "",
        "## Names of earlier releases",
        "",
        "Still read, with one deprecation line in the hub's log each.",
        "",
        "| old name | current name |",
        "| --- | --- |",
        *(f"| `c.{s}.{old}` | `c.{ns}.{new}` |" for (s, old), (ns, new) in sorted(RENAMED.items())),
        "",
    ]
    return "\n".join(out)


def build_settings() -> str:
    from repo2docker_buildcore.settings import SETTINGS

    out = [
        "# Build settings",
        "",
        "One table in code (`repo2docker_buildcore/settings.py`) is the operator's flags and",
        "environment, the chart's `values.yaml` keys and the hub's `LocalBackend` traits. This page",
        "is generated from it.",
        "",
        "| setting | default | operator flag | environment | chart value | hub (`LocalBackend`) | what it does |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in SETTINGS:
        chart = f"`{row.chart}`" if row.chart else f"— ({cell(row.no_chart)})"
        hub = f"`{row.name}`" if row.hub else f"— ({cell(row.no_hub)})"
        if row.hub and row.hub_default is not None:
            hub += f", default {literal(row.hub_default)}"
        out.append(
            f"| `{row.name}` | {literal(row.default)} | `{row.option}` | `{row.env}` | {chart} | {hub} | {cell(row.help)} |"
        )
    return "\n".join(out) + "\n"


def flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        free_form = any("/" in str(k) or "." in str(k) for k in value) if isinstance(value, dict) else True
        if isinstance(value, dict) and value and not free_form:  # labels stay one value
            items.extend(flatten(value, path + "."))
        else:
            items.append((path, value))
    return items


KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w-]*):(?P<rest>.*)$")


def value_comments(text: str) -> dict[str, str]:
    """The comment written for each key of a values.yaml: the comment lines just above it and
    the one after its value (with the comment-only lines that continue it)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            words = stripped.lstrip("#").strip()
            if last and len(line) - len(line.lstrip()) > len(last.split(".")) * 2 + 4:
                comments[last] += " " + words  # a trailing comment that goes on below
            else:
                above.append(words)
                last = None
            continue
        match = KEY.match(line)
        if not match:
            above, last = [], None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        path = ".".join(key for _, key in stack)
        trailing = match["rest"].split(" #", 1)[1].strip() if " #" in match["rest"] else ""
        comments[path] = " ".join([*above, trailing]).strip()
        above, last = [], path if trailing else None
    return comments


def inherited(comments: dict[str, str], key: str) -> str:
    """A key without a comment of its own is described by its section's (`image.tag` by `image`)."""
    while "." in key:
        key = key.rsplit(".", 1)[0]
        if comments.get(key):
            return f"Part of `{key}`: {comments[key]}"
    return ""


def chart_values() -> str:
    from repo2docker_buildcore.settings import SETTINGS

    text = (ROOT / "charts/repo2docker-operator/values.yaml").read_text()
    values, comments = yaml.safe_load(text), value_comments(text)
    by_key = {row.chart: row for row in SETTINGS if row.chart}
    out = [
        "# Chart values",
        "",
        "Every key of `charts/repo2docker-operator/values.yaml`, generated. A key that is a build",
        "setting links to its row of the [build settings](build-settings.md) and says which operator",
        "flag it becomes; the others shape the Deployment.",
        "",
        "| value | default | what it does |",
        "| --- | --- | --- |",
    ]
    for key, default in flatten(values):
        row = by_key.get(key)
        what = cell(comments.get(key) or (row.help if row else "") or inherited(comments, key))
        if row:
            what += f" (operator `{row.option}`, [build setting `{row.name}`](build-settings.md))"
        elif not what:
            raise ValueError(f"values.yaml: {key} has no comment")
        out.append(f"| `{key}` | {literal(default)} | {what} |")
    return "\n".join(out) + "\n"


def write_pages(app: Sphinx) -> None:
    target = Path(app.srcdir) / "reference"
    target.mkdir(exist_ok=True)
    for name, make in zip(GENERATED, (hub_settings, build_settings, chart_values), strict=True):
        text = make()
        path = target / name
        if not path.exists() or path.read_text() != text:  # unchanged pages keep Sphinx's cache
            path.write_text(text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", write_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
