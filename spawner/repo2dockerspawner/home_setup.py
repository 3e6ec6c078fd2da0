"""The repository in a persistent home: DockerSpawner's create, then the volumes made usable.

When a volume holds the home, the image's files under it are hidden by the volume, and the
repository with them. So each launch copies the repository into `~/<repository>` (never
overwriting a file there) in a helper container running as the server's user, and JupyterLab
opens that folder. A volume this launch created is given to that user first, in the one helper
that needs root, which runs the admin's trusted image, never the launched one.
"""

from __future__ import annotations

import inspect
from typing import Any

import docker.errors

from .helpers import ServerPolicy, UserIds, image_passwd, resolve_user, run_helper
from .homes import VOLUME_IN_HELPER, CopyPlan, OwnerFix, landing_url, owner_fix, plan_copy, server_mounts


class HomeSetupMixin:
    """DockerSpawner hooks (`create_object`, `get_env`) for the repository in a persistent home.

    Reads of the spawner: `_build_state` (the launched repository), `_configured_image`,
    `helper_image`, `helper_timeout` and DockerSpawner's own settings."""

    _landing: dict[str, str]  # JUPYTERHUB_ROOT_DIR / _DEFAULT_URL of this launch

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env.update(self._landing)
        return env

    async def create_object(self) -> Any:
        """DockerSpawner's create (which fills a new volume from the image, as Docker does),
        then the volumes made usable: new ones inside the home given to the user, and, when a
        volume holds the home, the repository's files copied into it."""
        if not self._build_state.get("repo"):
            return await super().create_object()
        config = (await self.docker("inspect_image", self.image))["Config"]
        mounted = server_mounts(self.volume_binds, self.mount_binds)
        new = [m for m in mounted if not m.source.startswith("/") and not await self._volume_exists(m.source)]
        plan = plan_copy(config, mounted, self._build_state["repo"])
        if plan is not None:
            self._land_in(plan)
        created = await super().create_object()
        ids = await self._server_ids(config)
        fix = owner_fix(config, new, ids.uid, ids.gid) if ids is not None else None
        if fix is not None:
            await self._give_to_user(fix)
        if plan is None or ids is None:
            return created
        if ids.root:
            self.log.warning(
                "%s: %s is not copied into the home: its server runs as root, and helpers never run "
                "a launched image as root",
                self._log_name,
                plan.repo_url,
            )
            return created
        chosen = await self.copy_repository(plan, ids)
        if chosen is not None and chosen != plan.name:
            # The folder named after the repository holds other files: the copy went to the
            # other name, and the server must open that one (its environment is set at create).
            self._land_in(plan, chosen)
            await self.docker("remove_container", created["Id"], v=True, force=True)
            created = await super().create_object()
        return created

    async def _volume_exists(self, name: str) -> bool:
        try:
            await self.docker("inspect_volume", name)
            return True
        except docker.errors.NotFound:
            return False

    async def _server_ids(self, image_config: dict[str, Any]) -> UserIds | None:
        """The uid and gid the server runs as: the admin's `extra_create_kwargs["user"]`, else
        the image's USER, resolved as Docker resolves it (the image's /etc/passwd, read
        without running the image). None when the image does not know the user."""
        extra = self._eval_if_callable(self.extra_create_kwargs)
        if inspect.isawaitable(extra):
            extra = await extra
        spec = str((extra or {}).get("user") or image_config.get("User") or "")
        uid, _, gid = spec.partition(":")
        numbers = uid.isdigit() and gid.isdigit()  # anything else is looked up as Docker would
        ids = resolve_user(spec, {} if numbers else await image_passwd(self.docker, self.image))
        if ids is None:
            self.log.warning(
                "%s: the image %s has no user %r; its volumes are left as they are", self._log_name, self.image, spec
            )
        return ids

    def _land_in(self, plan: CopyPlan, chosen: str | None = None) -> None:
        """Open JupyterLab in the copied folder, with the home as its root (unless the admin
        chose either): buildpack images start in their repository directory otherwise."""
        root = self.format_string(self.notebook_dir) if self.notebook_dir else plan.parent
        self._landing = {} if self.notebook_dir else {"JUPYTERHUB_ROOT_DIR": root}
        url = landing_url(plan.folder(chosen), root)
        if url and not self.default_url:
            self._landing["JUPYTERHUB_DEFAULT_URL"] = url

    async def _give_to_user(self, fix: OwnerFix) -> None:
        """The one step that needs root: in the trusted helper image, never the launched one."""
        exit_code, output = await self.run_helper(
            "owner",
            fix.helper_command(),
            fix.helper_binds(),
            UserIds(0, 0),
            image=self.helper_image or self._configured_image,
            privileged_step=True,
        )
        if exit_code != 0:
            self.log.warning(
                "%s: could not give the new volumes %s to %s (exit %s): %s",
                self._log_name,
                [m.source for m in fix.volumes],
                fix.owner,
                exit_code,
                output.strip()[-500:],
            )

    async def copy_repository(self, plan: CopyPlan, ids: UserIds) -> str | None:
        """Copy the repository into the volume, as the server's user; return the folder the
        copy chose (None if it copied nothing). A failed copy is logged and the server starts
        anyway: the repository is still in the image, at its directory."""
        exit_code, output = await self.run_helper(
            "copy", plan.helper_command(), {plan.mount.source: VOLUME_IN_HELPER}, ids, image=self.image
        )
        if exit_code != 0:
            self.log.warning(
                "%s: copying %s into the home failed (exit %s): %s",
                self._log_name,
                plan.repo_url,
                exit_code,
                output.strip()[-500:],
            )
            return None
        into = [line for line in output.splitlines() if line.startswith("r2d-copy: into ")]
        if not into:
            return None
        chosen = into[-1].rsplit("/", 1)[-1]
        self.log.info("%s: %s copied into %s", self._log_name, plan.repo_url, plan.folder(chosen))
        return chosen

    async def run_helper(
        self,
        role: str,
        argv: list[str],
        binds: dict[str, str],
        user: UserIds,
        *,
        image: str,
        privileged_step: bool = False,
    ) -> tuple[int, str]:
        """Run `argv` in a short-lived helper container (helpers.py) under this server's
        container policy, without network, with `binds` ({volume: path})."""
        if user.root and not privileged_step:
            raise ValueError("a helper of the launched image never runs as root")
        extra = self._eval_if_callable(self.extra_host_config)
        if inspect.isawaitable(extra):
            extra = await extra
        policy = ServerPolicy(
            extra_host_config=self._render_templates(extra or {}),
            mem_limit=self.mem_limit,
            cpu_limit=self.cpu_limit,
            timeout=self.helper_timeout,
        )
        return await run_helper(
            self.docker,
            self.client,
            name=f"{self.container_name}-{role}",
            image=image,
            argv=argv,
            binds=binds,
            user=user,
            policy=policy,
            role=role,
            privileged_step=privileged_step,
        )
