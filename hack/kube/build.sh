#!/usr/bin/env bash
# Builds the kube-apiserver and etcd binaries that the Kubernetes integration tests start
# (package test/kubeenv) into .cache/kube/bin, from the tool modules hack/kube/apiserver and
# hack/kube/etcd. Only the Go toolchain is assumed: every module comes through GOPROXY.
#
# A binary is rebuilt only when it is missing or its stamp changed. The stamp records the pinned
# module version, a hash of the tool module's go.mod and go.sum, the Go version and the build
# flags, so bumping a version in hack/kube/*/go.mod rebuilds on the next run and an unchanged
# tree costs a few milliseconds. Safe to run concurrently (a lock serialises builds) and from
# `make test` or .ci/run on a fresh machine: the first build of kube-apiserver takes minutes
# (about 4 on 2 cores), later runs reuse .cache/kube.
#
# Environment:
#   KUBE_ENV_DIR        output folder (default: <repo>/.cache/kube); binaries go to $KUBE_ENV_DIR/bin
#   KUBE_BUILD_FORCE=1  rebuild even when the stamps match
#   GOFLAGS             passed through to go build, e.g. GOFLAGS=-p=1 on a busy machine
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${KUBE_ENV_DIR:-$root/.cache/kube}"
bin="$out/bin"
go="${GO:-go}"
mkdir -p "$bin"

# Only one build at a time per output folder: parallel `make` targets or two CI steps must not
# write the same binary at once.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out/.build.lock"
	flock 9
fi

# Static binaries, no C toolchain needed; no VCS stamping (the main packages live in dependency
# modules anyway, and this repository may be a tarball without .git).
export CGO_ENABLED=0
build_flags=(-trimpath -buildvcs=false)
go_version="$("$go" env GOVERSION)"

# pinned <module dir> <module path>: the version the tool module pins for <module path>.
pinned() {
	awk -v m="$2" '$1 == m { print $2; exit }' "$root/hack/kube/$1/go.mod"
}

# build <name> <module dir> <pinned module> <package> <ldflags>
build() {
	local name="$1" dir="$2" mod="$3" pkg="$4" ldflags="$5"
	local version stamp_file stamp
	version="$(pinned "$dir" "$mod")"
	if [ -z "$version" ]; then
		echo "hack/kube/build.sh: $mod not found in hack/kube/$dir/go.mod" >&2
		exit 1
	fi
	stamp_file="$bin/$name.stamp"
	stamp="$(
		printf '%s %s\n' "$mod" "$version"
		printf 'go %s\n' "$go_version"
		printf 'flags %s ldflags %s\n' "${build_flags[*]}" "$ldflags"
		cd "$root/hack/kube/$dir" && sha256sum go.mod go.sum
	)"
	if [ -z "${KUBE_BUILD_FORCE:-}" ] && [ -x "$bin/$name" ] && [ -f "$stamp_file" ] &&
		[ "$(cat "$stamp_file")" = "$stamp" ]; then
		echo "kube env: $name $version is up to date ($bin/$name)"
		return
	fi
	echo "kube env: building $name $version ($pkg), the first build takes minutes..."
	local start=$SECONDS
	rm -f "$stamp_file"
	(cd "$root/hack/kube/$dir" &&
		"$go" build "${build_flags[@]}" -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
	mv -f "$bin/$name.tmp" "$bin/$name"
	printf '%s\n' "$stamp" >"$stamp_file"
	echo "kube env: built $name $version in $((SECONDS - start))s ($(du -h "$bin/$name" | cut -f1))"
}

start=$SECONDS

k8s_version="$(pinned apiserver k8s.io/kubernetes)"
k8s_minor="${k8s_version#v1.}"
k8s_minor="${k8s_minor%%.*}"
# What Kubernetes' own hack/lib/version.sh stamps, so /version reports the real release.
kv=k8s.io/component-base/version
build kube-apiserver apiserver k8s.io/kubernetes k8s.io/kubernetes/cmd/kube-apiserver \
	"-s -w -X $kv.gitVersion=$k8s_version -X $kv.gitMajor=1 -X $kv.gitMinor=$k8s_minor -X $kv.gitTreeState=clean"

build etcd etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 "-s -w"

echo "kube env: ready in $bin ($((SECONDS - start))s)"
