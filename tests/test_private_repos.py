"""Private repositories on the test environment's git server (private/<owner>/… needs basic
auth; 'hub' reads all, another user their own): lookups say what is wrong, builds clone with
the credential without it showing anywhere, and only users who can read a repository get its
image."""

from __future__ import annotations

import json
import secrets
import threading
import uuid

import docker.errors
import pytest
import requests
from tornado import web

from repo2docker_buildcore import contract
from repo2docker_buildcore.gitcredentials import GitCredential
from repo2dockerspawner.options import RepoPolicy
from repo2dockerspawner.refs import resolve_ref
from support.builds import head
from support.gitrepos import GitRepo, git
from support.hub import SERVICE
from support.waiting import wait_until

INTO_HOME = "FROM {base}\nRUN echo build-{token} && sleep {sleep}\nCOPY marker.txt /home/jovyan/marker.txt\n"


def private_repo(git_repos, testenv, owner: str, marker: str, sleep: int = 0):
    files = {
        "Dockerfile": INTO_HOME.format(base=testenv["R2D_SINGLEUSER_IMAGE"], token=uuid.uuid4().hex, sleep=sleep),
        "marker.txt": marker + "\n",
    }
    return git_repos.create(files, prefix=f"private/{owner}/course")


def tokens(testenv) -> dict[str, str]:
    return {
        "hub": testenv["R2D_GIT_HUB_TOKEN"],
        "alice": testenv["R2D_GIT_ALICE_TOKEN"],
        "bob": testenv["R2D_GIT_BOB_TOKEN"],
    }


async def refusal(url: str, ref: str, policy: RepoPolicy, credential: GitCredential | None) -> str:
    with pytest.raises(web.HTTPError) as info:
        await resolve_ref(url, ref, policy, credential=credential)
    assert info.value.status_code == 400
    return info.value.jupyterhub_message


@pytest.mark.integration
async def test_lookups_tell_missing_credentials_from_refused_ones_and_never_reveal_a_repository(testenv, git_repos):
    policy = RepoPolicy(schemes=("http",), hosts=(testenv["R2D_BRIDGE_IP"],))
    repo = private_repo(git_repos, testenv, "alice", "alice's course")
    missing = repo.url.replace("course-", "nothing-")
    alice, bob = GitCredential("alice", tokens(testenv)["alice"]), GitCredential("bob", tokens(testenv)["bob"])

    assert await resolve_ref(repo.url, "main", policy, credential=alice) == head(repo)
    assert await resolve_ref(repo.url, "main", policy, credential=GitCredential("hub", tokens(testenv)["hub"])) == head(
        repo
    )
    assert "needs credentials" in await refusal(repo.url, "main", policy, None)
    assert "credentials for" in await refusal(
        repo.url, "main", policy, GitCredential("alice", "wrong")
    ) and "were refused" in await refusal(repo.url, "main", policy, GitCredential("alice", "wrong"))
    # Bob may not read it: told exactly what a missing repository is told.
    told = await refusal(repo.url, "main", policy, bob)
    assert "was not found" in told
    assert told.replace(repo.url, "URL") == (await refusal(missing, "main", policy, bob)).replace(missing, "URL")
    # A commit SHA is no way around it: the repository is still read with the user's credential.
    assert "was not found" in await refusal(repo.url, head(repo), policy, bob)
    assert "needs credentials" in await refusal(repo.url, head(repo), policy, None)
    assert await resolve_ref(repo.url, head(repo), policy, credential=alice) == head(repo)


class Snooper:
    """Everything a build shows of itself while it runs and after: its containers' configuration
    (docker inspect) and the image's history and labels."""

    def __init__(self, docker_client, instance: str) -> None:
        self.client, self.instance, self.seen = docker_client, instance, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            # The low-level listing: the high-level one inspects each container and fails
            # (ending this thread) on one removed meanwhile.
            for c in self.client.api.containers(
                all=True, filters={"label": f"{contract.LABEL_INSTANCE}={self.instance}"}
            ):
                try:
                    self.seen.append(json.dumps(self.client.api.inspect_container(c["Id"])))
                except docker.errors.NotFound:
                    pass

    def image(self, image: str) -> str:
        return json.dumps(self.client.api.inspect_image(image)) + json.dumps(self.client.api.history(image))


