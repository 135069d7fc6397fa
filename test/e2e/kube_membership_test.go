package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/raft-elector/raft-elector/pkg/bootstrap"
	"github.com/raft-elector/raft-elector/pkg/discovery"
	"github.com/raft-elector/raft-elector/test/kubeenv"
)

// Membership through the Raft log in Kubernetes mode, over real processes and a real
// kube-apiserver: pods that come and go (scaling, a rolling update), many learners behind five
// voters, the recovery of a cluster that lost a majority of its voters for good, and of one
// whose pods were all replaced at once. Pods are removed the way a kubelet removes them: a
// graceful delete (the pod turns terminating), SIGTERM to the member, and once it has exited a
// delete with a zero grace period. Pod names are never
// reused within a test: a name is one member slot of the harness, and the lease checker follows
// a member's term by name. The lease checker and the label watch run throughout every test.

// defaultMaxVoters is the default of --max-voters.
const defaultMaxVoters = 5

// wantPeers is what every member of an application of n live pods reports once its
// configuration has settled: min(n, 5) voters, the rest learners.
func wantPeers(n int) (voters, learners float64) {
	v := min(n, defaultMaxVoters)
	return float64(v), float64(n - v)
}

// peerCounts reads member i's own view of its configuration from its /metrics.
func peerCounts(a *kubeApp, i int) (voters, learners float64, err error) {
	if voters, err = a.Metric(i, "raft_elector_peers", map[string]string{"role": "voter"}); err != nil {
		return 0, 0, err
	}
	learners, err = a.Metric(i, "raft_elector_peers", map[string]string{"role": "learner"})
	return voters, learners, err
}

// runningMembers returns the members whose process runs.
func runningMembers(c *Cluster) []int {
	var out []int
	for i, m := range c.Members {
		if m.Running() {
			out = append(out, i)
		}
	}
	return out
}

