"""Option parsing, ref picking, the form, progress events and state (pure logic)."""

from __future__ import annotations

import asyncio

import pytest
from tornado import web

from repo2docker_buildcore.contract import BuildStatus, Phase
from repo2docker_buildcore.repourl import parse as parse_url
from repo2dockerspawner.form import LinkOpensForm
from repo2dockerspawner.options import RepoPolicy, RepoRequest, parse_options
from repo2dockerspawner.progress import progress_events
from repo2dockerspawner.refs import pick_commit
from support.spawners import make_spawner, user

pytestmark = pytest.mark.unit


POLICY = RepoPolicy(schemes=("https",), hosts=("github.com", "*.example.org"))


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            {"repo": ["https://github.com/a/b"], "ref": ["v1"]},
            RepoRequest(parse_url("https://github.com/a/b"), "v1"),
        ),  # form/query
        (
            {"repo": "https://github.com/a/b"},
            RepoRequest(parse_url("https://github.com/a/b"), "HEAD"),
        ),  # REST, default ref
        (
            {"repo": "  https://git.example.org/x  ", "ref": " main "},
            RepoRequest(parse_url("https://git.example.org/x"), "main"),
        ),
        ({}, None),
        ({"repo": [""]}, None),
        (None, None),  # no repo: the default image
    ],
)
def test_valid_options(raw, expected):
    assert parse_options(raw, POLICY) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"repo": "http://github.com/a/b"}, "https:// URLs on this hub"),
        ({"repo": "https://gitlab.com/a/b"}, "from gitlab.com are not allowed"),
        ({"repo": "https://github.com/a/b", "ref": "-x"}, "git ref may contain"),
        ({"repo": "https://github.com/a/b", "ref": "a b"}, "git ref may contain"),
        ({"repo": "https://github.com/a\nb", "ref": "main"}, "not allowed"),
        ({"repo": ["file:///etc/passwd"]}, "must start with"),
        ({"ref": "main"}, "without a repository"),
        ({"repo": 42}, "must be strings"),
        ({"repo": "https://github.com/" + "a" * 3000}, "longer than"),
    ],
)
def test_invalid_options_are_400s_with_a_message(raw, message):
    with pytest.raises(web.HTTPError) as info:
        parse_options(raw, POLICY)
    assert info.value.status_code == 400
    assert message in info.value.jupyterhub_message


LS_REMOTE = "\n".join(
    [
        "1" * 40 + "\tHEAD",
        "2" * 40 + "\trefs/heads/main",
        "3" * 40 + "\trefs/tags/v1",
        "4" * 40 + "\trefs/tags/v1^{}",
        "5" * 40 + "\trefs/heads/v2",
        "6" * 40 + "\trefs/tags/v2",
    ]
)


@pytest.mark.parametrize(
    "ref, sha", [("HEAD", "1"), ("main", "2"), ("v1", "4"), ("v2", "5"), ("refs/tags/v2", "6"), ("nope", None)]
)
def test_pick_commit(ref, sha):
    assert pick_commit(LS_REMOTE, ref) == (sha * 40 if sha else None)


def test_form_renders_fields_and_escapes_previous_values():
    spawner = make_spawner(image="my/default:1")
    spawner.user_options = {"repo": '"><script>x</script>', "ref": "main"}
    form = spawner.options_form(spawner)
    assert 'name="repo"' in form and 'name="ref"' in form
    assert "my/default:1" in form
    assert "<script>" not in form and "&lt;script&gt;" in form


def test_a_refused_form_comes_back_with_what_was_typed_and_the_message_next_to_it():
    spawner = make_spawner(allowed_repo_hosts=["github.com"])
    typed = {"repo": ['https://evil.example.org/"><b>x</b>'], "ref": ["my-branch"]}
    with pytest.raises(web.HTTPError):
        spawner.options_from_form(typed, spawner)
    form = spawner.options_form(spawner)
    assert 'value="https://evil.example.org/&quot;&gt;&lt;b&gt;x&lt;/b&gt;"' in form
    assert 'value="my-branch"' in form and "is-invalid" in form
    assert 'id="r2d-form-error"' in form and "characters that are not allowed" in form
    again = spawner.options_form(spawner)  # the message is for the refused submission only
    assert 'id="r2d-form-error"' not in again and "is-invalid" not in again
    assert (
        spawner.options_from_form({"repo": ["https://github.com/a/b"], "ref": [""]}, spawner)["repo"]
        == "https://github.com/a/b"
    )
    assert spawner.form.refused is None


