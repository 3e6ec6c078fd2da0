"""The CRD in crds/ and the Python contract must agree (pure logic: the YAML is read, not applied)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repo2docker_buildcore import contract

pytestmark = pytest.mark.unit

CRD = yaml.safe_load((Path(__file__).resolve().parent.parent / "crds" / "repo2dockerbuilds.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SPEC = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]
STATUS = VERSION["schema"]["openAPIV3Schema"]["properties"]["status"]


def test_names_match_the_contract():
    assert CRD["metadata"]["name"] == contract.CRD_NAME
    assert CRD["spec"]["group"] == contract.GROUP
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (contract.KIND, contract.PLURAL, contract.SINGULAR)
    assert tuple(names["shortNames"]) == contract.SHORT_NAMES
    assert tuple(names["categories"]) == contract.CATEGORIES
    assert VERSION["name"] == contract.VERSION and VERSION["subresources"] == {"status": {}}


def test_phases_and_patterns_match_the_contract():
    assert STATUS["properties"]["phase"]["enum"] == [p.value for p in contract.Phase]
    props = SPEC["properties"]
    assert props["repoUrl"]["pattern"] == contract.URL_PATTERN
    assert props["ref"]["pattern"] == contract.REF_PATTERN
    assert props["commit"]["pattern"] == contract.SHA_PATTERN
    assert props["image"]["pattern"] == contract.IMAGE_PATTERN == props["buildImage"]["pattern"]
    assert props["resources"]["properties"]["memory"]["pattern"] == contract.QUANTITY_PATTERN
    assert props["repoUrl"]["maxLength"] == contract.MAX_URL_LENGTH
    assert props["ref"]["maxLength"] == contract.MAX_REF_LENGTH
    assert props["repoDir"]["pattern"] == contract.REPO_DIR_PATTERN
    assert props["repoDir"]["maxLength"] == contract.MAX_REPO_DIR_LENGTH


def test_spec_fields_are_the_ones_buildspec_writes():
    spec = contract.BuildSpec(
        "https://h/a/b", "main", "a" * 40, "r2d-x:1", "b/c:1", 10, 1.0, "/srv/repo", True
    ).to_spec()
    assert spec["userCredentials"] is True and SPEC["properties"]["userCredentials"]["type"] == "boolean"
    assert set(spec) <= set(SPEC["properties"])
    assert set(SPEC["required"]) <= set(spec)


def test_printer_columns():
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    default = [name for name, c in columns.items() if not c.get("priority")]
    assert default == ["Repo", "Commit", "Phase", "Image", "Node", "Age"]
    assert columns["Node"]["jsonPath"] == ".status.builder"
    # -o wide: what made the image
    assert columns["Repo2docker"]["jsonPath"] == ".status.provenance.repo2dockerVersion"
    assert columns["Duration"]["jsonPath"] == ".status.provenance.durationSeconds"


def test_the_schema_declares_every_provenance_field():
    declared = STATUS["properties"]["provenance"]["properties"]
    assert tuple(declared) == contract.PROVENANCE_FIELDS
    assert declared["durationSeconds"]["type"] == "number"
    assert all(declared[f]["type"] == "string" for f in contract.PROVENANCE_FIELDS if f != "durationSeconds")


def test_the_operators_watch_selects_on_a_field_only_the_operator_writes():
    from repo2docker_buildcore.resources import FINISHED_SELECTOR, UNFINISHED_SELECTOR

    assert VERSION["selectableFields"] == [{"jsonPath": f".status.{contract.STATUS_FINISHED_AT}"}]
    assert STATUS["properties"][contract.STATUS_FINISHED_AT]["type"] == "integer"
    assert UNFINISHED_SELECTOR == "status.finishedAt=" and FINISHED_SELECTOR == "status.finishedAt!="
    assert "must be exactly the image derived from repoUrl" in SPEC["properties"]["image"]["description"]
