"""Where the repository goes when a volume holds the home (pure logic; the copy itself runs
in test_homes_docker.py, on the real daemon)."""

from __future__ import annotations

import pytest

from repo2dockerspawner.homes import (
    REPO_DIR_BESIDE_HOME,
    Mounted,
    covers,
    default_repo_dir,
    folder_names,
    image_paths,
    landing_url,
    plan_copy,
    server_mounts,
)

pytestmark = pytest.mark.unit

# Configurations as `docker inspect` shows them for repo2docker's two shapes of image.
BUILDPACK = {"User": "1000", "WorkingDir": "/srv/repo", "Env": ["HOME=/home/jovyan", "REPO_DIR=/srv/repo", "PATH=/x"]}
DOCKERFILE = {"User": "jovyan", "WorkingDir": "/home/jovyan", "Env": ["HOME=/home/jovyan"]}
URL = "https://git.example.org/course/Intro-2026.git"


def test_a_volume_on_the_home_moves_the_repository_out_of_it_by_default():
    assert default_repo_dir(["/home/jovyan"]) == default_repo_dir(["/home"]) == REPO_DIR_BESIDE_HOME
    assert default_repo_dir([]) == ""  # a hub without volumes builds what it built before
    assert default_repo_dir(["/home/jovyan/work", "/srv/data"]) == ""


def test_covers_is_about_whole_path_components():
    assert covers("/home/jovyan", "/home/jovyan") and covers("/home", "/home/jovyan/x")
    assert not covers("/home/jov", "/home/jovyan") and not covers("/home/jovyan/work", "/home/jovyan")


def test_folders_are_named_after_the_repository_with_a_distinct_second_choice():
    name, other = folder_names(URL)
    assert name == "Intro-2026" and other.startswith("Intro-2026-") and len(other) == len(name) + 9
    assert (
        folder_names("https://git.example.org/course/intro-2026")[1]
        != folder_names("https://other.org/x/Intro-2026")[1]
    )
    assert folder_names("https://h")[0] == "repository"


def test_image_paths_follow_repo2dockers_environment_then_the_working_directory():
    assert image_paths(BUILDPACK) == ("/home/jovyan", "/srv/repo")
    assert image_paths(DOCKERFILE) == ("/home/jovyan", "/home/jovyan")
    assert image_paths({"User": "ann", "WorkingDir": "/"}) == ("/home/ann", "/home/ann")


@pytest.mark.parametrize("image", [BUILDPACK, DOCKERFILE])
def test_a_volume_on_the_home_gets_a_copy_in_a_folder_of_the_home(image):
    plan = plan_copy(image, [Mounted("jupyterhub-user-ann", "/home/jovyan")], URL)
    assert (plan.parent, plan.name, plan.folder()) == ("/home/jovyan", "Intro-2026", "/home/jovyan/Intro-2026")
    argv = plan.helper_command()
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == [
        "r2d-copy",
        image_paths(image)[1],
        "/r2d-volume",
        "Intro-2026",
        plan.other_name,
        "https://git.example.org/course/Intro-2026",
    ]
    # A volume on /home: the user's home is a folder of it.
    plan = plan_copy(image, [Mounted("homes", "/home")], URL)
    assert plan.helper_command()[5] == "/r2d-volume/jovyan" and plan.folder() == "/home/jovyan/Intro-2026"


def test_a_volume_on_a_folder_of_the_home_needs_no_copy():
    assert plan_copy(DOCKERFILE, [Mounted("jupyterhub-user-ann", "/home/jovyan/work")], URL) is None
    assert plan_copy(BUILDPACK, [], URL) is None
    assert plan_copy(DOCKERFILE, [Mounted("shared", "/home/jovyan", read_only=True)], URL) is None


def test_docker_spawners_binds_and_mounts_are_read_alike():
    mounted = server_mounts(
        {"vol-ann": {"bind": "/home/jovyan", "mode": "rw"}, "/srv/x": {"bind": "/x", "mode": "ro"}},
        [{"Type": "volume", "Source": "data", "Target": "/data"}, {"Type": "tmpfs", "Target": "/t"}],
    )
    assert mounted == [Mounted("vol-ann", "/home/jovyan"), Mounted("/srv/x", "/x", True), Mounted("data", "/data")]


