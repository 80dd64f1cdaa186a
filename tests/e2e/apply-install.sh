#!/usr/bin/env bash
# What a cluster user applies, applied to a genuine kube-apiserver (v1.20.2, tests/e2e/start.sh)
# with kubectl 1.20 (Debian's kubernetes-client, unpacked into ~/.cache, not installed):
#
#   1. deploy/install.yaml, created for real (`kubectl apply -f`): CRDs, Namespace,
#      ServiceAccount, RBAC, Service, Deployment; then the event-token Secret the README asks for.
#   2. the chart rendered with its default values and with Flagger-style values (Slack, Teams,
#      an event webhook, the NetworkPolicy), each applied with a server-side dry run
#      (`kubectl apply --dry-run=server`) in the release namespace, after the CRDs from step 1
#      are established, so the ClusterNotificationPolicies are checked against their schema.
#
# Separate from tests/e2e/run.sh (the controller's own e2e tests) and small: ~10 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash tests/e2e/build.sh >/dev/null

KUBECTL_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-1.20.2"
KUBECTL="$KUBECTL_DIR/usr/bin/kubectl"
if ! "$KUBECTL" version --client --short 2>/dev/null | grep -q v1.20.2; then
  DL="$(mktemp -d /tmp/kubectl-deb.XXXXXX)"
  (cd "$DL" && { apt-get download -qq kubernetes-client 2>/dev/null \
      || { apt-get update -qq && apt-get download -qq kubernetes-client; }; })
  rm -rf "$KUBECTL_DIR" && mkdir -p "$KUBECTL_DIR"
  dpkg-deb -x "$DL"/kubernetes-client_*.deb "$KUBECTL_DIR"
  rm -rf "$DL"
fi
"$KUBECTL" version --client --short

PYTHON="$(bash tests/chart/venv.sh)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export API_PORT="$(free_port)" ETCD_PORT="$(free_port)" ETCD_PEER_PORT="$(free_port)"
export RUN_DIR="$(mktemp -d /tmp/herald-apply.XXXXXX)"
trap 'bash tests/e2e/start.sh stop; rm -rf "$RUN_DIR"' EXIT
eval "$(bash tests/e2e/start.sh)"
k() { "$KUBECTL" --request-timeout=30s "$@"; }

echo "== deploy/install.yaml: kubectl apply -f (real create)"
k apply -f deploy/install.yaml
k wait --for condition=established --timeout=30s \
  crd/notificationpolicies.herald.dev crd/clusternotificationpolicies.herald.dev
k -n herald-system create secret generic herald-event-token --from-literal=token="$(openssl rand -hex 24)"
for obj in serviceaccount/herald service/herald deployment/herald role/herald rolebinding/herald; do
  k -n herald-system get "$obj" -o name
done
k get clusterrole/herald clusterrolebinding/herald -o name
image="$(k -n herald-system get deployment/herald -o jsonpath='{.spec.template.spec.containers[0].image}')"
version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/herald/Chart.yaml)"
[ "$image" = "ghcr.io/herald-dev/herald:$version" ] || { echo "FAIL: install.yaml's image is $image"; exit 1; }
echo "install.yaml: created, image $image"
# Applying it again changes nothing that kubectl would have to fight over.
k apply -f deploy/install.yaml >/dev/null

render() { # values-json namespace -> multi-document YAML of the chart (NOTES aside)
  "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys
import helm_python as helm
values, namespace = json.loads(sys.argv[1]), sys.argv[2]
with helm.Chart.load("charts/herald") as chart:
    files = chart.render(values, name="herald", namespace=namespace)
print("\n---\n".join(t for p, t in sorted(files.items()) if not p.endswith("NOTES.txt")))
EOF
}

FLAGGER='{"clusterName": "prod-eu",
  "slack": {"url": "https://hooks.slack.com/services/T000/B000/XXXX", "channel": "#deploys"},
  "msteams": {"url": "https://example.webhook.office.com/webhookb2/abc"},
  "eventWebhook": "https://audit.example.com/flagger",
  "networkPolicy": {"enabled": true}}'
for case in "default:{}:herald-chart" "flagger:$FLAGGER:flagger-system"; do
  name="${case%%:*}"; rest="${case#*:}"; ns="${rest##*:}"; values="${rest%:*}"
  echo "== the chart, $name values: kubectl apply --dry-run=server -n $ns"
  k create namespace "$ns" >/dev/null
  render "$values" "$ns" 2>/dev/null >"$RUN_DIR/$name.yaml"
  out="$(k apply --dry-run=server -n "$ns" -f "$RUN_DIR/$name.yaml")"
  echo "$out"
  for kind in deployment.apps service serviceaccount secret; do
    echo "$out" | grep -q "^$kind/" || { echo "FAIL: $name values: no $kind in: $out"; exit 1; }
  done
  if [ "$name" = flagger ]; then
    echo "$out" | grep -q "^clusternotificationpolicy.herald.dev/" \
      || { echo "FAIL: Flagger values: no ClusterNotificationPolicy"; exit 1; }
    echo "$out" | grep -q "^networkpolicy.networking.k8s.io/" \
      || { echo "FAIL: Flagger values: no NetworkPolicy"; exit 1; }
  fi
done
echo "apply-install: 3 passed, 0 failed"
