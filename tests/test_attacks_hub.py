"""Attacks through the hub's own doors: links, repository URLs, hostile input.

A user's session, a link someone else wrote, and the repository URLs users type are all
attacker-controlled. Each test makes the attack with its exact input against a real hub.
"""

from __future__ import annotations

import html
import re
import uuid

import pytest

from repo2docker_buildcore import contract
from support.builds import dockerfile_repo
from support.hub import unique_user
from support.loopback import LoopbackServer

pytestmark = pytest.mark.e2e


def servers(hub, name: str) -> dict:
    return hub.api("GET", f"/users/{name}").json().get("servers") or {}


def test_a_link_fills_in_the_form_and_only_a_click_launches(testenv, docker_client, git_repos, hubs):
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    trusted = git_repos.create({"Dockerfile": f"FROM {base}\n", "marker.txt": "trusted\n"}, prefix="trusted")
    hub = hubs("local", autolaunch_repos=[contract.normalize_repo_url(trusted.url).rsplit("/", 1)[0] + "/trusted-*"])
    repo = dockerfile_repo(git_repos, base, marker="launched by a click")
    name = unique_user()
    session = hub.login(name)
    # The attack: a link in an e-mail, opened by a logged-in user.
    link = f"{hub.url}/hub/spawn?repo={repo.url}&ref=main"
    page = session.get(link, allow_redirects=False)
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    assert f'value="{html.escape(repo.url)}"' in page.text and 'value="main"' in page.text
    assert 'id="r2d-link-notice"' in page.text and html.escape(repo.url) in page.text
    assert not servers(hub, name), "opening a link must start nothing"
    assert not docker_client.containers.list(all=True, filters={"label": f"{contract.LABEL_INSTANCE}={hub.instance}"})

    # The click: the form as the page posts it, with the user's own XSRF token.
    launched = session.post(
        f"{hub.url}/hub/spawn/{name}",
        allow_redirects=False,
        data={"repo": repo.url, "ref": "main", "_xsrf": session.cookies.get("_xsrf")},
    )
    assert launched.status_code == 302 and "/spawn-pending/" in launched.headers["Location"], launched.text[-300:]
    hub.wait_ready(name)
    assert hub.user_file(name, "marker.txt") == "launched by a click\n"
    hub.stop_server(name)

    # A repository the admin trusts (autolaunch_repos) launches from the link, as on Binder.
    other = unique_user()
    binder = hub.login(other).get(f"{hub.url}/hub/spawn?repo={trusted.url}&ref=main", allow_redirects=False)
    assert binder.status_code == 302 and "/spawn-pending/" in binder.headers["Location"]
    hub.wait_ready(other)
    hub.stop_server(other)


@pytest.fixture
def open_hub(hubs, testenv):
    """A hub as most are configured: any host (the default '*'), https and http, plus the test
    environment's git server named as an internal host."""
    return hubs("local", allowed_repo_schemes=["https", "http"], allowed_repo_hosts=["*", testenv["R2D_BRIDGE_IP"]])


def test_repositories_on_the_hubs_own_network_are_refused_before_any_connection(open_hub, git_repos, testenv):
    hub = open_hub
    name = unique_user()
    hub.create_user(name)
    with LoopbackServer() as internal:
        port = internal.port
        for url in [
            "https://127.0.0.1:1/x.git",
            "https://localhost:1/x.git",
            f"http://127.0.0.1:{port}/x.git",
            f"http://localhost:{port}/x.git",
            f"http://127.1:{port}/x.git",
            f"http://2130706433:{port}/x.git",
            f"http://[::1]:{port}/x.git",
            f"http://[::ffff:127.0.0.1]:{port}/x.git",
            f"http://0.0.0.0:{port}/x.git",
            "http://169.254.169.254/latest/meta-data.git",
            "http://10.1.2.3/x.git",
            "http://192.168.0.1/x.git",
            "http://[fd00::1]/x.git",
            "http://[fe80::1]/x.git",
        ]:
            r = hub.spawn(name, {"repo": url, "ref": "main"})
            assert r.status_code == 400, (url, r.status_code, r.text)
            message = r.json()["message"]
            if "[" in url:  # IPv6 literals: the URL contract itself takes none
                assert "not allowed" in message, (url, message)
            else:
                assert "is not allowed on this hub" in message and "network" in message, (url, message)
            assert "fatal" not in message and "curl" not in message.lower(), message
        assert internal.connections == 0, "git reached the hub's own network"
    # The git server the admin named is internal too, and reachable.
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="named host")
    response, events = hub.spawn_and_follow(name, {"repo": repo.url, "ref": "main"})
    assert events[-1].get("ready"), events[-3:]
    hub.stop_server(name)


