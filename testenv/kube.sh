#!/usr/bin/env bash
# Start a real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler, with RBAC + Node authorization, a CA of its own, one static token per
# component and service-account signing keys (so `kubectl create token` and in-cluster
# pods work). The node itself (containerd, kubelet, kube-proxy) is testenv/node.sh.
#
# The API server serves on every address and advertises the node's address (the host's
# address on docker's bridge): pods reach it through the `kubernetes` Service, the host and
# tests through 127.0.0.1. Idempotent: a healthy process started with the same flags is kept;
# one started with other flags (an older checkout) is restarted.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN_DIR="$CONTROL_PLANE_BIN"
KDIR="$TESTENV_DIR/kube"
PKI="$KDIR/pki"
ETCD_PORT="${R2D_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${R2D_ETCD_PEER_PORT:-23800}"
API_PORT="${R2D_APISERVER_PORT:-16443}"
SERVICE_CIDR=10.0.0.0/24
API_SERVICE_IP=10.0.0.1
mkdir -p "$KDIR" "$PKI"
need_cmd openssl "Install Debian's openssl package."

NODE_IP="$(bridge_gateway)" || die "cannot read the host's address on docker's bridge: is dockerd up (testenv/docker.sh)?"
echo "$NODE_IP" >"$KDIR/node-ip"

# --- identities -----------------------------------------------------------------------
# openssl_cert NAME SUBJECT [SANS]: a key and a certificate signed by the testenv CA.
openssl_cert() {
  local name="$1" subject="$2" sans="${3:-}" ext
  ext="$(mktemp)"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$sans" ]]; then echo "extendedKeyUsage=serverAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null || die "signing $name's certificate failed"
  rm -f "$ext" "$PKI/$name.csr"
}

ensure_pki() {
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=r2d-testenv-ca" \
      -days 3650 -sha256 -out "$PKI/ca.crt" 2>/dev/null || die "creating the testenv CA failed"
  fi
  # The serving certificate names every address clients use; a new node address means a new one.
  local sans="IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  if [[ "$(cat "$PKI/apiserver.sans" 2>/dev/null)" != "$sans" ]]; then
    openssl_cert apiserver "/CN=kube-apiserver" "$sans"
    echo "$sans" >"$PKI/apiserver.sans"
  fi
  # The API server's identity towards kubelets (logs, exec): trusted by the kubelet's client CA.
  [[ -f "$PKI/apiserver-kubelet-client.crt" ]] || openssl_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  if [[ ! -f "$KDIR/sa.key" ]]; then
    openssl genrsa -out "$KDIR/sa.key" 2048 2>/dev/null
    openssl rsa -in "$KDIR/sa.key" -pubout -out "$KDIR/sa.pub" 2>/dev/null
  fi
}