async def test_a_ref_refused_at_start_comes_back_on_the_form_but_not_on_a_later_one(monkeypatch):
    from repo2dockerspawner.options import bad_request

    async def resolve(repo, ref, policy, limits, credentials, git="git"):
        raise bad_request(f"The ref {ref!r} was not found in {repo}.")

    monkeypatch.setattr("repo2dockerspawner.spawner.resolve_launch_ref", resolve)
    spawner = make_spawner(allowed_repo_hosts=["github.com"])
    spawner.user_options = {"repo": "https://github.com/a/b", "ref": "no-such-branch"}
    with pytest.raises(web.HTTPError):
        await spawner.start()
    form = spawner.options_form(spawner)
    assert 'value="no-such-branch"' in form and "was not found" in form and "is-invalid" in form
    with pytest.raises(web.HTTPError):  # a REST request, say: no form is rendered right after it
        await spawner.start()
    spawner.form.refused_at -= 3600
    assert 'id="r2d-form-error"' not in spawner.options_form(spawner)


def test_form_and_query_share_validation():
    spawner = make_spawner(allowed_repo_hosts=["github.com"], autolaunch_repos=["https://github.com/**"])
    assert spawner.run_options_from_form({"repo": ["https://github.com/a/b"], "ref": ["v1"]}) == {
        "repo": "https://github.com/a/b",
        "ref": "v1",
    }
    assert spawner.options_from_query({"repo": ["https://github.com/a/b"]}) == {
        "repo": "https://github.com/a/b",
        "ref": "HEAD",
    }
    with pytest.raises(web.HTTPError):
        spawner.options_from_query({"repo": ["https://evil.org/a/b"]})
    spawner.user_options = {"repo": "https://github.com/a/b", "image": "x"}
    with pytest.raises(web.HTTPError, match="400"):
        spawner.repo_request()


def test_defaults_fit_builds():
    spawner = make_spawner()
    assert spawner.start_timeout > spawner.build_backend.build_timeout  # JupyterHub must not cancel a running build
    assert spawner.remove and spawner.backend == "local" and spawner.allowed_repo_schemes == ["https"]


def test_state_round_trip_keeps_the_build():
    spawner = make_spawner()
    spawner._build_state = {"build": "b-1234567-abc", "namespace": "ns", "image": "r2d-b:1"}
    state = spawner.get_state()
    other = make_spawner()
    other.load_state(state)
    assert other._build_state == spawner._build_state and other.image == "r2d-b:1"


class FakeHandle:
    name, namespace, uid = "b", "ns", "b-uid"

    def __init__(self, statuses):
        self._statuses = statuses

    def current(self):
        return self._statuses[-1]

    async def statuses(self):
        for status in self._statuses:
            await asyncio.sleep(0)
            yield status


async def test_progress_events_give_queue_phase_and_each_line_once():
    handle = FakeHandle(
        [
            BuildStatus(Phase.QUEUED, queue_position=3),
            BuildStatus(Phase.QUEUED, queue_position=1),
            BuildStatus(Phase.BUILDING, log_tail=["a", "b"], log_line_count=2),
            BuildStatus(Phase.BUILDING, log_tail=["b", "c", "d"], log_line_count=4),
            BuildStatus(Phase.SUCCEEDED, image="img", message="Built img.", log_tail=["c", "d"], log_line_count=4),
        ]
    )
    events = [e async for e in progress_events(handle)]
    messages = [e["message"] for e in events]
    assert messages == [
        "Waiting for a free build slot.",
        "2 builds ahead of yours.",
        "Your build is next in line.",
        "Building your image with repo2docker…",
        "a",
        "b",
        "c",
        "d",
        "Built img.",
        "Image ready; starting your server.",
    ]
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 90