// waitPeers waits until every member of live reports the settled configuration of len(live)
// pods, and returns when that was seen.
func waitPeers(a *kubeApp, live []int, timeout time.Duration) time.Time {
	a.t.Helper()
	wv, wl := wantPeers(len(live))
	deadline := time.Now().Add(timeout)
	for {
		var off []string
		for _, i := range live {
			v, l, err := peerCounts(a, i)
			if err != nil || v != wv || l != wl {
				off = append(off, fmt.Sprintf("%s: %v voters, %v learners (%v)", a.Name(i), v, l, err))
			}
		}
		if len(off) == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("members of %s do not all report %v voters and %v learners within %v:\n  %s\nlatest answers:%s",
				a.Cluster.IDs(live), wv, wl, timeout, strings.Join(off, "\n  "), a.Cluster.DescribeLatest())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSettled waits until the application of the pods of live has settled: every member
// reports min(n, 5) voters and the rest learners, one member leads and every one names it, its
// pod alone is labelled leader and every other live pod follower, and no other pod of the
// application exists. It returns the leader, its term and when all that was seen.
func waitSettled(a *kubeApp, live []int, timeout time.Duration) (int, uint64, time.Time) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	waitPeers(a, live, timeout)
	leader, term, _ := a.Cluster.WaitAgreedLeader(live, time.Until(deadline))
	at := a.WaitLabels(a.LabelsFor(leader, nil), time.Until(deadline))
	labels := a.Labels.Current()
	if n := countValue(labels, roleLeader); n != 1 {
		a.t.Fatalf("%d pods labelled %s: %s", n, roleLeader, formatLabels(labels))
	}
	if len(labels) != len(live) {
		a.t.Fatalf("pods of %s: %s; want only those of %s", a.Selector(), formatLabels(labels), a.Cluster.IDs(live))
	}
	return leader, term, at
}

// roles splits set by the role each member gave in its latest /leader answer: voters (leader,
// follower or candidate) and learners. Call it once the answers are fresh (WaitAgreedLeader).
func roles(c *Cluster, set []int) (voters, learners []int) {
	for _, i := range set {
		if o, ok := c.Checker.Latest(i); ok && o.Answer.State == "learner" {
			learners = append(learners, i)
		} else {
			voters = append(voters, i)
		}
	}
	return voters, learners
}

// waitJoined waits until member i is in the configuration (its own configuration names
// voters) and is ready (/readyz 200: it knows a leader), which is when a Deployment counts the
// new pod available; it returns when that was seen.
func waitJoined(a *kubeApp, i int, timeout time.Duration) time.Time {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, _, err := peerCounts(a, i)
		if err == nil && v > 0 {
			code, _, err := a.Cluster.get(a.Cluster.Members[i].OpsAddr(), "/readyz", 2*time.Second)
			if err == nil && code == http.StatusOK {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s did not join within %v (voters in its configuration: %v, %v); latest answers:%s",
				a.Name(i), timeout, v, err, a.Cluster.DescribeLatest())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leadership summarises the lease claims (isLeader answers) the checker recorded in [from, to],
// as the pollers saw them.
type leadership struct {
	claims int
	// gap is the longest stretch of [from, to] in which no member was seen claiming the lease,
	// judged by when the claims were received; gapFrom is when it began.
	gap     time.Duration
	gapFrom time.Time
	// changes counts the times the claimant changed.
	changes   int
	claimants []string // in order, each run of claims by one member once, with its term
}

func leadershipIn(c *Cluster, from, to time.Time) leadership {
	claims := c.Checker.Claims(from, to)
	sort.SliceStable(claims, func(x, y int) bool { return claims[x].Recv.Before(claims[y].Recv) })
	l := leadership{claims: len(claims)}
	prev, last := from, ""
	for _, o := range claims {
		if d := o.Recv.Sub(prev); d > l.gap {
			l.gap, l.gapFrom = d, prev
		}
		prev = o.Recv
		if o.ID != last {
			if last != "" {
				l.changes++
			}
			last = o.ID
			l.claimants = append(l.claimants, fmt.Sprintf("%s(term %d)", o.ID, o.Answer.Term))
		}
	}
	if d := to.Sub(prev); d > l.gap {
		l.gap, l.gapFrom = d, prev
	}
	return l
}

// fencingViolations lists the lease claims received in [from, to] whose term is below that of
// a claim received before they were asked for: the term, the application's fencing token, went
// back from one leader to the next. Only causally ordered claims are compared.
func fencingViolations(c *Cluster, from, to time.Time) []string {
	claims := c.Checker.Claims(from, to)
	byRecv := slices.Clone(claims)
	sort.SliceStable(byRecv, func(x, y int) bool { return byRecv[x].Recv.Before(byRecv[y].Recv) })
	sort.SliceStable(claims, func(x, y int) bool { return claims[x].Sent.Before(claims[y].Sent) })
	var out []string
	var floor *Observation
	p := 0
	for _, o := range claims {
		for ; p < len(byRecv) && byRecv[p].Recv.Before(o.Sent); p++ {
			if floor == nil || byRecv[p].Answer.Term > floor.Answer.Term {
				floor = &byRecv[p]
			}
		}
		if floor != nil && o.Answer.Term < floor.Answer.Term {
			out = append(out, fmt.Sprintf("%s after %s", c.Checker.describe(o), c.Checker.describe(*floor)))
			if len(out) == 5 {
				break
			}
		}
	}
	return out
}

// checkFencing fails the test if the leaders' terms went back in [from, to].
func checkFencing(t *testing.T, c *Cluster, from, to time.Time) {
	t.Helper()
	for _, v := range fencingViolations(c, from, to) {
		t.Errorf("the term (fencing token) of the lease holders went back: %s", v)
	}
}

// 1. Scale 3 → 7 → 2 → 5 pods. After each step every member reports min(pods, 5) voters and the
// rest learners, one leader is agreed by all and labelled. The scale-down removes pods one at a
// time, a kubelet's way, the leader's among them.
func TestKubeScaleUpAndDown(t *testing.T) {
	env := startKubeEnv(t)
	const ns, subnet = "scale", 110
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	// Ten pods over the test: web-0..2 at the start, web-3..6 when scaling to 7, web-7..9 when
	// scaling back up to 5.
	var ips []string
	for n := 1; n <= 10; n++ {
		ips = append(ips, kubeIP(subnet, n))
	}
	var pods []kubePod
	for n := range 3 {
		pods = append(pods, kubePod{Name: fmt.Sprintf("web-%d", n), IP: ips[n], Run: true})
	}
	app := startKubeApp(t, env, kubeAppConfig{Namespace: ns, App: "web", Kubeconfig: kubeconfig,
		PeerPort: pickPeerPort(t, ips), Pods: pods})
	c := app.Cluster
	next := len(pods)
	scaleUp := func(k int) {
		var add []kubeNewPod
		for range k {
			add = append(add, kubeNewPod{Name: fmt.Sprintf("web-%d", next), IP: ips[next]})
			next++
		}
		app.AddPods(add...)
	}
	settle := func(step string, begin time.Time) int {
		t.Helper()
		live := runningMembers(c)
		leader, term, at := waitSettled(app, live, 30*time.Second)
		voters, learners := roles(c, live)
		c.Logf("scale %s: settled in %s: %s leads %d pods in term %d; voters %s, learners %s",
			step, at.Sub(begin).Round(time.Millisecond), app.Name(leader), len(live), term, c.IDs(voters), c.IDs(learners))
		return leader
	}

	settle("to 3 (start)", app.Started)

	begin := time.Now()
	scaleUp(4)
	leader := settle("3 → 7", begin)

	// Down to 2, one pod at a time: a follower voter, a learner, the leader, then the other
	// voters but one. Each removal settles (the leader drops the member, promotes a learner in
	// its place while there is one) before the next pod goes, as a StatefulSet waits for a pod
	// to be gone; removing voters faster than that would cost the majority.
	live := runningMembers(c)
	voters, learners := roles(c, live)
	var followerVoters []int
	for _, v := range voters {
		if v != leader {
			followerVoters = append(followerVoters, v)
		}
	}
	if len(voters) != 5 || len(learners) != 2 {
		t.Fatalf("7 pods: voters %s, learners %s; want 5 and 2", c.IDs(voters), c.IDs(learners))
	}
	order := []int{followerVoters[0], learners[0], leader, followerVoters[1], followerVoters[2]}
	c.Logf("scale 7 → 2: removing %s in this order; %s and %s stay", c.IDs(order), app.Name(followerVoters[3]), app.Name(learners[1]))
	begin = time.Now()
	for _, i := range order {
		name := app.Name(i)
		o, _ := c.Checker.Latest(i)
		from := time.Now()
		code, _ := app.TerminatePod(name, 10*time.Second)
		if code != 0 {
			t.Errorf("%s exited with code %d after SIGTERM, want 0", name, code)
		}
		live = runningMembers(c)
		at := waitPeers(app, live, 20*time.Second)
		l := leadershipIn(c, from, at)
		c.Logf("scale 7 → 2: %s (%s) gone; %d pods settled %s after its deletion; longest leaderless stretch %s, leaders %s",
			name, o.Answer.State, len(live), at.Sub(from).Round(time.Millisecond), l.gap.Round(time.Millisecond), strings.Join(l.claimants, " → "))
	}
	settle("7 → 2", begin)

	begin = time.Now()
	scaleUp(3)
	settle("2 → 5", begin)
	checkFencing(t, c, c.start, time.Now())
	checkNoRecovery(t, env, app)
}

// 2. A rolling update of three pods, as a Deployment with maxSurge 1 and maxUnavailable 0 does
// it: a new pod starts and joins, then one old pod goes, a kubelet's way. The leader's pod is
// replaced in the middle. The lease checker runs throughout; the longest leaderless stretch and
// the leader changes are measured (and logged, not asserted: benchmarks measure, tests assert).
func TestKubeRollingUpdate(t *testing.T) {
	env := startKubeEnv(t)
	const ns, subnet = "rolling", 111
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	var ips []string
	for n := 1; n <= 6; n++ {
		ips = append(ips, kubeIP(subnet, n))
	}
	var pods []kubePod
	for n := range 3 {
		pods = append(pods, kubePod{Name: fmt.Sprintf("web-%d", n), IP: ips[n], Run: true})
	}
	app := startKubeApp(t, env, kubeAppConfig{Namespace: ns, App: "web", Kubeconfig: kubeconfig,
		PeerPort: pickPeerPort(t, ips), Pods: pods})
	c := app.Cluster
	leader, term, _ := waitSettled(app, c.All(), 30*time.Second)
	others := c.Except(leader)
	order := []int{others[0], leader, others[1]}
	c.Logf("rolling update: %s leads in term %d; replacing %s in this order", app.Name(leader), term, c.IDs(order))

	begin := time.Now()
	var newPods []int
	for k, old := range order {
		step := time.Now()
		ni := app.AddPod(fmt.Sprintf("web-v2-%d", k), ips[3+k])
		newPods = append(newPods, ni)
		joined := waitJoined(app, ni, 30*time.Second)
		name := app.Name(old)
		o, _ := c.Checker.Latest(old)
		code, exited := app.TerminatePod(name, 10*time.Second)
		if code != 0 {
			t.Errorf("%s exited with code %d after SIGTERM, want 0", name, code)
		}
		c.Logf("rolling update: %s joined %s after its pod was created; %s (latest answer: %s, isLeader %v) exited %s after SIGTERM",
			app.Name(ni), joined.Sub(step).Round(time.Millisecond), name, o.Answer.State, o.Answer.IsLeader, exited.Sub(joined).Round(time.Millisecond))
	}
	leader, term, settled := waitSettled(app, newPods, 30*time.Second)
	if !slices.Contains(newPods, leader) {
		t.Errorf("%s leads after the update; want one of the new pods %s", app.Name(leader), c.IDs(newPods))
	}
	if live := runningMembers(c); !slices.Equal(live, newPods) {
		t.Errorf("members running after the update: %s, want the new pods %s", c.IDs(live), c.IDs(newPods))
	}
	for _, i := range newPods {
		if v, l, err := peerCounts(app, i); err != nil || v != 3 || l != 0 {
			t.Errorf("%s after the update: %v voters, %v learners (%v); want 3 voters", app.Name(i), v, l, err)
		}
	}

	l := leadershipIn(c, begin, settled)
	c.Logf("rolling update: 3 pods replaced in %s; longest leaderless gap %s (from +%.3fs); %d leader changes (%s); %d lease claims seen; %s leads in term %d",
		settled.Sub(begin).Round(time.Millisecond), l.gap.Round(time.Millisecond), l.gapFrom.Sub(c.start).Seconds(),
		l.changes, strings.Join(l.claimants, " → "), l.claims, app.Name(leader), term)
	t.Logf("rolling update: longest leaderless gap %s, %d leader changes, %s for 3 pods",
		l.gap.Round(time.Millisecond), l.changes, settled.Sub(begin).Round(time.Millisecond))
	// The term of the lease holders, the fencing token, never went back; the checker also
	// fails the test if one member's term did.
	checkFencing(t, c, c.start, time.Now())
	checkNoRecovery(t, env, app)
}

// 3. Thirty pods: five voters spread over nodes and zones, twenty-five learners, and every
// member names the leader. When the leader's process is killed and its pod deleted, a voter
// takes over, the dead member is removed and a learner promoted: five voters again.
func TestKubeThirtyPodsFiveVoters(t *testing.T) {
	env := startKubeEnv(t)
	const ns, subnet, pods = "thirty", 112, 30
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	var ips []string
	for n := 1; n <= pods; n++ {
		ips = append(ips, kubeIP(subnet, n))
	}
	// web-0 bootstraps on the harness's node, without a zone; web-1..29 follow on six nodes in
	// three zones (node-k in zone k mod 3), created with their node and zone.
	app := startKubeApp(t, env, kubeAppConfig{Namespace: ns, App: "web", Kubeconfig: kubeconfig,
		PeerPort: pickPeerPort(t, ips), Pods: []kubePod{{Name: "web-0", IP: ips[0], Run: true}}})
	c := app.Cluster
	// Thirty members polled every 15 ms would keep this machine's two cores busy with polls.
	c.SetPollInterval(60 * time.Millisecond)
	c.WaitAgreedLeader([]int{0}, 15*time.Second)

	zones := []string{"zone-a", "zone-b", "zone-c"}
	place := map[string][2]string{"web-0": {kubeenv.NodeName, ""}} // node, zone
	var add []kubeNewPod
	for n := 1; n < pods; n++ {
		p := kubeNewPod{Name: fmt.Sprintf("web-%d", n), IP: ips[n], Node: fmt.Sprintf("node-%d", n%6), Zone: zones[n%3]}
		place[p.Name] = [2]string{p.Node, p.Zone}
		add = append(add, p)
	}
	begin := time.Now()
	app.AddPods(add...)
	started := time.Now()
	all := c.All()
	peersAt := waitPeers(app, all, 60*time.Second)
	leader, term, agreed := c.WaitAgreedLeader(all, 20*time.Second)
	labelled := app.WaitLabels(app.LabelsFor(leader, nil), kubeSettle)
	voters, learners := roles(c, all)
	c.Logf("30 pods: 29 members started in %s; 5 voters and 25 learners in every member's configuration %s after the pods were created, "+
		"all named %s (term %d) after %s, labels right after %s; voters %s",
		started.Sub(begin).Round(time.Millisecond), peersAt.Sub(begin).Round(time.Millisecond), app.Name(leader), term,
		agreed.Sub(begin).Round(time.Millisecond), labelled.Sub(begin).Round(time.Millisecond), describePlacement(app, voters, place))
	if len(voters) != 5 || len(learners) != 25 {
		t.Fatalf("voters %s and %d learners; want 5 and 25", c.IDs(voters), len(learners))
	}
	checkSpread(t, app, voters, place, len(zones))

	oldName := app.Name(leader)
	killed := c.Kill(leader)
	app.DeletePod(oldName, true)
	survivors := c.Except(leader)
	next, nextTerm, at := c.WaitAgreedLeader(survivors, 20*time.Second)
	if !slices.Contains(voters, next) {
		t.Errorf("%s leads after the failover but was not a voter (voters were %s)", app.Name(next), c.IDs(voters))
	}
	peersAt = waitPeers(app, survivors, 30*time.Second)
	labelled = app.WaitLabels(app.LabelsFor(next, nil), kubeSettle)
	c.WaitAgreedLeader(survivors, 10*time.Second) // fresh answers for the roles
	after, _ := roles(c, survivors)
	c.Logf("30 pods: after SIGKILL of %s, %s leads the 29 in term %d after %s; 5 voters and 24 learners everywhere after %s, labels after %s; voters %s",
		oldName, app.Name(next), nextTerm, at.Sub(killed).Round(time.Millisecond), peersAt.Sub(killed).Round(time.Millisecond),
		labelled.Sub(killed).Round(time.Millisecond), describePlacement(app, after, place))
	if len(after) != 5 {
		t.Fatalf("voters after the failover: %s; want 5", c.IDs(after))
	}
	var promoted []int
	for _, v := range after {
		if !slices.Contains(voters, v) {
			promoted = append(promoted, v)
		}
	}
	if len(promoted) != 1 {
		t.Errorf("voters before %s, after %s: want exactly one learner promoted", c.IDs(voters), c.IDs(after))
	}
	checkSpread(t, app, after, place, len(zones))
	if labels := app.Labels.Current(); countValue(labels, roleLeader) != 1 || labels[oldName] != "" {
		t.Errorf("labels after the failover: %s; want one leader and no %s", formatLabels(labels), oldName)
	}
	checkNoRecovery(t, env, app)
}

// describePlacement names the voters with their node and zone.
func describePlacement(a *kubeApp, voters []int, place map[string][2]string) string {
	var parts []string
	for _, v := range voters {
		p := place[a.Name(v)]
		zone := p[1]
		if zone == "" {
			zone = "no zone"
		}
		parts = append(parts, fmt.Sprintf("%s(%s, %s)", a.Name(v), p[0], zone))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// checkSpread reports how the voters are spread over nodes and zones (the planner prefers no
// two on one node and zones as even as their number allows, among the learners caught up).
func checkSpread(t *testing.T, a *kubeApp, voters []int, place map[string][2]string, zones int) {
	t.Helper()
	nodes, perZone := map[string]int{}, map[string]int{}
	zoned := 0
	for _, v := range voters {
		p := place[a.Name(v)]
		nodes[p[0]]++
		if p[1] != "" {
			perZone[p[1]]++
			zoned++
		}
	}
	// Nodes and zones are only a preference among the learners caught up when a promotion
	// happens: with 29 pods joining at once, the best-placed learner may still be catching up
	// (seen for zones too on a loaded machine: zone-a had no learner caught up in time), and
	// nothing rebalances later (docs/membership.md, known limits). pkg/membership's unit tests
	// pin the rule itself; here the placement is only reported.
	for node, n := range nodes {
		if n > 1 {
			a.Cluster.Logf("spread: %d voters on node %s: %s", n, node, describePlacement(a, voters, place))
		}
	}
	most := int(math.Ceil(float64(zoned) / float64(zones)))
	for zone, n := range perZone {
		if n > most {
			a.Cluster.Logf("spread: %d voters in %s, more than %d of %d zoned voters per zone: %s", n, zone, most, zoned, describePlacement(a, voters, place))
		}
	}
	if want := min(zoned, zones); len(perZone) < want {
		a.Cluster.Logf("spread: voters in %d zones, fewer than %d: %s", len(perZone), want, describePlacement(a, voters, place))
	}
}

// 4. Five voters lose three, the leader among them, for good (SIGKILL, pods deleted): the two
// survivors cannot elect. After --recover-after without a leader one of them starts a new
// cluster generation through the bootstrap object, the other joins it, and they elect; two new
// pods then join the new cluster. No two leases overlap at any time.
func TestKubeMajorityLossRecovers(t *testing.T) {
	env := startKubeEnv(t)
	const ns, subnet = "recover", 113
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	var ips []string
	for n := 1; n <= 7; n++ {
		ips = append(ips, kubeIP(subnet, n))
	}
	var pods []kubePod
	for n := range 5 {
		pods = append(pods, kubePod{Name: fmt.Sprintf("web-%d", n), IP: ips[n], Run: true})
	}
	const recoverAfter = 3 * time.Second // three election timeouts
	app := startKubeApp(t, env, kubeAppConfig{Namespace: ns, App: "web", Kubeconfig: kubeconfig,
		PeerPort: pickPeerPort(t, ips), Pods: pods, ExtraArgs: []string{"--recover-after=" + recoverAfter.String()}})
	c := app.Cluster
	leader, term, _ := waitSettled(app, c.All(), 30*time.Second)

	object := bootstrap.DefaultName(ns, app.Selector())
	first := readBootstrapObject(t, env, ns, object)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// t.Context() is done by now.
		ctx, cancel := context.WithTimeout(context.Background(), apiCallBudget)
		defer cancel()
		if cm, err := env.AdminClient.CoreV1().ConfigMaps(ns).Get(ctx, object, metav1.GetOptions{}); err == nil {
			t.Logf("bootstrap object %s at the end: %v", object, cm.Data)
		}
	})
	if first[bootstrap.KeyGeneration] != "1" {
		t.Fatalf("bootstrap object %s: %v; want generation 1", object, first)
	}

	others := c.Except(leader)
	victims := []int{leader, others[0], others[1]}
	survivors := others[2:]
	c.Logf("majority loss: %s leads 5 voters in term %d (cluster %s); killing %s, %s survive",
		app.Name(leader), term, first[bootstrap.KeyCluster], c.IDs(victims), c.IDs(survivors))
	killed := time.Now()
	for _, i := range victims {
		c.Kill(i)
	}
	for _, i := range victims {
		app.DeletePod(app.Name(i), true)
	}

	next, nextTerm, recovered := c.WaitAgreedLeader(survivors, 30*time.Second)
	c.Logf("majority loss: recovered in %s (SIGKILL to a leader agreed by the survivors): %s leads in term %d",
		recovered.Sub(killed).Round(time.Millisecond), app.Name(next), nextTerm)
	second := readBootstrapObject(t, env, ns, object)
	if second[bootstrap.KeyGeneration] != "2" || second[bootstrap.KeyCluster] == first[bootstrap.KeyCluster] {
		t.Errorf("bootstrap object %s after the recovery: %v; want generation 2 and a new cluster id (was %s)",
			object, second, first[bootstrap.KeyCluster])
	}
	if by := discovery.NameOf(second[bootstrap.KeyBootstrapper]); !slices.ContainsFunc(survivors, func(i int) bool { return app.Name(i) == by }) {
		t.Errorf("generation 2 was bootstrapped by %q, not by a survivor %s", second[bootstrap.KeyBootstrapper], c.IDs(survivors))
	}
	_, _, settled := waitSettled(app, survivors, 30*time.Second)
	c.Logf("majority loss: 2 voters and labels right %s after the kill; bootstrap object now %v",
		settled.Sub(killed).Round(time.Millisecond), second)

	begin := time.Now()
	app.AddPods(kubeNewPod{Name: "web-5", IP: ips[5]}, kubeNewPod{Name: "web-6", IP: ips[6]})
	live := runningMembers(c)
	final, finalTerm, at := waitSettled(app, live, 30*time.Second)
	c.Logf("majority loss: 2 new pods joined the new cluster in %s; %s leads 4 voters in term %d",
		at.Sub(begin).Round(time.Millisecond), app.Name(final), finalTerm)
	if v := readBootstrapObject(t, env, ns, object); v[bootstrap.KeyCluster] != second[bootstrap.KeyCluster] {
		t.Errorf("bootstrap object changed again: %v, want %v", v, second)
	}
	t.Logf("majority loss: recovery time (SIGKILL of 3 of 5 voters → a leader agreed by the 2 survivors) %s with --recover-after=%s; lease terms: %d before, %d after",
		recovered.Sub(killed).Round(time.Millisecond), recoverAfter, term, nextTerm)
	checkFencing(t, c, c.start, time.Now())
}

// 5. Every pod replaced at once (scaled to zero and back, a node pool replaced): the three
// voters are killed and their pods deleted, and three new pods start without state. The
// bootstrap object still names the old cluster, so none of them bootstraps; each waits as a
// learner with no configuration. The object records the old voters, whose pods are gone: after
// --recover-after without a leader the new pods start one new generation (one of them wins the
// compare-and-swap, the others join it), elect, and promote to three voters, which the object
// then records. No two leases or leader labels overlap, and the term keeps growing.
func TestKubeAllPodsReplaced(t *testing.T) {
	env := startKubeEnv(t)
	const ns, subnet = "replaced", 114
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	var ips []string
	for n := 1; n <= 6; n++ {
		ips = append(ips, kubeIP(subnet, n))
	}
	var pods []kubePod
	for n := range 3 {
		pods = append(pods, kubePod{Name: fmt.Sprintf("web-%d", n), IP: ips[n], Run: true})
	}
	const recoverAfter = 3 * time.Second // three election timeouts
	app := startKubeApp(t, env, kubeAppConfig{Namespace: ns, App: "web", Kubeconfig: kubeconfig,
		PeerPort: pickPeerPort(t, ips), Pods: pods, ExtraArgs: []string{"--recover-after=" + recoverAfter.String()}})
	c := app.Cluster
	old := c.All()
	leader, term, _ := waitSettled(app, old, 30*time.Second)

	object := bootstrap.DefaultName(ns, app.Selector())
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), apiCallBudget)
		defer cancel()
		if cm, err := env.AdminClient.CoreV1().ConfigMaps(ns).Get(ctx, object, metav1.GetOptions{}); err == nil {
			t.Logf("bootstrap object %s at the end: %v", object, cm.Data)
		}
	})
	first := waitRecordedVoters(t, env, app, object, old, 10*time.Second)
	if first[bootstrap.KeyGeneration] != "1" {
		t.Fatalf("bootstrap object %s: %v; want generation 1", object, first)
	}
	c.Logf("all pods replaced: %s leads 3 voters in term %d; the object records voters %s at index %s",
		app.Name(leader), term, first[bootstrap.KeyVoters], first[bootstrap.KeyConfigIndex])

	// Scale to zero: every process dies and every pod is gone.
	for _, i := range old {
		c.Kill(i)
	}
	for _, i := range old {
		app.DeletePod(app.Name(i), true)
	}
	app.WaitLabels(map[string]string{app.Name(old[0]): "", app.Name(old[1]): "", app.Name(old[2]): ""}, 10*time.Second)

	// Scale up again: three new pods, new names and UIDs, no state.
	apiBefore := readAPICounts(t, env, "configmaps")
	begin := time.Now()
	fresh := app.AddPods(kubeNewPod{Name: "web-new-0", IP: ips[3]}, kubeNewPod{Name: "web-new-1", IP: ips[4]}, kubeNewPod{Name: "web-new-2", IP: ips[5]})
	next, nextTerm, led := c.WaitAgreedLeader(fresh, 30*time.Second)
	c.Logf("all pods replaced: %s leads the new pods in term %d, %s after they started",
		app.Name(next), nextTerm, led.Sub(begin).Round(time.Millisecond))
	if nextTerm < bootstrap.TermBase(2) || nextTerm <= term {
		t.Errorf("the new leader's term %d is not above the old generation's terms (old leader's term %d, generation 2 starts at %d)",
			nextTerm, term, bootstrap.TermBase(2))
	}

	final, finalTerm, settled := waitSettled(app, fresh, 30*time.Second)
	second := waitRecordedVoters(t, env, app, object, fresh, 10*time.Second)
	if second[bootstrap.KeyGeneration] != "2" || second[bootstrap.KeyCluster] == first[bootstrap.KeyCluster] {
		t.Errorf("bootstrap object %s after the replacement: %v; want generation 2 and a new cluster id (was %s)",
			object, second, first[bootstrap.KeyCluster])
	}
	if by := discovery.NameOf(second[bootstrap.KeyBootstrapper]); !slices.ContainsFunc(fresh, func(i int) bool { return app.Name(i) == by }) {
		t.Errorf("generation 2 was bootstrapped by %q, not by a new pod %s", second[bootstrap.KeyBootstrapper], c.IDs(fresh))
	}
	for _, i := range fresh {
		if line := findLogLine(c.Members[i].LogPath, "starting a new cluster generation", "bootstrap object"); line != "" {
			c.Logf("%s: %s", app.Name(i), line)
		}
	}
	cms := diffAPICounts(apiBefore, readAPICounts(t, env, "configmaps"))
	c.Logf("all pods replaced: bootstrap object requests from the new pods' start until they were recorded: %s", cms.verbs("configmaps"))
	c.Logf("all pods replaced: %s leads 3 voters in term %d, %s after the new pods started; the object records %s at index %s",
		app.Name(final), finalTerm, settled.Sub(begin).Round(time.Millisecond), second[bootstrap.KeyVoters], second[bootstrap.KeyConfigIndex])
	t.Logf("all pods replaced: new pods started → a leader agreed by all of them in %s with --recover-after=%s; 3 voters and labels right after %s; lease terms: %d before, %d after",
		led.Sub(begin).Round(time.Millisecond), recoverAfter, settled.Sub(begin).Round(time.Millisecond), term, nextTerm)
	checkFencing(t, c, c.start, time.Now())
	app.Labels.Check()
}

