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
# Images built before stay under this name, keyed by everything that goes into them: the
# same inputs give the image again in a second instead of a fresh `pip install` (minutes on
# a busy 2-core machine). Docker's own layer cache is lost whenever the last tag goes.
cache_repo="repo2docker-operator-cache"
cache_keep=3

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

# The key: the base image (its id when present, else its name), the Dockerfile and every
# wheel's content (hatchling builds the project's wheel reproducibly).
key="$( { docker image inspect -f '{{.Id}}' "$base" 2>/dev/null || echo "$base"
          sha256sum < "$root/Dockerfile"
          (cd "$wheels" && sha256sum -- *.whl); } | sha256sum | cut -c1-20)"
if docker image inspect "$cache_repo:$key" >/dev/null 2>&1; then
  docker tag "$cache_repo:$key" "$tag"
else
  DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build -q --build-arg "BASE_IMAGE=$base" -t "$tag" "$root" >/dev/null \
    || { echo "operator-image: docker build failed" >&2; exit 1; }
  docker tag "$tag" "$cache_repo:$key"
  # Only the newest few stay cached; an untagged image still used by a tag or a container stays.
  docker image ls "$cache_repo" --format '{{.Tag}}' | tail -n +$((cache_keep + 1)) \
    | while read -r old; do docker rmi "$cache_repo:$old" >/dev/null 2>&1 || true; done
fi
echo "$tag"
