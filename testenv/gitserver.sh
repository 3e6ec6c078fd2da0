#!/usr/bin/env bash
# Serve bare repositories under $TESTENV_DIR/git over smart HTTP on the docker bridge's
# gateway address, so build containers clone by URL exactly as they would in production.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

GIT_ROOT="$TESTENV_DIR/git"
GIT_PORT="${R2D_GIT_PORT:-18080}"
mkdir -p "$GIT_ROOT"
bridge_ip=$(bridge_gateway) || die "cannot read the docker bridge's address (docker network inspect bridge)."
url="http://$bridge_ip:$GIT_PORT"
# Users of the private repositories (private/<user>/…; 'hub' reads all), with tokens made here once.
users="$TESTENV_DIR/git-users"
if [[ ! -s "$users" ]]; then
  umask 077
  for name in hub alice bob; do printf '%s:%s\n' "$name" "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"; done >"$users"
fi
token_of() { sed -n "s/^$1://p" "$users"; }

# A server from before a change of STATIC would answer without it: check a served file.
answers() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/dataverse-installations.json")" == 200 ]] \
    && [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/private/alice/none.git/info/refs?service=git-upload-pack")" == 401 ]] \
    && [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -u "any:$(token_of bob)" "$url/private/alice/none.git/info/refs?service=git-upload-pack")" == 404 ]]
}
if pid_alive "$TESTENV_DIR/gitserver.pid" && answers; then
  log "git server answers on $url"
else
  stop_pid "$TESTENV_DIR/gitserver"
  (exec 3<>"/dev/tcp/$bridge_ip/$GIT_PORT") 2>/dev/null \
    && die "port $GIT_PORT on $bridge_ip is taken by another program; free it or set R2D_GIT_PORT."
  step "git server on $url"
  start_bg "$TESTENV_DIR/gitserver" python3 "$(dirname "$0")/gitserver.py" "$GIT_ROOT" "$bridge_ip" "$GIT_PORT" "$users"
  wait_for 15 "git server" answers \
    || die "git server did not start; log: $TESTENV_DIR/gitserver.log"
  end_step
fi
printf 'R2D_GIT_ROOT=%s\nR2D_GIT_URL=%s\nR2D_BRIDGE_IP=%s\nR2D_DATAVERSE_INSTALLATIONS_URL=%s\n' \
  "$GIT_ROOT" "$url" "$bridge_ip" "$url/dataverse-installations.json" >"$TESTENV_DIR/git.env"
printf 'R2D_GIT_HUB_TOKEN=%s\nR2D_GIT_ALICE_TOKEN=%s\nR2D_GIT_BOB_TOKEN=%s\n' \
  "$(token_of hub)" "$(token_of alice)" "$(token_of bob)" >>"$TESTENV_DIR/git.env"