async def test_a_requeued_build_says_so_and_its_next_log_starts_from_the_first_line():
    lost = "The node r2d-node-2 was lost (its builder's Lease expired); the build went back to the queue."
    handle = FakeHandle(
        [
            BuildStatus(Phase.BUILDING, log_tail=["a", "b", "c"], log_line_count=3),
            BuildStatus(Phase.QUEUED, queue_position=1, message=lost),
            BuildStatus(Phase.BUILDING, log_tail=["a", "b"], log_line_count=2),
            BuildStatus(
                Phase.SUCCEEDED, image="img", message="Built img.", log_tail=["a", "b", "c", "d"], log_line_count=4
            ),
        ]
    )
    messages = [e["message"] async for e in progress_events(handle)]
    assert messages == [
        "Building your image with repo2docker…",
        "a",
        "b",
        "c",
        lost,
        "Waiting for a free build slot.",
        "Your build is next in line.",
        "Building your image with repo2docker…",
        "a",
        "b",
        "Built img.",
        "c",
        "d",
        "Image ready; starting your server.",
    ]


def test_api_errors_are_described_in_one_line():
    from repo2docker_buildcore.kubeapi import ApiError

    backend = make_spawner(backend="kubernetes").build_backend
    exc = ApiError(
        403, "Forbidden", '{"kind":"Status","message":"repo2dockerbuilds is forbidden: User \\"x\\" cannot create"}'
    )
    assert backend.describe_error(exc) == 'repo2dockerbuilds is forbidden: User "x" cannot create'
    assert backend.describe_error(RuntimeError("boom\ntrace")) == "boom"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"Repo2DockerSpawner": {"build_memory_limit": "lots"}}, "memory quantity"),
        ({"LocalBackend": {"memory_limit": "lots"}}, "memory quantity"),
        ({"LocalBackend": {"gc_use_record": "configmap:ns/x"}}, "keeps it in a file"),
        ({"Repo2DockerSpawner": {"allowed_repo_schemes": ["file"]}}, "not among"),
        ({"Repo2DockerSpawner": {"image_prefix": "UPPER/"}}, "image prefix"),
        ({"Repo2DockerSpawner": {"image_prefix": ""}}, "image prefix"),
        ({"Repo2DockerSpawner": {"autolaunch_repos": ["github.com/*"]}}, "autolaunch_repos"),
        (
            {"LocalBackend": {"push": True}, "Repo2DockerSpawner": {"image_prefix": "binder/r2d-"}},
            "needs a Repo2DockerSpawner.image_prefix that names a registry",
        ),
        ({"LocalBackend": {"docker_config": "/nonexistent/config.json"}}, "is not a file"),
        ({"LocalBackend": {"build_env": {"1BAD": "x"}}}, "build environment name"),
    ],
)
def test_bad_configuration_is_refused_at_load_time(config, message):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=message):
        make_spawner(config)


def test_push_with_a_registry_prefix_is_accepted():
    spawner = make_spawner(
        {"LocalBackend": {"push": True}, "Repo2DockerSpawner": {"image_prefix": "127.0.0.1:5000/binder/r2d-"}}
    )
    assert spawner.build_backend.push and spawner.build_backend.runner.config.push


def test_backends_own_their_settings_and_older_names_still_work_with_a_deprecation_line(caplog):
    from repo2dockerspawner.backends import traits
    from repo2dockerspawner.backends.kubernetes import KubernetesBackend
    from repo2dockerspawner.backends.local import LocalBackend

    traits._announced.clear()
    local = make_spawner({"LocalBackend": {"concurrency": 5, "instance": "hub-a", "build_timeout": 60.0}}).build_backend
    assert type(local) is LocalBackend
    assert (local.concurrency, local.instance, local.build_timeout) == (5, "hub-a", 60.0)
    assert (local.runner.config.instance, local.queue.limit, local.settings.build_timeout) == ("hub-a", 5, 60.0)
    assert not caplog.records

    # The first release's spawner names, and LocalBackend's names before the settings table.
    old = make_spawner(
        {
            "Repo2DockerSpawner": {
                "build_image": "old/name:1",
                "concurrent_builds_limit": 4,
                "build_instance": "hub-b",
            },
            "LocalBackend": {"log_tail_lines": 7, "image_gc_interval": 0.0, "image_use_file": ""},
        }
    ).build_backend
    assert (old.build_image, old.concurrency, old.instance, old.tail_lines, old.gc_interval, old.gc_use_record) == (
        "old/name:1",
        4,
        "hub-b",
        7,
        0.0,
        "",
    )
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "Repo2DockerSpawner.concurrent_builds_limit is deprecated: set LocalBackend.concurrency instead" in lines
    assert "LocalBackend.image_use_file is deprecated: set LocalBackend.gc_use_record instead" in lines
    assert len(lines) == 6, lines
    make_spawner({"Repo2DockerSpawner": {"build_image": "old/name:1"}})
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 6, "one line per name and process"
    # A setting made under the current name wins over the old one.
    both = make_spawner({"Repo2DockerSpawner": {"build_image": "alias:1"}, "LocalBackend": {"build_image": "own:1"}})
    assert both.build_backend.build_image == "own:1"

    kube = make_spawner({"Repo2DockerSpawner": {"backend": "kubernetes", "namespace": "binder"}}).build_backend
    assert type(kube) is KubernetesBackend and kube.namespace == "binder"
    assert (
        make_spawner({"KubernetesBackend": {"namespace": "own"}}, backend="kubernetes").build_backend.namespace == "own"
    )


