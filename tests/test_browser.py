"""A person in Debian's Chromium: log in, fill in the form, watch the build on the
spawn-pending page, end up on their server. Screenshots land in the test's tmp dir."""

from __future__ import annotations

import re
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
        page.click("#spawn_form button[type=submit]")
        error = page.locator(".spawn-error-msg")
        error.wait_for(timeout=30_000)
        assert "must start with" in error.inner_text()

        page.fill("input[name=repo]", repo.url)
        page.fill("input[name=ref]", "main")
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url("**/spawn-pending/**", timeout=30_000)
        log = page.locator("#progress-log")
        # The newest repo2docker (the default build image) builds with BuildKit: its plain
        # progress arrives as readable lines, ending with the image being named.
        log.get_by_text("naming to", exact=False).wait_for(state="attached", timeout=120_000)
        page.screenshot(path=str(tmp_path / "pending.png"), full_page=True)
        lines = log.locator(".progress-log-event").all_text_contents()  # the log is a closed <details>
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
