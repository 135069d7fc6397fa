// Package image holds the tests of the container image (the Dockerfile at the repository root)
// that need no Docker engine: there is none on the developers' machines or in CI, so the tests
// prove the image's properties on the Dockerfile itself and on the binary its build stage makes.
//
//   - The Dockerfile: the build stage uses the Go release of go.mod and runs exactly
//     `make build VERSION=${VERSION}`, whose command (make -n) has CGO_ENABLED=0, -trimpath and
//     -ldflags "-s -w -X main.version=..."; the final stage is distroless static, copies that
//     binary to the ENTRYPOINT, runs as a numeric non-root USER, runs no RUN (no shell there)
//     and exposes the default peer and ops ports; .dockerignore keeps .git, .cache and bin out
//     of the build context and everything the build needs in.
//   - The binary: built by running the build stage's own RUN command in a copy of the build
//     context (the repository less what .dockerignore excludes), it is static (no interpreter,
//     no DT_NEEDED), stripped (no .symtab, no DWARF), built without cgo and with -trimpath
//     (debug/buildinfo, and no build path in it), and prints the version it was stamped with.
//   - The sandbox: testdata/sandbox.sh runs that binary as the image runs it, in a mount
//     namespace of its own (unshare --mount): chrooted into a read-only tmpfs holding nothing
//     but /raft-elector, a read-only /proc and a tmpfs data dir owned by 65532, as uid and gid
//     65532 without capabilities. The member elects itself, serves /leader, /healthz, /readyz
//     and /metrics, writes its state in the data dir and exits cleanly on SIGTERM; with the data
//     dir read-only or missing it refuses to start and names the data dir.
//
// The sandbox needs root (as on the developers' machines and in CI) and util-linux unshare,
// mount and coreutils chroot; without them the tests fail and say what is missing: they never
// skip.
package image
