"""The chart's files against the project's single sources (pure logic: files are read, not
rendered): its CRD copy, its values against the settings table, the all-options file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "repo2docker-operator"
FULL_VALUES = ROOT / "tests" / "data" / "chart-values-full.yaml"


def chart_value(values: dict, path: str):
    for key in path.split("."):
        values = values[key]
    return values


def as_in_chart(row, value):
    """A table value as values.yaml writes it: lists for tuples, '' for an unset string."""
    from repo2docker_buildcore.settings import ENV

    if row.kind is tuple:
        return list(value)
    if row.kind == ENV:
        return dict(value)
    if value is None and row.kind is str:
        return ""
    return value


def test_chart_crd_is_the_single_source():
    assert (CHART / "crds" / "repo2dockerbuilds.yaml").read_bytes() == (
        ROOT / "crds" / "repo2dockerbuilds.yaml"
    ).read_bytes(), (
        "charts/repo2docker-operator/crds/ differs from crds/: copy crds/repo2dockerbuilds.yaml into the chart"
    )


def test_full_values_file_sets_every_default_key():
    """The all-options file must exercise every option the chart has."""

    def keys(tree, prefix=""):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            yield path
            if (
                isinstance(value, dict)
                and value
                and key not in ("resources", "affinity", "nodeSelector", "podAnnotations", "podLabels", "annotations")
            ):
                yield from keys(value, path + ".")

    defaults = set(keys(yaml.safe_load((CHART / "values.yaml").read_text())))
    full = set(keys(yaml.safe_load(FULL_VALUES.read_text())))
    assert defaults <= full, sorted(defaults - full)


def test_chart_defaults_are_the_settings_tables():
    from repo2docker_buildcore.settings import SETTINGS

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for row in SETTINGS:
        if row.chart is None:
            assert row.no_chart, f"{row.name}: not in the chart, and no reason given"
            continue
        assert chart_value(values, row.chart) == as_in_chart(row, row.default), (row.name, row.chart)