def test_start_timeout_follows_the_backends_build_timeout():
    local = make_spawner({"LocalBackend": {"build_timeout": 600.0}})
    kube = make_spawner({"KubernetesBackend": {"build_timeout": 1200.0}}, backend="kubernetes")
    assert (local.start_timeout, kube.start_timeout) == (900, 1500)
    assert make_spawner(backend="kubernetes").start_timeout == 3900  # the chart's build.timeout, 3600 s, by default


def test_backend_class_selects_any_build_backend_and_is_shared_per_configuration():
    from repo2dockerspawner.backends.local import LocalBackend

    class Custom(LocalBackend):
        pass

    spawner = make_spawner({"Repo2DockerSpawner": {"backend_class": Custom}})
    assert type(spawner.build_backend) is Custom
    same = make_spawner(spawner.config, owner=user("bob", 2), fresh=False)
    assert same.build_backend is spawner.build_backend  # one queue and dedup table per hub process


def test_build_spec_takes_the_backends_resources():
    spawner = make_spawner({"LocalBackend": {"memory_limit": "1Gi", "cpu_limit": 1.5}})
    spec = spawner.build_spec(RepoRequest(parse_url("https://github.com/a/b"), "main"), "a" * 40)
    assert (spec.memory_limit, spec.cpu_limit) == (2**30, 1.5)
    kube = make_spawner({"LocalBackend": {"memory_limit": "1Gi"}}, backend="kubernetes")
    assert kube.build_spec(RepoRequest(parse_url("https://github.com/a/b"), "main"), "a" * 40).memory_limit is None


def test_a_link_only_fills_in_the_form():
    spawner = make_spawner(allowed_repo_hosts=["github.com"])
    with pytest.raises(LinkOpensForm):
        spawner.options_from_query({"repo": ["https://github.com/someone/course"], "ref": ["week-1"]})
    form = spawner.options_form(spawner)
    assert 'id="r2d-link-notice"' in form and "<strong><code>https://github.com/someone/course</code></strong>" in form
    assert 'value="https://github.com/someone/course"' in form and 'value="week-1"' in form and "Start" in form
    assert 'id="r2d-link-notice"' not in spawner.options_form(spawner)  # for the link's page only
    # A hostile link is refused; the form shows it, escaped, with the reason.
    with pytest.raises(web.HTTPError):
        spawner.options_from_query({"repo": ['https://github.com/evil/"><script>x</script>'], "ref": ["main"]})
    form = spawner.options_form(spawner)
    assert 'value="https://github.com/evil/&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in form
    assert "<script>" not in form and 'id="r2d-form-error"' in form and 'id="r2d-link-notice"' not in form
    with pytest.raises(LinkOpensForm):  # a link without a repository: the form, not the default image
        spawner.options_from_query({"foo": ["bar"]})
    # JupyterHub shows no error box for it: its messages are None.
    assert (LinkOpensForm().jupyterhub_message, LinkOpensForm().jupyterhub_html_message) == (None, None)


@pytest.mark.parametrize(
    "url, launches",
    [
        ("https://github.com/course/lecture-1", True),
        ("https://GitHub.com/course/lecture-1.git/", True),
        ("https://github.com/course-fork/lecture-1", False),
        ("https://github.com/other/x", False),
        ("https://github.com/course/lecture-1/other", False),  # '*' never crosses a '/'
    ],
)
def test_autolaunch_repos_match_the_canonical_url_segment_by_segment(url, launches):
    spawner = make_spawner(allowed_repo_hosts=["github.com"], autolaunch_repos=["https://github.com/course/*"])
    if launches:
        assert spawner.options_from_query({"repo": [url], "ref": ["main"]})["repo"] == parse_url(url).url
    else:
        with pytest.raises(LinkOpensForm):
            spawner.options_from_query({"repo": [url], "ref": ["main"]})


