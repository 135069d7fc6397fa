package e2e

import (
	"testing"
)

// kubeKinds are the faults of members in Kubernetes mode. Their peers reach each other at the
// pod IPs discovery gives, with no fault proxy in between, so link faults are the static
// nemesis's; here the API server's outages meet process faults (including restarts while the
// API server is down, which must carry on in the stored cluster).
var kubeKinds = []weightedKind{
	{faultKill, 2}, {faultPause, 3}, {faultTerminate, 1}, {faultAPIOutage, 2},
}

// TestNemesisKube runs the nemesis against three members in Kubernetes mode (a real
// kube-apiserver and etcd, the default 100 ms / 1 s timings): SIGKILL and restart, SIGSTOP
// pauses, SIGTERM handovers and kube-apiserver outages, with a heal and a liveness check after
// every step. Besides the lease checker, the label watch fails the test if two pods were ever
// labelled leader at once, and once the API server has settled after the final heal the
// labels must name the agreed leader.
func TestNemesisKube(t *testing.T) {
	env := startKubeEnv(t)
	app := startWebApp(t, env, "nemesis", 120, 3, "")
	c := app.Cluster
	n := newNemesis(t, c, kubeKinds, &apiControl{
		stop:  env.StopAPIServer,
		start: func() error { return env.StartAPIServer(t.Context()) },
	})
	n.moreChecks = func() []string {
		var out []string
		for _, o := range app.Labels.Overlaps() {
			out = append(out, "two pods labelled leader at once: "+o)
		}
		return out
	}
	n.run()
	leader, _, _, ok := n.waitAgreed(10 * n.election)
	if !ok {
		t.Fatalf("no leader agreed after the final heal; latest answers:%s", c.DescribeLatest())
	}
	app.WaitLabels(app.LabelsFor(leader, nil), kubeSettle)
	n.finish() // the label watch's cleanup fails the test on any overlap it lists
}
