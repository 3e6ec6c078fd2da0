#!/usr/bin/env bash
# testenv/load-image.sh [--node N] IMAGE...: copy images from dockerd into every node's
# containerd (or node N's only) (the
# `k8s.io` namespace the kubelet uses), as `docker save | ctr images import`. Nothing here can
# be pulled from a registry, so this is how pod images reach the node; pods then use
# `imagePullPolicy: IfNotPresent` (or Never). An image already there with the same id is skipped.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

nodes=()
if [[ "${1:-}" == --node ]]; then nodes=("$2"); shift 2; fi
[[ $# -gt 0 ]] || die "usage: testenv/load-image.sh [--node N] IMAGE..."
if [[ ${#nodes[@]} -eq 0 ]]; then
  for n in 1 2; do [[ -S "$(node_dir "$n")/containerd.sock" ]] && nodes+=("$n"); done
fi
[[ ${#nodes[@]} -gt 0 ]] || die "no node's containerd is running: run 'make testenv' first."

load_into() {  # node image
  local SOCK CTR image="$2" id ref
  SOCK="$(node_dir "$1")/containerd.sock"
  CTR=(ctr --address "$SOCK" -n k8s.io)
  [[ -S "$SOCK" ]] || die "node $1's containerd is not running ($SOCK): run 'make testenv' first."
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
    return
  fi
  docker save "$image" | "${CTR[@]}" images import --all-platforms - >/dev/null \
    || die "importing $image into node $1's containerd failed"
  "${CTR[@]}" images label "$ref" "r2d.testenv/docker-id=${id:0:12}" >/dev/null \
    || die "$image was imported but not as $ref"
  echo "$ref"
}

for image in "$@"; do
  for n in "${nodes[@]}"; do load_into "$n" "$image"; done
done | sort -u
