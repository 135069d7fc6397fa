#!/usr/bin/env bash
# Builds the Helm CLI that checks the chart (hack/helm/check.sh and the tests in test/chart)
# into .cache/helm/bin/helm, from the tool module hack/helm. Only the Go toolchain is assumed:
# Helm and its dependencies come through GOPROXY like every other module.
#
# The binary is rebuilt only when it is missing or its stamp changed. The stamp records the
# pinned Helm version, a hash of hack/helm/go.mod and go.sum, the Go version and the build
# flags, so bumping Helm in hack/helm/go.mod rebuilds on the next run and an unchanged tree
# costs a few milliseconds. Safe to run concurrently (a lock serialises builds) and from
# `make test` on a fresh machine: the first build takes a minute or two, later runs reuse
# .cache/helm.
#
# Environment:
#   HELM_ENV_DIR        output folder (default: <repo>/.cache/helm); the binary goes to $HELM_ENV_DIR/bin
#   HELM_BUILD_FORCE=1  rebuild even when the stamp matches
#   GOFLAGS             passed through to go build, e.g. GOFLAGS=-p=1 on a busy machine
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
moddir="$root/hack/helm"
out="${HELM_ENV_DIR:-$root/.cache/helm}"
bin="$out/bin"
go="${GO:-go}"
mkdir -p "$bin"

# Only one build at a time per output folder: parallel `make` targets or two CI steps must not
# write the same binary at once.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out/.build.lock"
	flock 9
fi

# A static binary, no C toolchain needed; no VCS stamping (the main package lives in a
# dependency module, and this repository may be a tarball without .git).
export CGO_ENABLED=0
build_flags=(-trimpath -buildvcs=false)
go_version="$("$go" env GOVERSION)"

mod=helm.sh/helm/v3
pkg=helm.sh/helm/v3/cmd/helm
version="$(awk -v m="$mod" '$1 == m { print $2; exit }' "$moddir/go.mod")"
if [ -z "$version" ]; then
	echo "hack/helm/build.sh: $mod not found in hack/helm/go.mod" >&2
	exit 1
fi
# What Helm's own Makefile stamps: the release, so `helm version` reports it; and the Kubernetes
# version that `helm template` and `helm lint` assume without a cluster (.Capabilities.KubeVersion),
# which Helm derives from the client-go it is built with (v0.<minor> → 1.<minor>). Without the
# latter it would be 1.20, and the chart's `kubeVersion: >=1.29` would refuse to render.
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$moddir/go.mod")"
k8s_minor="${client_go#v0.}"
k8s_minor="${k8s_minor%%.*}"
if [ -z "$client_go" ] || [ -z "$k8s_minor" ]; then
	echo "hack/helm/build.sh: k8s.io/client-go not found in hack/helm/go.mod" >&2
	exit 1
fi
ldflags="-s -w -X $mod/internal/version.version=$version -X $mod/internal/version.gitTreeState=clean"
for p in pkg/lint/rules pkg/chartutil; do
	ldflags+=" -X $mod/$p.k8sVersionMajor=1 -X $mod/$p.k8sVersionMinor=$k8s_minor"
done

stamp_file="$bin/helm.stamp"
stamp="$(
	printf '%s %s\n' "$mod" "$version"
	printf 'go %s\n' "$go_version"
	printf 'flags %s ldflags %s\n' "${build_flags[*]}" "$ldflags"
	cd "$moddir" && sha256sum go.mod go.sum
)"
if [ -z "${HELM_BUILD_FORCE:-}" ] && [ -x "$bin/helm" ] && [ -f "$stamp_file" ] &&
	[ "$(cat "$stamp_file")" = "$stamp" ]; then
	echo "helm env: helm $version is up to date ($bin/helm)"
	exit 0
fi

echo "helm env: building helm $version ($pkg), the first build takes a minute or two..."
start=$SECONDS
rm -f "$stamp_file"
(cd "$moddir" && "$go" build "${build_flags[@]}" -ldflags "$ldflags" -o "$bin/helm.tmp" "$pkg")
mv -f "$bin/helm.tmp" "$bin/helm"
printf '%s\n' "$stamp" >"$stamp_file"
echo "helm env: built helm $version in $((SECONDS - start))s ($(du -h "$bin/helm" | cut -f1))"