# Static tokens: NAME USER GROUPS. Each component gets its own, with the identity the
# bootstrap RBAC policy (or the Node authorizer) already knows.
COMPONENTS=(
  "admin admin system:masters"
  "kube-controller-manager system:kube-controller-manager "
  "kube-scheduler system:kube-scheduler "
  "kubelet system:node:r2d-node system:nodes"
  "kubelet-2 system:node:r2d-node-2 system:nodes"
  "kube-proxy system:kube-proxy "
)
ensure_tokens() {
  local entry name user groups
  : >"$KDIR/tokens.csv.new"
  for entry in "${COMPONENTS[@]}"; do
    read -r name user groups <<<"$entry"
    [[ -s "$KDIR/$name-token" ]] || python3 -c 'import secrets; print(secrets.token_hex(24))' >"$KDIR/$name-token"
    printf '%s,%s,%s,"%s"\n' "$(cat "$KDIR/$name-token")" "$user" "$user" "$groups" >>"$KDIR/tokens.csv.new"
  done
  mv "$KDIR/tokens.csv.new" "$KDIR/tokens.csv"
  chmod 600 "$KDIR"/*-token "$KDIR/tokens.csv"
}

# write_kubeconfig FILE TOKEN_NAME
write_kubeconfig() {
  cat >"$1.new" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    token: $(cat "$KDIR/$2-token")
contexts:
- name: testenv
  context: {cluster: testenv, user: $2, namespace: default}
current-context: testenv
KC
  chmod 600 "$1.new"; mv "$1.new" "$1"
}

ensure_pki
ensure_tokens
write_kubeconfig "$KDIR/kubeconfig" admin
for c in kube-controller-manager kube-scheduler kubelet kubelet-2 kube-proxy; do write_kubeconfig "$KDIR/$c.kubeconfig" "$c"; done

# --- processes ------------------------------------------------------------------------
ETCD_ARGS=(
  --name testenv --data-dir "$KDIR/etcd-data" --unsafe-no-fsync
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT"
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT"
  --initial-cluster "testenv=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
)
APISERVER_ARGS=(
  --etcd-servers "http://127.0.0.1:$ETCD_PORT"
  --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port "$API_PORT"
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt"
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key"
  --kubelet-preferred-address-types InternalIP
  --token-auth-file "$KDIR/tokens.csv" --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction
  --service-cluster-ip-range "$SERVICE_CIDR"
  --service-account-issuer "https://kubernetes.default.svc"
  --service-account-key-file "$KDIR/sa.pub" --service-account-signing-key-file "$KDIR/sa.key"
  --allow-privileged=true --v 1
)
CONTROLLER_MANAGER_ARGS=(
  --kubeconfig "$KDIR/kube-controller-manager.kubeconfig"
  --authentication-kubeconfig "$KDIR/kube-controller-manager.kubeconfig"
  --authorization-kubeconfig "$KDIR/kube-controller-manager.kubeconfig"
  --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials
  --service-account-private-key-file "$KDIR/sa.key" --root-ca-file "$PKI/ca.crt"
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key"
  --service-cluster-ip-range "$SERVICE_CIDR" --v 1
)
SCHEDULER_ARGS=(
  --kubeconfig "$KDIR/kube-scheduler.kubeconfig"
  --authentication-kubeconfig "$KDIR/kube-scheduler.kubeconfig"
  --authorization-kubeconfig "$KDIR/kube-scheduler.kubeconfig"
  --bind-address 127.0.0.1 --leader-elect=false --v 1
)

api_healthy() { curl -fsS --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$KDIR/admin-token")" \
                  "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; }

etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1; }
cm_healthy() { pid_alive "$KDIR/kube-controller-manager.pid"; }
scheduler_healthy() { pid_alive "$KDIR/kube-scheduler.pid"; }

for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT"; do
  if ! port_free "$port" && ! pid_alive "$KDIR/etcd.pid" && ! pid_alive "$KDIR/kube-apiserver.pid"; then
    die "port $port on 127.0.0.1 is taken by another program; free it or set R2D_ETCD_PORT/R2D_ETCD_PEER_PORT/R2D_APISERVER_PORT."
  fi
done

ensure_daemon "$KDIR/etcd" etcd_healthy "$BIN_DIR/etcd" "${ETCD_ARGS[@]}"
# The token file is read at start: a new identity (a node added) restarts the API server.
DAEMON_INPUTS="$KDIR/tokens.csv" ensure_daemon "$KDIR/kube-apiserver" api_healthy "$BIN_DIR/kube-apiserver" "${APISERVER_ARGS[@]}"
ensure_daemon "$KDIR/kube-controller-manager" cm_healthy "$BIN_DIR/kube-controller-manager" "${CONTROLLER_MANAGER_ARGS[@]}"
ensure_daemon "$KDIR/kube-scheduler" scheduler_healthy "$BIN_DIR/kube-scheduler" "${SCHEDULER_ARGS[@]}"
log "kube-apiserver answers on 127.0.0.1:$API_PORT and $NODE_IP:$API_PORT"
