"""A person in Debian's Chromium: log in, fill in the form, watch the build on the
spawn-pending page, end up on their server; an admin on the builds page. Screenshots are kept
in test-artifacts/test_browser/<test>/ (each page's last view too, when a test fails)."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from support.builds import dockerfile_repo
from support.hub import SERVICE
from support.waiting import wait_until

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(testenv, artifacts):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=testenv["R2D_CHROMIUM"],
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield browser
        for n, page in enumerate(page for context in browser.contexts for page in context.pages):
            try:  # what each page showed last: the first thing to look at when a test failed
                page.screenshot(path=str(artifacts / f"last-{n}.png"), full_page=True, timeout=5_000)
            except Exception:  # noqa: BLE001 - a closed or crashed page has nothing to show
                pass
        browser.close()


def login(page, hub, name: str) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url("**/hub/**")


def test_form_pending_page_shows_the_build_log_then_the_server(browser, testenv, artifacts, git_repos, hubs):
    hub = hubs("local")
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=3, marker="seen in a browser")
    name = f"b{uuid.uuid4().hex[:8]}"
    page = browser.new_page()
    login(page, hub, name)

    page.goto(f"{hub.url}/hub/spawn")
    page.fill("input[name=repo]", "file:///etc/passwd")
    page.fill("input[name=ref]", "my-branch")
    page.click("#spawn_form button[type=submit]")
    error = page.locator(".spawn-error-msg")
    error.wait_for(timeout=30_000)
    assert "must start with" in error.inner_text()
    # What was typed is still there, with the message next to the field.
    assert page.input_value("input[name=repo]") == "file:///etc/passwd"
    assert page.input_value("input[name=ref]") == "my-branch"
    assert "must start with" in page.locator("#r2d-form-error").inner_text()
    page.screenshot(path=str(artifacts / "refused-form.png"), full_page=True)

    page.fill("input[name=repo]", repo.url)
    page.fill("input[name=ref]", "main")
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url("**/spawn-pending/**", timeout=30_000)
    log = page.locator("#progress-log")
    # The build log is open without a click (JupyterHub closes it by default).
    page.wait_for_function("document.getElementById('progress-details').open === true", timeout=30_000)
    # The newest repo2docker (the default build image) builds with BuildKit: its plain
    # progress arrives as readable lines, ending with the image being named.
    log.get_by_text("naming to", exact=False).first.wait_for(state="attached", timeout=120_000)
    page.screenshot(path=str(artifacts / "pending.png"), full_page=True)
    assert log.is_visible()
    lines = log.locator(".progress-log-event").all_text_contents()
    assert any(re.match(r"^\[1/\d+\] FROM ", line) for line in lines), lines
    assert not any(line.startswith("#") for line in lines), lines  # no raw BuildKit vertex lines
    assert any("Building your image" in line for line in lines), lines

    page.wait_for_url(f"**/user/{name}/**", timeout=120_000)
    # JupyterLab from the built image lists the repository's files.
    page.locator(".jp-DirListing-item", has_text="marker.txt").wait_for(timeout=120_000)
    page.screenshot(path=str(artifacts / "server.png"))
    hub.wait_ready(name)
    assert hub.user_file(name, "marker.txt") == "seen in a browser\n"
    hub.stop_server(name)


def test_a_link_fills_in_the_form_and_the_click_shows_a_failed_builds_last_lines(
    browser, testenv, artifacts, git_repos, hubs
):
    hub = hubs("local")
    token = uuid.uuid4().hex[:8]
    repo = git_repos.create(
        {"Dockerfile": f"FROM {testenv['R2D_SINGLEUSER_IMAGE']}\nRUN echo 'the reason it broke {token}' && exit 3\n"}
    )
    name = f"f{uuid.uuid4().hex[:8]}"
    page = browser.new_page()
    login(page, hub, name)
    # A Binder-style link opens the form, filled in, with the repository in plain sight.
    page.goto(f"{hub.url}/hub/spawn?repo={repo.url}&ref=main")
    notice = page.locator("#r2d-link-notice")
    notice.wait_for(timeout=30_000)
    assert repo.url in notice.inner_text() and notice.is_visible()
    assert page.input_value("input[name=repo]") == repo.url and page.input_value("input[name=ref]") == "main"
    assert "/hub/spawn" in page.url
    page.screenshot(path=str(artifacts / "link-form.png"), full_page=True)
    assert not hub.api("GET", f"/users/{name}").json().get("servers"), "the link alone started a server"
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url("**/spawn-pending/**", timeout=30_000)
    message = page.locator("#progress-message")
    message.get_by_text(f"the reason it broke {token}", exact=False).wait_for(timeout=120_000)
    assert message.is_visible()
    # The last line sits in view in the (open) log as well, without a click or a scroll.
    last = page.locator("#progress-log .progress-log-event", has_text=f"the reason it broke {token}").last
    last.wait_for(timeout=10_000)
    assert page.evaluate("document.getElementById('progress-details').open")
    page.wait_for_timeout(300)
    assert last.is_visible() and page.evaluate(
        """(() => { const log = document.getElementById('progress-log');
                    return log.scrollHeight - log.scrollTop - log.clientHeight < 80; })()"""
    )
    page.screenshot(path=str(artifacts / "failed-build.png"), full_page=True)


def slow_repo(git_repos, base: str):
    """A build that prints one line, a second one 30 s later, then runs on: long enough to watch
    it queued, running, and its log growing on an open page."""
    token = uuid.uuid4().hex[:8]
    # Printed upper-cased: the log also shows the RUN line itself, which must not count.
    repo = git_repos.create(
        {
            "Dockerfile": f"FROM {base}\n"
            f"RUN echo first-{token} | tr a-z A-Z && sleep 30 && echo later-{token} | tr a-z A-Z"
            " && sleep 60\n"
        }
    )
    return repo, token.upper()


def test_admin_builds_page_lists_running_and_queued_builds_shows_a_live_log_and_cancels(
    browser, testenv, artifacts, docker_client, git_repos, hubs
):
    from repo2docker_buildcore import contract
    from support.builds import head
    from support.hub import ADMIN

    hub = hubs("local")  # two build slots
    builds = [slow_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"]) for _ in range(3)]
    for i, (repo, _token) in enumerate(builds):
        hub.create_user(f"u{i}")
        assert hub.spawn(f"u{i}", {"repo": repo.url, "ref": "main"}).status_code == 202
    page = browser.new_page()
    login(page, hub, ADMIN)
    names = {contract.build_name(repo.url, head(repo)): token for repo, token in builds}

    def rows() -> dict[str, str]:  # these three builds' phases (the page lists earlier tests' images too)
        page.goto(f"{hub.url}{SERVICE}/builds")
        found = page.locator("tr.r2d-build").evaluate_all("rows => rows.map(r => [r.dataset.name, r.dataset.phase])")
        return {name: phase for name, phase in found if name in names}

    deadline = time.monotonic() + 120
    while sorted(rows().values()) != ["Building", "Building", "Queued"] and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
    assert sorted(rows().values()) == ["Building", "Building", "Queued"]
    page.screenshot(path=str(artifacts / "builds.png"), full_page=True)
    askers = page.locator("tr.r2d-build").evaluate_all(
        "rows => rows.map(r => [r.dataset.name, r.querySelector('.r2d-asked-by').textContent])"
    )
    assert sorted(who for n, who in askers if n in names) == ["u0", "u1", "u2"]

    # The detail page of a running build, opened right after its first line and long before
    # its second: the second arrives on the open page, with no reload.
    name = next(n for n, phase in rows().items() if phase == "Building")
    token = names[name]
    status = f"{hub.url}{SERVICE}/builds/local/{name}/status"
    page.wait_for_function(
        """([url, line]) => fetch(url, {headers: {"X-XSRFToken": document.querySelector('meta[name="r2d-xsrf"]').content}})
            .then(r => r.json()).then(s => s.logTail.some(l => l.includes(line)))""",
        arg=[status, f"FIRST-{token}"],
        polling=500,
        timeout=90_000,
    )
    page.click(f"tr.r2d-build[data-name='{name}'] a")
    page.wait_for_url(f"**{SERVICE}/builds/local/{name}")
    log = page.locator("#r2d-log")
    assert f"FIRST-{token}" in log.inner_text() and f"LATER-{token}" not in log.inner_text()
    page.evaluate("window.r2dSameDocument = true")
    duration_at_load = page.inner_text("#r2d-duration")
    page.wait_for_function(
        "line => document.getElementById('r2d-log').textContent.includes(line)",
        arg=f"LATER-{token}",
        polling=250,
        timeout=60_000,
    )  # case-sensitive, unlike get_by_text
    assert page.evaluate("window.r2dSameDocument === true"), "the page reloaded instead of updating"
    assert page.inner_text("#r2d-duration") != duration_at_load  # the clock moves with the log
    page.screenshot(path=str(artifacts / "build-live-log.png"), full_page=True)

    label = f"{contract.LABEL_BUILD_NAME}={name}"
    assert docker_client.containers.list(filters={"label": label})
    page.click("#r2d-cancel")
    page.locator("#r2d-message").wait_for(timeout=30_000)
    wait_until(
        lambda: not docker_client.containers.list(all=True, filters={"label": label}),
        timeout=30,
        what="the cancelled build's container to go",
    )
    assert page.locator("#r2d-phase").inner_text() == "Cancelled"
    page.screenshot(path=str(artifacts / "build-cancelled.png"), full_page=True)
    # Its slot went to the queued build.
    deadline = time.monotonic() + 60
    while sorted(rows().values()) != ["Building", "Building", "Cancelled"] and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
    assert sorted(rows().values()) == ["Building", "Building", "Cancelled"]
    page.screenshot(path=str(artifacts / "builds-after-cancel.png"), full_page=True)


def test_with_a_volume_on_the_home_jupyterlab_opens_the_launched_repositorys_folder(
    home_volume, browser, testenv, artifacts, git_repos, hubs
):
    from repo2dockerspawner.homes import folder_names

    hub = hubs("local", volumes={home_volume: "/home/jovyan"})
    first = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="the first repository")
    second = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="the second repository")
    name = f"v{uuid.uuid4().hex[:8]}"
    page = browser.new_page()
    login(page, hub, name)
    for repo in (first, second):
        page.goto(f"{hub.url}/hub/spawn")
        page.fill("input[name=repo]", repo.url)
        page.fill("input[name=ref]", "main")
        page.click("#spawn_form button[type=submit]")
        folder = folder_names(repo.url)[0]
        # JupyterLab opens in the repository's folder of the home, its files listed.
        page.wait_for_url(f"**/user/{name}/lab/tree/{folder}**", timeout=240_000)
        page.locator(".jp-DirListing-item", has_text="marker.txt").wait_for(timeout=120_000)
        crumbs = page.locator(".jp-BreadCrumbs").inner_text()
        assert folder in crumbs, crumbs
        page.screenshot(path=str(artifacts / f"{folder}.png"))
        hub.wait_ready(name)
        assert (
            hub.user_file(name, f"{folder}/marker.txt") == f"the {'first' if repo is first else 'second'} repository\n"
        )
        if repo is second:  # the first one's folder is still there, beside it
            assert hub.user_file(name, f"{folder_names(first.url)[0]}/marker.txt") == "the first repository\n"
        hub.stop_server(name)


def test_a_queued_launch_is_told_about_how_many_minutes_and_the_count_moves_on_without_a_reload(
    browser, testenv, artifacts, git_repos, hubs
):
    hub = hubs("local", **{"LocalBackend.concurrency": 1})
    base = testenv["R2D_SINGLEUSER_IMAGE"]
    # One build of ~50 s teaches the queue how long builds take here; a second, longer one
    # then holds the only slot while a person launches a third.
    hub.create_user("teacher")
    assert (
        hub.spawn("teacher", {"repo": dockerfile_repo(git_repos, base, sleep=50).url, "ref": "main"}).status_code == 202
    )
    hub.wait_ready("teacher", timeout=240)
    hub.create_user("long")
    assert (
        hub.spawn("long", {"repo": dockerfile_repo(git_repos, base, sleep=180).url, "ref": "main"}).status_code == 202
    )
    next(e for e in hub.progress("long", timeout=60) if "Building your image" in e.get("message", ""))
    name = f"q{uuid.uuid4().hex[:8]}"
    page = browser.new_page()
    login(page, hub, name)
    page.goto(f"{hub.url}/hub/spawn")
    page.fill("input[name=repo]", dockerfile_repo(git_repos, base).url)
    page.fill("input[name=ref]", "main")
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url("**/spawn-pending/**", timeout=30_000)
    page.evaluate("window.r2dSameDocument = true")
    log = page.locator("#progress-log")
    log.get_by_text("Your build is next in line. About 1 min until it starts.", exact=True).wait_for(
        state="attached", timeout=30_000
    )
    page.screenshot(path=str(artifacts / "estimate.png"), full_page=True)
    # Nothing about the build changes while the long one runs on; the clock does.
    log.get_by_text("Your build is next in line. It should start within a minute.", exact=True).wait_for(
        state="attached", timeout=60_000
    )
    assert page.evaluate("window.r2dSameDocument === true"), "the page reloaded instead of updating"
    page.screenshot(path=str(artifacts / "estimate-later.png"), full_page=True)


def test_a_launch_of_a_moved_branch_offers_the_previous_version_and_the_click_starts_it(
    browser, testenv, artifacts, git_repos, hubs
):
    hub = hubs("local")
    repo = dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], marker="the previous version")
    name = f"p{uuid.uuid4().hex[:8]}"
    assert hub.spawn_and_follow(name, {"repo": repo.url, "ref": "main"})[1][-1].get("ready")
    hub.stop_server(name)
    repo.commit({"Dockerfile": (repo.work / "Dockerfile").read_text() + "RUN sleep 60\n", "marker.txt": "new\n"})
    page = browser.new_page()
    login(page, hub, name)
    page.goto(f"{hub.url}/hub/spawn")
    page.fill("input[name=repo]", repo.url)
    page.fill("input[name=ref]", "main")
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url("**/spawn-pending/**", timeout=30_000)
    button = page.locator("#r2d-previous-button")
    button.wait_for(state="visible", timeout=60_000)
    assert "can start now" in page.inner_text("#r2d-previous-form")
    page.screenshot(path=str(artifacts / "previous-offer.png"), full_page=True)
    clicked = time.monotonic()
    button.click()
    page.wait_for_url(f"**/user/{name}/**", timeout=120_000)
    page.locator(".jp-DirListing-item", has_text="marker.txt").wait_for(timeout=120_000)
    print(f"click -> JupyterLab of the previous version: {time.monotonic() - clicked:.1f} s")
    page.screenshot(path=str(artifacts / "previous-server.png"))
    hub.wait_ready(name)
    assert hub.user_file(name, "marker.txt") == "the previous version\n"
    hub.stop_server(name)
