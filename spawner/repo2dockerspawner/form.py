"""The spawn form: what it shows after a refused request or a link, once.

A link (`/hub/spawn?repo=…&ref=…`) can be sent by anyone, and a launch runs the repository's
code as the user who clicked it, so a link fills in the form and says so; only the user's click
launches. A refused request (a bad URL, a ref the repository lacks) brings the form back with
what was typed and why. Each is shown once: a later visit to the form starts plain.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Mapping
from typing import Any

from tornado import web

from repo2docker_buildcore import contract

# Seconds a refused request's message waits for the form JupyterHub renders right after it.
REFUSAL_SHOWN_FOR = 60.0
LINK_NOTICE = """
<div class="alert alert-info" id="r2d-link-notice" role="status">
  <p class="mb-1">A link asks to start your server from this repository:</p>
  <p class="mb-1"><strong><code>{repo}</code></strong> at <code>{ref}</code></p>
  <p class="mb-0">Its code will run as you, with your files. Check the repository below, then
  click <strong>Start</strong> to launch it.</p>
</div>
"""

FORM_TEMPLATE = """
{notice}<div class="form-group">
  <p>Build your own environment from a git repository, as on Binder: repo2docker reads its
  <code>Dockerfile</code>, <code>environment.yml</code> or <code>requirements.txt</code>.
  Leave the repository empty to start the default image (<code>{default_image}</code>).</p>
  <label for="r2d-repo">Git repository URL</label>
  <input class="form-control{invalid}" id="r2d-repo" name="repo" type="url" value="{repo}"
         placeholder="https://github.com/org/repo" maxlength="{max_url}" autofocus
         aria-describedby="r2d-form-error">
  <label for="r2d-ref">Branch, tag or commit</label>
  <input class="form-control{invalid}" id="r2d-ref" name="ref" type="text" value="{ref}"
         placeholder="{default_ref}" maxlength="{max_ref}" aria-describedby="r2d-form-error">
  {error}
  <p class="help-block">The first start of a new commit builds an image, which can take a few
  minutes; the build log is shown while you wait. Later starts of the same commit reuse it.</p>
</div>
"""


class LinkOpensForm(Exception):
    """Raised from `options_from_query` so that JupyterHub shows the form (filled in) instead
    of launching: a link can be sent by anyone, and a launch runs the repository's code as the
    user who clicked it. Both messages are None, so JupyterHub shows no error box."""

    jupyterhub_message = None
    jupyterhub_html_message = None


class _LinkFormLog(logging.Filter):
    """JupyterHub logs any exception from `options_from_query` as a failed spawn with a
    traceback. For LinkOpensForm that is the intended path: one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], LinkOpensForm):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "A link to the spawn page opened the form (filled in); nothing was launched.",
                (),
                None,
                None,
            )
        return True


_LINK_FORM_LOG = _LinkFormLog()


def quiet_link_log(handler: Any) -> None:
    """Make JupyterHub's SpawnHandler (which logs what options_from_query raises) log an opened
    form as one INFO line."""
    if handler is not None and _LINK_FORM_LOG not in handler.log.filters:
        handler.log.addFilter(_LINK_FORM_LOG)


def refusal_message(exc: web.HTTPError) -> str:
    return getattr(exc, "jupyterhub_message", None) or exc.log_message or str(exc)


class LaunchForm:
    """One server's form state between a request and the form JupyterHub renders after it."""

    def __init__(self) -> None:
        self.refused: dict[str, str] | None = None  # the fields as typed, and "error"
        self.refused_at = 0.0
        self.link: dict[str, str] | None = None  # what the link being shown asked for

    def remember_refusal(self, typed: Mapping[str, Any], exc: web.HTTPError) -> None:
        """For the form JupyterHub renders again after a refusal: the fields as typed, the reason."""
        self.refused = {key: str(typed.get(key) or "")[: contract.MAX_URL_LENGTH] for key in ("repo", "ref")}
        self.refused["error"] = refusal_message(exc)
        self.refused_at = time.monotonic()

    def take_refusal(self) -> dict[str, str] | None:
        """The refusal the form is being rendered for, once. An older one (of a REST request,
        which renders no form) is not this form's."""
        refused, self.refused = self.refused, None
        return refused if refused and time.monotonic() - self.refused_at < REFUSAL_SHOWN_FOR else None

    def render(self, user_options: Mapping[str, Any] | None, default_image: str, default_ref: str) -> str:
        """The form's HTML: after a refusal what the user typed and why it was refused; after a
        link what it asks for, with a notice saying so; else the last launch's fields."""
        refused = self.take_refusal()
        link, self.link = self.link, None
        previous = refused or link or user_options or {}
        message = (refused or {}).get("error")
        error = (
            f'<div class="invalid-feedback d-block" id="r2d-form-error" role="alert">{html.escape(message)}</div>'
            if message
            else ""
        )
        notice = LINK_NOTICE.format(repo=html.escape(link["repo"]), ref=html.escape(link["ref"])) if link else ""
        return FORM_TEMPLATE.format(
            notice=notice,
            default_image=html.escape(default_image),
            invalid=" is-invalid" if message else "",
            error=error,
            repo=html.escape(str(previous.get("repo", "")), quote=True),
            ref=html.escape(str(previous.get("ref", "")), quote=True),
            default_ref=html.escape(default_ref),
            max_url=contract.MAX_URL_LENGTH,
            max_ref=contract.MAX_REF_LENGTH,
        )