def test_lookup_failures_say_what_went_wrong_without_echoing_git(open_hub, git_repos, testenv):
    hub = open_hub
    name = unique_user()
    hub.create_user(name)
    git_url = testenv["R2D_GIT_URL"]
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"])
    cases = [
        ({"repo": f"{git_url}/no-such-repo-{uuid.uuid4().hex[:6]}.git"}, "was not found"),
        ({"repo": repo.url, "ref": "no-such-branch"}, "ref 'no-such-branch' was not found"),
        ({"repo": f"http://{testenv['R2D_BRIDGE_IP']}:1/x.git"}, "could not be reached"),
    ]
    for options, expected in cases:
        r = hub.spawn(name, {"ref": "main", **options})
        assert r.status_code == 400, (options, r.text)
        message = r.json()["message"]
        assert expected in message, (options, message)
        assert not re.search(r"fatal|curl|HTTP \d|Couldn't|returned error", message), message


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"repo": "https://github.com]/x"}, "not a valid URL"),
        ({"repo": "https://github.com:99999/x"}, "not a valid URL"),
        ({"repo": "https://github.com/a/b", "ref": "ma\nin"}, "git ref may contain"),
    ],
)
def test_malformed_input_is_a_400_with_a_message_not_a_500(open_hub, options, expected):
    name = unique_user()
    open_hub.create_user(name)
    r = open_hub.spawn(name, options)
    assert r.status_code == 400, (options, r.status_code, r.text[-500:])
    assert expected in r.json()["message"], r.json()


@pytest.mark.parametrize(
    "path",
    [
        "{trusted}/../{other}.git",  # exactly the input tried on the first pass's main
        "{trusted}/./../{other}.git",
        "{trusted}/%2e%2e/{other}.git",
        "{trusted}//../{other}.git",
    ],
)
def test_a_link_cannot_reach_another_repository_through_a_trusted_prefix(path, testenv, docker_client, git_repos, hubs):
    """autolaunch_repos trusts <git server>/trusted-*; git resolves dot-segments before it sends
    a request, so a pattern matched on the string launched whatever came after '..', as the
    victim, with their home and token, from one link."""
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    git_url = testenv["R2D_GIT_URL"]
    hub = hubs("local", autolaunch_repos=[f"{git_url}/trusted-*"])
    other = dockerfile_repo(git_repos, base, marker="the attacker's repository")
    name = unique_user()
    session = hub.login(name)
    link = f"{hub.url}/hub/spawn?repo={git_url}/" + path.format(trusted="trusted-x", other=other.name) + "&ref=main"
    page = session.get(link, allow_redirects=False)
    assert page.status_code != 302, ("the link launched a server", page.headers.get("Location"))
    assert "may not contain" in html.unescape(page.text), page.text[-2000:]
    assert not servers(hub, name), "the link started a server"
    assert not docker_client.containers.list(all=True, filters={"label": f"{contract.LABEL_INSTANCE}={hub.instance}"})
    # REST says the same, with a 400: no spelling of a path reaches git, the build or a name.
    r = hub.spawn(name, {"repo": f"{git_url}/" + path.format(trusted="trusted-x", other=other.name), "ref": "main"})
    assert r.status_code == 400 and "may not contain" in r.json()["message"], r.text


# A repository's Dockerfile owns every binary in its image: this one replaces `id` with a
# script that leaves a file, and a setuid copy of the shell, in every helper volume it sees.
PLANTS_IN_HELPERS = r"""FROM {base}
USER root
RUN mv /usr/bin/id /usr/bin/id.real && printf '%s\n' '#!/bin/sh' \
      'for d in /r2d-volume*; do touch "$d/planted-by-uid-$(/usr/bin/id.real -u)"; cp /bin/sh "$d/shell" && chmod 4755 "$d/shell"; done' \
      'exec /usr/bin/id.real "$@"' > /usr/bin/id && chmod 755 /usr/bin/id
USER 1000
"""


def test_no_code_of_the_launched_image_runs_as_root_before_the_server(
    testenv, docker_client, git_repos, hubs, home_volume
):
    """Servers forced to uid 1000 with a volume on ~/work: the first launch gives the new volume
    to the user. That step used to run the launched image's `id` as root."""
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    hub = hubs("local", volumes={home_volume: "/home/jovyan/work"}, extra_create_kwargs={"user": "1000"})
    repo = git_repos.create({"Dockerfile": PLANTS_IN_HELPERS.format(base=base)}, prefix="plants")
    name = unique_user()
    response, events = hub.spawn_and_follow(name, {"repo": repo.url, "ref": "main"})
    assert events[-1].get("ready"), events[-3:]
    volume = home_volume.format(username=name)
    found = docker_client.containers.run(
        base,
        ["sh", "-c", "stat -c '%u' /v; find /v -mindepth 1 -printf '%u %m %p\\n'"],
        user="0",
        remove=True,
        volumes={volume: {"bind": "/v", "mode": "ro"}},
    ).decode()
    owner, *files = found.splitlines()
    assert owner == "1000", "the new volume was not given to the server's user"
    assert not [f for f in files if f.startswith("0 ")], f"root-owned files in the user's volume: {files}"
    assert not [f for f in files if "planted" in f or "shell" in f], files
