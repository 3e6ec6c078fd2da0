"""The admin builds page (/services/repo2docker/builds) on a real hub, for both backends: who may see and act,
XSRF, escaping of what builds print, and each action through the backend's own code."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import requests

from repo2docker_buildcore import contract
from support.builds import dockerfile_repo, expected_provenance, head, image_exists
from support.hub import ADMIN, SERVICE, form_xsrf, own_xsrf
from support.waiting import wait_until

pytestmark = pytest.mark.e2e


def hostile_failing_repo(git_repos, base: str):
    """A build that prints HTML and fails: the page must show it as text. It fails only after
    a few seconds, so the spawn outlasts the hub's slow_spawn_timeout and its failure reaches
    the progress stream (a failure in the same instant races the stream's connection)."""
    token = uuid.uuid4().hex[:8]
    return git_repos.create(
        {
            "Dockerfile": f"FROM {base}\n"
            f"RUN echo '<script>alert(\"{token}\")</script><b>bold-{token}</b>' && sleep 6 && exit 3\n"
        }
    )


def build_url(hub, namespace: str, name: str, action: str = "") -> str:
    return f"{hub.url}{SERVICE}/builds/{namespace}/{name}" + (f"/{action}" if action else "")


def test_local_builds_page_shows_builds_to_admins_only_and_acts_through_the_backend(
    testenv, docker_client, git_repos, hubs
):
    hub = hubs("local")
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    bad = hostile_failing_repo(git_repos, base)
    response, events = hub.spawn_and_follow("bob", {"repo": bad.url, "ref": "main"})
    assert response.status_code == 202 and events and events[-1].get("failed"), (response.text, events[-3:])
    name = contract.build_name(bad.url, head(bad))

    bob = hub.login("bob")
    assert bob.get(f"{hub.url}{SERVICE}/builds").status_code == 403
    assert bob.get(build_url(hub, "local", name, "status")).status_code == 403
    admin = hub.login(ADMIN)
    listing = admin.get(f"{hub.url}{SERVICE}/builds")
    assert listing.status_code == 200
    assert bad.url in listing.text and "Failed" in listing.text and "bob" in listing.text
    assert head(bad)[:7] in listing.text

    detail = admin.get(build_url(hub, "local", name))
    assert "&lt;script&gt;alert(" in detail.text and "<script>alert(" not in detail.text
    assert "&lt;b&gt;bold-" in detail.text and 'id="r2d-rebuild"' in detail.text
    xsrf = form_xsrf(detail.text)

    rebuild = build_url(hub, "local", name, "rebuild")
    assert admin.post(rebuild, allow_redirects=False).status_code == 403  # no XSRF token
    assert bob.post(rebuild, data={"_xsrf": xsrf}, allow_redirects=False).status_code == 403
    refused = admin.post(build_url(hub, "local", name, "cancel"), data={"_xsrf": xsrf}, allow_redirects=False)
    assert refused.status_code == 409 and "Only a queued or running build can be cancelled" in refused.text

    started = admin.post(rebuild, data={"_xsrf": xsrf}, allow_redirects=False)
    assert started.status_code == 302 and "done=rebuild" in started.headers["Location"]
    wait_until(
        lambda: (
            admin.get(build_url(hub, "local", name, "status")).json()["phase"] == "Failed"
            and ADMIN in admin.get(build_url(hub, "local", name)).text
        ),
        timeout=120,
        what="the rebuild, asked by the admin, to fail again",
    )

    good = dockerfile_repo(git_repos, base)
    hub.spawn_and_follow("carol", {"repo": good.url, "ref": "main"})
    hub.wait_ready("carol")
    good_name = contract.build_name(good.url, head(good))
    image = contract.image_name("r2d-e2e-", good.url, head(good))
    page = admin.get(build_url(hub, "local", good_name))
    assert "Succeeded" in page.text and 'id="r2d-delete-image"' in page.text
    made_by = expected_provenance(docker_client, hub.build_image, base, "hub")
    for field, value in made_by.items():  # what made the image, as Docker and repo2docker tell it
        assert re.search(f'data-field="{field}">(<code>)?{re.escape(value)}<', page.text), (field, value)
    assert re.search(r"</code> \([0-9.]+ (B|kB|MB|GB)\)", page.text), "the image's size on the daemon"
    assert re.search(r"Last use</dt><dd[^>]*>[0-9.]+ (s|min) ago", page.text), "its use by carol's server"
    delete = build_url(hub, "local", good_name, "delete-image")
    in_use = admin.post(delete, data={"_xsrf": form_xsrf(page.text)}, allow_redirects=False)
    assert in_use.status_code == 409 and "A server uses the image" in in_use.text
    assert image_exists(docker_client, image)

    hub.stop_server("carol")
    deleted = admin.post(delete, data={"_xsrf": form_xsrf(page.text)}, allow_redirects=False)
    assert deleted.status_code == 302, deleted.text[-500:]
    assert not image_exists(docker_client, image)
    # Forgotten with its image: the next start of that commit builds again.
    _response, events = hub.spawn_and_follow("carol", {"repo": good.url, "ref": "main"})
    messages = [e.get("message", "") for e in events]
    assert any(m.startswith("Built ") for m in messages) and not any("already exists" in m for m in messages), messages
    assert image_exists(docker_client, image)
    hub.stop_server("carol")


def test_kubernetes_builds_page_lists_resources_with_events_and_cancel_ends_the_container(
    testenv, docker_client, git_repos, kubectl, namespace, hubs
):
    # The operator's record of images' last use, as the chart's ConfigMap holds it.
    kubectl("create", "configmap", "image-use", "-n", namespace)
    hub = hubs("kubernetes", **{"KubernetesBackend.image_use_record": f"configmap:{namespace}/image-use"})
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    slow = dockerfile_repo(git_repos, base, sleep=60)
    hub.create_user("dave")
    assert hub.spawn("dave", {"repo": slow.url, "ref": "main"}).status_code == 202
    name = contract.build_name(slow.url, head(slow))
    admin = hub.login(ADMIN)
    status_url = build_url(hub, namespace, name, "status")
    wait_until(lambda: admin.get(status_url).json().get("phase") == "Building", timeout=120, what="the build to run")
    wait_until(
        lambda: any(line.startswith("build-") for line in admin.get(status_url).json()["logTail"]),
        timeout=60,
        what="the running build's log on the page",
    )
    listing = admin.get(f"{hub.url}{SERVICE}/builds").text
    assert slow.url in listing and "Building" in listing and "dave" in listing

    detail = admin.get(build_url(hub, namespace, name))
    assert "Building" in detail.text and 'id="r2d-cancel"' in detail.text
    t0 = time.monotonic()
    cancelled = admin.post(
        build_url(hub, namespace, name, "cancel"), data={"_xsrf": form_xsrf(detail.text)}, allow_redirects=False
    )
    assert cancelled.status_code == 302, cancelled.text[-500:]
    label = f"{contract.LABEL_BUILD_NAME}={name}"
    wait_until(
        lambda: not docker_client.containers.list(filters={"label": label}),
        timeout=30,
        what="the build container to end",
    )
    ended = time.monotonic() - t0
    assert ended < 30
    wait_until(lambda: admin.get(status_url).status_code == 404, timeout=30, what="the resource to go")

    quick = dockerfile_repo(git_repos, base)
    _response, events = hub.spawn_and_follow("erin", {"repo": quick.url, "ref": "main"})
    quick_name = contract.build_name(quick.url, head(quick))
    quick_image = contract.image_name("r2d-e2e-", quick.url, head(quick))
    kubectl(
        "patch",
        "configmap",
        "image-use",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"last-used.json": json.dumps({quick_image: time.time() - 7200})}}),
    )
    detail = admin.get(build_url(hub, namespace, quick_name)).text
    assert re.search(r"Last use</dt><dd[^>]*>2\.0 h ago", detail), "the last use from the operator's record"
    assert "<td>Building</td>" in detail and "<td>Succeeded</td>" in detail  # the operator's Events
    assert "erin" in detail
    made_by = expected_provenance(docker_client, hub.build_image, base, hub.operator_builder)
    for field, value in made_by.items():
        assert re.search(f'data-field="{field}">(<code>)?{re.escape(value)}<', detail), (field, value)
    hub.stop_server("erin")


