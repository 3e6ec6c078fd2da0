"""The garbage collector's decision on plain data: what stays, what goes, in which order."""

import json

import pytest

from repo2docker_buildcore.collector import usage_from_df
from repo2docker_buildcore.imagegc import GCPolicy, ImageInfo, choose
from repo2docker_buildcore.imageuse import FileStore, UseLedger

pytestmark = pytest.mark.unit
DAY = 86400.0
NOW = 1_000 * DAY
MB = 1_000_000


def image(name: str, used_days_ago: float | None = None, built_days_ago: float = 30, size: int = 100 * MB,
          containers: int = 0, tags: tuple[str, ...] | None = None) -> ImageInfo:
    return ImageInfo(id=f"sha256:{name}", tags=tags if tags is not None else (f"r2d-{name}:{'a' * 40}",),
                     unique_size=size, created=NOW - built_days_ago * DAY, containers=containers,
                     last_used=None if used_days_ago is None else NOW - used_days_ago * DAY)


POLICY = GCPolicy(prefix="r2d-", high_watermark=1000 * MB, low_watermark=700 * MB, grace=3600)


def names(decision) -> list[str]:
    return [i.id.removeprefix("sha256:") for i in decision.remove]


def test_under_the_high_watermark_nothing_goes():
    images = [image("a", 20), image("b", 10)]
    assert choose(images, 1000 * MB, POLICY, (), NOW).remove == []


def test_over_the_high_watermark_least_recently_used_go_down_to_the_low_one():
    images = [image("recent", 1), image("old", 20), image("middle", 10), image("never", None, built_days_ago=15)]
    decision = choose(images, 1001 * MB, POLICY, (), NOW)
    # Each removal frees 100 MB: 1001 → 901 → 801 → 701, still above 700, so the fourth goes.
    assert names(decision) == ["old", "never", "middle", "recent"]
    assert decision.usage_after == 601 * MB and decision.freed == 400 * MB
    assert names(choose(images, 1001 * MB, GCPolicy(prefix="r2d-", high_watermark=1000 * MB, low_watermark=800 * MB),
                        (), NOW)) == ["old", "never", "middle"]


def test_in_use_wanted_young_and_foreign_images_always_stay():
    images = [
        image("running", 50, containers=1),
        image("wanted", 50),
        image("young", None, built_days_ago=0.01),
        image("justused", 0.01),
        image("base", 50, tags=("r2d-testenv/singleuser:latest", "jupyter/base:latest")),
        image("foreign", 50, tags=("python:3.11",)),
        image("dangling", 50, tags=()),
        image("victim", 40),
    ]
    decision = choose(images, 10_000 * MB, POLICY, {"r2d-wanted:" + "a" * 40}, NOW)
    assert names(decision) == ["victim"]


def test_max_age_removes_regardless_of_usage_and_watermarks_can_be_off():
    policy = GCPolicy(prefix="r2d-", max_age=30 * DAY)
    images = [image("stale", 31), image("fresh", 29), image("never-used-old", None, built_days_ago=40)]
    decision = choose(images, 0, policy, (), NOW)
    assert names(decision) == ["never-used-old", "stale"]
    assert "unused for" in decision.reasons["sha256:stale"]
    assert choose(images, 10**15, GCPolicy(prefix="r2d-"), (), NOW).remove == []
    assert not GCPolicy(prefix="r2d-").enabled


def test_a_policy_refuses_inverted_watermarks():
    with pytest.raises(ValueError, match="low watermark"):
        GCPolicy(prefix="r2d-", high_watermark=10, low_watermark=20)
    assert GCPolicy(prefix="r2d-", high_watermark=10).target == 10


def test_usage_from_the_daemons_df_counts_unique_bytes_and_uses():
    df = {
        "LayersSize": 900,
        "Images": [
            {"Id": "sha256:1", "RepoTags": ["r2d-x:1"], "Size": 500, "SharedSize": 300, "Created": 5, "Containers": 0},
            {"Id": "sha256:2", "RepoTags": ["<none>:<none>"], "Size": 400, "SharedSize": -1, "Created": 6, "Containers": -1},
            {"Id": "sha256:3", "RepoTags": ["base:1"], "Size": 300, "SharedSize": 300, "Created": 1, "Containers": 2},
        ],
        "BuildCache": [{"Size": 50, "Shared": False}, {"Size": 70, "Shared": True}],
    }
    ledger = UseLedger()
    ledger.touch("r2d-x:1", 42.0)
    usage = usage_from_df(df, "r2d-", ledger)
    assert (usage.layers, usage.build_cache, usage.total, usage.ours) == (900, 50, 950, 200)
    first, dangling, base = usage.images
    assert (first.unique_size, first.last_used, first.recency) == (200, 42.0, 42.0)
    assert dangling.tags == () and dangling.containers == 0 and dangling.unique_size == 400
    assert base.containers == 2 and not base.ours("r2d-")


async def test_the_ledger_keeps_the_latest_use_survives_a_restart_in_its_file_and_forgets_removed_images(tmp_path):
    path = tmp_path / "uses.json"
    ledger = UseLedger(FileStore(str(path)))
    ledger.touch("r2d-a:1", 10.0)
    ledger.touch("r2d-a:1", 5.0)  # an older event arriving late changes nothing
    ledger.touch("r2d-b:1", 7.0)
    await ledger.save()
    again = UseLedger(FileStore(str(path)))
    await again.load()
    assert again.last_used(["r2d-a:1", "sha256:x"]) == 10.0 and not again.dirty
    again.keep_only({"r2d-a:1"})
    await again.save()
    assert json.loads(path.read_text()) == {"r2d-a:1": 10.0}
    path.write_text("{not json")
    broken = UseLedger(FileStore(str(path)))
    await broken.load()  # a damaged record costs the order, not the collector
    assert broken.uses == {}
