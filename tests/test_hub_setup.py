"""Hub-wide settings take effect through `repo2dockerspawner.hub.setup(c)` or stop the hub
with a message naming what is missing; never silently nothing (real hubs)."""

from __future__ import annotations

import pytest

from repo2dockerspawner.hubcheck import mark_set_up, needing_setup
from support.builds import dockerfile_repo
from support.hub import ADMIN
from support.waiting import GiveUp


@pytest.mark.unit
def test_what_needs_setup_is_named_under_either_name_and_the_variable():
    from traitlets.config import Config

    config = Config()
    assert needing_setup(config, {}) == []
    config.Repo2DockerHub.prebuild_repos = [{"repo": "https://h/a/b"}]
    config.Repo2DockerSpawner.webhook_secret = "s"
    config.Repo2DockerSpawner.image = "other/setting:1"
    assert needing_setup(config, {"R2D_WEBHOOK_SECRET": "x"}) == [
        "c.Repo2DockerHub.prebuild_repos",
        "c.Repo2DockerSpawner.webhook_secret",
        "$R2D_WEBHOOK_SECRET",
    ]
    mark_set_up(config)
    assert needing_setup(config, {"R2D_WEBHOOK_SECRET": "x"}) == []


@pytest.mark.unit
def test_the_spawners_old_names_become_the_hubs_settings_with_a_deprecation_line(caplog):
    from repo2dockerspawner.backends import traits
    from repo2dockerspawner.hub.settings import Repo2DockerHub
    from support.spawners import make_spawner

    traits._announced.clear()
    entries = [{"repo": "https://github.com/a/b", "refs": ["main"]}]
    spawner = make_spawner({"Repo2DockerSpawner": {"prebuild_repos": entries, "prebuild_interval": 60.0}})
    settings = Repo2DockerHub(config=spawner.backend_config())
    assert (settings.prebuild_repos, settings.prebuild_interval) == (entries, 60.0)
    assert settings.watched_repos(spawner.policy)[0].refs == ("main",)
    assert "Repo2DockerSpawner.prebuild_repos is deprecated: set Repo2DockerHub.prebuild_repos" in caplog.text


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["Repo2DockerHub.prebuild_repos", "prebuild_repos"])
def test_prebuilds_without_setup_stop_the_hub_saying_what_to_add(name, testenv, git_repos, hubs):
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    with pytest.raises(GiveUp, match="exited with 1") as refused:
        hubs("local", setup=None, **{name: [{"repo": repo.url, "refs": ["main"]}]})
    shown = "c.Repo2DockerHub.prebuild_repos" if "." in name else "c.Repo2DockerSpawner.prebuild_repos"
    assert f"{shown} set, but jupyterhub_config.py does not call repo2dockerspawner.hub.setup(c)" in str(refused.value)


@pytest.mark.e2e
def test_the_first_name_of_setup_still_works_with_a_deprecation_line(hubs):
    hub = hubs("local", setup="repo2dockerspawner.buildspage")
    assert hub.login(ADMIN).get(f"{hub.url}/hub/builds").status_code == 200
    assert "repo2dockerspawner.buildspage.setup(c) is deprecated" in hub.log()
