#!/usr/bin/env bash
# Build the operator image: the project's wheel and its dependencies' wheels (for the
# image's Python) are prepared on this host, then installed offline by the Dockerfile.
#   tools/operator-image.sh [TAG] [BASE_IMAGE] [PYTHON_VERSION]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-repo2docker-operator:dev}"
base="${2:-python:3.11-slim-bookworm}"
pyver="${3:-3.11}"
wheels="$root/build/operator-wheels"
python="${PYTHON:-python3}"

# One build at a time: parallel test workers and `make demo` share the wheel directory.
mkdir -p "$root/build"
exec 9>"$root/build/.operator-image.lock"
flock 9
rm -rf "$wheels"; mkdir -p "$wheels"
"$python" -m pip wheel -q --no-deps -w "$wheels" "$root" \
  || { echo "operator-image: building the project's wheel failed" >&2; exit 1; }
wheel="$(ls "$wheels"/repo2dockerspawner-*.whl)"
"$python" -m pip download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform linux_x86_64 -d "$wheels" "${wheel}[operator]" \
  || { echo "operator-image: downloading dependency wheels failed (is PyPI reachable?)" >&2; exit 1; }
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build -q --build-arg "BASE_IMAGE=$base" -t "$tag" "$root" >/dev/null \
  || { echo "operator-image: docker build failed" >&2; exit 1; }
echo "$tag"
