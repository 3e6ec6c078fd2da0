#!/usr/bin/env bash
# Write a kubeconfig for a JupyterHub that runs outside the cluster, authenticated as the
# chart's hub identity (hub.rbac.create=true) and nothing else:
#   tools/hub-kubeconfig.sh NAMESPACE [SERVICEACCOUNT] [DURATION] > hub.kubeconfig
# The API server address and its CA come from your current kubectl context; the token from
# `kubectl create token` (a bound token: it expires after DURATION, default one year, and
# dies with the ServiceAccount). Then: c.KubernetesBackend.kubeconfig = "/path/to/hub.kubeconfig"
set -euo pipefail
namespace="${1:?usage: tools/hub-kubeconfig.sh NAMESPACE [SERVICEACCOUNT] [DURATION] > hub.kubeconfig}"
account="${2:-jupyterhub}"
duration="${3:-8760h}"
kubectl="${KUBECTL:-kubectl}"

token="$("$kubectl" create token "$account" -n "$namespace" --duration "$duration")" \
  || { echo "hub-kubeconfig: cannot create a token for $namespace/$account (installed with hub.rbac.create=true?)" >&2; exit 1; }
server="$("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca="$("$kubectl" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
if [[ -z "$ca" ]]; then
  ca_file="$("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
  [[ -n "$ca_file" ]] && ca="$(base64 -w0 <"$ca_file")"
fi
[[ -n "$server" && -n "$ca" ]] || { echo "hub-kubeconfig: the current context names no server or CA" >&2; exit 1; }

cat <<KC
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: $account
  user:
    token: $token
contexts:
- name: hub
  context: {cluster: cluster, user: $account, namespace: $namespace}
current-context: hub
KC
