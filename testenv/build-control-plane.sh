#!/usr/bin/env bash
# Build the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), the
# node (kubelet, kube-proxy), kubectl and helm from Go modules into a versioned cache.
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules at v0.0.0 and
# replaces them with ./staging paths, which Go ignores for a dependency. The wrapper
# pins each staging module to the published v0.MINOR.PATCH instead. etcd is built from
# the same wrapper, so it gets exactly the server version Kubernetes itself depends on.
#
# Idempotent: binaries live in $R2D_CACHE/bin/<version>/ and are only built when absent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN_DIR="$CONTROL_PLANE_BIN"
WRAPPER="$R2D_CACHE/go-wrapper-$KUBE_VERSION"

KUBE_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

need_cmd go "Install Go (https://go.dev/dl) or Debian's golang package; the Go module proxy must be reachable."

all_built() {
  for b in $KUBE_BINARIES etcd helm; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
  [[ -f "$BIN_DIR/helm.stamped" ]]
}

if all_built; then
  log "control-plane binaries cached in $BIN_DIR"
  exit 0
fi
mkdir -p "$BIN_DIR" "$WRAPPER"

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

minor="${KUBE_VERSION#v1.}"          # 34.2
staging_version="v0.$minor"
major=1; kminor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

write_wrapper() {
  local modfile
  modfile="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')" \
    || die "go mod download k8s.io/kubernetes@$KUBE_VERSION failed: is the Go module proxy reachable?"
  {
    echo "module r2dspawner.local/controlplane"
    echo
    grep -E '^go [0-9]' "$modfile"
    grep -E '^godebug' "$modfile" || true
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    # Every staging replace in kubernetes' own go.mod becomes a pin to the published tag.
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$modfile" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >"$WRAPPER/go.mod"
  write_tools
}

write_tools() {
  local b
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/server/v3"\n'
    for b in $KUBE_BINARIES; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  } >"$WRAPPER/tools.go"
}

# A wrapper tidied for fewer commands (an older cache) is extended and tidied again.
wrapper_complete() {
  local b
  [[ -f "$WRAPPER/go.sum" && -f "$WRAPPER/go.mod" ]] || return 1
  for b in $KUBE_BINARIES; do grep -q "cmd/$b\"" "$WRAPPER/tools.go" 2>/dev/null || return 1; done
}

if ! wrapper_complete; then
  step "write Go wrapper module for Kubernetes $KUBE_VERSION"
  write_wrapper
  (cd "$WRAPPER" && go mod tidy -e >/dev/null 2>"$WRAPPER/tidy.log") \
    || die "go mod tidy failed in $WRAPPER (see $WRAPPER/tidy.log); a module the proxy refuses is named there."
fi

kube_ldflags() {
  local pkg flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$kminor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  done
  echo "-s -w$flags"
}

build() {  # name package [ldflags]
  local name="$1" pkg="$2" ldflags="${3:--s -w}"
  [[ -x "$BIN_DIR/$name" ]] && return 0
  step "go build $name ($pkg)"
  (cd "$WRAPPER" && go build -ldflags "$ldflags" -o "$BIN_DIR/$name.tmp" "$pkg") \
    || die "building $name failed; rerun 'make testenv' after fixing the error above."
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
  end_step
}

for b in $KUBE_BINARIES; do build "$b" "k8s.io/kubernetes/cmd/$b" "$(kube_ldflags)"; done
etcd_ver="$(cd "$WRAPPER" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
build etcd go.etcd.io/etcd/server/v3 "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_ver"

# helm's release build stamps the Kubernetes version its client libraries speak (one minor
# ahead of client-go's v0.MINOR), which `helm template` and `helm lint` assume without a
# cluster; without it they assume v1.20 and refuse charts with a kubeVersion. Read client-go's
# version from helm's own go.mod, as its Makefile does.
helm_ldflags() {
  local modfile client_go major minor pkg flags
  modfile="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')" \
    || die "go mod download helm.sh/helm/v3@$HELM_VERSION failed: is the Go module proxy reachable?"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "$modfile")"
  [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || die "cannot read k8s.io/client-go's version from $modfile"
  major=1 minor="${BASH_REMATCH[1]}"
  flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$flags"
}

# helm.stamped marks a helm built with those ldflags (earlier caches have one without).
if [[ ! -x "$BIN_DIR/helm" || ! -f "$BIN_DIR/helm.stamped" ]]; then
  step "go install helm $HELM_VERSION"
  GOBIN="$BIN_DIR" go install -ldflags "$(helm_ldflags)" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    || die "building helm $HELM_VERSION failed."
  touch "$BIN_DIR/helm.stamped"
  end_step
fi
log "control-plane binaries ready in $BIN_DIR"
