#!/usr/bin/env bash
# Build the test environment's images locally: nothing can be pulled from a registry here.
#   base        Debian rootfs from debootstrap, `docker import`ed
#   singleuser  base + Python + jupyterhub-singleuser (default server image, FROM of test repos)
#   pause       one static Go binary FROM scratch: the node's sandbox image (no registry.k8s.io)
#   repo2docker base + git + jupyter-repo2docker + docker CLI + buildx (the build images the
#               operator runs: the newest repo2docker, and 2024.7.0, the last without buildx)
# Each image carries a label with the hash of its inputs and is rebuilt only when they change.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export DOCKER_BUILDKIT=0   # dockerd 20.10 without the buildx plugin: classic builder

LABEL=org.r2dspawner.testenv.inputs
BASE_IMAGE="r2d-testenv/base:$DEBIAN_SUITE"
SINGLEUSER_IMAGE="r2d-testenv/singleuser:jupyterhub-$JUPYTERHUB_VERSION"
BUILD_IMAGE="r2d-testenv/repo2docker:$REPO2DOCKER_VERSION"
BUILD_IMAGE_2024="r2d-testenv/repo2docker:$REPO2DOCKER_2024_VERSION"
PAUSE_IMAGE="r2d-testenv/pause:1"

image_inputs() { docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }
hash_of() { sha256sum | cut -c1-16; }

debian_mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | head -n1 || true)
  echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

build_base() {
  local mirror inputs rootfs
  mirror=$(debian_mirror)
  inputs=$(printf '%s %s minbase' "$DEBIAN_SUITE" "$mirror" | hash_of)
  [[ "$(image_inputs "$BASE_IMAGE")" == "$inputs" ]] && { log "$BASE_IMAGE up to date"; return; }
  step "debootstrap $DEBIAN_SUITE from $mirror and docker import $BASE_IMAGE"
  command -v debootstrap >/dev/null || apt_install debootstrap
  rootfs="$R2D_CACHE/rootfs-$DEBIAN_SUITE"
  as_root rm -rf "$rootfs.tmp"
  as_root debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs.tmp" "$mirror" >"$TESTENV_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed (log: $TESTENV_DIR/debootstrap.log); is $mirror reachable? Set DEBIAN_MIRROR to override."
  as_root rm -rf "$rootfs.tmp/var/cache/apt/archives/"*.deb "$rootfs.tmp/var/lib/apt/lists/"*
  as_root tar -C "$rootfs.tmp" -c . | docker import \
      -c "LABEL $LABEL=$inputs" -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null \
    || die "docker import of $BASE_IMAGE failed."
  as_root rm -rf "$rootfs.tmp"
  end_step
}

# download_wheels DIR REQUIREMENT... : wheels for the images' Python (Debian's 3.11), on the host.
download_wheels() {
  local dir="$1"; shift
  [[ -f "$dir/.complete" ]] && return
  rm -rf "$dir"; mkdir -p "$dir"
  python3 -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      --platform linux_x86_64 -d "$dir" "$@" \
    || die "pip download $* failed (see pip's message above: PyPI unreachable, or versions that do not fit together)."
  touch "$dir/.complete"
}

# build_python_image NAME DIR REQUIREMENT...
# Every file in DIR is part of the build context (and of the inputs hash); so are the files
# named in EXTRA_CONTEXT (built binaries).
build_python_image() {
  local name="$1" dir="$2"; shift 2
  local base_id inputs ctx wheels
  base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")
  inputs=$( { cat "$dir"/*; echo "$base_id"; echo "$*"; for f in ${EXTRA_CONTEXT:-}; do sha256sum <"$f"; done; } | hash_of)
  [[ "$(image_inputs "$name")" == "$inputs" ]] && { log "$name up to date"; return; }
  step "docker build $name"
  ctx="$R2D_CACHE/context/$(basename "$dir")"
  wheels="$R2D_CACHE/wheels/$(basename "$dir")-$(echo "$*" | hash_of)"
  download_wheels "$wheels" "$@"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -p "$dir"/* "$ctx/"
  for f in ${EXTRA_CONTEXT:-}; do cp -p "$f" "$ctx/"; done
  cp -r "$wheels" "$ctx/wheels"
  docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "$LABEL=$inputs" -t "$name" "$ctx" \
      >"$TESTENV_DIR/build-$(basename "$dir").log" 2>&1 \
    || die "docker build $name failed; see $TESTENV_DIR/build-$(basename "$dir").log"
  end_step
}

build_pause() {
  local dir="$1" inputs ctx
  inputs=$(cat "$dir"/* | hash_of)
  [[ "$(image_inputs "$PAUSE_IMAGE")" == "$inputs" ]] && { log "$PAUSE_IMAGE up to date"; return; }
  step "go build pause and docker build $PAUSE_IMAGE"
  need_cmd go "Install Go (https://go.dev/dl) or Debian's golang package."
  ctx="$R2D_CACHE/context/pause"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -p "$dir/Dockerfile" "$ctx/"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/pause" .) \
    || die "building the pause program failed (see the error above)."
  docker build -q --label "$LABEL=$inputs" -t "$PAUSE_IMAGE" "$ctx" >"$TESTENV_DIR/build-pause.log" 2>&1 \
    || die "docker build $PAUSE_IMAGE failed; see $TESTENV_DIR/build-pause.log"
  end_step
}

here="$(cd "$(dirname "$0")" && pwd)"
build_base
build_pause "$here/images/pause"
build_python_image "$SINGLEUSER_IMAGE" "$here/images/singleuser" \
  "jupyterhub==$JUPYTERHUB_VERSION" "jupyter_server==$JUPYTER_SERVER_VERSION" "jupyterlab==$JUPYTERLAB_VERSION"
EXTRA_CONTEXT="$(tool_dir docker-buildx)/docker-buildx"
[[ -x "$EXTRA_CONTEXT" ]] || die "$EXTRA_CONTEXT is missing: run testenv/build-go-tools.sh first."
EXTRA_CONTEXT="$EXTRA_CONTEXT" build_python_image "$BUILD_IMAGE" "$here/images/repo2docker" "jupyter-repo2docker==$REPO2DOCKER_VERSION"
EXTRA_CONTEXT="$EXTRA_CONTEXT" build_python_image "$BUILD_IMAGE_2024" "$here/images/repo2docker" "jupyter-repo2docker==$REPO2DOCKER_2024_VERSION"

cat >"$TESTENV_DIR/images.env" <<ENV
R2D_BASE_IMAGE=$BASE_IMAGE
R2D_SINGLEUSER_IMAGE=$SINGLEUSER_IMAGE
R2D_BUILD_IMAGE=$BUILD_IMAGE
R2D_BUILD_IMAGE_2024=$BUILD_IMAGE_2024
R2D_PAUSE_IMAGE=$PAUSE_IMAGE
ENV