VIEWER = "r2d-viewer"


def test_destructive_actions_need_admin_servers_not_a_viewing_scope(testenv, docker_client, git_repos, hubs):
    """Each attempt is made with the attacker's own valid XSRF token, so only the scope check
    can refuse it: a plain user, and a user whose role lets them *view* the admin pages."""
    hub = hubs(
        "local",
        hub_config=[
            f'c.JupyterHub.load_roles.append({{"name": "build-viewer", "users": ["{VIEWER}"], '
            '"scopes": ["admin-ui", "list:users", "read:users"]})'
        ],
    )
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    slow = dockerfile_repo(git_repos, base, sleep=120)
    hub.create_user("dave")
    assert hub.spawn("dave", {"repo": slow.url, "ref": "main"}).status_code == 202
    name = contract.build_name(slow.url, head(slow))
    image = contract.image_name("r2d-e2e-", slow.url, head(slow))
    label = {"label": f"{contract.LABEL_BUILD_NAME}={name}"}
    wait_until(lambda: docker_client.containers.list(filters=label), timeout=60, what="the build to run")

    viewer = hub.login(VIEWER)
    assert viewer.get(f"{hub.url}{SERVICE}/builds").status_code == 200  # viewing is what admin-ui is for
    for who, session in (("bob", hub.login("bob")), (VIEWER, viewer)):
        for action in ("cancel", "delete-image", "rebuild"):
            r = session.post(
                build_url(hub, "local", name, action),
                data={"_xsrf": own_xsrf(hub, session, SERVICE)},
                allow_redirects=False,
            )
            assert r.status_code == 403, (who, action, r.status_code, r.text[-300:])
    assert docker_client.containers.list(filters=label), "a refused action stopped the build"

    admin = hub.login(ADMIN)
    assert admin.get(build_url(hub, "local", name, "cancel"), allow_redirects=False).status_code == 405

    # The image of a build under way is not removed, even when a tag of that name exists
    # (an earlier image of the commit, being built again).
    docker_client.images.get(base).tag(*image.rsplit(":", 1))
    try:
        refused = admin.post(
            build_url(hub, "local", name, "delete-image"),
            data={"_xsrf": own_xsrf(hub, admin, SERVICE)},
            allow_redirects=False,
        )
        assert refused.status_code == 409 and "still under way" in refused.text, refused.text[-500:]
        assert image_exists(docker_client, image)
    finally:
        docker_client.images.remove(image)  # the tag only: the base image keeps its own

    # Automation with a token that holds admin:servers (the tests' service) may act.
    by_token = requests.post(
        build_url(hub, "local", name, "cancel"),
        allow_redirects=False,
        timeout=30,
        headers={"Authorization": f"token {hub.token}"},
    )
    assert by_token.status_code in (200, 302), (by_token.status_code, by_token.text[-300:])
    wait_until(
        lambda: not docker_client.containers.list(all=True, filters=label),
        timeout=30,
        what="the cancelled build's container to go",
    )
