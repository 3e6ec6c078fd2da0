# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Everything slow (Go builds, images, wheels) is cached outside the repo in
# $(R2D_CACHE) (default ~/.cache/repo2dockerspawner), so a warm run is quick.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
OPERATOR_IMAGE ?= repo2docker-operator:dev
include testenv/versions.env

.PHONY: help install demo demo-kubernetes testenv testenv-down lint docs test test-unit test-integration operator-image bench clean

help:
	@echo "make demo          a working hub on http://127.0.0.1:8000 (local builds; DEMO_BACKEND=kubernetes for the operator)"
	@echo "make test          bring up the real test environment and run every test tier"
	@echo "make test-unit     pure-logic tests only (no daemons)"
	@echo "make docs          the documentation site in docs/_build/html, warnings as errors (part of make test)"
	@echo "make lint          ruff: the lint rules and the formatting pyproject.toml sets (part of make test)"
	@echo "make testenv       start docker, kube-apiserver+etcd, git server; build images (idempotent)"
	@echo "make testenv-down  stop what 'make testenv' started (images and caches stay)"

# The project and its test dependencies in a virtualenv; reinstalled when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "ERROR: '$(PYTHON) -m venv' failed: install python3-venv"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' "jupyterhub==$(JUPYTERHUB_VERSION)"
	@touch $@

install: $(VENV)/.installed

demo: install
	@bash demo/run.sh

demo-kubernetes: install
	@DEMO_BACKEND=kubernetes bash demo/run.sh

# The rules and the format in pyproject.toml ([tool.ruff]); `ruff format .` and
# `ruff check --fix .` mend most of what this reports.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The site (Sphinx + MyST); the reference pages are generated from the code at each build.
# Warnings are errors: a broken link or a setting without help fails it.
docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

testenv:
	@bash testenv/up.sh

testenv-down:
	@bash testenv/down.sh

# Every tier, in two phases: tests whose effects stay in their own namespace, instance label
# and ports run in parallel workers (most of their time is builds and servers they wait for);
# tests that act on or measure a whole daemon (`serial`: restarting dockerd, collecting images
# by its totals, counting the API server's watches) run alone afterwards. Both run whatever
# the other gives; either failing fails.
# A phase that PYTEST_ARGS leaves empty (pytest's exit code 5) is no failure.
# Workers take one test at a time, longest tiers first (conftest.py), so none is left
# holding a queue of slow tests while the others idle.
TEST_WORKERS ?= 4
test: install lint docs testenv
	@status=0; \
	$(VENV)/bin/pytest -m "not serial" -n $(TEST_WORKERS) --dist load --maxschedchunk 1 \
	  --junitxml=test-artifacts/junit-parallel.xml $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	$(VENV)/bin/pytest -m serial --junitxml=test-artifacts/junit-serial.xml $(PYTEST_ARGS) \
	  || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	exit $$status

test-unit: install
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

test-integration: install testenv
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build

operator-image: install
	tools/operator-image.sh $(OPERATOR_IMAGE)

bench: install testenv
	$(PY) bench/table.py
	$(PY) bench/push_pull.py
	$(PY) bench/home_copy.py
