#!/usr/bin/env bash
# testenv/node.sh [1|2]: make this machine a node of the cluster.
#
# Node 1 (`r2d-node`): a containerd instance of its own (CRI for the kubelet; the host's
# dockerd keeps its own containerd and runs node 1's builds), the CNI bridge, kubelet and
# kube-proxy.
# Node 2 (`r2d-node-2`): a second Docker node on the same host. Its dockerd, containerd and
# kubelet run in a mount namespace of their own, in which $NODE_DOCKER_DIR (the directory
# of the Docker socket that the chart's DaemonSet mounts as a hostPath) holds node 2's
# dockerd socket; on the host it holds a link to the host's daemon. So "this node's Docker
# socket" means node 2's daemon to its pods, and to the build containers its daemon starts
# (a daemon resolves bind-mount sources in its own namespace). Both nodes share the host's
# network namespace: node 1's kube-proxy serves both.
# Needs testenv/kube.sh's control plane. Idempotent and quick when up.
#
# Nothing can be pulled here: the sandbox image is built locally (testenv/images.sh) and
# imported like every pod image, with testenv/load-image.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"

NODE="${1:-1}"
[[ "$NODE" == 1 || "$NODE" == 2 ]] || die "usage: testenv/node.sh [1|2]"
BIN_DIR="$CONTROL_PLANE_BIN"
KDIR="$TESTENV_DIR/kube"
NDIR="$(node_dir "$NODE")"
CLUSTER_CIDR=10.244.0.0/16
SOCK="$NDIR/containerd.sock"
PAUSE_IMAGE="r2d-testenv/pause:1"
if [[ "$NODE" == 1 ]]; then
  NODE_NAME=r2d-node POD_CIDR=10.244.0.0/24 CNI_BRIDGE=r2dnode0 KUBELET_PORT=10250 KUBELET_HEALTHZ=10248
  KUBELET_IDENTITY=kubelet CGROUP_ROOT=/
else
  NODE_NAME=r2d-node-2 POD_CIDR=10.244.1.0/24 CNI_BRIDGE=r2dnode2 KUBELET_PORT=10350 KUBELET_HEALTHZ=10348
  KUBELET_IDENTITY=kubelet-2 CGROUP_ROOT=/r2d-node-2
fi
mkdir -p "$NDIR"
NODE_IP="$(cat "$KDIR/node-ip" 2>/dev/null)" || die "run testenv/kube.sh first (no $KDIR/node-ip)"
KUBECTL=("$BIN_DIR/kubectl" --kubeconfig "$KDIR/kubeconfig")

# Debian's containerd 1.6 serves CRI v1, which kubelet 1.34 accepts; runc and the CNI plugins
# come from Debian too.
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback && -x /usr/lib/cni/portmap ]] \
  || apt_install containernetworking-plugins
command -v containerd >/dev/null && command -v runc >/dev/null && command -v ctr >/dev/null || apt_install containerd runc
need_root "running a kubelet (mounts, cgroups, network namespaces)"

# IN_NODE: the prefix that runs a command in this node's mount namespace (none for node 1).
IN_NODE=()
if [[ "$NODE" == 1 ]]; then
  mkdir -p "$NODE_DOCKER_DIR"
  [[ -L "$NODE_DOCKER_DIR/docker.sock" ]] || ln -sfn /var/run/docker.sock "$NODE_DOCKER_DIR/docker.sock"
else
  source "$here/node2.sh"
  node2_namespace
  IN_NODE=(nsenter -t "$(cat "$NDIR/mountns.pid")" -m --)
  node2_dockerd
  node2_cgroup_root "$CGROUP_ROOT"
fi

# Config files are rewritten only when their content changes: kube-proxy exits as soon as its
# config file is written to (it expects a supervisor to restart it), even with the same content.
write_if_changed() {  # FILE, content on stdin
  local new; new="$(cat)"
  [[ -f "$1" && "$(cat "$1")" == "$new" ]] || printf '%s\n' "$new" >"$1"
}

