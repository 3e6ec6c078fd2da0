"""The build core stands alone: the hub imports it (and the spawner) without kopf, and the
spawner never reaches into the operator package (pure logic, a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
