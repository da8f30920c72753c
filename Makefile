# serin developer entry points. `make test` is the test command the README and CI use.
CARGO ?= cargo
NEXTEST_PROFILE ?= default

.PHONY: all build deps deps-base cluster test check fmt fmt-check clippy dup-check crds ci demo testbed bench analysis-bench fuzz chaos

all: build

build:
	$(CARGO) build --workspace --all-targets

## What the tests need beyond the Rust toolchain, each installed when missing: cargo-nextest
## (crates.io), openssl and curl, real Prometheus and openssh-server (Debian's packages), Docker's
## Dockerfile parser (PyPI), and the real control plane with kubectl and helm (`make cluster`,
## which needs Go). `deps-base` is all but the control plane (enough for `make demo`).
deps: deps-base
	@$(MAKE) --no-print-directory cluster

deps-base:
	@command -v cargo-nextest >/dev/null || { echo "installing cargo-nextest from crates.io"; $(CARGO) install --locked --debug --quiet cargo-nextest; }
	@command -v openssl >/dev/null && command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl curl >/dev/null; }
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v prometheus >/dev/null || { echo "prometheus is not on PATH; install it with apt-get install -y prometheus" >&2; exit 1; }
	@test -x /usr/sbin/sshd || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null; }
	@python3 -c 'import dockerfile' 2>/dev/null || python3 -m pip install --quiet dockerfile

## The real control plane: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl
## (k8s.io/kubernetes), etcd, kwok and the helm CLI, built from the Go module proxy once per
## machine into ~/.cache/serin-testbed/<component>-<version>/bin (SERIN_TESTBED_CACHE moves it).
cluster:
	@command -v go >/dev/null || { echo "go is not on PATH: the real control plane is built from Go modules (Go 1.26 or newer)" >&2; exit 1; }
	$(CARGO) run -q -p serin-testbed -- build-cluster

## The directories of the built binaries, first on PATH for the tests (kubectl and helm match
## the server's version).
CLUSTER_PATH = $(shell $(CARGO) run -q -p serin-testbed -- build-cluster --print-path)

## Every test of the workspace (unit, integration, Flagger compatibility), the end-to-end suites
## on the real control plane (SERIN_TESTBED_CLUSTER=emulator runs them on the API emulator), then
## the RBAC check: the e2e suite runs serin as the chart's ServiceAccount under the chart's
## ClusterRoles, every test bed appends its authorization decisions (the real API server's audit
## log, or the emulator's) to RBAC_AUDIT_DIR, and `rbac-audit` fails when serin was denied
## something or a rule grants something serin never requested.
SERIN_TESTBED_CLUSTER ?= real
RBAC_AUDIT_DIR ?= $(CURDIR)/target/rbac-audit
CLUSTER_REPORT_DIR ?= $(CURDIR)/target/cluster-report
SERIN_IDENTITY := system:serviceaccount:istio-system:serin
test: deps
	rm -rf $(RBAC_AUDIT_DIR) $(CLUSTER_REPORT_DIR)
	PATH="$(CLUSTER_PATH):$$PATH" SERIN_TESTBED_CLUSTER=$(SERIN_TESTBED_CLUSTER) \
		SERIN_TESTBED_AUDIT_DIR=$(RBAC_AUDIT_DIR) SERIN_TESTBED_REPORT_DIR=$(CLUSTER_REPORT_DIR) \
		$(CARGO) nextest run --workspace --lib --bins --tests --profile $(NEXTEST_PROFILE)
	$(CARGO) run -q -p serin-testbed -- rbac-audit --dir $(RBAC_AUDIT_DIR) --user $(SERIN_IDENTITY) \
		--rules charts/serin/files/rbac/controller.yaml --rules charts/serin/files/rbac/crds.yaml \
		--rules charts/serin/files/rbac/leader-election.yaml
	@if [ "$(SERIN_TESTBED_CLUSTER)" = real ]; then $(CARGO) run -q -p serin-testbed -- cluster-report --dir $(CLUSTER_REPORT_DIR); fi

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Two versions of kube, k8s-openapi or opentelemetry in the graph fail the build.
dup-check:
	./scripts/check-duplicate-versions.sh

## Static checks without tests.
check: fmt-check clippy dup-check

## Regenerate crds/ from the API types (serin-sync's into crds/serin-sync/), and the copies the Helm
## chart and the kustomize base ship (a test fails while a copy is stale).
crds:
	$(CARGO) run -q -- crd --out-dir crds
	$(CARGO) run -q -p serin-sync -- crd --out-dir crds/serin-sync
	cp crds/*.yaml charts/serin/crds/
	cp crds/*.yaml deploy/base/crds/
	cp crds/serin-sync/*.yaml charts/serin/files/crds/serin-sync/

## What CI runs: static checks, then the tests.
ci: check
	$(MAKE) test NEXTEST_PROFILE=ci

## The test bed in the foreground (prints `ready kubeconfig=PATH prometheus=URL proxy=URL
## loadtester=URL`); ARGS=--cluster=real runs the real control plane instead of the emulator.
testbed:
	$(CARGO) run -q -p serin-testbed -- up $(ARGS)

## Emulator throughput and watch fan-out figures, then serin's initialisation time, memory,
## idle API requests and reaction time with many Canaries, then serin-sync's time to first apply,
## memory and cost of an unchanged revision with many objects (release builds).
bench:
	$(CARGO) bench -p serin-testbed --bench apiserver
	$(CARGO) bench -p serin --bench controller
	$(CARGO) bench -p serin-sync --bench sync

## The canary analysis simulator: serin's sequential comparison and Flagger's fixed thresholds on
## the same synthetic request streams (false rollbacks, detection, time to rollback); writes its
## tables into docs/analysis.md. No cluster.
analysis-bench:
	$(CARGO) bench -p serin --bench analysis

## libFuzzer over serin's untrusted inputs (fuzz/fuzz_targets), FUZZ_SECONDS per target, seeded
## from examples/; not part of CI. Installs cargo-fuzz and a nightly toolchain when missing.
FUZZ_SECONDS ?= 60
fuzz:
	./scripts/fuzz.sh $(FUZZ_SECONDS)

## The fault campaign (tests/e2e/chaos.rs) at full length: CHAOS_ROLLOUTS rollouts under API
## faults, closed watches, Prometheus outages and CHAOS_KILLS SIGKILLs; its figures go into
## docs/reliability.md. `make test` runs a short campaign.
CHAOS_ROLLOUTS ?= 30
CHAOS_KILLS ?= 20
chaos: deps
	PATH="$(CLUSTER_PATH):$$PATH" SERIN_CHAOS_ROLLOUTS=$(CHAOS_ROLLOUTS) SERIN_CHAOS_KILLS=$(CHAOS_KILLS) \
		SERIN_CHAOS_REPORT=$(CURDIR)/target/chaos-report.md \
		$(CARGO) test --test e2e chaos -- --nocapture
	python3 scripts/record_chaos.py target/chaos-report.md docs/reliability.md

## A full canary rollout on the local test bed (ARGS=--bad: a failing revision, rolled back).
demo:
	./scripts/demo.sh $(ARGS)
