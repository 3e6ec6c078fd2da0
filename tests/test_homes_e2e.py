"""Persistent homes on real hubs: a user's volume on the home directory, or on a folder of it,
across launches of different repositories (both backends, both repo2docker versions)."""

from __future__ import annotations

import uuid

import pytest
import requests

from repo2docker_buildcore import contract
from repo2dockerspawner.homes import MARKER, folder_names
from support.builds import head
from support.env import both_repo2docker_versions

pytestmark = pytest.mark.e2e

# The two shapes of Dockerfile Binder users write: files copied into the home (repo2docker's
# documentation), and files copied to ${REPO_DIR}, which repo2docker passes as a build
# argument and buildpack images also declare (their files follow --target-repo-dir).
INTO_HOME = """FROM {base}
ARG NB_USER=jovyan
ARG NB_UID=1000
ENV HOME=/home/${{NB_USER}}
RUN echo build-{token}
USER root
COPY . ${{HOME}}
RUN chown -R ${{NB_UID}} ${{HOME}}
USER ${{NB_USER}}
WORKDIR ${{HOME}}
"""
INTO_REPO_DIR = """FROM {base}
ARG REPO_DIR=/home/jovyan
ENV REPO_DIR=${{REPO_DIR}}
RUN echo build-{token}
USER root
RUN install -o 1000 -g 1000 -d ${{REPO_DIR}}
COPY --chown=1000:1000 . ${{REPO_DIR}}
USER 1000
WORKDIR ${{REPO_DIR}}
"""


def repo(git_repos, testenv, shape: str, marker: str):
    return git_repos.create(
        {
            "Dockerfile": shape.format(base=testenv["R2D_SINGLEUSER_IMAGE"], token=uuid.uuid4().hex),
            "marker.txt": marker + "\n",
        }
    )


