#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ (or those FUZZ_TARGETS names) for SECONDS each, with corpora seeded from the project's
# examples, and prints each target's executions, corpus size and crashes (a crash stops the run
# and leaves its input under fuzz/artifacts/<target>/). Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets=(canary metric_template alert_provider template_query duration prometheus_response
  sync_kustomization sync_git_repository sync_kustomization_file sync_kustomize_output source_ignore
  sync_helm_release sync_helm_index sync_notification emulator_requests)
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi

corpus=target/fuzz-corpus
mkdir -p "$corpus"
# Seeds: each YAML document of examples/ and the test fixtures under its kind's target.
python3 - "$corpus" <<'PY'
import os, sys, hashlib, pathlib
corpus = pathlib.Path(sys.argv[1])
kinds = {
    "Canary": "canary", "MetricTemplate": "metric_template", "AlertProvider": "alert_provider",
    "Kustomization": "sync_kustomization", "GitRepository": "sync_git_repository",
    "HelmRelease": "sync_helm_release",
    "Provider": "sync_notification", "Alert": "sync_notification", "Receiver": "sync_notification",
}
seeds = {t: [] for t in [
    "canary", "metric_template", "alert_provider", "template_query", "duration", "prometheus_response",
    "sync_kustomization", "sync_git_repository", "sync_kustomization_file", "sync_kustomize_output",
    "source_ignore", "emulator_requests", "sync_helm_release", "sync_helm_index", "sync_notification",
]}
for root in ["examples", "tests/e2e/fixtures"]:
    for path in pathlib.Path(root).rglob("*.y*ml"):
        text = path.read_text()
        if path.name == "kustomization.yaml":
            seeds["sync_kustomization_file"].append(text)
        elif "apiVersion:" in text:
            seeds["sync_kustomize_output"].append(text)
        for doc in text.split("\n---"):
            for kind, target in kinds.items():
                if f"kind: {kind}\n" in doc:
                    seeds[target].append(doc)
                    if kind == "MetricTemplate" and "query:" in doc:
                        seeds["template_query"].append(doc.split("query:", 1)[1])
for path in pathlib.Path("examples").rglob(".sourceignore"):
    seeds["source_ignore"].append(path.read_text())
seeds["source_ignore"] += ["*.md\n!README.md\n/docs/\n**/testdata\n", "[a-z]*.yaml\n\\#x\n"]
seeds["emulator_requests"] += [
    "GET /api/v1/namespaces/test/configmaps?labelSelector=app%3Dc&limit=1\n\n",
    "PATCH /apis/apps/v1/namespaces/test/deployments/d?fieldManager=f\napplication/apply-patch+yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 2\n",
    "PATCH /api/v1/namespaces/test/configmaps/c\napplication/json-patch+json\n[{\"op\":\"add\",\"path\":\"/data/x\",\"value\":\"1\"}]\n===\nGET /api/v1/namespaces/test/configmaps/c\n\n",
    "PATCH /apis/apps/v1/namespaces/test/deployments/d\napplication/strategic-merge-patch+json\n{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"y\"}]}}}}",
    "GET /api/v1/namespaces/test/configmaps\napplication/json;as=Table;v=v1;g=meta.k8s.io\n",
]
seeds["sync_helm_index"] += [
    ">=1.0.0 <2.0.0\napiVersion: v1\nentries:\n  demo:\n  - name: demo\n    version: 1.2.3\n    urls: [demo-1.2.3.tgz]\n",
    "1.x || ^2\nentries: {}\n",
]
seeds["sync_helm_release"] += [
    "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: demo, namespace: apps}\nspec:\n  interval: 5m\n  chart:\n    spec:\n      chart: demo\n      sourceRef: {kind: HelmRepository, name: charts}\n  valuesFrom:\n  - {kind: ConfigMap, name: v, targetPath: image.tag}\n",
]
seeds["duration"] += ["1m", "30s", "1h30m", "1.5h", "500ms", "0", "2562047h"]
seeds["prometheus_response"] += [
    '{"resultType":"vector","result":[{"metric":{},"value":[1.0,"99.5"]}]}',
    '{"resultType":"scalar","result":[1.0,"1"]}',
]
for target, texts in seeds.items():
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    for text in texts:
        (d / hashlib.sha1(text.encode()).hexdigest()).write_text(text)
PY

report=target/fuzz-report.md
printf '| target | seconds | executions | corpus | crashes |\n|---|---|---|---|---|\n' > "$report"
for t in "${targets[@]}"; do
  log="target/fuzz-$t.log"
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$corpus/$t" -- -max_total_time="$seconds" >"$log" 2>&1 || status=$?
  runs=$(grep -a -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  if [ -z "$runs" ]; then
    runs=$(grep -a -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  fi
  files=$(find "$corpus/$t" -type f | wc -l)
  crashes=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$seconds" "${runs:-?}" "$files" "$crashes" >> "$report"
  if [ "$status" -ne 0 ]; then
    cat "$report"
    echo "fuzz target $t failed (see $log and fuzz/artifacts/$t/)" >&2
    exit "$status"
  fi
done
cat "$report"
