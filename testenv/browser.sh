#!/usr/bin/env bash
# Debian's Chromium for the browser tier (driven through Playwright with executable_path:
# test tools cannot download browsers of their own here).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

chromium="$(command -v chromium || true)"
if [[ -z "$chromium" ]]; then
  step "apt-get install chromium"
  apt_install chromium fonts-dejavu-core
  chromium="$(command -v chromium)" || die "chromium was installed but is not on PATH."
  end_step
fi
printf 'R2D_CHROMIUM=%s\n' "$chromium" >"$TESTENV_DIR/browser.env"
