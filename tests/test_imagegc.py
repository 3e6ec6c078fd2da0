"""The garbage collector's decision on plain data: what stays, what goes, in which order."""

import asyncio
import json

import pytest

from repo2docker_buildcore.collector import usage_from_df
from repo2docker_buildcore.imagegc import GCPolicy, ImageInfo, choose
from repo2docker_buildcore.imageuse import FileStore, UseLedger

pytestmark = pytest.mark.unit
DAY = 86400.0
NOW = 1_000 * DAY
MB = 1_000_000


def image(
    name: str,
    used_days_ago: float | None = None,
    built_days_ago: float = 30,
    size: int = 100 * MB,
    containers: int = 0,
    tags: tuple[str, ...] | None = None,
) -> ImageInfo:
    return ImageInfo(
        id=f"sha256:{name}",
        tags=tags if tags is not None else (f"r2d-{name}:{'a' * 40}",),
        unique_size=size,
        created=NOW - built_days_ago * DAY,
        containers=containers,
        last_used=None if used_days_ago is None else NOW - used_days_ago * DAY,
    )


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
    assert names(
        choose(images, 1001 * MB, GCPolicy(prefix="r2d-", high_watermark=1000 * MB, low_watermark=800 * MB), (), NOW)
    ) == ["old", "never", "middle"]


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
            {
                "Id": "sha256:2",
                "RepoTags": ["<none>:<none>"],
                "Size": 400,
                "SharedSize": -1,
                "Created": 6,
                "Containers": -1,
            },
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


class DfRunner:
    """Answers `docker system df` from a list of images and removes what it is told to."""

    def __init__(self, *images: dict) -> None:
        self.images = list(images)
        self.removed: list[str] = []
        self.df_calls = 0

    async def disk_usage(self) -> dict:
        self.df_calls += 1
        return {"LayersSize": sum(i["Size"] for i in self.images), "Images": list(self.images), "BuildCache": []}

    async def remove_image(self, image_id: str) -> bool:
        self.removed.append(image_id)
        self.images = [i for i in self.images if i["Id"] != image_id]
        return True


def df_image(name: str, created: float = 1.0) -> dict:
    return {
        "Id": f"sha256:{name}",
        "RepoTags": [f"r2d-{name}:1"],
        "Size": 100,
        "SharedSize": 0,
        "Created": created,
        "Containers": 0,
    }


async def test_an_image_asked_for_after_the_choice_is_kept_and_a_removed_one_is_forgotten_at_once():
    from repo2docker_buildcore.collector import ImageCollector

    runner = DfRunner(df_image("old"), df_image("asked-for-meanwhile"))
    asks = iter([set(), {"r2d-asked-for-meanwhile:1"}])  # the choice, then the check before each removal
    collector = ImageCollector(
        runner,
        GCPolicy(prefix="r2d-", high_watermark=0, low_watermark=0, grace=0),
        wanted=lambda: next(asks, {"r2d-asked-for-meanwhile:1"}),
        interval=0,
    )
    collector.ledger.touch("r2d-old:1", 2.0)
    removed_seen = []
    collector.on_removed = lambda image, reason: removed_seen.append(
        (image.tags, collector.ledger.last_used(image.tags))
    )
    report = await collector.run_once()
    assert runner.removed == ["sha256:old"] and [i.tags for i in report.skipped] == [("r2d-asked-for-meanwhile:1",)]
    assert removed_seen == [(("r2d-old:1",), None)]  # out of the record before anything else runs


async def test_the_pages_image_facts_are_shared_refreshed_when_a_built_image_is_missing_and_invalidated():
    from repo2dockerspawner.backends.images import ImageFacts

    runner = DfRunner(df_image("a"))
    facts = ImageFacts(runner, max_age=3600, min_age=0)
    first, second = await asyncio.gather(facts.get(), facts.get())
    assert set(first) == set(second) == {"r2d-a:1"} and runner.df_calls == 1
    await facts.get(expect={"r2d-a:1"})
    assert runner.df_calls == 1  # everything expected is known: no new df
    runner.images.append(df_image("b"))
    assert "r2d-b:1" in await facts.get(expect={"r2d-b:1"}) and runner.df_calls == 2
    runner.images = []
    facts.invalidate()
    assert await facts.get() == {} and runner.df_calls == 3


