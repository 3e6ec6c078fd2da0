#!/usr/bin/env bash
# `make testenv`: bring up the whole real test environment, idempotently, and write
# .testenv/env, the one file tests and tools read to find it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"

start=$(date +%s%N)
: >"$TESTENV_DIR/timings.tsv"
bash "$here/docker.sh"
bash "$here/build-go-tools.sh"
bash "$here/images.sh"
bash "$here/build-control-plane.sh"
bash "$here/kube.sh"
bash "$here/node.sh" 1
bash "$here/node.sh" 2
bash "$here/gitserver.sh"
bash "$here/registry.sh"
bash "$here/chp.sh"
bash "$here/browser.sh"

BIN_DIR="$CONTROL_PLANE_BIN"
{
  echo "# Written by testenv/up.sh ($(date -u +%FT%TZ)). Source it: set -a; . .testenv/env; set +a"
  echo "KUBECONFIG=$TESTENV_DIR/kube/kubeconfig"
  echo "KUBECTL=$BIN_DIR/kubectl"
  echo "HELM=$BIN_DIR/helm"
  echo "ETCD=$BIN_DIR/etcd"
  echo "KUBE_APISERVER=$BIN_DIR/kube-apiserver"
  echo "R2D_KUBE_VERSION=$KUBE_VERSION"
  echo "R2D_KUBE_ADMIN_TOKEN=$(cat "$TESTENV_DIR/kube/admin-token")"
  cat "$TESTENV_DIR/images.env" "$TESTENV_DIR/node.env" "$TESTENV_DIR/node-2.env" "$TESTENV_DIR/git.env" "$TESTENV_DIR/registry.env" "$TESTENV_DIR/chp.env" "$TESTENV_DIR/browser.env"
  [[ -n "${DOCKER_HOST:-}" ]] && echo "DOCKER_HOST=$DOCKER_HOST"
  echo "R2D_REPO2DOCKER_VERSION=$REPO2DOCKER_VERSION"
  echo "R2D_REPO2DOCKER_2024_VERSION=$REPO2DOCKER_2024_VERSION"
  echo "R2D_JUPYTERHUB_VERSION=$JUPYTERHUB_VERSION"
} >"$TESTENV_DIR/env"

total=$(( ($(date +%s%N) - start) / 1000000 ))
log "test environment ready in $((total / 1000)).$((total % 1000 / 100))s; steps:"
if [[ -s "$TESTENV_DIR/timings.tsv" ]]; then
  while IFS=$'\t' read -r name secs; do log "  ${secs}s  $name"; done <"$TESTENV_DIR/timings.tsv"
else
  log "  (everything already up: nothing to do)"
fi
log "environment file: $TESTENV_DIR/env"
