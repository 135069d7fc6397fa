# The raft-elector image: the static binary of `make build` on distroless, run as a non-root
# user, with nothing else in it (no shell, no package manager).
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t raft-elector .
#
# test/image checks what this file promises without a Docker engine (docs/image.md): that the
# build stage runs `make build`, that the binary is static and stripped, and that it runs as
# uid 65532 with a read-only root and only its data dir writable.

# Build stage: the Go release that go.mod names, and the same command a developer runs.
FROM golang:1.26.8-bookworm AS build
ARG VERSION=dev
WORKDIR /src
# Modules first, so that this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build VERSION=${VERSION}

# Final stage: distroless static rather than scratch, because it brings what a static Go binary
# may still need from the file system: CA certificates (a --kubeconfig whose API server has a
# public certificate), /etc/passwd and /etc/group naming the nonroot user 65532 (so `id`, logs
# and os/user show a name), and tzdata (TZ for log time stamps). The :nonroot tag is that image
# with USER 65532 already; it is set again below, numerically, because the kubelet can verify
# runAsNonRoot only for a numeric USER.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG SOURCE=https://github.com/raft-elector/raft-elector
# The repository has no LICENSE file yet: set this (an SPDX expression) once it has one.
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="raft-elector" \
      org.opencontainers.image.description="Leader-election sidecar for Kubernetes: Raft election and heartbeats over HTTP/JSON" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="${LICENSES}"
COPY --from=build /src/bin/raft-elector /raft-elector
USER 65532:65532
# Peer protocol (--peer-addr) and /metrics, /healthz, /readyz (--ops-addr). The local API
# (--local-addr, 127.0.0.1:4040) is loopback only and not exposed.
EXPOSE 4041 4042
ENTRYPOINT ["/raft-elector"]
