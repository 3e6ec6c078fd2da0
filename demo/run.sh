#!/usr/bin/env bash
# `make demo`: a working hub you can open. Brings up what it needs from the test
# environment (Docker, images, the git server; Kubernetes and the operator with
# DEMO_BACKEND=kubernetes), serves a sample repository, and runs JupyterHub in the foreground.
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
fi
set -a
source "$TESTENV_DIR/images.env"; source "$TESTENV_DIR/git.env"; source "$TESTENV_DIR/chp.env"
set +a
if [[ "$backend" == kubernetes ]]; then
  export KUBECONFIG="$TESTENV_DIR/kube/kubeconfig"
  KUBECTL="$CONTROL_PLANE_BIN/kubectl"
fi

# The sample repository, committed and served by the git server (rebuilt when its files change).
sample="$TESTENV_DIR/demo/sample-repo"
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
  rm -rf "$R2D_GIT_ROOT/demo.git"
  git clone -q --bare . "$R2D_GIT_ROOT/demo.git"
)
repo_url="$R2D_GIT_URL/demo.git"

if [[ "$backend" == kubernetes ]]; then
  "$KUBECTL" --kubeconfig "$KUBECONFIG" apply -f "$root/crds/repo2dockerbuilds.yaml" >/dev/null
  "$KUBECTL" --kubeconfig "$KUBECONFIG" wait --for=condition=Established crd/repo2dockerbuilds.repo2dockerspawner.jupyter.org >/dev/null
  ns="${DEMO_NAMESPACE:-r2d-demo}"
  "$KUBECTL" --kubeconfig "$KUBECONFIG" create namespace "$ns" >/dev/null 2>&1 || true
  stop_pid "$TESTENV_DIR/demo-operator"
  start_bg "$TESTENV_DIR/demo-operator" "$root/.venv/bin/repo2docker-operator" --namespace "$ns" \
    --build-image "$R2D_BUILD_IMAGE" --image-prefix r2d-demo- --concurrency 2 --metrics-port 0 \
    --build-env "R2D_DATAVERSE_INSTALLATIONS_URL=$R2D_DATAVERSE_INSTALLATIONS_URL" \
    --liveness "http://127.0.0.1:${DEMO_OPERATOR_PORT:-8082}/healthz" --instance demo
fi

port="${DEMO_PORT:-8000}"
cat <<MSG

  Repo2DockerSpawner demo ($backend backend)
  ------------------------------------------------------------------
  Open:        http://${DEMO_IP:-127.0.0.1}:$port/
  Log in as:   any user name, password '${DEMO_PASSWORD:-repo2docker}'
  Repository:  $repo_url
  Ref:         v1   (or main, or a commit SHA)
  Binder link: http://${DEMO_IP:-127.0.0.1}:$port/hub/spawn?repo=$repo_url&ref=v1
  Leave the repository empty for the default image. Stop with Ctrl-C.
MSG
[[ "$backend" == kubernetes ]] && echo "  Builds:      KUBECONFIG=$KUBECONFIG $KUBECTL get r2dbuilds -n ${DEMO_NAMESPACE:-r2d-demo}"
echo

mkdir -p "$TESTENV_DIR/demo"
cd "$TESTENV_DIR/demo"
export DEMO_BACKEND="$backend"
export PATH="$R2D_CHP_BIN:$root/.venv/bin:$PATH"
if [[ "$backend" == kubernetes ]]; then
  # The operator outlives nothing: it stops with the hub, however the hub stops.
  trap 'stop_pid "$TESTENV_DIR/demo-operator"' EXIT
  trap 'kill -TERM "$hub_pid" 2>/dev/null' INT TERM
  "$root/.venv/bin/jupyterhub" -f "$here/jupyterhub_config.py" &
  hub_pid=$!
  wait "$hub_pid" || wait "$hub_pid" || true
else
  exec "$root/.venv/bin/jupyterhub" -f "$here/jupyterhub_config.py"
fi
