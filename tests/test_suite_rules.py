"""The suite's own rules (pure logic: conftest's hooks on stand-in items)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import pytest_collection_modifyitems

pytestmark = pytest.mark.unit


class Item(SimpleNamespace):
    def iter_markers(self):
        return iter(self.marks)

    def add_marker(self, mark):
        self.marks.append(mark.mark)


def item(*marks: str, fixtures: tuple[str, ...] = ()) -> Item:
    return Item(nodeid="tests/test_x.py::test_y", marks=[getattr(pytest.mark, m).mark for m in marks],
                fixturenames=fixtures)


def test_a_unit_test_may_not_also_be_of_a_daemon_tier():
    pytest_collection_modifyitems(None, [item("unit"), item("integration", "serial")])
    with pytest.raises(pytest.UsageError, match="marked unit and \\['integration'\\]"):
        pytest_collection_modifyitems(None, [item("unit", "integration")])


def test_tests_that_share_the_operator_image_run_on_one_worker():
    shared, other = item("cluster", fixtures=("operator_image",)), item("cluster")
    pytest_collection_modifyitems(None, [shared, other])
    assert [(m.name, m.args) for m in shared.marks if m.name == "xdist_group"] == [("xdist_group", ("operator-image",))]
    assert not [m for m in other.marks if m.name == "xdist_group"]
