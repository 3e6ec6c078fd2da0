#!/usr/bin/env bash
# Make sure a Docker daemon answers. If none does, install Debian's docker.io and start
# dockerd in the background, recording its pid so `make testenv-down` can stop it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if docker info >/dev/null 2>&1; then
  log "docker daemon answers"
  exit 0
fi

step "docker daemon"
if ! command -v dockerd >/dev/null 2>&1; then
  log "no dockerd: installing Debian's docker.io"
  apt_install docker.io iptables ca-certificates
fi
command -v docker >/dev/null 2>&1 || apt_install docker-cli || apt_install docker.io

if [[ -n "${DOCKER_HOST:-}" && "${DOCKER_HOST}" != unix:///var/run/docker.sock ]]; then
  die "DOCKER_HOST=$DOCKER_HOST does not answer; start that daemon or unset DOCKER_HOST."
fi
need_root "starting dockerd"
if pid_alive "$TESTENV_DIR/dockerd.pid"; then
  log "dockerd (pid $(cat "$TESTENV_DIR/dockerd.pid")) is starting"
else
  # A dockerd that was killed leaves its pid file and its containerd's, and the next one
  # waits for those pids while they exist, which zombies still do (nothing reaps them here):
  # remove each file whose process is not alive.
  for stale in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [[ -f "$stale" ]] && ! pid_alive "$stale"; then as_root rm -f "$stale"; fi
  done
  start_bg "$TESTENV_DIR/dockerd" dockerd
fi
wait_for 60 "docker info" docker info \
  || die "dockerd did not answer within 60s; its log: $TESTENV_DIR/dockerd.log ($(tail -n 3 "$TESTENV_DIR/dockerd.log" | tr '\n' ' '))"
end_step
