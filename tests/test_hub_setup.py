"""Hub-wide settings take effect through `repo2dockerspawner.hub.setup(c)` or stop the hub
with a message naming what is missing; never silently nothing (real hubs)."""

from __future__ import annotations

import pytest

from repo2dockerspawner.hubcheck import mark_set_up, needing_setup
from support.builds import dockerfile_repo
from support.hub import ADMIN, SERVICE
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
    assert hub.login(ADMIN).get(f"{hub.url}{SERVICE}/builds").status_code == 200
    assert "repo2dockerspawner.buildspage.setup(c) is deprecated" in hub.log()


@pytest.mark.e2e
def test_a_hub_set_up_as_the_docs_say_logs_no_deprecation_and_serves_the_service(hubs):
    hub = hubs("local")
    admin = hub.login(ADMIN)
    page = admin.get(f"{hub.url}{SERVICE}/builds")
    assert page.status_code == 200 and "Image builds" in page.text
    ours = [line for line in hub.log().splitlines() if "deprecated" in line and "Authenticator" not in line]
    assert ours == []


@pytest.mark.e2e
def test_the_bridge_answers_only_with_its_token(hubs):
    """The hub process's interface to the service listens on loopback; a local process without
    the token (another user's, say) is refused before anything is read."""
    import re

    import requests

    hub = hubs("local")
    bridge = re.search(r"repo2docker hub bridge at (http://\S+)", hub.log())
    assert bridge, hub.log()[-2000:]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"token {hub.token}"}):
        assert requests.get(f"{bridge[1]}/builds", headers=headers, timeout=10).status_code == 403


@pytest.mark.e2e
def test_the_service_run_apart_serves_the_builds_page_through_the_hub(hubs, testenv, tmp_path):
    """An admin's own service process (no command in the hub's configuration): the hub routes
    to it and signs users in to it; it reaches the hub's bridge with the token both were given."""
    import json
    import secrets
    import subprocess
    import sys

    from support.operator import free_port
    from support.process import stop_process
    from support.waiting import wait_until

    port, bridge_port, hub_port = free_port(), free_port(), free_port()
    api_token, bridge_token = secrets.token_hex(16), secrets.token_hex(16)
    prefix = f"{SERVICE}/"
    env = {
        "PATH": "/usr/bin:/bin",
        "JUPYTERHUB_SERVICE_NAME": "repo2docker",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_API_URL": f"http://{testenv['R2D_BRIDGE_IP']}:{hub_port}/hub/api",
        "JUPYTERHUB_API_TOKEN": api_token,
        "JUPYTERHUB_CLIENT_ID": "service-repo2docker",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(["access:services!service=repo2docker"]),
        "R2D_BRIDGE_URL": f"http://127.0.0.1:{bridge_port}",
        "R2D_BRIDGE_TOKEN": bridge_token,
    }
    with open(tmp_path / "service.log", "w") as log:
        # Started first: the hub waits for its services' addresses when it starts.
        service = subprocess.Popen(
            [sys.executable, "-m", "repo2dockerspawner.hubservice"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            hub = hubs(
                "local",
                setup=None,
                hub_config=[
                    f"c.JupyterHub.hub_port = {hub_port}",
                    "import repo2dockerspawner.hub",
                    f'repo2dockerspawner.hub.setup(c, service_url="http://127.0.0.1:{port}", '
                    f'api_token="{api_token}", bridge_port={bridge_port}, bridge_token="{bridge_token}")',
                ],
            )
            assert not hub.api("GET", "/services/repo2docker").json().get("command")  # not the hub's to run
            admin = hub.login(ADMIN)
            wait_until(
                lambda: admin.get(f"{hub.url}{SERVICE}/builds", timeout=10).status_code == 200,
                timeout=60,
                what="the builds page through the service run apart",
            )
            assert "Image builds" in admin.get(f"{hub.url}{SERVICE}/builds", timeout=10).text
        finally:
            stop_process(service, timeout=10)


@pytest.mark.unit
def test_the_service_prefix_follows_the_hubs_base_url():
    from repo2dockerspawner.servicename import service_prefix

    assert service_prefix("/hub/") == "/services/repo2docker/"
    assert service_prefix("/jupyter/hub/") == "/jupyter/services/repo2docker/"


@pytest.mark.e2e
def test_the_first_releases_urls_still_reach_the_service(hubs):
    """A forge's webhook keeps its address; a bookmark of the builds page is sent on."""
    import requests

    hub = hubs("local", **{"Repo2DockerHub.webhook_secret": "s3cret"})
    moved = requests.get(f"{hub.url}/hub/builds/local/x?done=cancel", allow_redirects=False, timeout=30)
    assert moved.status_code == 301 and moved.headers["Location"] == f"{SERVICE}/builds/local/x?done=cancel"
    unsigned = requests.post(
        f"{hub.url}/hub/repo2docker/webhook", data=b"{}", headers={"X-GitHub-Event": "push"}, timeout=30
    )
    assert unsigned.status_code == 401, unsigned.text  # verified by the hub, as at the new address
