"""A person in Debian's Chromium: log in, fill in the form, watch the build on the
spawn-pending page, end up on their server. Screenshots land in the test's tmp dir."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from support.builds import dockerfile_repo
from support.hub import start_hub, stop_hub

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(testenv, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=testenv["R2D_CHROMIUM"], headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield browser
        browser.close()


def login(page, hub, name: str) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url("**/hub/**")


def test_form_pending_page_shows_the_build_log_then_the_server(
        request, browser, testenv, tmp_path, docker_client, git_repos):
    hub = start_hub(request, "local", testenv, tmp_path, docker_client)
    try:
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
        page.screenshot(path=str(tmp_path / "refused-form.png"), full_page=True)

        page.fill("input[name=repo]", repo.url)
        page.fill("input[name=ref]", "main")
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url("**/spawn-pending/**", timeout=30_000)
        log = page.locator("#progress-log")
        # The build log is open without a click (JupyterHub closes it by default).
        page.wait_for_function("document.getElementById('progress-details').open === true", timeout=30_000)
        # The newest repo2docker (the default build image) builds with BuildKit: its plain
        # progress arrives as readable lines, ending with the image being named.
        log.get_by_text("naming to", exact=False).wait_for(state="attached", timeout=120_000)
        page.screenshot(path=str(tmp_path / "pending.png"), full_page=True)
        assert log.is_visible()
        lines = log.locator(".progress-log-event").all_text_contents()
        assert any(re.match(r"^\[1/\d+\] FROM ", line) for line in lines), lines
        assert not any(line.startswith("#") for line in lines), lines  # no raw BuildKit vertex lines
        assert any("Building your image" in line for line in lines), lines

        page.wait_for_url(f"**/user/{name}/**", timeout=120_000)
        # JupyterLab from the built image lists the repository's files.
        page.locator(".jp-DirListing-item", has_text="marker.txt").wait_for(timeout=120_000)
        page.screenshot(path=str(tmp_path / "server.png"))
        hub.wait_ready(name)
        assert hub.user_file(name, "marker.txt") == "seen in a browser\n"
        hub.stop_server(name)
    finally:
        stop_hub(hub, docker_client)


def test_a_failed_builds_last_lines_are_visible_on_the_pending_page(
        request, browser, testenv, tmp_path, docker_client, git_repos):
    hub = start_hub(request, "local", testenv, tmp_path, docker_client)
    try:
        token = uuid.uuid4().hex[:8]
        repo = git_repos.create({"Dockerfile": f"FROM {testenv['R2D_SINGLEUSER_IMAGE']}\n"
                                 f"RUN echo 'the reason it broke {token}' && exit 3\n"})
        name = f"f{uuid.uuid4().hex[:8]}"
        page = browser.new_page()
        login(page, hub, name)
        page.goto(f"{hub.url}/hub/spawn?repo={repo.url}&ref=main")
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
                        return log.scrollHeight - log.scrollTop - log.clientHeight < 80; })()""")
        page.screenshot(path=str(tmp_path / "failed-build.png"), full_page=True)
    finally:
        stop_hub(hub, docker_client)


def test_admin_builds_page_lists_running_and_queued_builds_shows_a_live_log_and_cancels(
        request, browser, testenv, tmp_path, docker_client, git_repos):
    from repo2docker_buildcore import contract
    from support.builds import head
    from support.hub import ADMIN

    hub = start_hub(request, "local", testenv, tmp_path, docker_client)  # two build slots
    try:
        repos = [dockerfile_repo(git_repos, testenv["R2D_SINGLEUSER_IMAGE"], sleep=90) for _ in range(3)]
        for i, repo in enumerate(repos):
            hub.create_user(f"u{i}")
            assert hub.spawn(f"u{i}", {"repo": repo.url, "ref": "main"}).status_code == 202
        page = browser.new_page()
        login(page, hub, ADMIN)

        ours = [contract.build_name(r.url, head(r)) for r in repos]

        def phases() -> list[str]:  # of these three builds (the page also lists earlier tests' images)
            page.goto(f"{hub.url}/hub/builds")
            rows = page.locator("tr.r2d-build").evaluate_all("rows => rows.map(r => [r.dataset.name, r.dataset.phase])")
            return sorted(phase for name, phase in rows if name in ours)
        deadline = 120
        while phases() != ["Building", "Building", "Queued"] and deadline > 0:
            page.wait_for_timeout(1000)
            deadline -= 1
        assert phases() == ["Building", "Building", "Queued"]
        page.screenshot(path=str(tmp_path / "builds.png"), full_page=True)

        running = next(r for r in repos if page.locator(f"tr.r2d-build[data-phase=Building] a", has_text=r.url).count())
        name = contract.build_name(running.url, head(running))
        page.click(f"tr.r2d-build[data-name='{name}'] a")
        log = page.locator("#r2d-log")
        log.get_by_text("build-", exact=False).wait_for(timeout=60_000)  # the build's own output, live
        page.screenshot(path=str(tmp_path / "build-live-log.png"), full_page=True)

        label = f"repo2dockerspawner.jupyter.org/build-name={name}"
        assert docker_client.containers.list(filters={"label": label})
        page.click("#r2d-cancel")
        page.locator("#r2d-message").wait_for(timeout=30_000)
        started = time.monotonic()
        while docker_client.containers.list(filters={"label": label}) and time.monotonic() - started < 30:
            time.sleep(0.2)
        assert not docker_client.containers.list(filters={"label": label}), "the build container still runs"
        assert page.locator("#r2d-phase").inner_text() == "Cancelled"
        page.screenshot(path=str(tmp_path / "build-cancelled.png"), full_page=True)
        # Its slot went to the queued build.
        deadline = 60
        while phases().count("Building") != 2 and deadline > 0:
            page.wait_for_timeout(1000)
            deadline -= 1
        assert phases().count("Building") == 2 and "Queued" not in phases()
    finally:
        stop_hub(hub, docker_client)
