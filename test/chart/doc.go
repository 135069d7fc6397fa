// Package chart tests the Helm chart deploy/helm/raft-elector with the Helm that
// hack/helm/build.sh builds from the Go module proxy into .cache/helm/bin (`make test` builds
// it first; a test that cannot find it fails, it never skips).
//
// Offline, every ci/*-values.yaml scenario is rendered with `helm template` and its objects are
// checked against the values they came from: names within 63 characters, the standard labels,
// every container's securityContext, the sidecar's arguments, environment, probes, volumes and
// mounts, least-privilege RBAC, the NetworkPolicy's and Services' selectors, and that the
// values schema and the chart's own guards refuse bad values. The example parent chart in
// deploy/helm/examples is rendered with this chart as its dependency.
//
// Against a real kube-apiserver and etcd (test/kubeenv), every scenario's objects are
// server-side applied with strict field validation into a namespace of their own, so the API
// server's schemas check every field; the Prometheus Operator kinds are checked against CRDs of
// our own in testdata/crds. The chart's Role is exercised with a token of the chart's
// ServiceAccount through pkg/bootstrap, the code the sidecar runs. Finally the helm binary
// itself installs, upgrades and uninstalls a release: the generated auth key survives the
// upgrade, the bootstrap ConfigMap's data written by a member survives it too, and uninstall
// removes both.
package chart
