"""Naming and validation in the shared contract (pure logic)."""

from __future__ import annotations

import re

import pytest

from repo2docker_buildcore import contract
from repo2docker_buildcore.contract import BuildSpec, BuildStatus, InvalidBuildRequest, Phase

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_build_name_is_deterministic_dns_safe_and_short():
    name = contract.build_name("https://github.com/binder-examples/requirements", SHA)
    assert name == contract.build_name("https://github.com/binder-examples/requirements", SHA)
    assert name.startswith("binder-examples-requirements-0123456-")
    assert DNS1123.match(name) and len(name) <= 63


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/" + "x" * 300,
        "https://example.org/UPPER/Case_Repo.git",
        "git://host:9418/---/___",
        "ssh://git@example.org/a/b",
        "https://example.org/",
    ],
)
def test_build_name_stays_valid_for_awkward_urls(url):
    name = contract.build_name(url, SHA)
    assert DNS1123.match(name) and len(name) <= 63, name


def test_equivalent_urls_meet_and_different_ones_do_not():
    same = {
        contract.build_name(u, SHA)
        for u in (
            "https://github.com/a/b",
            "https://github.com/a/b/",
            "https://github.com/a/b.git",
            "HTTPS://GitHub.com/a/b",
        )
    }
    assert len(same) == 1
    # Same slug on two hosts, or another commit: different resources.
    assert contract.build_name("https://gitlab.com/a/b", SHA) not in same
    assert contract.build_name("https://github.com/a/b", "f" * 40) not in same


def test_image_name_is_valid_and_tagged_with_the_commit():
    image = contract.image_name("registry.example.org:5000/binder/r2d-", "https://github.com/a/Some.Repo", SHA)
    assert image.endswith(":" + SHA)
    assert image.startswith("registry.example.org:5000/binder/r2d-a-some-repo-")
    assert contract.validate_image(image) == image
    assert contract.image_name("r2d-", "https://github.com/a/b.git", SHA) == contract.image_name(
        "r2d-", "https://github.com/a/b", SHA
    )


@pytest.mark.parametrize("prefix", ["UPPER-", "a b", "-x", "x//y", "", "r2d-\n"])
def test_bad_image_prefixes_are_refused(prefix):
    with pytest.raises(InvalidBuildRequest):
        contract.image_name(prefix, "https://github.com/a/b", SHA)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "file:///etc/passwd",
        "github.com/a/b",
        "https://",
        "https://host/a b",
        "https://host/a;$(touch x)`",
        "-uhttps://x/y",
        "https://host/a?x=1",
        "https://user:token@github.com/a/b",
        "ext::sh -c touch% /tmp/pwned",
        "https://" + "a" * 3000,
        "https://github.com/a/b\n",
        "https://github.com]/x",
        "https://[::1/x",
        "https://host:99999/x",
        "https://host:-1/x",
    ],
)
def test_bad_repo_urls_are_refused(url):
    with pytest.raises(InvalidBuildRequest):
        contract.validate_repo_url(url)


@pytest.mark.parametrize(
    "url",
    [
        # The first pass's attack: git resolves dot-segments before it sends the request, the
        # hub's pattern match and names did not ('trusted-x/../other' fetched 'other').
        "http://172.30.0.1:8080/trusted-x/../other.git",
        "http://172.30.0.1:8080/trusted-x/./../other.git",
        "https://h/a/./b",
        "https://h/a/..",
        "https://h/.",
        "https://h//a",
        "https://h/a//b",
        "https://h/trusted-x/%2e%2e/other",
        "https://h/trusted-x/%2E./other",
        "https://h/a%2fb",
        "https://h/a%2Fb",
        "https://h/a%5cb",
        "https://h/a\\b",
        "https://h/a%00b",
        "https://h/a%0ab",
        "https://h/a%7f",
        "https://h/a%zz",
        "https://h/a\tb",
        "https://user@h/a",
        "ssh://git:pw@h/r",
        "https://h./a",
        "https://h..x/a",
        "https://h/a#frag",
    ],
)
def test_every_second_spelling_of_a_path_is_refused(url):
    with pytest.raises(InvalidBuildRequest):
        contract.validate_repo_url(url)
    # ... by the CRD's own pattern too, so the operator's API server refuses the resource.
    assert not re.fullmatch(contract.URL_PATTERN, url)


