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
    return Item(
        nodeid="tests/test_x.py::test_y", marks=[getattr(pytest.mark, m).mark for m in marks], fixturenames=fixtures
    )


def test_a_unit_test_may_not_also_be_of_a_daemon_tier():
    pytest_collection_modifyitems(None, [item("unit"), item("integration", "serial")])
    with pytest.raises(pytest.UsageError, match="marked unit and \\['integration'\\]"):
        pytest_collection_modifyitems(None, [item("unit", "integration")])


def test_longer_tiers_run_first_and_keep_their_order_within_a_tier():
    items = [item("unit"), item("integration"), item("e2e"), item("cluster"), item("e2e", "serial")]
    for n, i in enumerate(items):
        i.nodeid = f"tests/test_x.py::test_{n}"
    ordered = list(items)
    pytest_collection_modifyitems(None, ordered)
    assert [items.index(i) for i in ordered] == [3, 2, 4, 1, 0]