def save(hub, name: str, path: str, content: str) -> None:
    r = requests.put(
        f"{hub.url}/user/{name}/api/contents/{path}",
        json={"type": "file", "format": "text", "content": content},
        headers={"Authorization": f"token {hub.token}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def listing(hub, name: str, path: str = "") -> set[str]:
    r = requests.get(
        f"{hub.url}/user/{name}/api/contents/{path}", headers={"Authorization": f"token {hub.token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    return {item["name"] for item in r.json()["content"]}


def launch(hub, name: str, url: str) -> None:
    response, events = hub.spawn_and_follow(name, {"repo": url, "ref": "main"})
    assert response.status_code in (201, 202), response.text
    assert events and events[-1].get("ready"), events[-3:]


def server_env(docker_client, hub, name: str) -> dict[str, str]:
    config = docker_client.containers.get(hub.server_container(name)).attrs["Config"]
    return dict(item.partition("=")[::2] for item in config["Env"])


@both_repo2docker_versions
@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_volume_on_the_home_shows_each_repository_in_its_folder_and_keeps_what_the_user_saved(
    home_volume, hubs, backend, build_image, testenv, git_repos, docker_client
):
    hub = hubs(backend, volumes={home_volume: "/home/jovyan"})
    first = repo(git_repos, testenv, INTO_HOME, "first repository")
    second = repo(git_repos, testenv, INTO_REPO_DIR, "second repository")
    name = f"h{uuid.uuid4().hex[:8]}"
    first_dir, second_dir = folder_names(first.url)[0], folder_names(second.url)[0]

    launch(hub, name, first.url)
    assert server_env(docker_client, hub, name)["JUPYTERHUB_DEFAULT_URL"] == f"/lab/tree/{first_dir}"
    assert hub.user_file(name, f"{first_dir}/marker.txt") == "first repository\n"
    save(hub, name, "notes.txt", "saved in the home")
    hub.stop_server(name)

    launch(hub, name, second.url)
    env = server_env(docker_client, hub, name)
    # JupyterLab opens the second repository's folder, in the home as its root ...
    assert (env["JUPYTERHUB_DEFAULT_URL"], env["JUPYTERHUB_ROOT_DIR"]) == (f"/lab/tree/{second_dir}", "/home/jovyan")
    assert hub.user_file(name, f"{second_dir}/marker.txt") == "second repository\n"
    # ... the first one's files are in their own folder, what the user saved where they left it.
    assert hub.user_file(name, f"{first_dir}/marker.txt") == "first repository\n"
    assert hub.user_file(name, "notes.txt") == "saved in the home"
    assert {first_dir, second_dir, "notes.txt"} <= listing(hub, name)
    # The image of the second was built with its files beside the home, and named for it.
    image = contract.image_name("r2d-e2e-", second.url, head(second), "/srv/repo")
    assert docker_client.images.get(image).attrs["Config"]["WorkingDir"] == "/srv/repo"

    # An edit of a repository file survives the next launch of a newer commit, whose new
    # files appear beside it.
    save(hub, name, f"{second_dir}/marker.txt", "edited by the user")
    hub.stop_server(name)
    second.commit({"marker.txt": "second repository, newer\n", "added.txt": "new in the newer commit\n"})
    launch(hub, name, second.url)
    assert hub.user_file(name, f"{second_dir}/marker.txt") == "edited by the user"
    assert hub.user_file(name, f"{second_dir}/added.txt") == "new in the newer commit\n"


def test_a_folder_of_the_users_own_with_the_repositorys_name_is_left_alone(
    home_volume, hubs, testenv, git_repos, docker_client
):
    hub = hubs("local", volumes={home_volume: "/home/jovyan"})
    theirs = repo(git_repos, testenv, INTO_HOME, "the repository")
    name = f"h{uuid.uuid4().hex[:8]}"
    folder, other = folder_names(theirs.url)
    hub.create_user(name)
    # Before the first launch, the user already has a folder of that name (in the volume).
    docker_client.containers.run(
        testenv["R2D_SINGLEUSER_IMAGE"],
        ["sh", "-c", f"mkdir -p /home/jovyan/{folder} && echo mine > /home/jovyan/{folder}/marker.txt"],
        volumes={home_volume.format(username=name): {"bind": "/home/jovyan", "mode": "rw"}},
        remove=True,
    )
    launch(hub, name, theirs.url)
    assert server_env(docker_client, hub, name)["JUPYTERHUB_DEFAULT_URL"] == f"/lab/tree/{other}"
    assert hub.user_file(name, f"{folder}/marker.txt") == "mine\n"
    assert hub.user_file(name, f"{other}/marker.txt") == "the repository\n"
    assert MARKER not in listing(hub, name, folder)


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_a_volume_on_a_folder_of_the_home_keeps_todays_images_and_layout(
    home_volume, hubs, backend, testenv, git_repos, docker_client
):
    hub = hubs(backend, volumes={home_volume: "/home/jovyan/work"})
    first = repo(git_repos, testenv, INTO_HOME, "first repository")
    second = repo(git_repos, testenv, INTO_HOME, "second repository")
    name = f"w{uuid.uuid4().hex[:8]}"

    launch(hub, name, first.url)
    save(hub, name, "work/notes.txt", "saved in work")
    hub.stop_server(name)
    launch(hub, name, second.url)
    # The home is the second image's: its files where the user lands, none of the first's.
    assert hub.user_file(name, "marker.txt") == "second repository\n"
    assert hub.user_file(name, "work/notes.txt") == "saved in work"
    assert folder_names(first.url)[0] not in listing(hub, name)
    env = server_env(docker_client, hub, name)
    assert "JUPYTERHUB_DEFAULT_URL" not in env and "JUPYTERHUB_ROOT_DIR" not in env
    # Built as before the option existed: repo2docker's default directory, the same name.
    assert docker_client.images.get(contract.image_name("r2d-e2e-", second.url, head(second)))
