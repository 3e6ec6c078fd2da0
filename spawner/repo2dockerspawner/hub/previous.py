"""Starting the last good image while a new commit builds (or after its build failed).

A launch of a branch that moved waits for the new commit's build. When an earlier build of
the same repository and ref succeeded and its image is still there, the pending page offers
it ("start the previous version now"), and REST clients may ask for it up front with
`user_options.previous_ok = true`. Choosing it starts the server from that image at once; the
new build goes on, for the next launch. After a failed build the same button starts a new
launch that takes the previous image.

Only the server's owner may choose (the button is a POST with the hub's XSRF token), and only
what the hub itself offered can be started: the image comes from the backend's record of a
build this hub derived, never from the request.
"""

from __future__ import annotations

import html
from typing import Any

from jupyterhub.handlers import BaseHandler
from tornado import web


class PreviousHandler(BaseHandler):
    """GET: a page that asks to confirm (for browsers without the pending page's script);
    POST: start the previous build, in the waiting launch or in a new one after a failure."""

    def _own_spawner(self, user_name: str, server_name: str) -> Any:
        current = self.current_user
        if current is None or current.name != user_name:
            raise web.HTTPError(403, "Only the server's owner can choose what it starts.")
        user = self.find_user(user_name)
        if user is None or (server_name and server_name not in user.orm_spawners):
            raise web.HTTPError(404, "There is no such server.")
        return user, user.spawners[server_name]

    @web.authenticated
    async def get(self, user_name: str, server_name: str = "") -> None:
        self._own_spawner(user_name, server_name)
        self.finish(f"""<!doctype html><title>Start the previous version</title>
<form method="post"><input type="hidden" name="_xsrf" value="{html.escape(self.xsrf_token.decode())}">
<button type="submit" id="r2d-previous-confirm">Start the previous version now</button></form>""")

    @web.authenticated
    async def post(self, user_name: str, server_name: str = "") -> None:
        user, spawner = self._own_spawner(user_name, server_name)
        pending = f"{self.hub.base_url}spawn-pending/{user.escaped_name}" + (f"/{server_name}" if server_name else "")
        if spawner.pending == "spawn":
            if not getattr(spawner, "use_previous", lambda: False)():
                raise web.HTTPError(409, "This launch has no previous version to start.")
        elif not spawner.active:
            # After a failed build: a new launch of the same repository and ref, taking the
            # previous image (the spawner checks that there is one; no image comes from here).
            options = {key: value for key, value in (spawner.user_options or {}).items() if key in ("repo", "ref")}
            if not options.get("repo"):
                raise web.HTTPError(409, "There is no launch to start a previous version of.")
            await self.spawn_single_user(user, server_name, options={**options, "previous_ok": True})
        self.redirect(pending)


ROUTES = [(r"/repo2docker/previous/([^/]+)/?([^/]*)", PreviousHandler)]
