#!/usr/bin/env bash
# configurable-http-proxy, which JupyterHub needs, from npm into the cache (not global).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

prefix="$R2D_CACHE/npm/chp-$CHP_VERSION"
if [[ ! -x "$prefix/bin/configurable-http-proxy" ]]; then
  need_cmd npm "Install Node.js and npm (Debian: apt-get install nodejs npm)."
  step "npm install configurable-http-proxy@$CHP_VERSION"
  npm install -g --silent --no-fund --no-audit --prefix "$prefix" "configurable-http-proxy@$CHP_VERSION" >"$TESTENV_DIR/npm.log" 2>&1 \
    || die "npm install configurable-http-proxy failed; see $TESTENV_DIR/npm.log"
  end_step
fi
printf 'R2D_CHP_BIN=%s\n' "$prefix/bin" >"$TESTENV_DIR/chp.env"
