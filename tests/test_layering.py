"""The build core stands alone: the hub imports it (and the spawner) without kopf, and the
spawner never reaches into the operator package (pure logic, a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import modgraph

pytestmark = pytest.mark.unit

CHECK = """
import sys
sys.modules["kopf"] = None  # any `import kopf` now fails
import repo2docker_buildcore.build, repo2docker_buildcore.contract, repo2docker_buildcore.logtail
import repo2docker_buildcore.queue, repo2docker_buildcore.resources, repo2docker_buildcore.runner
import repo2docker_buildcore.status, repo2docker_buildcore.versions
import repo2dockerspawner, repo2dockerspawner.backends.local, repo2dockerspawner.backends.kubernetes
print(sorted(m for m in sys.modules if m.startswith("repo2docker_operator")))
"""


def test_core_and_spawner_import_without_kopf_or_the_operator_package():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", "the spawner imported the operator package: " + out.stdout


GENERATED_CLIENTS = ("kubernetes_asyncio", "kubernetes", "pykube")
WEIGHT = """
import sys
import repo2docker_operator.handlers, repo2dockerspawner.backends.kubernetes
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
"""


def test_neither_the_operator_nor_the_hub_loads_a_generated_kubernetes_client():
    """kubeapi.py talks to the API server; a generated client (and kopf imports one whenever it
    is installed) loads ~700 model classes: 34 MB of the operator's resident memory and 0.7 s
    of each start. This fails if one comes back as a dependency of the project."""
    out = subprocess.run([sys.executable, "-c", WEIGHT, *GENERATED_CLIENTS], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", "a generated Kubernetes client was imported: " + out.stdout


# The spawner package's layers, lowest first: a module imports from its own layer or below,
# never above. A new module fails `test_every_spawner_module_has_a_layer` until it is placed.
SPAWNER_LAYERS: tuple[tuple[str, ...], ...] = (
    # the parts: requests, lookups, credentials, homes, backends, pure helpers
    (
        "backends",
        "backends.base",
        "backends.images",
        "backends.kubernetes",
        "backends.local",
        "backends.records",
        "backends.shared",
        "backends.traits",
        "backends.watcher",
        "credentials",
        "errors",
        "helpers",
        "homes",
        "hosts",
        "hubcheck",
        "hublog",
        "humanize",
        "options",
        "prebuilds",
        "refs",
        "servicename",
        "webhooks",
    ),
    # one start of one server
    ("form", "progress", "home_setup", "launch"),
    # the per-user class
    ("spawner",),
    # hub-wide: imported from jupyterhub_config.py only
    (
        "hub",
        "hub.bridge",
        "hub.prebuilder",
        "hub.services",
        "hub.settings",
        "hub.wire",
        "buildspage",
    ),
    # the hub service's process: only SERVICE_IMPORTS below it (test_the_service_stays_light)
    ("hubservice", "hubservice.__main__", "hubservice.app", "hubservice.client", "hubservice.views"),
    # the package's front door
    ("",),
)
PACKAGE_ORDER = ("repo2docker_buildcore", "repo2docker_operator", "repo2dockerspawner")


def layer_of(module: str) -> int:
    short = module.removeprefix("repo2dockerspawner").removeprefix(".")
    for rank, names in enumerate(SPAWNER_LAYERS):
        if short in names:
            return rank
    raise KeyError(module)


def test_no_module_of_the_three_packages_imports_itself_in_a_circle():
    """Imports inside functions and under TYPE_CHECKING count: they hide a cycle from Python,
    not from a reader (modgraph.py)."""
    assert modgraph.cycles(modgraph.graph()) == []


def test_a_cycle_is_found_where_there_is_one():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert modgraph.cycles(edges) == [["a", "b", "c"]]


def test_every_spawner_module_has_a_layer():
    for module in modgraph.graph():
        if module.startswith("repo2dockerspawner"):
            layer_of(module)


def test_no_import_goes_up_a_layer():
    """Within the spawner, by SPAWNER_LAYERS; between packages: the build core imports neither
    the operator nor the spawner, and the operator and the spawner (the hub) never meet."""
    upward = []
    for module, targets in modgraph.graph().items():
        package = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != package:
                if other != "repo2docker_buildcore":
                    upward.append(f"{module} -> {target}")
            elif package == "repo2dockerspawner" and layer_of(target) > layer_of(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


# What the hub service's process may import of the package: no spawner, no backends, no hub.
SERVICE_IMPORTS = {"repo2dockerspawner", "repo2dockerspawner.humanize", "repo2dockerspawner.servicename"}


def test_the_service_imports_nothing_of_the_spawner():
    edges = modgraph.graph()
    for module, targets in edges.items():
        if module.startswith("repo2dockerspawner.hubservice"):
            outside = {t for t in targets if not t.startswith("repo2dockerspawner.hubservice")}
            assert outside <= SERVICE_IMPORTS | {"repo2docker_buildcore"}, (module, outside - SERVICE_IMPORTS)


LIGHT = """
import sys, os
os.environ.update(R2D_BRIDGE_URL="http://127.0.0.1:1", R2D_BRIDGE_TOKEN="t")
import repo2dockerspawner.hubservice.__main__ as main
main.router(os.environ)
print(sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:]))
"""


def test_the_service_starts_without_the_spawner_or_jupyterhubs_database_layer():
    """It answers JupyterHub's start-up check before it loads the OAuth client (__main__.py)."""
    heavy = ("jupyterhub", "sqlalchemy", "docker", "dockerspawner", "traitlets")
    out = subprocess.run([sys.executable, "-c", LIGHT, *heavy], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
