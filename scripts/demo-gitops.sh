#!/usr/bin/env bash
# `make demo ARGS=--gitops`: the example monorepo's staging cluster (examples/gitops) synced by
# serin-sync and rolled out by serin on the real control plane with real Helm: a local Git
# repository made from examples/gitops, a chart repository serving examples/charts, a
# Slack-compatible webhook printing what the Alert sends, then a commit of a new image tag,
# followed until serin promotes it. Prints each source, Kustomization and HelmRelease as it
# becomes Ready, the Slack messages, and the canary's phase and weight.
set -euo pipefail
cd "$(dirname "$0")/.."

make -s deps-base
make -s cluster
echo "building serin, serin-sync and the test bed..."
cargo build -q --bin serin && cargo build -q -p serin-sync --bin serin-sync && cargo build -q -p serin-testbed --bin serin-testbed
PATH="$(./target/debug/serin-testbed build-cluster --print-path):$PATH"
sync=./target/debug/serin-sync

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

./target/debug/serin-testbed up --cluster real --kubeconfig "$work/kubeconfig" >"$work/testbed.out" 2>"$work/testbed.err" &
pids+=($!)
for _ in $(seq 1 1200); do
  grep -q '^ready ' "$work/testbed.out" 2>/dev/null && break
  sleep 0.1
done
ready=$(grep '^ready ' "$work/testbed.out") || { cat "$work/testbed.err" >&2; echo "the test bed did not start" >&2; exit 1; }
proxy=$(sed 's/.*proxy=\([^ ]*\).*/\1/' <<<"$ready")
echo "test bed: $ready"
export KUBECONFIG="$work/kubeconfig"

# The chart repository of clusters/staging/helm-repositories.yaml.
charts_port=$(free_port)
mkdir -p "$work/charts"
helm package examples/charts/cache --destination "$work/charts" >/dev/null
helm repo index "$work/charts" --url "http://127.0.0.1:$charts_port"
python3 -m http.server "$charts_port" --bind 127.0.0.1 --directory "$work/charts" >"$work/charts.log" 2>&1 &
pids+=($!)

# A Slack-compatible webhook: prints each message it gets.
slack_port=$(free_port)
cat >"$work/slack.py" <<'EOF'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        for a in body.get("attachments", []):
            print(f"slack #{body.get('channel', '')} [{a.get('color', '')}] {a.get('author_name', '')}: {a.get('text', '')}", flush=True)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
EOF
python3 "$work/slack.py" "$slack_port" >"$work/slack.log" 2>&1 &
pids+=($!)

# The Git repository.
cp -r examples/gitops "$work/gitops"
git -C "$work/gitops" init -q -b main
git -C "$work/gitops" -c user.name=demo -c user.email=demo@example.com add -A
git -C "$work/gitops" -c user.name=demo -c user.email=demo@example.com commit -q -m "staging cluster"
git clone -q --bare "$work/gitops" "$work/fleet.git"
git -C "$work/gitops" remote add origin "$work/fleet.git"

kubectl apply -f crds/ >/dev/null
kubectl apply -f crds/serin-sync/ >/dev/null
kubectl create namespace flux-system >/dev/null
kubectl -n flux-system create configmap cluster-settings \
  --from-literal=chart_repository="http://127.0.0.1:$charts_port" \
  --from-literal=slack_address="http://127.0.0.1:$slack_port/services/demo" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 1m
  ref:
    branch: main
  url: file://$work/fleet.git
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 10m
  path: ./clusters/staging
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
  postBuild:
    substituteFrom:
      - kind: ConfigMap
        name: cluster-settings
EOF

"$sync" run --storage-path "$work/storage" --admin-addr 127.0.0.1:0 --receiver-addr off >"$work/serin-sync.log" 2>&1 &
pids+=($!)
HTTP_PROXY="$proxy" http_proxy="$proxy" NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
  ./target/debug/serin run --admin-addr 127.0.0.1:0 --metrics-server http://prometheus.istio-system:9090 >"$work/serin.log" 2>&1 &
pids+=($!)

slack_seen=0
print_slack() {
  local lines; lines=$(wc -l <"$work/slack.log")
  if [ "$lines" -gt "$slack_seen" ]; then
    tail -n +"$((slack_seen + 1))" "$work/slack.log" | head -n "$((lines - slack_seen))" | sed 's/^/          /'
    slack_seen=$lines
  fi
}

trim() { local v="${1#"${1%%[! ]*}"}"; printf '%s' "${v%"${v##*[! ]}"}"; }

# Prints each object of `serin-sync get all -A` whose readiness changes; returns once all are Ready.
declare -A seen=()
sync_until_ready() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    local table all_ready=true
    table=$("$sync" get all -A 2>/dev/null || true)
    while IFS=$'\t' read -r ns name _rev _susp ready message _; do
      ns=$(trim "$ns"); name=$(trim "$name"); ready=$(trim "$ready"); message=$(trim "$message")
      { [ -z "$name" ] || [ "$ns" = NAMESPACE ]; } && continue
      [ "$ready" = True ] || all_ready=false
      if [ "${seen[$ns/$name]:-}" != "$ready $message" ]; then
        printf '%-9s %-38s %-7s %s\n' "$(date +%T)" "$ns/$name" "$ready" "$message"
        seen[$ns/$name]="$ready $message"
      fi
    done <<<"$table"
    print_slack
    if $all_ready && grep -q helmrelease/podinfo <<<"$table"; then return 0; fi
    sleep 1
  done
  echo "timed out waiting for the sync" >&2
  return 1
}

canary() {
  kubectl -n podinfo get canary podinfo -o jsonpath='{.status.phase} {.status.canaryWeight} {.status.failedChecks}' 2>/dev/null || true
}
canary_until() {
  local want="$1" deadline=$((SECONDS + $2)) last=""
  while [ $SECONDS -lt $deadline ]; do
    local now; now=$(canary)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
      read -r phase weight failed <<<"$now"
      printf '%-9s canary phase=%-16s weight=%-3s failedChecks=%s\n' "$(date +%T)" "$phase" "$weight" "$failed"
      last="$now"
    fi
    print_slack
    case "${now%% *}" in
      "$want") return 0 ;;
      Failed) return 1 ;;
    esac
    sleep 1
  done
  echo "timed out waiting for $want" >&2
  return 1
}

echo "--- syncing clusters/staging (sources, Kustomizations, HelmReleases, the Alert)"
sync_until_ready 300 || { tail -n 30 "$work/serin-sync.log" >&2; exit 1; }
"$sync" get all -A

echo "--- committing podinfo 6.5.1"
sed -i 's/      tag: 6.5.0/      tag: 6.5.1/' "$work/gitops/apps/staging/podinfo.yaml"
git -C "$work/gitops" -c user.name=demo -c user.email=demo@example.com commit -q -am "podinfo 6.5.1"
git -C "$work/gitops" push -q origin main
"$sync" reconcile source git flux-system
canary_until Progressing 180 || { tail -n 30 "$work/serin.log" >&2; exit 1; }
canary_until Succeeded 300 || { tail -n 30 "$work/serin.log" >&2; exit 1; }
sync_until_ready 120 || true
echo "promoted: the primary runs $(kubectl -n podinfo get deploy podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"
