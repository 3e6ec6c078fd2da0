#!/usr/bin/env bash
# `make testenv-down`: stop what `make testenv` started, by recorded pids. Images, caches,
# the built binaries and etcd's data stay, so the next `make testenv` is fast.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

stop_pid "$TESTENV_DIR/gitserver"
stop_pid "$TESTENV_DIR/registry/auth"
stop_pid "$TESTENV_DIR/registry/anon"
bash "$(dirname "$0")/node-down.sh" 2 || log "stopping node 2 failed (see above); stopping the rest"
bash "$(dirname "$0")/node-down.sh" 1 || log "stopping node 1 failed (see above); stopping the rest"
stop_pid "$TESTENV_DIR/kube/kube-scheduler"
stop_pid "$TESTENV_DIR/kube/kube-controller-manager"
stop_pid "$TESTENV_DIR/kube/kube-apiserver"
stop_pid "$TESTENV_DIR/kube/etcd"
# dockerd last: only if this environment started it (a pid file exists).
stop_pid "$TESTENV_DIR/dockerd"
rm -f "$TESTENV_DIR/env"
log "test environment stopped"