def test_protocol_v2_asks_for_what_pick_commit_may_choose_and_its_answer_reads_like_ls_remote():
    from repo2dockerspawner.refs import ls_refs_listing, ref_prefixes

    assert ref_prefixes("main") == ["main", "refs/heads/main", "refs/tags/main"]
    assert ref_prefixes("HEAD") == ["HEAD"] and ref_prefixes("refs/tags/v2") == ["refs/tags/v2"]
    answer = [
        b"1" * 40 + b" HEAD symref-target:refs/heads/main\n",
        b"2" * 40 + b" refs/heads/main\n",
        b"3" * 40 + b" refs/tags/v1 peeled:" + b"4" * 40 + b"\n",
        b"unborn refs/heads/x\n",
    ]
    listing = ls_refs_listing(answer)
    assert (pick_commit(listing, "HEAD"), pick_commit(listing, "main"), pick_commit(listing, "v1")) == (
        "1" * 40,
        "2" * 40,
        "4" * 40,
    )


def test_local_backend_has_a_trait_for_every_hub_row_of_the_settings_table_and_no_other():
    from repo2docker_buildcore.settings import SETTINGS
    from repo2dockerspawner.backends.kubernetes import KubernetesBackend
    from repo2dockerspawner.backends.local import LocalBackend

    traits = LocalBackend.class_traits(config=True)
    backend = LocalBackend()
    for row in SETTINGS:
        if row.hub:
            assert row.name in traits, row.name
            value = getattr(backend, row.name)
            assert (list(value) if row.many else dict(value) if isinstance(value, dict) else value) == (
                list(row.hub_value) if row.many else dict(row.hub_value) if row.kind == "env" else row.hub_value
            ), row.name
            assert traits[row.name].help.startswith(row.help[:1].upper() + row.help[1:]), row.name
        else:
            assert row.no_hub and row.name not in traits, row.name
    assert KubernetesBackend().build_timeout == next(r for r in SETTINGS if r.name == "build_timeout").default


def test_a_volume_on_the_home_builds_the_repository_beside_it_and_names_the_image_for_it():
    from traitlets import TraitError

    from repo2docker_buildcore import contract

    sha, request = "a" * 40, RepoRequest(parse_url("https://github.com/a/b"), "main")
    plain = make_spawner().build_spec(request, sha)
    assert (plain.repo_dir, plain.image) == ("", contract.image_name("r2d-", request.repo, sha))
    home = make_spawner(volumes={"jupyterhub-user-{username}": "/home/jovyan"}).build_spec(request, sha)
    assert (home.repo_dir, home.image) == ("/srv/repo", contract.image_name("r2d-", request.repo, sha, "/srv/repo"))
    work = make_spawner(volumes={"jupyterhub-user-{username}": "/home/jovyan/work"}).build_spec(request, sha)
    assert work == plain
    chosen = make_spawner(volumes={"v-{username}": "/home/jovyan"}, repo_dir="").build_spec(request, sha)
    assert chosen == plain
    assert make_spawner(repo_dir="/opt/course").build_spec(request, sha).repo_dir == "/opt/course"
    with pytest.raises(TraitError, match="repo_dir"):
        make_spawner(repo_dir="../etc")


def test_previous_ok_is_read_from_rest_and_form_values_and_the_offer_escapes_its_link():
    from repo2dockerspawner.backends import BuildRecord
    from repo2dockerspawner.options import asks_for_previous
    from repo2dockerspawner.progress import offer_event

    assert all(asks_for_previous({"previous_ok": v}) for v in (True, "true", "1", "on", ["on"]))
    assert not any(asks_for_previous({"previous_ok": v}) for v in (False, "false", "", 1, [], None))
    assert not asks_for_previous(None)
    record = BuildRecord("local", "b", "https://h/a/b", "main", "c" * 40, Phase.SUCCEEDED, completed=0.0)
    event = offer_event(record, '/services/repo2docker/previous/a"b/')
    assert 'href="/services/repo2docker/previous/a&quot;b/"' in event["html_message"]
    assert "commit ccccccc" in event["message"]
