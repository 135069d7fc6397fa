// Package e2e holds the real-process tests of raft-elector: the election tests of the course
// that the protocol follows (initial election, re-election after the leader is cut off, no
// leader without a majority, many elections among seven members), crashes (SIGKILL), pauses
// (SIGSTOP/SIGCONT), graceful handover (SIGTERM) and restarts with the same data directory,
// run against real `raft-elector` processes talking HTTP over loopback through one fault
// proxy (test/faultproxy) per directed link.
//
// Throughout every test a lease checker polls every member's GET /leader and fails the test
// when two members' promised leases overlap, when a term has two leaders, or when a member's
// term goes backwards (also across restarts with the same data directory).
//
// The tests build the binary themselves (go build ./cmd/sidecar, without -race) so that plain
// `go test ./test/e2e/` works; RAFT_ELECTOR_E2E_BIN names a prebuilt binary instead. With
// -short the cluster tests are skipped. A failing test prints the tail of every member's log
// and of the checker's timeline, and keeps the full logs in a directory it names.
//
// The TestKube* tests run members in Kubernetes mode against a real kube-apiserver and etcd
// (test/kubeenv; built by hack/kube/build.sh): members on 127.0.0.x addresses stand for pods
// created as API objects, authenticated as a service account bound to deploy/rbac.yaml. They
// check the leader label, pod deletion and termination, an API-server outage, two applications
// in one namespace, a forbidden namespace, and the steady-state API load beside a client-go
// Lease elector at its default timings.
//
// TestNemesis and TestNemesisKube run a seeded, time-bounded random schedule of faults
// (partitions, bridges, one-way loss, slow links, SIGKILL and restart, SIGSTOP pauses, SIGTERM,
// and in Kubernetes mode API-server outages) with a heal and a liveness check after every step,
// and end with a report; -nemesis.seed replays a schedule, -nemesis.duration sets its length
// (docs/reliability.md; `make nemesis` runs the long form).
//
// TestCompareBenchmark (only with -compare; `make bench`, `make bench-quick`) runs raft-elector
// in Kubernetes mode and the client-go Lease baseline (test/leaseelector) against the same API
// server over the same schedule of SIGKILL and SIGTERM events, measures failover, handover,
// leaderless and overlapping-leader time, API-server load, CPU and RSS and their growth with
// cluster size, and writes docs/benchmarks.md with its plots. TestCompareBenchmarkSmoke runs the
// same code on a tiny schedule in every `make test`.
package e2e