def launch(hub, name: str, url: str) -> list[dict]:
    response, events = hub.spawn_and_follow(name, {"repo": url, "ref": "main"})
    assert response.status_code in (201, 202), response.text
    return events


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_hub_credentials_build_and_launch_a_private_repository_and_show_nowhere(
    hubs, backend, testenv, git_repos, docker_client, tmp_path, kubectl
):
    token = tokens(testenv)["hub"]
    host = testenv["R2D_BRIDGE_IP"]
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({f"http://{host}": {"username": "hub", "token": token}}))
    # The hub's from its environment, the operator's from a file (the chart mounts a Secret).
    hub = hubs(
        backend,
        repo_credentials={f"http://{host}": {"username": "hub", "token_env": "R2D_TEST_GIT_TOKEN"}},
        process_env={"R2D_TEST_GIT_TOKEN": token},
        operator_options={"git_credentials": str(credentials)},
    )
    repo = private_repo(git_repos, testenv, "alice", "private course", sleep=4)
    name = f"p{uuid.uuid4().hex[:8]}"
    with Snooper(docker_client, hub.build_instance) as snoop:
        events = launch(hub, name, repo.url)
    assert events[-1].get("ready"), events[-3:]
    assert hub.user_file(name, "marker.txt") == "private course\n"
    assert snoop.seen, "the build container was never seen"

    image = contract.image_name("r2d-e2e-", repo.url, head(repo))
    shown = {
        "docker inspect of the build container": "".join(snoop.seen),
        "the image": snoop.image(image),
        "the hub's log": hub.log(),
        "the pending page's events": json.dumps(events),
        "the builds page": hub.login("r2d-admin").get(f"{hub.url}{SERVICE}/builds", timeout=30).text,
        "the hub's metrics": requests.get(
            f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.token}"}, timeout=30
        ).text,
        "the user's server state": json.dumps(hub.api("GET", f"/users/{name}").json()),
    }
    if backend == "kubernetes":
        namespace = hub.spawner_config["KubernetesBackend.namespace"]
        shown["the build resource"] = kubectl("get", contract.PLURAL, "-n", namespace, "-o", "json")
        shown["events"] = kubectl("get", "events", "-n", namespace, "-o", "json")
    for where, text in shown.items():
        assert token not in text, f"the token shows in {where}"
    assert "private/alice/course" in shown["the builds page"]  # the page was really read


AUTH_STATE_HUB = """
from jupyterhub.auth import DummyAuthenticator
TOKENS = {tokens!r}

class TokenInAuthState(DummyAuthenticator):
    # As an OAuth authenticator keeps the user's access token.
    async def authenticate(self, handler, data):
        name = await super().authenticate(handler, data)
        return name and {{"name": name, "auth_state": {{"access_token": TOKENS.get(name)}}}}

c.JupyterHub.authenticator_class = TokenInAuthState
c.Authenticator.enable_auth_state = True
"""


def auth_state_hub(hubs, backend: str, testenv, **options):
    """A hub whose users' own tokens are in their auth_state (alice's, bob's; carol has none)."""
    own = tokens(testenv)
    hub = hubs(
        backend,
        user_credentials_from_auth_state="access_token",
        user_credentials_hosts=[f"http://{testenv['R2D_BRIDGE_IP']}"],
        process_env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)},
        hub_config=AUTH_STATE_HUB.format(tokens={"alice": own["alice"], "bob": own["bob"]}).splitlines(),
        **options,
    )
    for user in ("alice", "bob", "carol"):
        hub.login(user)  # the authenticator stores each one's auth_state
    return hub


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_only_users_who_can_read_a_private_repository_launch_its_image(
    hubs, backend, testenv, git_repos, docker_client, kubectl
):
    own = tokens(testenv)
    # The operator has no credentials of its own: Alice's build clones with the token she handed over.
    hub = auth_state_hub(hubs, backend, testenv)
    repo = private_repo(git_repos, testenv, "alice", "alice's course")

    # Alice reads it with her own token: built and launched.
    with Snooper(docker_client, hub.build_instance) as snoop:
        events = launch(hub, "alice", repo.url)
    assert events[-1].get("ready"), events[-3:]
    assert hub.user_file("alice", "marker.txt") == "alice's course\n"
    image = contract.image_name("r2d-e2e-", repo.url, head(repo))
    assert docker_client.images.get(image)
    shown = {"docker inspect of the build container": "".join(snoop.seen), "the hub's log": hub.log()}
    if backend == "kubernetes":
        namespace = hub.spawner_config["KubernetesBackend.namespace"]
        build = kubectl.json("get", contract.PLURAL, contract.build_name(repo.url, head(repo)), "-n", namespace)
        assert build["spec"]["userCredentials"] is True
        # Handed over in the build's own Secret, which goes once the build has ended.
        wait_until(
            lambda: (
                not [n for n in kubectl("get", "secrets", "-n", namespace, "-o", "name").split() if n.endswith("-git")]
            ),
            timeout=30,
            what="the build's credential Secret to be deleted",
        )
        shown.update(
            {"the build resource": json.dumps(build), "events": kubectl("get", "events", "-n", namespace, "-o", "json")}
        )
    for where, text in shown.items():
        assert own["alice"] not in text and own["bob"] not in text, f"a token shows in {where}"

    # The image exists, but Bob's token cannot read the repository: refused as a missing one,
    # by ref or by commit, and no server, no build.
    for ref in ("main", head(repo)):
        r = hub.spawn("bob", {"repo": repo.url, "ref": ref})
        assert r.status_code == 400 and "was not found" in r.json()["message"], r.text
        assert "alice's course" not in r.text
    r = hub.spawn("carol", {"repo": repo.url, "ref": "main"})
    assert r.status_code == 400 and "needs credentials" in r.json()["message"], r.text
    assert not hub.api("GET", "/users/bob").json()["servers"]


