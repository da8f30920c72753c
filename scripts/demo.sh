#!/usr/bin/env bash
# A full canary rollout on the local test bed: `make demo` (a good revision, ends Succeeded) or
# `make demo ARGS=--bad` (a revision answering half its requests with errors, ends Failed with the
# primary untouched); `--real` runs it on the real control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built once by `make cluster`) instead of the
# API emulator. Prints every change of phase, weight and failed checks with the latest event.
# `--gitops` runs the example monorepo through serin-sync instead (scripts/demo-gitops.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bad=false
cluster=emulator
for arg in "$@"; do
  case "$arg" in
    --bad) bad=true ;;
    --real) cluster=real ;;
    --gitops) exec scripts/demo-gitops.sh ;;
    *) echo "usage: scripts/demo.sh [--bad] [--real] [--gitops]" >&2; exit 2 ;;
  esac
done

make -s deps-base
echo "building serin and the test bed..."
cargo build -q --bin serin && cargo build -q -p serin-testbed --bin serin-testbed
if [ "$cluster" = real ]; then
  make -s cluster
  # kubectl of the server's version, from the same build.
  PATH="$(./target/debug/serin-testbed build-cluster --print-path):$PATH"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

./target/debug/serin-testbed up --cluster "$cluster" --kubeconfig "$work/kubeconfig" >"$work/testbed.out" 2>"$work/testbed.err" &
pids+=($!)
for _ in $(seq 1 600); do
  grep -q '^ready ' "$work/testbed.out" 2>/dev/null && break
  sleep 0.1
done
ready=$(grep '^ready ' "$work/testbed.out") || { cat "$work/testbed.err" >&2; echo "the test bed did not start" >&2; exit 1; }
proxy=$(sed 's/.*proxy=\([^ ]*\).*/\1/' <<<"$ready")
echo "test bed: $ready"
sed -n 's/^serin-testbed: //p' "$work/testbed.err"
export KUBECONFIG="$work/kubeconfig"

kubectl apply -f crds/ >/dev/null
kubectl create namespace test >/dev/null
kubectl -n test apply -f examples/canary/

HTTP_PROXY="$proxy" http_proxy="$proxy" NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
  ./target/debug/serin run --admin-addr 127.0.0.1:0 --metrics-server http://prometheus.istio-system:9090 \
  --include-label-prefix app.kubernetes.io >"$work/serin.log" 2>&1 &
pids+=($!)

status() {
  kubectl -n test get canary podinfo -o jsonpath='{.status.phase} {.status.canaryWeight} {.status.failedChecks}' 2>/dev/null || true
}
latest_event() {
  kubectl -n test get events --field-selector involvedObject.kind=Canary,involvedObject.name=podinfo -o json 2>/dev/null |
    python3 -c 'import json,sys; items=json.load(sys.stdin)["items"]; items.sort(key=lambda e:int(e["metadata"]["resourceVersion"])); print(items[-1]["message"] if items else "")'
}
watch_until() {
  local want="$1" deadline=$((SECONDS + $2)) last=""
  while [ $SECONDS -lt $deadline ]; do
    local now; now=$(status)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
      read -r phase weight failed <<<"$now"
      printf '%-9s phase=%-16s weight=%-3s failedChecks=%-2s %s\n' "$(date +%T)" "$phase" "$weight" "$failed" "$(latest_event)"
      last="$now"
    fi
    case "${now%% *}" in
      "$want") return 0 ;;
      Failed|Succeeded) [ "$want" = "${now%% *}" ] || return 1 ;;
    esac
    sleep 0.5
  done
  echo "timed out waiting for $want" >&2
  return 1
}

echo "--- initialization"
watch_until Initialized 120 || { tail -n 30 "$work/serin.log" >&2; exit 1; }
echo "--- pushing a new revision"
if $bad; then
  kubectl -n test patch deploy podinfo --type=strategic -p \
    '{"spec":{"template":{"metadata":{"annotations":{"testbed.serin.dev/error-rate":"0.5"}},"spec":{"containers":[{"name":"podinfod","image":"ghcr.io/stefanprodan/podinfo:6.0.1"}]}}}}'
  watch_until Failed 300 || { tail -n 30 "$work/serin.log" >&2; exit 1; }
  image=$(kubectl -n test get deploy podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')
  echo "rolled back: the primary still runs $image"
  [ "$image" = "ghcr.io/stefanprodan/podinfo:6.0.0" ]
else
  kubectl -n test set image deploy/podinfo podinfod=ghcr.io/stefanprodan/podinfo:6.0.1
  watch_until Succeeded 300 || { tail -n 30 "$work/serin.log" >&2; exit 1; }
  echo "promoted: the primary runs $(kubectl -n test get deploy podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"
fi
