"""Option parsing, ref picking, the form, progress events and state (pure logic)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from tornado import web

from repo2docker_operator.contract import BuildStatus, Phase
from repo2dockerspawner import Repo2DockerSpawner
from repo2dockerspawner.options import RepoPolicy, RepoRequest, parse_options
from repo2dockerspawner.refs import pick_commit, resolve_ref
from repo2dockerspawner.spawner import progress_events

pytestmark = pytest.mark.unit

def make_spawner(**config) -> Repo2DockerSpawner:
    return Repo2DockerSpawner(user=SimpleNamespace(name="alice", id=1, url="/user/alice/"), **config)


POLICY = RepoPolicy(schemes=("https",), hosts=("github.com", "*.example.org"))


@pytest.mark.parametrize("raw, expected", [
    ({"repo": ["https://github.com/a/b"], "ref": ["v1"]}, RepoRequest("https://github.com/a/b", "v1")),  # form/query
    ({"repo": "https://github.com/a/b"}, RepoRequest("https://github.com/a/b", "HEAD")),  # REST, default ref
    ({"repo": "  https://git.example.org/x  ", "ref": " main "}, RepoRequest("https://git.example.org/x", "main")),
    ({}, None), ({"repo": [""]}, None), (None, None),  # no repo: the default image
])
def test_valid_options(raw, expected):
    assert parse_options(raw, POLICY) == expected


@pytest.mark.parametrize("raw, message", [
    ({"repo": "http://github.com/a/b"}, "https:// URLs on this hub"),
    ({"repo": "https://gitlab.com/a/b"}, "from gitlab.com are not allowed"),
    ({"repo": "https://github.com/a/b", "ref": "-x"}, "git ref may contain"),
    ({"repo": "https://github.com/a/b", "ref": "a b"}, "git ref may contain"),
    ({"repo": "https://github.com/a\nb", "ref": "main"}, "not allowed"),
    ({"repo": ["file:///etc/passwd"]}, "must start with"),
    ({"ref": "main"}, "without a repository"),
    ({"repo": 42}, "must be strings"),
    ({"repo": "https://github.com/" + "a" * 3000}, "longer than"),
])
def test_invalid_options_are_400s_with_a_message(raw, message):
    with pytest.raises(web.HTTPError) as info:
        parse_options(raw, POLICY)
    assert info.value.status_code == 400
    assert message in info.value.jupyterhub_message


LS_REMOTE = "\n".join([
    "1" * 40 + "\tHEAD",
    "2" * 40 + "\trefs/heads/main",
    "3" * 40 + "\trefs/tags/v1",
    "4" * 40 + "\trefs/tags/v1^{}",
    "5" * 40 + "\trefs/heads/v2",
    "6" * 40 + "\trefs/tags/v2",
])


@pytest.mark.parametrize("ref, sha", [("HEAD", "1"), ("main", "2"), ("v1", "4"), ("v2", "5"),
                                      ("refs/tags/v2", "6"), ("nope", None)])
def test_pick_commit(ref, sha):
    assert pick_commit(LS_REMOTE, ref) == (sha * 40 if sha else None)


async def test_full_sha_needs_no_lookup():
    assert await resolve_ref("https://nowhere.invalid/x", "a" * 40) == "a" * 40


def test_form_renders_fields_and_escapes_previous_values():
    spawner = make_spawner(image="my/default:1")
    spawner.user_options = {"repo": '"><script>x</script>', "ref": "main"}
    form = spawner.options_form(spawner)
    assert 'name="repo"' in form and 'name="ref"' in form
    assert "my/default:1" in form
    assert "<script>" not in form and "&lt;script&gt;" in form


def test_form_and_query_share_validation():
    spawner = make_spawner(allowed_repo_hosts=["github.com"])
    assert spawner.run_options_from_form({"repo": ["https://github.com/a/b"], "ref": ["v1"]}) == {
        "repo": "https://github.com/a/b", "ref": "v1"}
    assert spawner.options_from_query({"repo": ["https://github.com/a/b"]}) == {"repo": "https://github.com/a/b", "ref": "HEAD"}
    with pytest.raises(web.HTTPError):
        spawner.options_from_query({"repo": ["https://evil.org/a/b"]})
    spawner.user_options = {"repo": "https://github.com/a/b", "image": "x"}
    with pytest.raises(web.HTTPError, match="400"):
        spawner.repo_request()


def test_defaults_fit_builds():
    spawner = make_spawner()
    assert spawner.start_timeout > spawner.build_timeout  # JupyterHub must not cancel a running build
    assert spawner.remove and spawner.backend == "local" and spawner.allowed_repo_schemes == ["https"]


def test_state_round_trip_keeps_the_build():
    spawner = make_spawner()
    spawner._build_state = {"build": "b-1234567-abc", "namespace": "ns", "image": "r2d-b:1"}
    state = spawner.get_state()
    other = make_spawner()
    other.load_state(state)
    assert other._build_state == spawner._build_state and other.image == "r2d-b:1"


class FakeHandle:
    name, namespace = "b", "ns"

    def __init__(self, statuses):
        self._statuses = statuses

    def current(self):
        return self._statuses[-1]

    async def statuses(self):
        for status in self._statuses:
            await asyncio.sleep(0)
            yield status


async def test_progress_events_give_queue_phase_and_each_line_once():
    handle = FakeHandle([
        BuildStatus(Phase.QUEUED, queue_position=3),
        BuildStatus(Phase.QUEUED, queue_position=1),
        BuildStatus(Phase.BUILDING, log_tail=["a", "b"], log_line_count=2),
        BuildStatus(Phase.BUILDING, log_tail=["b", "c", "d"], log_line_count=4),
        BuildStatus(Phase.SUCCEEDED, image="img", message="Built img.", log_tail=["c", "d"], log_line_count=4),
    ])
    events = [e async for e in progress_events(handle)]
    messages = [e["message"] for e in events]
    assert messages == ["Waiting for a free build slot.", "2 builds ahead of yours.", "Your build is next in line.",
                        "Building your image with repo2docker…", "a", "b", "c", "d", "Built img.",
                        "Image ready; starting your server."]
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 90


def test_api_errors_are_described_in_one_line():
    from kubernetes_asyncio.client.exceptions import ApiException

    from repo2dockerspawner.spawner import describe_error

    exc = ApiException(status=403, reason="Forbidden")
    exc.body = '{"kind":"Status","message":"repo2dockerbuilds is forbidden: User \\"x\\" cannot create"}'
    assert describe_error(exc) == 'repo2dockerbuilds is forbidden: User "x" cannot create'
    assert describe_error(RuntimeError("boom\ntrace")) == "boom"


@pytest.mark.parametrize("config, message", [
    ({"build_memory_limit": "lots"}, "memory quantity"),
    ({"allowed_repo_schemes": ["file"]}, "not among"),
    ({"image_prefix": "UPPER/"}, "image prefix"),
    ({"build_push": True, "image_prefix": "binder/r2d-"}, "needs an image_prefix that names a registry"),
    ({"build_docker_config": "/nonexistent/config.json"}, "is not a file"),
])
def test_bad_configuration_is_refused_at_load_time(config, message):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=message):
        make_spawner(**config)


def test_push_with_a_registry_prefix_is_accepted():
    spawner = make_spawner(build_push=True, image_prefix="127.0.0.1:5000/binder/r2d-")
    assert spawner.build_push and spawner.image_prefix == "127.0.0.1:5000/binder/r2d-"
