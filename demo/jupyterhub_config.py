"""JupyterHub configuration for `make demo`: Repo2DockerSpawner with the local test environment.

Everything comes from the environment that demo/run.sh sets (and .testenv/env), so the same
file serves both backends. Not a production configuration: the authenticator accepts any
user name with the demo password.
"""

import os

import repo2dockerspawner.hub

env = os.environ
c = get_config()  # noqa: F821 - provided by JupyterHub

c.JupyterHub.spawner_class = "repo2docker"
c.JupyterHub.ip = env.get("DEMO_IP", "127.0.0.1")
c.JupyterHub.port = int(env.get("DEMO_PORT", "8000"))
# Servers in containers reach the hub on the docker bridge.
c.JupyterHub.hub_ip = env["R2D_BRIDGE_IP"]
c.JupyterHub.hub_connect_ip = env["R2D_BRIDGE_IP"]
c.JupyterHub.hub_port = int(env.get("DEMO_HUB_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('DEMO_PROXY_API_PORT', '8001')}"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = env.get("DEMO_PASSWORD", "repo2docker")
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}
# Admins log in only with a password of their own (demo/run.sh generates and prints it).
c.SharedPasswordAuthenticator.admin_password = env["DEMO_ADMIN_PASSWORD"]

c.Repo2DockerSpawner.backend = env.get("DEMO_BACKEND", "local")
c.Repo2DockerSpawner.image = env["R2D_SINGLEUSER_IMAGE"]  # no repository: this image
c.LocalBackend.build_image = env["R2D_BUILD_IMAGE"]
c.LocalBackend.concurrency = 2
# This machine has no internet access: repo2docker >= 2025.08 fetches the list of Dataverse
# installations before every build, so point it at the test environment's copy.
c.LocalBackend.build_env = {"R2D_DATAVERSE_INSTALLATIONS_URL": env["R2D_DATAVERSE_INSTALLATIONS_URL"]}
c.Repo2DockerSpawner.image_prefix = "r2d-demo-"
# The demo's git server speaks plain http on the docker bridge; real hubs keep https only.
c.Repo2DockerSpawner.allowed_repo_schemes = ["https", "http"]
c.Repo2DockerSpawner.allowed_repo_hosts = [env["R2D_BRIDGE_IP"], "*"]
c.DockerSpawner.name_template = "r2d-demo-{username}--{servername}"
# The admin builds page at /services/repo2docker/builds (log in as "admin" with the admin password), and the
# spawn-pending page with the build log open. A Binder-style link fills in the spawn form;
# the user's click on Start launches it (Repo2DockerSpawner.autolaunch_repos to skip that).
repo2dockerspawner.hub.setup(c)
if c.Repo2DockerSpawner.backend == "kubernetes":
    c.KubernetesBackend.namespace = env.get("DEMO_NAMESPACE", "r2d-demo")
    c.KubernetesBackend.kubeconfig = env["DEMO_KUBECONFIG"]  # the chart's hub identity, not admin
    # The chart's record of images' last use, shown on the builds page.
    c.KubernetesBackend.image_use_record = (
        f"configmap:{c.KubernetesBackend.namespace}/r2d-repo2docker-operator-image-use"
    )
