#!/usr/bin/env bash
# Build the Go tools that are not part of the control plane into a versioned cache:
#   docker-buildx  the CLI plugin repo2docker >= 2025.08 builds with (`docker buildx build`);
#                  it goes into the repo2docker build image, and works with dockerd 20.10
#                  through buildx's default `docker` driver.
#   registry       the CNCF distribution registry, for builds that push and servers that pull.
# Idempotent: each binary is built only when its versioned path is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need_cmd go "Install Go (https://go.dev/dl) or Debian's golang package; the Go module proxy must be reachable."
export CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

# go_install NAME PACKAGE@VERSION LDFLAGS [GOFLAGS]: build into $dir/NAME unless it is there.
go_install() {
  local name="$1" pkg="$2" ldflags="$3" goflags="${4:-}" dir
  dir="$(tool_dir "$name")"
  [[ -x "$dir/$name" ]] && return 0
  step "go install $pkg"
  mkdir -p "$dir.tmp"
  GOFLAGS="$goflags -trimpath" GOBIN="$dir.tmp" go install -ldflags "$ldflags" "$pkg" >"$TESTENV_DIR/go-$name.log" 2>&1 \
    || die "building $pkg failed; see $TESTENV_DIR/go-$name.log (a module the proxy refuses is named there)."
  local built; built="$(ls "$dir.tmp")"
  mkdir -p "$dir" && mv "$dir.tmp/$built" "$dir/$name" && rm -rf "$dir.tmp"
  end_step
}

# buildx's go.mod carries replace directives that `go install` refuses unless -mod=mod.
go_install docker-buildx "github.com/docker/buildx/cmd/buildx@$BUILDX_VERSION" \
  "-s -w -X github.com/docker/buildx/version.Version=$BUILDX_VERSION -X github.com/docker/buildx/version.Package=github.com/docker/buildx" \
  "-mod=mod"
go_install registry "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION" \
  "-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
log "Go tools ready: $(tool_dir docker-buildx)/docker-buildx, $(tool_dir registry)/registry"
