# serin developer entry points. `make test` is the test command the README and CI use.
CARGO ?= cargo
NEXTEST_PROFILE ?= default

.PHONY: all build deps test check fmt fmt-check clippy dup-check crds ci demo testbed bench

all: build

build:
	$(CARGO) build --workspace --all-targets

## What the tests need beyond the Rust toolchain: kubectl and curl (checked), real Prometheus
## (Debian's package, installed when missing), real Helm (helm-sdkpy) and Docker's Dockerfile parser
## (the PyPI package dockerfile), both installed when missing, and Debian's openssh-server for
## serin-sync's ssh test (installed when missing).
deps:
	@command -v kubectl >/dev/null || { echo "kubectl is not on PATH; the test bed's kubectl tests need it" >&2; exit 1; }
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus curl >/dev/null; }
	@command -v prometheus >/dev/null || { echo "prometheus is not on PATH; install it with apt-get install -y prometheus" >&2; exit 1; }
	@python3 -c 'import helm_sdkpy' 2>/dev/null || python3 -m pip install --quiet --ignore-requires-python helm-sdkpy
	@test -x /usr/sbin/sshd || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null; }
	@python3 -c 'import dockerfile' 2>/dev/null || python3 -m pip install --quiet dockerfile

## Every test of the workspace (unit, integration, Flagger compatibility), then the RBAC check:
## the e2e suite runs serin as the chart's ServiceAccount under the chart's ClusterRoles, every
## test bed appends its authorization decisions to RBAC_AUDIT_DIR, and `rbac-audit` fails when
## serin was denied something or a rule grants something serin never requested.
RBAC_AUDIT_DIR ?= $(CURDIR)/target/rbac-audit
SERIN_IDENTITY := system:serviceaccount:istio-system:serin
test: deps
	rm -rf $(RBAC_AUDIT_DIR)
	SERIN_TESTBED_AUDIT_DIR=$(RBAC_AUDIT_DIR) $(CARGO) nextest run --workspace --lib --bins --tests --profile $(NEXTEST_PROFILE)
	$(CARGO) run -q -p serin-testbed -- rbac-audit --dir $(RBAC_AUDIT_DIR) --user $(SERIN_IDENTITY) \
		--rules charts/serin/files/rbac/controller.yaml --rules charts/serin/files/rbac/crds.yaml \
		--rules charts/serin/files/rbac/leader-election.yaml

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

## The API emulator in the foreground (prints `ready kubeconfig=PATH`).
testbed:
	$(CARGO) run -q -p serin-testbed -- up

## Emulator throughput and watch fan-out figures, then serin's initialisation time, memory,
## idle API requests and reaction time with many Canaries (release build).
bench:
	$(CARGO) bench -p serin-testbed --bench apiserver
	$(CARGO) bench -p serin --bench controller

## A full canary rollout on the local test bed (ARGS=--bad: a failing revision, rolled back).
demo:
	./scripts/demo.sh $(ARGS)
