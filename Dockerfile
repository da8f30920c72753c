# syntax=docker/dockerfile:1
# One image with both binaries: `serin` (the canary controller, the default entrypoint) and
# `serin-sync` (Git to cluster; the Helm chart runs it with `serin-sync run`).
#
#   docker build -t ghcr.io/serin-dev/serin:0.1.0 .
#
# The runtime is Debian slim rather than distroless because serin-sync runs `git` (with ssh for
# ssh:// repositories), `kustomize` and `helm` (HelmReleases are released by the helm program);
# serin itself needs nothing but glibc and CA certificates.

# Build: the release binaries, with the toolchain rust-toolchain.toml pins.
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p serin -p serin-sync --bins \
 && install -D -m 0755 target/release/serin /out/serin \
 && install -D -m 0755 target/release/serin-sync /out/serin-sync

# kustomize, from the official SIG CLI image.
FROM registry.k8s.io/kustomize/kustomize:v5.5.0 AS kustomize

# helm, built from Helm's Go module (the version the test bed builds and the tests run).
FROM docker.io/library/golang:1.26-bookworm AS helm
RUN CGO_ENABLED=0 GOBIN=/out go install helm.sh/helm/v3/cmd/helm@v3.22.0

# Runtime: non-root (10001), nothing writable but the /tmp volume the chart mounts.
FROM docker.io/library/debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 serin \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin serin
COPY --from=kustomize /app/kustomize /usr/local/bin/kustomize
COPY --from=helm /out/helm /usr/local/bin/helm
COPY --from=build /out/serin /out/serin-sync /usr/local/bin/
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/serin"]
CMD ["run"]