@pytest.mark.parametrize(
    "url, canonical",
    [
        ("https://github.com/a/b", "https://github.com/a/b"),
        ("http://172.17.0.1:18080/r.git", "http://172.17.0.1:18080/r.git"),
        ("git://h/r", "git://h/r"),
        ("ssh://git@h:22/r.git", "ssh://git@h/r.git"),
        ("HTTPS://GitHub.COM:443/Org/Repo.git/", "https://github.com/Org/Repo.git"),
        ("https://h/%61b%c3%a9", "https://h/ab%C3%A9"),
        ("https://h/a...b/...", "https://h/a...b/..."),
    ],
)
def test_good_repo_urls_pass_in_one_canonical_spelling(url, canonical):
    assert contract.validate_repo_url(url) == canonical
    assert re.fullmatch(contract.URL_PATTERN, canonical)
    assert contract.build_name(url, SHA) == contract.build_name(canonical, SHA)


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "-n",
        "--upload-pack=x",
        "/abs",
        "a..b",
        "a b",
        "x;rm",
        "a.lock",
        "ref/",
        "$(x)",
        "x" * 300,
        "main\n",
        "main\r",
    ],
)
def test_bad_refs_are_refused(ref):
    with pytest.raises(InvalidBuildRequest):
        contract.validate_ref(ref)


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/x-y_z", SHA, "HEAD", "release+1"])
def test_good_refs_pass(ref):
    assert contract.validate_ref(ref) == ref


def test_spec_round_trip_and_quantities():
    spec = BuildSpec.from_spec(
        {
            "repoUrl": "https://h/a/b",
            "ref": "main",
            "commit": SHA,
            "image": "r2d-x:1",
            "resources": {"memory": "2Gi", "cpu": 1.5},
        }
    )
    assert spec.memory_limit == 2 * 2**30 and spec.cpu_limit == 1.5
    assert BuildSpec.from_spec(spec.to_spec()) == spec
    assert contract.parse_quantity("512M") == 512 * 10**6
    with pytest.raises(InvalidBuildRequest):
        contract.parse_quantity("lots")
    with pytest.raises(InvalidBuildRequest):
        BuildSpec.from_spec({**spec.to_spec(), "resources": {"cpu": -1}})


def test_manifest_is_the_whole_resource_named_by_the_naming_function():
    spec = BuildSpec("https://h/a/b", "main", SHA, "r2d-x:1", memory_limit=2**30)
    assert contract.build_manifest(spec, "ns", requested_by="alice") == {
        "apiVersion": "repo2dockerspawner.jupyter.org/v1alpha1",
        "kind": "Repo2DockerBuild",
        "metadata": {
            "name": contract.build_name("https://h/a/b", SHA),
            "namespace": "ns",
            "labels": {
                "repo2dockerspawner.jupyter.org/repo-hash": contract.repo_hash("https://h/a/b"),
                "repo2dockerspawner.jupyter.org/commit": SHA,
            },
            "annotations": {"repo2dockerspawner.jupyter.org/requested-by": "alice"},
        },
        "spec": {
            "repoUrl": "https://h/a/b",
            "ref": "main",
            "commit": SHA,
            "image": "r2d-x:1",
            "resources": {"memory": str(2**30)},
        },
    }
    assert "annotations" not in contract.build_manifest(spec, "ns")["metadata"]


def test_status_new_lines_gives_each_line_once():
    status = BuildStatus.from_status({"phase": "Building", "logTail": ["c", "d", "e"], "logLineCount": 5})
    assert status.new_lines(0) == ["c", "d", "e"]  # a and b fell out of the tail
    assert status.new_lines(3) == ["d", "e"]
    assert status.new_lines(5) == []
    assert BuildStatus.from_status({"phase": "Bogus"}).phase == Phase.PENDING
    assert Phase.FAILED.terminal and not Phase.QUEUED.terminal


def test_validation_is_of_the_whole_value():
    """Python's `$` also matches before a final newline: every check is a full match."""
    for check, value in (
        (contract.validate_commit, SHA + "\n"),
        (contract.validate_image, "r2d-x:1\n"),
        (contract.validate_image_prefix, "r2d-\n"),
        (contract.parse_quantity, "1Gi\n"),
    ):
        with pytest.raises(InvalidBuildRequest):
            check(value)


def test_the_image_a_spec_may_produce_is_derived_from_its_own_repository_and_commit():
    theirs = contract.image_name("r2d-", "https://github.com/victim/course", SHA)
    mine = BuildSpec("https://github.com/attacker/x", "main", SHA, theirs)
    with pytest.raises(InvalidBuildRequest) as info:
        contract.check_image_of(mine, "r2d-")
    expected = contract.image_name("r2d-", "https://github.com/attacker/x", SHA)
    assert expected in str(info.value)
    honest = BuildSpec("https://github.com/attacker/x.git", "main", SHA, expected)
    assert contract.check_image_of(honest, "r2d-") is honest
    with pytest.raises(InvalidBuildRequest):  # the right name under another prefix
        contract.check_image_of(BuildSpec(honest.repo_url, "main", SHA, "other-" + expected[4:]), "r2d-")


