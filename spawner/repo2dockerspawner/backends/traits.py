"""Hub-side traits made from the build settings table, and the older names that still work.

`LocalBackend.concurrency` is the operator's `--concurrency` and the chart's
`build.concurrency`: one row of `repo2docker_buildcore.settings`, so its type, default and
help cannot drift apart. Names from earlier releases (the spawner's own first names, and
LocalBackend's before the table) are moved to the current ones before a backend is made,
with one deprecation line each.
"""

from __future__ import annotations

import logging
from typing import Any

from traitlets import Bool, Dict, Float, Int, List, TraitType, Unicode
from traitlets.config import Config, Configurable

from repo2docker_buildcore.settings import ENV, HUB_SETTINGS, setting

log = logging.getLogger(__name__)


def hub_trait(name: str) -> TraitType:
    """The trait for a hub-side row of the settings table (config=True)."""
    row = setting(name)
    if not row.hub:
        raise ValueError(f"{name} is not a hub setting: {row.no_hub}")
    default, help_text = row.hub_value, row.help[:1].upper() + row.help[1:] + "."
    if row.kind == ENV:
        return Dict(Unicode(), default_value=dict(default), config=True, help=help_text)
    if row.kind is tuple:
        return List(Unicode(), default_value=list(default), config=True, help=help_text)
    make = {str: Unicode, int: Int, float: Float, bool: Bool}[row.kind]
    return make(default, allow_none=row.optional, config=True, help=help_text)


# Names of earlier releases: (section, name) -> (section, current name).
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("Repo2DockerSpawner", "build_image"): ("LocalBackend", "build_image"),
    ("Repo2DockerSpawner", "concurrent_builds_limit"): ("LocalBackend", "concurrency"),
    ("Repo2DockerSpawner", "build_timeout"): ("LocalBackend", "build_timeout"),
    ("Repo2DockerSpawner", "build_memory_limit"): ("LocalBackend", "memory_limit"),
    ("Repo2DockerSpawner", "build_cpu_limit"): ("LocalBackend", "cpu_limit"),
    ("Repo2DockerSpawner", "build_instance"): ("LocalBackend", "instance"),
    ("Repo2DockerSpawner", "docker_socket"): ("LocalBackend", "docker_socket"),
    ("Repo2DockerSpawner", "log_tail_lines"): ("LocalBackend", "tail_lines"),
    ("Repo2DockerSpawner", "namespace"): ("KubernetesBackend", "namespace"),
    ("Repo2DockerSpawner", "kubeconfig"): ("KubernetesBackend", "kubeconfig"),
    # Hub-wide settings that every user's spawner used to carry (hub/settings.py).
    ("Repo2DockerSpawner", "prebuild_repos"): ("Repo2DockerHub", "prebuild_repos"),
    ("Repo2DockerSpawner", "prebuild_interval"): ("Repo2DockerHub", "prebuild_interval"),
    ("Repo2DockerSpawner", "webhook_secret"): ("Repo2DockerHub", "webhook_secret"),
    # LocalBackend's own names before the settings table (the table lists them).
    **{("LocalBackend", old): ("LocalBackend", row.name) for row in HUB_SETTINGS for old in row.old_hub_names},
}
_announced: set[tuple[str, str]] = set()
OLD_KINDS = {str: Unicode, int: Int, float: Float, list: List}
# The kinds of the current names that are not rows of the settings table.
OTHER_KINDS = {
    ("KubernetesBackend", "namespace"): str,
    ("KubernetesBackend", "kubeconfig"): str,
    ("Repo2DockerHub", "prebuild_repos"): list,
    ("Repo2DockerHub", "prebuild_interval"): float,
    ("Repo2DockerHub", "webhook_secret"): str,
}


def old_names(section: str) -> type[Configurable]:
    """A mixin with a trait for each earlier name of `section` (unset by default, typed as the
    setting it became), so that a configuration using one still loads; `current_names` moves
    its value. Made from RENAMED: a name added there is a trait here at once."""
    traits: dict[str, TraitType] = {}
    for (old_section, old), (new_section, new) in RENAMED.items():
        if old_section == section:
            kind = OTHER_KINDS.get((new_section, new)) or setting(new).kind
            traits[old] = OLD_KINDS[kind](
                default_value=None, allow_none=True, config=True, help=f"Deprecated: {new_section}.{new}."
            )
    return type(f"{section}OldNames", (Configurable,), {"__doc__": f"{section}'s earlier names.", **traits})


def current_names(config: Config, spawner_values: dict[str, Any] | None = None) -> Config:
    """A copy of `config` with every older name moved to its current one (a value set under
    the current name wins). `spawner_values`: the spawner's own old-name traits as it read
    them (they may come from any section of its class hierarchy)."""
    # A copy of each section, not of the values: the hub's configuration holds objects no copy
    # may duplicate (the handlers' hub-wide services), and names are only moved between sections.
    config = Config(
        {name: Config(dict(section)) if isinstance(section, Config) else section for name, section in config.items()}
    )
    found: dict[tuple[str, str], Any] = {}
    for section, old in RENAMED:
        if section == "Repo2DockerSpawner" and spawner_values is not None:
            if spawner_values.get(old) is not None:
                found[section, old] = spawner_values[old]
        elif section in config and old in config[section]:
            found[section, old] = config[section].pop(old)
    for (section, old), value in found.items():
        new_section, new = RENAMED[section, old]
        if new not in config[new_section]:
            config[new_section][new] = value
        if (section, old) not in _announced:
            _announced.add((section, old))
            log.warning("%s.%s is deprecated: set %s.%s instead", section, old, new_section, new)
    return config
