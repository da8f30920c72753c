#!/usr/bin/env bash
# Fails when the dependency graph holds two versions of a crate whose types must be shared:
# kube, k8s-openapi or the opentelemetry family (two copies do not interoperate).
set -euo pipefail
cd "$(dirname "$0")/.."

guarded='^(kube|kube-client|kube-core|kube-runtime|kube-derive|k8s-openapi|opentelemetry|opentelemetry_sdk|opentelemetry-otlp|opentelemetry-proto|tracing-opentelemetry) v'
tree=$(cargo tree --workspace --all-targets --depth 0 --duplicates --edges normal,build,dev 2>&1) || {
  printf '%s\n' "$tree" >&2
  echo "check-duplicate-versions: cargo tree failed" >&2
  exit 2
}
# `cargo tree -d` lists a package once per version (and repeats a version reached with other
# features); two distinct versions of one name are the problem.
dups=$(printf '%s\n' "$tree" | grep -E "$guarded" | sort -u | awk '{print $1}' | uniq -d || true)
if [ -n "$dups" ]; then
  echo "error: more than one version of these crates is in the dependency graph:" >&2
  for name in $dups; do
    printf '%s\n' "$tree" | grep -E "^$name v" | sort -u | sed 's/^/  /' >&2
  done
  echo "run \`cargo tree -i <crate>@<version>\` to see which dependency pulls the extra copy" >&2
  exit 1
fi
echo "check-duplicate-versions: one version each of kube, k8s-openapi and opentelemetry"
