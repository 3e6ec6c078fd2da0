#!/usr/bin/env bash
# Start a real Kubernetes control plane on loopback: etcd + kube-apiserver, RBAC on,
# a static admin token, and service-account signing keys so `kubectl create token` works.
# No kubelet or controller-manager: CRDs, RBAC, watches, events and leases all work;
# Deployments never get Pods (expected). Idempotent: a running, healthy pair is reused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN_DIR="$CONTROL_PLANE_BIN"
KDIR="$TESTENV_DIR/kube"
ETCD_PORT="${R2D_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${R2D_ETCD_PEER_PORT:-23800}"
API_PORT="${R2D_APISERVER_PORT:-16443}"
KUBECONFIG_FILE="$KDIR/kubeconfig"
mkdir -p "$KDIR"

healthy() { curl -fsS --max-time 2 --cacert "$KDIR/certs/apiserver.crt" \
              -H "Authorization: Bearer $(cat "$KDIR/admin-token" 2>/dev/null)" \
              "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; }

if pid_alive "$KDIR/etcd.pid" && pid_alive "$KDIR/kube-apiserver.pid" && healthy; then
  log "kube-apiserver answers on 127.0.0.1:$API_PORT"
  exit 0
fi
for p in etcd kube-apiserver; do  # a half-up pair is restarted whole
  pid_alive "$KDIR/$p.pid" && kill "$(cat "$KDIR/$p.pid")" 2>/dev/null && sleep 1
done
for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT"; do
  port_free "$port" || die "port $port on 127.0.0.1 is taken by another program; free it or set R2D_ETCD_PORT/R2D_ETCD_PEER_PORT/R2D_APISERVER_PORT."
done
need_cmd openssl "Install Debian's openssl package."

step "start etcd + kube-apiserver $KUBE_VERSION"
if [[ ! -f "$KDIR/sa.key" ]]; then
  openssl genrsa -out "$KDIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$KDIR/sa.key" -pubout -out "$KDIR/sa.pub" 2>/dev/null
  python3 -c 'import secrets; print(secrets.token_hex(24))' >"$KDIR/admin-token"
  printf '%s,admin,admin,system:masters\n' "$(cat "$KDIR/admin-token")" >"$KDIR/tokens.csv"
fi

start_bg "$KDIR/etcd" "$BIN_DIR/etcd" \
  --name testenv --data-dir "$KDIR/etcd-data" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "testenv=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
wait_for 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health" \
  || die "etcd did not become healthy; log: $KDIR/etcd.log: $(tail -n 3 "$KDIR/etcd.log")"

start_bg "$KDIR/kube-apiserver" "$BIN_DIR/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --endpoint-reconciler-type none --cert-dir "$KDIR/certs" \
  --token-auth-file "$KDIR/tokens.csv" --authorization-mode RBAC \
  --service-cluster-ip-range 10.0.0.0/24 \
  --service-account-issuer "https://127.0.0.1:$API_PORT" \
  --service-account-key-file "$KDIR/sa.pub" --service-account-signing-key-file "$KDIR/sa.key" \
  --disable-admission-plugins ServiceAccount --allow-privileged=true \
  --v 1
wait_for 90 kube-apiserver healthy \
  || die "kube-apiserver did not become ready in 90s; log: $KDIR/kube-apiserver.log: $(tail -n 5 "$KDIR/kube-apiserver.log")"

cat >"$KUBECONFIG_FILE" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $KDIR/certs/apiserver.crt
users:
- name: admin
  user:
    token: $(cat "$KDIR/admin-token")
contexts:
- name: testenv
  context: {cluster: testenv, user: admin, namespace: default}
current-context: testenv
KC
chmod 600 "$KUBECONFIG_FILE"
end_step