def test_a_build_is_the_same_build_when_its_identity_matches():
    ours = BuildSpec("https://github.com/a/b", "main", SHA, contract.image_name("r2d-", "https://github.com/a/b", SHA))
    assert contract.same_build(ours, BuildSpec("HTTPS://github.com/a/b.git", "v1", SHA, ours.image))
    for other in (
        BuildSpec("https://github.com/a/c", "main", SHA, ours.image),
        BuildSpec(ours.repo_url, "main", "f" * 40, ours.image),
        BuildSpec(ours.repo_url, "main", SHA, "r2d-elsewhere:1"),
        # A tenant's resource for the commit we want, with another allowed build image
        # or other limits, builds another image under our name.
        BuildSpec(ours.repo_url, "main", SHA, ours.image, build_image="r2d/older-repo2docker:1"),
        BuildSpec(ours.repo_url, "main", SHA, ours.image, cpu_limit=1.0),
        BuildSpec(ours.repo_url, "main", SHA, ours.image, memory_limit=2**30),
    ):
        assert not contract.same_build(ours, other), other


def test_a_handed_over_credential_is_in_the_spec_and_not_part_of_the_build():
    ours = BuildSpec("https://github.com/a/b", "main", SHA, contract.image_name("r2d-", "https://github.com/a/b", SHA))
    handed = BuildSpec.from_spec({**ours.to_spec(), "userCredentials": True})
    assert handed.user_credentials and handed.to_spec()["userCredentials"] is True
    assert "userCredentials" not in ours.to_spec()
    assert contract.same_build(ours, handed) and handed.name == ours.name
    with pytest.raises(contract.InvalidBuildRequest, match="userCredentials"):
        BuildSpec.from_spec({**ours.to_spec(), "userCredentials": "yes"})


@pytest.mark.parametrize(
    "asked, allowed, granted",
    [
        (None, None, None),
        (4.0, None, 4.0),
        (None, 0.5, 0.5),
        (4.0, 0.5, 0.5),
        (0.25, 0.5, 0.25),
    ],
)
def test_a_resource_may_lower_a_limit_never_raise_it(asked, allowed, granted):
    assert contract.lower_only(asked, allowed) == granted


def test_the_repository_directory_is_part_of_the_images_identity():
    url = "https://github.com/a/b"
    default, moved = contract.image_name("r2d-", url, SHA), contract.image_name("r2d-", url, SHA, "/srv/repo")
    # Names from before the option existed are kept; another directory is another image and build.
    assert default == contract.image_name("r2d-", url, SHA, "")
    assert default.startswith("r2d-a-b-" + contract.repo_hash(url))
    assert moved != default and moved.endswith(":" + SHA)
    assert moved != contract.image_name("r2d-", url, SHA, "/srv/other")
    assert contract.build_name(url, SHA) != contract.build_name(url, SHA, "/srv/repo")
    spec = BuildSpec(url, "main", SHA, moved, repo_dir="/srv/repo")
    assert spec.name == contract.build_name(url, SHA, "/srv/repo")
    assert BuildSpec.from_spec(spec.to_spec()) == spec and spec.to_spec()["repoDir"] == "/srv/repo"
    assert contract.check_image_of(spec, "r2d-") is spec
    with pytest.raises(InvalidBuildRequest, match="with its files in /srv/repo must be"):
        contract.check_image_of(BuildSpec(url, "main", SHA, default, repo_dir="/srv/repo"), "r2d-")
    assert not contract.same_build(spec, BuildSpec(url, "main", SHA, moved))


@pytest.mark.parametrize(
    "path",
    [
        "srv/repo",
        "/",
        "/srv/../etc",
        "/srv/./x",
        "/srv/repo/",
        "/srv//repo",
        "/srv/re po",
        "/srv/$(id)",
        "/-x",
        "/srv/repo\n",
        "/" + "a" * 255,
    ],
)
def test_bad_repository_directories_are_refused(path):
    with pytest.raises(InvalidBuildRequest, match="absolute path"):
        contract.validate_repo_dir(path)


@pytest.mark.parametrize("path", ["", "/srv/repo", "/home/jovyan/course-1.2", "/opt/_x"])
def test_good_repository_directories_pass(path):
    assert contract.validate_repo_dir(path) == path


def test_the_manifest_records_who_asked_and_the_commit_the_build_replaces():
    spec = contract.BuildSpec("https://h/a/b", "main", "a" * 40, "r2d-x:1")
    annotations = contract.build_manifest(spec, "ns", "ann", replaces="b" * 40)["metadata"]["annotations"]
    assert annotations == {contract.ANNOTATION_REQUESTED_BY: "ann", contract.ANNOTATION_REPLACES: "b" * 40}
    assert "annotations" not in contract.build_manifest(spec, "ns")["metadata"]
    with pytest.raises(contract.InvalidBuildRequest):
        contract.build_manifest(spec, "ns", replaces="main; rm -rf /")