def with_submodule(git_repos, testenv, submodule: GitRepo) -> GitRepo:
    """A public repository whose submodule `sub` is `submodule` (a gitlink to its HEAD, as
    `git submodule add` records it), built by a Dockerfile that copies the submodule's files."""
    dockerfile = (
        f"FROM {testenv['R2D_SINGLEUSER_IMAGE']}\nCOPY marker.txt /home/jovyan/marker.txt\n"
        f"COPY sub/ /home/jovyan/sub/\n"
    )
    repo = git_repos.create(
        {
            "Dockerfile": dockerfile,
            "marker.txt": "the public repository\n",
            ".gitmodules": f'[submodule "sub"]\n\tpath = sub\n\turl = {submodule.url}\n',
        },
        prefix="public-with-private-sub",
    )
    git(repo.work, "update-index", "--add", "--cacheinfo", f"160000,{head(submodule)},sub")
    git(repo.work, "commit", "-q", "-m", "add the submodule")
    repo.push()
    return repo


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_users_token_opens_the_launched_repository_not_its_private_submodule(
    hubs, backend, testenv, git_repos, docker_client, kubectl
):
    """A public repository whose submodule is Alice's private repository on the same host.
    Alice's launch used to fetch the submodule with her token, and Bob, who cannot read it,
    then launched the same public commit and got her files (the image is shared by commit)."""
    secret = private_repo(git_repos, testenv, "alice", "alice's private submodule")
    public = with_submodule(git_repos, testenv, secret)
    image = contract.image_name("r2d-e2e-", public.url, head(public))
    hub = auth_state_hub(hubs, backend, testenv)

    response, events = hub.spawn_and_follow("alice", {"repo": public.url, "ref": "main"})
    # A build that fails within the hub's slow_spawn_timeout answers the request itself.
    assert not (events and events[-1].get("ready")), "the submodule was fetched with Alice's token"
    told = events[-1].get("message", "") if events else response.json()["message"]
    assert "A submodule of this repository could not be fetched" in told and "hub's credentials" in told, told
    if backend == "kubernetes":  # a public repository: no token handed to its build at all
        namespace = hub.spawner_config["KubernetesBackend.namespace"]
        build = kubectl.json("get", contract.PLURAL, contract.build_name(public.url, head(public)), "-n", namespace)
        assert "userCredentials" not in build["spec"], build["spec"]
    response, events = hub.spawn_and_follow("bob", {"repo": public.url, "ref": "main"})
    assert not (events and events[-1].get("ready")), "Bob's server started from the public commit"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image)

    # The hub's own credentials (every user may read what the hub reads): submodules too. (A
    # second hub here would bring a second operator to the namespace: the local backend's
    # builds show it; the operator combines the same two scopes.)
    if backend != "local":
        return
    token = tokens(testenv)["hub"]
    admin_hub = hubs(
        backend,
        repo_credentials={f"http://{testenv['R2D_BRIDGE_IP']}": {"username": "hub", "token": token}},
        operator_options={"git_credentials": _credentials_file(hub, token, testenv)},
    )
    response, events = admin_hub.spawn_and_follow("bob", {"repo": public.url, "ref": "main"})
    assert events and events[-1].get("ready"), (response.status_code, response.text[:800], events[-3:])
    assert admin_hub.user_file("bob", "sub/marker.txt") == "alice's private submodule\n"


def _credentials_file(hub, token: str, testenv) -> str:
    path = hub.workdir / "operator-git-credentials.json"
    path.write_text(json.dumps({f"http://{testenv['R2D_BRIDGE_IP']}": {"username": "hub", "token": token}}))
    return str(path)
