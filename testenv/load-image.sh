#!/usr/bin/env bash
# testenv/load-image.sh IMAGE...: copy images from dockerd into the node's containerd (the
# `k8s.io` namespace the kubelet uses), as `docker save | ctr images import`. Nothing here can
# be pulled from a registry, so this is how pod images reach the node; pods then use
# `imagePullPolicy: IfNotPresent` (or Never). An image already there with the same id is skipped.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SOCK="$TESTENV_DIR/node/containerd.sock"
CTR=(ctr --address "$SOCK" -n k8s.io)
[[ $# -gt 0 ]] || die "usage: testenv/load-image.sh IMAGE..."
[[ -S "$SOCK" ]] || die "the node's containerd is not running ($SOCK): run 'make testenv' first."

for image in "$@"; do
  id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || die "docker has no image $image"
  id="${id#sha256:}"
  # containerd names images fully: r2d/x:1 is docker.io/r2d/x:1, x:1 is docker.io/library/x:1.
  ref="$image"
  if [[ "$ref" != */* ]]; then
    ref="docker.io/library/$ref"
  elif [[ "${ref%%/*}" != *[.:]* && "${ref%%/*}" != localhost ]]; then
    ref="docker.io/$ref"
  fi
  [[ "${ref##*/}" == *:* || "$ref" == *@* ]] || ref="$ref:latest"
  if "${CTR[@]}" images ls "name==$ref" 2>/dev/null | grep -q "r2d.testenv/docker-id=${id:0:12}"; then
    echo "$ref"
    continue
  fi
  docker save "$image" | "${CTR[@]}" images import --all-platforms - >/dev/null \
    || die "importing $image into the node's containerd failed"
  "${CTR[@]}" images label "$ref" "r2d.testenv/docker-id=${id:0:12}" >/dev/null \
    || die "$image was imported but not as $ref"
  echo "$ref"
done
