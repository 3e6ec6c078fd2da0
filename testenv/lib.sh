# Shared helpers for the test-environment scripts. Sourced, never executed.
# Every failure ends in `die` with what failed and what to do, never a bare trace.

R2D_CACHE="${R2D_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/repo2dockerspawner}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTENV_DIR="${TESTENV_DIR:-$REPO_ROOT/.testenv}"
mkdir -p "$R2D_CACHE" "$TESTENV_DIR"
source "$REPO_ROOT/testenv/versions.env"
# Built binaries, keyed by the versions they were built from.
CONTROL_PLANE_BIN="$R2D_CACHE/bin/kube-$KUBE_VERSION-helm-$HELM_VERSION"

# tool_dir NAME: where a Go tool of the pinned version lives (see build-go-tools.sh).
tool_dir() {
  case "$1" in
    docker-buildx) echo "$R2D_CACHE/bin/buildx-$BUILDX_VERSION" ;;
    registry) echo "$R2D_CACHE/bin/registry-$REGISTRY_VERSION" ;;
    *) return 1 ;;
  esac
}

_step_name=""
_step_start=0

log() { printf '[testenv] %s\n' "$*" >&2; }
die() { printf '[testenv] ERROR: %s\n' "$*" >&2; exit 1; }

step() {
  end_step
  _step_name="$*"
  _step_start=$(date +%s%N)
  log "-> $_step_name"
}

end_step() {
  if [[ -n "$_step_name" ]]; then
    local ms=$(( ($(date +%s%N) - _step_start) / 1000000 ))
    local secs; secs=$(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))
    log "<- $_step_name: ${secs}s"
    printf '%s\t%s\n' "$_step_name" "$secs" >>"$TESTENV_DIR/timings.tsv"
    _step_name=""
  fi
}
trap end_step EXIT

need_cmd() {  # name hint
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found. $2"
}

need_root() {  # why
  [[ $(id -u) -eq 0 ]] || command -v sudo >/dev/null || die "$1 needs root (apt-get); rerun as root or install it yourself."
}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_install() {  # packages...
  need_root "installing $*"
  local stamp="$R2D_CACHE/apt-updated"
  if [[ ! -f "$stamp" ]] || [[ -n "$(find "$stamp" -mmin +720 2>/dev/null)" ]]; then
    as_root apt-get update -qq >/dev/null || die "apt-get update failed: is Debian's mirror reachable?"
    touch "$stamp"
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed."
}

port_free() {  # port -> 0 if nothing listens on 127.0.0.1:port
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for() {  # seconds description command...
  local timeout="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || return 1
    sleep 0.3
  done
}

# pid_alive PIDFILE: the recorded process runs. A killed daemon whose parent never reaps it
# (PID 1 in a container often does not) stays a zombie that `kill -0` still finds: not alive.
pid_alive() {
  local pid
  [[ -f "$1" ]] && pid=$(cat "$1") && kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]
}

# start_bg PREFIX CMD... : run CMD detached, its own pid in PREFIX.pid, output in PREFIX.log.
# The pid written is the daemon's own (bash execs it), so stopping it needs no process search.
start_bg() {
  local prefix="$1"; shift
  setsid bash -c 'echo $$ >"$0.pid"; exec "$@"' "$prefix" "$@" >"$prefix.log" 2>&1 </dev/null &
  disown || true
  wait_for 5 "pid file" test -s "$prefix.pid"
}

# ensure_daemon PREFIX CHECK CMD... : keep a daemon that runs, answers CHECK and was started
# with exactly these arguments and input files ($DAEMON_INPUTS: config files whose contents
# count as arguments); otherwise (re)start it and wait for CHECK. The hash sits in PREFIX.flags.
ensure_daemon() {
  local prefix="$1" check="$2"; shift 2
  local name flags f
  name=$(basename "$prefix")
  flags=$( { printf '%s\n' "$@"; for f in ${DAEMON_INPUTS:-}; do cat "$f"; done; } | sha256sum | cut -c1-16)
  if pid_alive "$prefix.pid" && [[ "$(cat "$prefix.flags" 2>/dev/null)" == "$flags" ]] && $check; then
    return 0
  fi
  stop_pid "$prefix"
  step "start $name"
  start_bg "$prefix" "$@"
  echo "$flags" >"$prefix.flags"
  wait_for 90 "$name" $check || die "$name did not become healthy in 90s; log: $prefix.log: $(tail -n 5 "$prefix.log")"
  end_step
}

# stop_pid PREFIX : stop the daemon recorded in PREFIX.pid, politely first.
stop_pid() {
  local f="$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $(basename "$1") (pid $pid)"
  fi
  rm -f "$f"
}

# bridge_gateway : the host's address on docker's default bridge, which containers can reach.
# dockerd 20.10 leaves IPAM.Gateway empty for the default bridge, so fall back to the
# interface's address, then to the subnet's first host.
bridge_gateway() {
  local gw iface subnet
  gw=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}') || return 1
  if [[ -z "$gw" ]]; then
    iface=$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}')
    gw=$(ip -4 -o addr show "${iface:-docker0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)
  fi
  if [[ -z "$gw" ]]; then
    subnet=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}')
    gw=$(python3 -c 'import ipaddress,sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$subnet")
  fi
  [[ -n "$gw" ]] && echo "$gw"
}

# node_dir N: the state directory of node N (testenv/node.sh).
node_dir() { if [[ "$1" == 1 ]]; then echo "$TESTENV_DIR/node"; else echo "$TESTENV_DIR/node-$1"; fi; }
# The directory of "this node's Docker socket", the same host path on every node: the host's
# daemon on node 1, node 2's own daemon inside node 2's mount namespace (testenv/node2.sh).
NODE_DOCKER_DIR=/run/r2d-testenv/docker
# Node 2's Docker data root lives in the cache: its images survive testenv-down.
NODE2_DOCKER_DATA="$R2D_CACHE/node-2/docker"