def test_watermarks_are_sizes_or_shares_of_the_disk():
    from repo2docker_buildcore.imagegc import parse_watermark

    assert parse_watermark("100Gi") == (100 * 2**30, None) and parse_watermark(" 85% ") == (None, 85.0)
    assert parse_watermark("") == parse_watermark(None) == (None, None) and parse_watermark("0.5%") == (None, 0.5)
    for bad, message in [
        ("lots", "neither a size"),
        ("85 %", "not a percentage"),
        ("101%", "between 0% and 100%"),
        ("-1%", "not a percentage"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_watermark(bad)
    with pytest.raises(ValueError, match="both watermarks as sizes"):
        GCPolicy.from_settings("r2d-", "100Gi", "80%", 0, 0)
    with pytest.raises(ValueError, match="low watermark must not be above"):
        GCPolicy.from_settings("r2d-", "80%", "85%", 0, 0)
    off = GCPolicy.from_settings("r2d-", "", "80%", 0, 0)  # the high one off: the low default is moot
    assert not off.enabled and off.target is None


def test_a_share_of_the_disk_is_what_images_may_hold_once_everything_else_is_counted():
    from repo2docker_buildcore.imagegc import DiskUsage

    policy = GCPolicy.from_settings("r2d-", "85%", "80%", 0, 3600)
    # 1000 GB disk, 900 GB used, 600 GB of it images: the rest (300 GB) is not ours to free.
    disk = DiskUsage(size=1000 * MB * 1000, available=100 * MB * 1000)
    sized = policy.for_disk(disk, images=600 * MB * 1000)
    assert (sized.high_watermark, sized.target) == (550 * MB * 1000, 500 * MB * 1000)
    assert not sized.by_disk_share and sized.grace == 3600
    # Over the high watermark by 50 GB: images go least recently used first down to 500 GB.
    images = [image(f"i{n}", used_days_ago=n, size=60 * MB * 1000) for n in range(10)]
    decision = choose(images, 600 * MB * 1000, sized, (), NOW)
    assert names(decision) == ["i9", "i8"] and decision.usage_after == 480 * MB * 1000
    # Everything else alone over the share: every image may go, the budget does not go below 0.
    full = policy.for_disk(DiskUsage(size=1000, available=0), images=10)
    assert (full.high_watermark, full.target) == (0, 0)
    assert policy.without_size_limits().enabled is False


async def test_a_pass_that_cannot_measure_the_disk_removes_nothing_by_size():
    from repo2docker_buildcore.collector import ImageCollector
    from repo2docker_buildcore.docker_api import RunnerError
    from repo2docker_buildcore.imagegc import DiskUsage

    class DiskRunner(DfRunner):
        disk: DiskUsage | None = None

        async def data_root_usage(self):
            if self.disk is None:
                raise RunnerError("the build image b:1 is not on the daemon yet")
            return self.disk

    runner = DiskRunner(df_image("old"))
    collector = ImageCollector(runner, GCPolicy.from_settings("r2d-", "85%", "80%", 0, 0), interval=0)
    report = await collector.run_once()
    assert report.removed == [] and report.policy.high_watermark is None
    runner.disk = DiskUsage(size=1000, available=100)  # 90% used, all of it images: 85% is over
    runner.images[0]["Size"] = 900
    report = await collector.run_once()
    assert runner.removed == ["sha256:old"] and report.policy.high_watermark == 850


async def test_a_use_by_image_id_counts_for_our_images_only():
    from repo2docker_buildcore.collector import ImageCollector

    runner = DfRunner(df_image("ours"), {**df_image("base"), "RepoTags": ["python:3.11"]})
    collector = ImageCollector(runner, GCPolicy(prefix="r2d-"), interval=0)
    await collector.run_once()  # learns which ids are ours
    collector._on_container("sha256:base", 50.0)  # a builder's step container, from a base image by id
    collector._on_container("sha256:ours", 60.0)  # someone ran one of ours by id
    collector._on_container("r2d-ours:1", 40.0)
    assert collector.ledger.uses == {"sha256:ours": 60.0, "r2d-ours:1": 40.0}
    assert collector.ledger.last_used(("r2d-ours:1", "sha256:ours")) == 60.0


def test_gc_settings_are_checked_where_they_are_given():
    from traitlets import TraitError
    from traitlets.config import Config

    from repo2docker_operator.config import ConfigError, from_sources
    from repo2dockerspawner.backends.local import LocalBackend

    with pytest.raises(ConfigError, match="low watermark"):
        from_sources({"R2D_NAMESPACES": "x", "R2D_GC_HIGH_WATERMARK": "1Gi", "R2D_GC_LOW_WATERMARK": "2Gi"})
    with pytest.raises(ConfigError, match="neither a size such as 100Gi nor a share of the disk"):
        from_sources({"R2D_NAMESPACES": "x", "R2D_GC_HIGH_WATERMARK": "lots"})
    with pytest.raises(ConfigError, match="between 0% and 100%"):
        from_sources({"R2D_NAMESPACES": "x", "R2D_GC_HIGH_WATERMARK": "120%"})
    with pytest.raises(ConfigError, match="both watermarks as sizes"):
        from_sources({"R2D_NAMESPACES": "x", "R2D_GC_HIGH_WATERMARK": "90%", "R2D_GC_LOW_WATERMARK": "10Gi"})
    with pytest.raises(ConfigError, match="configmap:NAMESPACE/NAME"):
        from_sources({"R2D_NAMESPACES": "x", "R2D_GC_USE_RECORD": "configmap:only-a-name"})
    off = from_sources({"R2D_NAMESPACES": "x", "R2D_GC_HIGH_WATERMARK": "", "R2D_GC_MAX_AGE": "0"})
    assert not off.gc_policy().enabled
    on = from_sources({"R2D_NAMESPACES": "x", "R2D_GC_MAX_AGE": "86400"})
    assert on.gc_policy().max_age == 86400 and (on.gc_policy().high_percent, on.gc_policy().low_percent) == (85, 80)
    sized = from_sources({"R2D_NAMESPACES": "x", "R2D_GC_HIGH_WATERMARK": "100Gi", "R2D_GC_LOW_WATERMARK": "80Gi"})
    assert (sized.gc_policy().high_watermark, sized.gc_policy().target) == (100 * 2**30, 80 * 2**30)
    backend = LocalBackend(config=Config({"LocalBackend": {"gc_high_watermark": "1Gi", "gc_low_watermark": "2Gi"}}))
    with pytest.raises(TraitError, match="low watermark"):
        backend.start_image_gc("r2d-")