// waitRecordedVoters waits until the bootstrap object records exactly the member ids of the
// pods of members as its voters, and returns the object's data.
func waitRecordedVoters(t *testing.T, env *kubeenv.Env, a *kubeApp, object string, members []int, timeout time.Duration) map[string]string {
	t.Helper()
	var want []string
	for _, i := range members {
		want = append(want, discovery.PodID(a.Name(i), a.pods[a.Name(i)].UID))
	}
	sort.Strings(want)
	deadline := time.Now().Add(timeout)
	for {
		data := readBootstrapObject(t, env, a.cfg.Namespace, object)
		if data[bootstrap.KeyVoters] == strings.Join(want, ",") {
			return data
		}
		if time.Now().After(deadline) {
			t.Fatalf("bootstrap object %s records voters %q at index %q, want %q within %v",
				object, data[bootstrap.KeyVoters], data[bootstrap.KeyConfigIndex], strings.Join(want, ","), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkNoRecovery fails the test if the application's cluster was re-bootstrapped: the
// bootstrap object is still at generation 1. Scaling, a rolling update or the loss of one voter
// never take a majority of the voters, so they must never need a recovery.
func checkNoRecovery(t *testing.T, env *kubeenv.Env, a *kubeApp) {
	t.Helper()
	object := bootstrap.DefaultName(a.cfg.Namespace, a.Selector())
	if rec := readBootstrapObject(t, env, a.cfg.Namespace, object); rec[bootstrap.KeyGeneration] != "1" {
		t.Errorf("bootstrap object %s: %v; want generation 1: the cluster was re-bootstrapped as after losing a majority of its voters", object, rec)
	}
}

// readBootstrapObject reads the bootstrap ConfigMap's data as the admin.
func readBootstrapObject(t *testing.T, env *kubeenv.Env, ns, name string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	cm, err := env.AdminClient.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read bootstrap object %s/%s: %v", ns, name, err)
	}
	return cm.Data
}
