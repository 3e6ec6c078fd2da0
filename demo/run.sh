#!/usr/bin/env bash
# `make demo`: a working hub you can open. Brings up what it needs from the test
# environment (Docker, images, the git server; with DEMO_BACKEND=kubernetes the node and the
# chart's operator pod), serves a sample repository, and runs JupyterHub in the foreground.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
source "$root/testenv/lib.sh"
backend="${DEMO_BACKEND:-local}"
[[ "$backend" == local || "$backend" == kubernetes ]] || die "DEMO_BACKEND must be 'local' or 'kubernetes', not '$backend'."

bash "$root/testenv/docker.sh"
bash "$root/testenv/images.sh"
bash "$root/testenv/gitserver.sh"
bash "$root/testenv/chp.sh"
if [[ "$backend" == kubernetes ]]; then
  bash "$root/testenv/build-control-plane.sh"
  bash "$root/testenv/kube.sh"
  bash "$root/testenv/node.sh"
fi
set -a
source "$TESTENV_DIR/images.env"; source "$TESTENV_DIR/git.env"; source "$TESTENV_DIR/chp.env"
set +a
if [[ "$backend" == kubernetes ]]; then
  export KUBECONFIG="$TESTENV_DIR/kube/kubeconfig"
  export KUBECTL="$CONTROL_PLANE_BIN/kubectl"
  HELM="$CONTROL_PLANE_BIN/helm"
fi

port="${DEMO_PORT:-8000}"
# The hub's state (database, cookie secret, proxy pid file) is per port: two demos on one
# machine (the tests run both backends at once) must not stop each other's proxy.
state="$TESTENV_DIR/demo/hub-$port"
mkdir -p "$state"

# The sample repository, committed and served by the git server. Its commit depends only on
# its files (fixed dates), so it is published only when that commit changes, and by a rename:
# a demo starting meanwhile never sees a half-written repository.
sample="$state/sample-repo"
rm -rf "$sample"; mkdir -p "$sample"
cp -r "$here/sample-repo/." "$sample/"
sed -i "s|\${BASE_IMAGE}|$R2D_SINGLEUSER_IMAGE|" "$sample/Dockerfile"
(
  cd "$sample"
  git init -q -b main
  git add -A
  GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z" \
    git -c user.name=demo -c user.email=demo@example.invalid commit -q -m "Demo repository"
  git tag -f v1 >/dev/null
  served="$R2D_GIT_ROOT/demo.git"
  if [[ "$(git -C "$served" rev-parse -q --verify v1 2>/dev/null)" != "$(git rev-parse v1)" ]]; then
    git clone -q --bare . "$served.new.$$"
    rm -rf "$served.old.$$"; [[ ! -e "$served" ]] || mv "$served" "$served.old.$$"
    mv "$served.new.$$" "$served"; rm -rf "$served.old.$$"
  fi
)
repo_url="$R2D_GIT_URL/demo.git"

if [[ "$backend" == kubernetes ]]; then
  # What the docs' "On the test environment's node" section (install.md) tells users: the operator
  # image from the Dockerfile, loaded into the node, the chart installed, a hub kubeconfig.
  ns="${DEMO_NAMESPACE:-r2d-demo}"
  operator_image="repo2docker-operator:demo"
  log "building the operator image and installing the chart in namespace $ns"
  "$root/tools/operator-image.sh" "$operator_image" "$R2D_SINGLEUSER_IMAGE" >/dev/null
  bash "$root/testenv/load-image.sh" "$operator_image" >/dev/null
  "$HELM" upgrade --install r2d "$root/charts/repo2docker-operator" -n "$ns" --create-namespace --wait --timeout 180s \
    --set image.repository=repo2docker-operator --set image.tag=demo \
    --set build.image="$R2D_BUILD_IMAGE" --set build.imagePrefix=r2d-demo- --set hub.rbac.create=true \
    --set build.env.R2D_DATAVERSE_INSTALLATIONS_URL="$R2D_DATAVERSE_INSTALLATIONS_URL" >/dev/null \
    || die "helm install of the chart failed; see: $KUBECTL -n $ns get pods,events"
  mkdir -p "$TESTENV_DIR/demo"
  "$root/tools/hub-kubeconfig.sh" "$ns" >"$TESTENV_DIR/demo/hub-$ns.kubeconfig"
  export DEMO_KUBECONFIG="$TESTENV_DIR/demo/hub-$ns.kubeconfig"
fi

# The admin's password: SharedPasswordAuthenticator lets admins in only with one of their own
# (at least 32 characters), generated once and kept with the demo's state.
mkdir -p "$TESTENV_DIR/demo"
admin_file="$TESTENV_DIR/demo/admin-password"
[[ -s "$admin_file" ]] || (umask 077 && openssl rand -hex 16 >"$admin_file")
export DEMO_ADMIN_PASSWORD="${DEMO_ADMIN_PASSWORD:-$(cat "$admin_file")}"
hub_url="http://${DEMO_IP:-127.0.0.1}:$port"
cat <<MSG

  Repo2DockerSpawner demo ($backend backend)
  ------------------------------------------------------------------
  Open:        $hub_url/
  Log in as:   any user name, password '${DEMO_PASSWORD:-repo2docker}'
  Repository:  $repo_url
  Ref:         v1   (or main, or a commit SHA)
  Binder link: $hub_url/hub/spawn?repo=$repo_url&ref=v1
               (opens the form filled in; click Start to launch it)
  Admin:       log in as 'admin' with password '$DEMO_ADMIN_PASSWORD'; builds page: $hub_url/services/repo2docker/builds
  Leave the repository empty for the default image. Stop with Ctrl-C.
MSG
if [[ "$backend" == kubernetes ]]; then
  echo "  Builds:      KUBECONFIG=$KUBECONFIG $KUBECTL get r2dbuilds -n $ns"
  echo "  Operator:    KUBECONFIG=$KUBECONFIG $KUBECTL logs -n $ns deploy/r2d-repo2docker-operator"
  echo "               (it stays installed; remove it with: $HELM uninstall r2d -n $ns)"
fi
echo

cd "$state"
export DEMO_BACKEND="$backend"
export PATH="$R2D_CHP_BIN:$root/.venv/bin:$PATH"
exec "$root/.venv/bin/jupyterhub" -f "$here/jupyterhub_config.py"