def test_the_landing_url_is_relative_to_the_servers_root():
    assert landing_url("/home/jovyan/course", "/home/jovyan") == "/lab/tree/course"
    assert landing_url("/home/jovyan", "/home/jovyan") == "/lab"
    assert landing_url("/home/jovyan/course", "/srv") is None


def test_new_volumes_inside_the_home_are_given_to_the_servers_user():
    from repo2dockerspawner.homes import owner_fix

    work, home = Mounted("vol-work", "/home/jovyan/work"), Mounted("vol-home", "/home/jovyan")
    fix = owner_fix(DOCKERFILE, [work, home, Mounted("data", "/data")], 1000, 100)
    # Only the one strictly inside the home: Docker gives the home's own volume its owner.
    assert fix.volumes == (work,) and fix.owner == "1000:100"
    assert fix.helper_binds() == {"vol-work": "/r2d-volume-0"}
    assert fix.helper_command()[3:] == ["r2d-owner", "1000:100", "/r2d-volume-0"]
    # Nothing in the script is looked up on PATH: it runs as root, in whatever image.
    script = fix.helper_command()[2]
    assert "/bin/chown " in script and "/usr/bin/stat " in script and " id " not in script
    assert owner_fix(DOCKERFILE, [work], 0, 0) is None and owner_fix(DOCKERFILE, [home], 1000, 100) is None
    assert owner_fix(DOCKERFILE, [Mounted("ro", "/home/jovyan/shared", read_only=True)], 1000, 100) is None


def test_helpers_obey_the_servers_policy_and_only_the_root_step_keeps_a_capability():
    from repo2dockerspawner.helpers import ServerPolicy, host_config

    policy = ServerPolicy(
        extra_host_config={
            "runtime": "runsc",
            "security_opt": ["seccomp=strict.json"],
            "cap_add": ["NET_ADMIN"],
            "pids_limit": 10_000,
            "network_mode": "host",
            "privileged": True,
        },
        mem_limit="512M",
        cpu_limit=0.5,
        pids_limit=64,
    )
    copy = host_config(policy, {"vol": "/r2d-volume"}, privileged_step=False)
    assert copy["runtime"] == "runsc" and copy["mem_limit"] == "512M" and copy["cpu_quota"] == 50_000
    assert copy["network_mode"] == "none" and copy["pids_limit"] == 64 and copy["privileged"] is False
    assert copy["security_opt"] == ["no-new-privileges", "seccomp=strict.json"]
    assert copy["binds"] == {"vol": {"bind": "/r2d-volume", "mode": "rw"}}
    owner = host_config(policy, {"vol": "/r2d-volume-0"}, privileged_step=True)
    assert owner["cap_drop"] == ["ALL"] and owner["cap_add"] == ["CHOWN"] and owner["read_only"] is True
    assert host_config(ServerPolicy(extra_host_config={"pids_limit": 16}), {}, False)["pids_limit"] == 16


def test_the_servers_user_is_resolved_from_the_images_passwd_as_docker_does():
    from repo2dockerspawner.helpers import UserIds, parse_passwd, resolve_user

    passwd = parse_passwd(
        "root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n"
        "broken line\nevil:x:-1:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    )
    assert set(passwd) == {"root", "jovyan", "nobody"}
    assert resolve_user("jovyan", passwd) == UserIds(1000, 100)
    assert resolve_user("1000", passwd) == UserIds(1000, 100)  # a known uid: its group
    assert resolve_user("4242", passwd) == UserIds(4242, 0)  # an unknown one: group 0, as Docker
    assert resolve_user("1000:1000", {}) == UserIds(1000, 1000)
    assert resolve_user("", passwd).root and resolve_user("root", passwd).root
    assert resolve_user("nosuchuser", passwd) is None