# --- containerd --------------------------------------------------------------------------
mkdir -p "$NDIR/cni"
# restrict_oom_score_adj: this sandbox may not lower OOM scores (no CAP_SYS_RESOURCE); without
# it runc fails every container with "can't get final child's PID from pipe: EOF".
write_if_changed "$NDIR/containerd.toml" <<TOML
version = 2
root = "$NDIR/containerd/root"
state = "$NDIR/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "docker.io/$PAUSE_IMAGE"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NDIR/cni"
TOML
# Pod network: one bridge, addresses from host-local (its state lives here, so testenv-down
# can forget leases of pods it killed), masquerade for traffic leaving the node.
write_if_changed "$NDIR/cni/10-$NODE_NAME.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "$NODE_NAME", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$NDIR/cni-ipam",
            "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON

containerd_up() { ctr --address "$SOCK" version >/dev/null 2>&1; }
DAEMON_INPUTS="$NDIR/containerd.toml" ensure_daemon "$NDIR/containerd" containerd_up "${IN_NODE[@]}" containerd --config "$NDIR/containerd.toml"
bash "$here/load-image.sh" --node "$NODE" "$PAUSE_IMAGE" >/dev/null

# --- kubelet -----------------------------------------------------------------------------
# cgroupfs (no systemd here), swap tolerated, cgroup v1 tolerated (this machine), image GC
# off (locally imported images cannot be pulled back), authn by client certificates of the
# testenv CA only (the API server's, for logs and exec).
write_if_changed "$NDIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
podLogsDir: $NDIR/pod-logs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $KDIR/pki/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
YAML
KUBELET_ARGS=(--config "$NDIR/kubelet.yaml" --kubeconfig "$KDIR/$KUBELET_IDENTITY.kubeconfig"
              --root-dir "$NDIR/kubelet" --cert-dir "$NDIR/kubelet-pki"
              --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1)
kubelet_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ/healthz" >/dev/null 2>&1; }
DAEMON_INPUTS="$NDIR/kubelet.yaml" ensure_daemon "$NDIR/kubelet" kubelet_healthy "${IN_NODE[@]}" "$BIN_DIR/kubelet" "${KUBELET_ARGS[@]}"

# --- kube-proxy (node 1's serves the host's one network namespace) -------------------------
if [[ "$NODE" == 1 ]]; then
# iptables mode: ClusterIPs (the `kubernetes` Service for in-cluster clients, the operator's
# metrics Service) answer from pods and from the host. It must not touch conntrack sysctls.
write_if_changed "$NDIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $KDIR/kube-proxy.kubeconfig}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
proxy_healthy() { curl -fsS --max-time 2 http://127.0.0.1:10256/healthz >/dev/null 2>&1; }
DAEMON_INPUTS="$NDIR/kube-proxy.yaml" ensure_daemon "$NDIR/kube-proxy" proxy_healthy \
  "$BIN_DIR/kube-proxy" --config "$NDIR/kube-proxy.yaml" --v 1
fi

# Ready, as reported by this kubelet (started when its pid file was written): a node object
# kept in etcd says Ready from the last run.
kubelet_started=$(date -u -r "$NDIR/kubelet.pid" +%FT%TZ)
node_ready() {
  local ready
  ready=$("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null)
  [[ "${ready%% *}" == True && ! "${ready#* }" < "$kubelet_started" ]]
}
if ! node_ready; then
  step "wait for node $NODE_NAME to become Ready"
  wait_for 120 "node Ready" node_ready \
    || die "node $NODE_NAME is not Ready after 120s: $("${KUBECTL[@]}" describe node "$NODE_NAME" 2>&1 | grep -A8 Conditions); kubelet log: $NDIR/kubelet.log"
  end_step
fi

if [[ "$NODE" == 1 ]]; then
  cat >"$TESTENV_DIR/node.env" <<ENV
R2D_NODE_NAME=$NODE_NAME
R2D_NODE_IP=$NODE_IP
R2D_NODE_CONTAINERD=$SOCK
R2D_LOAD_IMAGE=$here/load-image.sh
R2D_NODE_DOCKER_SOCKET=$NODE_DOCKER_DIR/docker.sock
ENV
else
  cat >"$TESTENV_DIR/node-2.env" <<ENV
R2D_NODE2_NAME=$NODE_NAME
R2D_NODE2_CONTAINERD=$SOCK
R2D_NODE2_DOCKER_HOST=unix://$NDIR/docker/docker.sock
ENV
fi
log "node $NODE_NAME is Ready ($NODE_IP, pods in $POD_CIDR)"
