#!/usr/bin/env bash
# Two CNCF distribution registries on loopback, built from Go modules (build-go-tools.sh):
#   R2D_REGISTRY       htpasswd authentication (user and a generated password below)
#   R2D_REGISTRY_ANON  no authentication, for tests that are not about credentials
# dockerd treats 127.0.0.0/8 registries as insecure (plain HTTP) by default, so neither needs
# TLS or daemon configuration. Storage lives in $TESTENV_DIR/registry/<name>; idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN="$(tool_dir registry)/registry"
RDIR="$TESTENV_DIR/registry"
AUTH_PORT="${R2D_REGISTRY_PORT:-5000}"
ANON_PORT="${R2D_REGISTRY_ANON_PORT:-5001}"
USER_NAME=r2d-pusher
[[ -x "$BIN" ]] || die "$BIN is missing: run testenv/build-go-tools.sh first."
mkdir -p "$RDIR"
chmod 700 "$RDIR"

if [[ ! -s "$RDIR/password" ]]; then
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$RDIR/password"
fi
if [[ ! -s "$RDIR/htpasswd" ]] || [[ "$RDIR/password" -nt "$RDIR/htpasswd" ]]; then
  command -v htpasswd >/dev/null || apt_install apache2-utils
  htpasswd -Bbn "$USER_NAME" "$(cat "$RDIR/password")" >"$RDIR/htpasswd" 2>/dev/null \
    || die "htpasswd could not write $RDIR/htpasswd"
fi

write_config() {  # name port auth(yes|no)
  local name="$1" port="$2" auth="$3"
  mkdir -p "$RDIR/$name"
  {
    echo "version: 0.1"
    echo "log: {level: warn, accesslog: {disabled: true}}"
    echo "storage: {filesystem: {rootdirectory: $RDIR/$name}, delete: {enabled: true}}"
    echo "http: {addr: 127.0.0.1:$port, secret: r2d-testenv-$name}"
    if [[ "$auth" == yes ]]; then echo "auth: {htpasswd: {realm: r2d-testenv, path: $RDIR/htpasswd}}"; fi
  } >"$RDIR/$name.yml"
}

answers() { [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/v2/")" =~ ^(200|401)$ ]]; }

start_registry() {  # name port auth
  local name="$1" port="$2" auth="$3"
  write_config "$name" "$port" "$auth"
  if pid_alive "$RDIR/$name.pid" && answers "$port"; then
    log "registry $name answers on 127.0.0.1:$port"
    return
  fi
  stop_pid "$RDIR/$name"
  port_free "$port" || die "port $port on 127.0.0.1 is taken by another program; free it or set R2D_REGISTRY_PORT/R2D_REGISTRY_ANON_PORT."
  step "registry $name on 127.0.0.1:$port"
  start_bg "$RDIR/$name" "$BIN" serve "$RDIR/$name.yml"
  wait_for 15 "registry $name" answers "$port" || die "registry $name did not start; log: $RDIR/$name.log"
  end_step
}

start_registry auth "$AUTH_PORT" yes
start_registry anon "$ANON_PORT" no
cat >"$TESTENV_DIR/registry.env" <<ENV
R2D_REGISTRY=127.0.0.1:$AUTH_PORT
R2D_REGISTRY_USER=$USER_NAME
R2D_REGISTRY_PASSWORD=$(cat "$RDIR/password")
R2D_REGISTRY_ANON=127.0.0.1:$ANON_PORT
R2D_REGISTRY_BIN=$BIN
ENV
