#!/usr/bin/env bash
# testenv/node-down.sh [1|2]: stop the node testenv/node.sh N started (default 1): kube-proxy and kubelet by pid, then every pod
# container, the node's containerd and its shims, the pods' mounts and network namespaces.
# Without a CRI client the sandboxes are torn down here the way the runtime would: a pod
# network namespace left mounted keeps its veth and address on the bridge, and the next pod
# given that address would collide with it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NODE="${1:-1}"
NDIR="$(node_dir "$NODE")"
SOCK="$NDIR/containerd.sock"
CTR=(ctr --address "$SOCK" -n k8s.io)
[[ -d "$NDIR" ]] || exit 0

stop_pid "$NDIR/kube-proxy"
stop_pid "$NDIR/kubelet"
netns=() sandboxes=()
if pid_alive "$NDIR/containerd.pid" && "${CTR[@]}" version >/dev/null 2>&1; then
  for id in $("${CTR[@]}" containers ls -q); do
    ns=$("${CTR[@]}" containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for n in spec.get("linux", {}).get("namespaces", []):
    if n.get("type") == "network" and n.get("path", "").startswith("/var/run/netns/"):
        print(n["path"])' || true)
    [[ -n "$ns" ]] && { netns+=("$ns"); sandboxes+=("$id"); }
    "${CTR[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 1
  for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks rm -f "$id" >/dev/null 2>&1 || true; done
fi
stop_pid "$NDIR/containerd"
pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
for ns in "${netns[@]}"; do umount "$ns" 2>/dev/null || true; rm -f "$ns"; done
# Mounts of pods (volumes, rootfs, shm) under the node's directories, deepest first.
{ awk -v d="$NDIR/" 'index($2, d) == 1 {print $2}' /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
# Address leases of the pods just killed (they never got a CNI DEL), and the masquerade rule
# and chain the bridge plugin made for each (its comment names the sandbox's id).
rm -rf "$NDIR/cni-ipam"
for id in "${sandboxes[@]}"; do
  iptables -t nat -S POSTROUTING 2>/dev/null | { grep -F "$id" || true; } | while read -r rule; do
    chain="${rule##*-j }"
    eval "iptables -t nat ${rule/#-A /-D }" 2>/dev/null || true
    [[ "$chain" == CNI-* ]] && { iptables -t nat -F "$chain"; iptables -t nat -X "$chain"; } 2>/dev/null || true
  done
done
if [[ "$NODE" == 2 ]]; then
  # Node 2's Docker daemon (its containers stop with it), then whatever else still runs in its
  # mount namespace, then the namespace's holder: the namespace, and every mount in it, is gone.
  stop_pid "$NDIR/dockerd"
  if pid_alive "$NDIR/mountns.pid"; then
    ns=$(readlink "/proc/$(cat "$NDIR/mountns.pid")/ns/mnt")
    for proc in /proc/[0-9]*; do
      [[ "${proc#/proc/}" == "$(cat "$NDIR/mountns.pid")" ]] && continue
      [[ "$(readlink "$proc/ns/mnt" 2>/dev/null)" == "$ns" ]] && kill -9 "${proc#/proc/}" 2>/dev/null || true
    done
  fi
  stop_pid "$NDIR/mountns"
  rm -f "$TESTENV_DIR/node-2.env"
else
  rm -f "$TESTENV_DIR/node.env"
fi
