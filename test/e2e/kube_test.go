package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/raft-elector/raft-elector/test/kubeenv"
)

// The Kubernetes tests of issue 3, against a real kube-apiserver and etcd (one per test, so
// that an outage or a measurement in one cannot disturb another). Every test uses its own
// loopback range 127.0.<subnet>.N for its pods, and keeps the lease checker polling every
// member's /leader throughout, plus a watch that fails the test if two pods of one application
// are ever labelled leader at once.

// kubeIP is the address of pod n of a test's subnet.
func kubeIP(subnet, n int) string { return fmt.Sprintf("127.0.%d.%d", subnet, n) }

// startWebApp runs the common setup: a namespace with the sidecar's RBAC and n Running pods
// web-0 … web-(n-1) at 127.0.<subnet>.1 … n, each with a member.
func startWebApp(t *testing.T, env *kubeenv.Env, ns string, subnet, n int, envIdentity string) *kubeApp {
	t.Helper()
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	var pods []kubePod
	var ips []string
	for i := range n {
		ip := kubeIP(subnet, i+1)
		pods = append(pods, kubePod{Name: fmt.Sprintf("web-%d", i), IP: ip, Run: true})
		ips = append(ips, ip)
	}
	app := startKubeApp(t, env, kubeAppConfig{
		Namespace:   ns,
		App:         "web",
		Kubeconfig:  kubeconfig,
		PeerPort:    pickPeerPort(t, ips),
		Pods:        pods,
		EnvIdentity: envIdentity,
	})
	app.WaitVoters(app.Cluster.All(), min(n, 5), 15*time.Second)
	return app
}

// voters is the raft_elector_peers sample of the voters in a member's configuration.
var voters = map[string]string{"role": "voter"}

// 1. Three pods: one leader labelled leader, two labelled follower, within 5 s.
func TestKubeThreePodsElectOneLeaderAndLabelIt(t *testing.T) {
	env := startKubeEnv(t)
	// web-2 takes its identity from the downward-API variables, the others from flags.
	app := startWebApp(t, env, "elect", 101, 3, "web-2")
	c := app.Cluster
	const within = 5 * time.Second
	deadline := app.Started.Add(within)

	leader, term, agreed := c.WaitAgreedLeader(c.All(), time.Until(deadline))
	labelled := app.WaitLabels(app.LabelsFor(leader, nil), time.Until(deadline))
	c.Logf("from start: leader agreed by all after %s, labels right after %s",
		agreed.Sub(app.Started).Round(time.Millisecond), labelled.Sub(app.Started).Round(time.Millisecond))

	// Every member names the same pod, by pod name, also in the leader-elector compatible GET /.
	name := app.Name(leader)
	for i := range c.Members {
		o, err := c.Observe(i)
		if err != nil {
			t.Fatal(err)
		}
		if o.Answer.Name != name || o.Answer.Self != app.Name(i) || o.Answer.Term != term {
			t.Errorf("%s answers %s; want name %q, self %q, term %d", app.Name(i), c.Checker.describe(o), name, app.Name(i), term)
		}
		if compat, err := c.ObserveCompat(i); err != nil || compat != name {
			t.Errorf("%s GET / names %q (%v), want %q", app.Name(i), compat, err, name)
		}
	}
	if leaders := countValue(app.Labels.Current(), roleLeader); leaders != 1 {
		t.Errorf("%d pods labelled leader: %s", leaders, formatLabels(app.Labels.Current()))
	}
}

// 2. Kill the leader's process and delete its pod: a new leader among the other two, and the
// label moves to it.
func TestKubeLeaderKilledAndPodDeletedLabelMoves(t *testing.T) {
	env := startKubeEnv(t)
	app := startWebApp(t, env, "failover", 102, 3, "")
	c := app.Cluster
	old, _, _ := c.WaitAgreedLeader(c.All(), 10*time.Second)
	app.WaitLabels(app.LabelsFor(old, nil), 10*time.Second)
	oldName := app.Name(old)

	killed := c.Kill(old)
	app.DeletePod(oldName, false)
	app.DeletePod(oldName, true)
	survivors := c.Except(old)
	leader, term, at := c.WaitAgreedLeader(survivors, 10*time.Second)
	if leader == old {
		t.Fatalf("the killed member still leads")
	}
	labelled := app.WaitLabels(app.LabelsFor(leader, nil), kubeSettle)
	c.Logf("after SIGKILL of %s: %s leads in term %d after %s; label moved after %s",
		oldName, app.Name(leader), term, at.Sub(killed).Round(time.Millisecond), labelled.Sub(killed).Round(time.Millisecond))

	if _, err := app.GetPod(oldName); !apierrors.IsNotFound(err) {
		t.Errorf("pod %s after the forced delete: %v, want NotFound", oldName, err)
	}
	labels := app.Labels.Current()
	if _, ok := labels[oldName]; ok || countValue(labels, roleLeader) != 1 {
		t.Errorf("labels after the failover: %s; want exactly one leader and no %s", formatLabels(labels), oldName)
	}
	for _, i := range survivors {
		app.WaitMetric(i, "raft_elector_peers", voters, 2, kubeSettle)
	}
}

// 3. Pods that are not members are not counted: a Pending pod without an IP and a pod that has
// Failed never count; a terminating pod stops counting at once. With the leader's pod
// terminating and its process killed, the two others elect, 2 voters out of 2.
func TestKubePodsThatAreNotMembersAreNotCounted(t *testing.T) {
	env := startKubeEnv(t)
	ns, subnet := "membership", 103
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	ips := []string{kubeIP(subnet, 1), kubeIP(subnet, 2), kubeIP(subnet, 3)}
	app := startKubeApp(t, env, kubeAppConfig{
		Namespace:  ns,
		App:        "web",
		Kubeconfig: kubeconfig,
		PeerPort:   pickPeerPort(t, ips),
		Pods: []kubePod{
			{Name: "web-0", IP: ips[0], Run: true},
			{Name: "web-1", IP: ips[1], Run: true},
			{Name: "web-2", IP: ips[2], Run: true},
			{Name: "web-pending"}, // scheduled, no IP yet
			// Finished: it keeps its IP, but no sidecar runs in it any more.
			{Name: "web-failed", IP: kubeIP(subnet, 9), Phase: corev1.PodFailed},
		},
	})
	c := app.Cluster
	c.Logf("pods: web-0..2 Running with members, web-pending without an IP, web-failed in phase Failed")

	old, _, _ := c.WaitAgreedLeader(c.All(), 10*time.Second)
	app.WaitLabels(app.LabelsFor(old, nil), 10*time.Second)
	for i := range c.Members {
		app.WaitMetric(i, "raft_elector_peers", voters, 3, kubeSettle)
	}

	oldName := app.Name(old)
	app.DeletePod(oldName, false)
	c.Kill(old)
	pod, err := app.GetPod(oldName)
	if err != nil || pod.DeletionTimestamp == nil {
		t.Fatalf("pod %s after a graceful delete: %v, deletionTimestamp %v; want it terminating", oldName, err, pod.GetDeletionTimestamp())
	}
	survivors := c.Except(old)
	for _, i := range survivors {
		app.WaitMetric(i, "raft_elector_peers", voters, 2, kubeSettle)
	}
	leader, term, _ := c.WaitAgreedLeader(survivors, 10*time.Second)
	c.Logf("%s leads the 2 remaining voters in term %d", app.Name(leader), term)
	// The new leader also turns the terminating pod, still labelled leader, into a follower.
	app.WaitLabels(app.LabelsFor(leader, map[string]string{oldName: roleFollower, "web-pending": "", "web-failed": ""}), kubeSettle)

	// The kubelet's part: the terminating pod goes away. Nothing changes for the members.
	app.DeletePod(oldName, true)
	for _, i := range survivors {
		if v, err := app.Metric(i, "raft_elector_peers", voters); err != nil || v != 2 {
			t.Errorf("%s: %v voters (%v) after the terminating pod was deleted, want 2", app.Name(i), v, err)
		}
	}
	c.ExpectStableLeader(survivors, leader, term, 2*time.Second)
}

// 4. API server outage: leadership holds; a SIGKILL failover still happens among the
// remaining members, who still count the killed pod (2 of 3); when the API server returns, the
// labels become right on their own.
func TestKubeAPIServerOutage(t *testing.T) {
	env := startKubeEnv(t)
	app := startWebApp(t, env, "outage", 104, 3, "")
	c := app.Cluster
	leader, term, _ := c.WaitAgreedLeader(c.All(), 10*time.Second)
	app.WaitLabels(app.LabelsFor(leader, nil), 10*time.Second)

	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	c.Logf("kube-apiserver stopped")
	c.ExpectStableLeader(c.All(), leader, term, 3*time.Second)
	c.Logf("%s still leads in term %d with the API server down", app.Name(leader), term)

	oldName := app.Name(leader)
	killed := c.Kill(leader)
	survivors := c.Except(leader)
	next, nextTerm, at := c.WaitAgreedLeader(survivors, 10*time.Second)
	c.Logf("failover without the API server: %s leads in term %d after %s",
		app.Name(next), nextTerm, at.Sub(killed).Round(time.Millisecond))
	for _, i := range survivors {
		// The killed pod is still in their view: 2 of 3 voters elected.
		if v, err := app.Metric(i, "raft_elector_peers", voters); err != nil || v != 3 {
			t.Errorf("%s: %v voters (%v) during the outage, want 3 (the killed pod's deletion cannot be seen)", app.Name(i), v, err)
		}
		// Readiness does not depend on the API server.
		if code, _, err := c.get(c.Members[i].OpsAddr(), "/readyz", 2*time.Second); err != nil || code != http.StatusOK {
			t.Errorf("%s /readyz during the outage: %d %v, want 200", app.Name(i), code, err)
		}
	}

	// The killed member restarts while the API server is still down: it waits for the API
	// server to name its cluster, and meanwhile answers with the term on its disk, not 0 (an
	// application that read term N before the restart must never read less after it).
	c.Restart(leader)
	if o, err := c.Observe(leader); err != nil || o.Answer.Term < term || o.Answer.IsLeader || o.Code != http.StatusServiceUnavailable {
		t.Errorf("%s restarted during the outage answers %+v (status %d, %v); want 503, not leading, term at least %d",
			oldName, o.Answer, o.Code, err, term)
	}

	restart := time.Now()
	if err := env.StartAPIServer(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Logf("kube-apiserver ready again after %s", time.Since(restart).Round(time.Millisecond))
	// The old leader's pod still says leader; the new leader turns it into a follower, and
	// its restarted member joins.
	want := app.LabelsFor(next, map[string]string{oldName: roleFollower})
	labelled := app.WaitLabels(want, 45*time.Second)
	c.Logf("labels right %s after the API server was restarted", labelled.Sub(restart).Round(time.Millisecond))
	c.ExpectStableLeader(survivors, next, nextTerm, time.Second)
}

// 5. Two applications (two selectors) in one namespace form two clusters that never exchange
// votes. Application web has a fourth pod whose address is that of a member of application
// other (same IP, same peer port; web-3's own sidecar is not running), so web's leader and
// candidates send their messages to a member of other: it must refuse them (403, another
// cluster id) and the terms of the two clusters must stay independent.
func TestKubeTwoApplicationsNeverExchangeVotes(t *testing.T) {
	env := startKubeEnv(t)
	ns, subnet := "two-apps", 105
	createNamespace(t, env, ns)
	kubeconfig := installSidecarRBAC(t, env, ns)
	var ips []string
	for n := 1; n <= 6; n++ {
		ips = append(ips, kubeIP(subnet, n))
	}
	port := pickPeerPort(t, ips)
	web := startKubeApp(t, env, kubeAppConfig{
		Namespace: ns, App: "web", Kubeconfig: kubeconfig, PeerPort: port,
		Pods: []kubePod{
			{Name: "web-0", IP: ips[0], Run: true},
			{Name: "web-1", IP: ips[1], Run: true},
			{Name: "web-2", IP: ips[2], Run: true},
			{Name: "web-3", IP: ips[3]}, // other-0's address
		},
	})
	other := startKubeApp(t, env, kubeAppConfig{
		Namespace: ns, App: "other", Kubeconfig: kubeconfig, PeerPort: port,
		Pods: []kubePod{
			{Name: "other-0", IP: ips[3], Run: true},
			{Name: "other-1", IP: ips[4], Run: true},
			{Name: "other-2", IP: ips[5], Run: true},
		},
	})
	wl, _, _ := web.Cluster.WaitAgreedLeader(web.Cluster.All(), 15*time.Second)
	ol, oterm, oagreed := other.Cluster.WaitAgreedLeader(other.Cluster.All(), 15*time.Second)
	web.WaitLabels(web.LabelsFor(wl, map[string]string{"web-3": ""}), kubeSettle)
	other.WaitLabels(other.LabelsFor(ol, nil), kubeSettle)

	// Drive web's term past other's: kill web's leader and start it again (same pod), until
	// web has elected in a term above other's. Each election sends votes to other-0.
	wterm := uint64(0)
	for round := 1; wterm <= oterm+1; round++ {
		if round > 6 {
			t.Fatalf("web's term is still %d after %d elections (other's is %d)", wterm, round-1, oterm)
		}
		web.Cluster.Kill(wl)
		web.Cluster.Restart(wl)
		wl, wterm, _ = web.Cluster.WaitAgreedLeader(web.Cluster.All(), 15*time.Second)
	}
	web.WaitLabels(web.LabelsFor(wl, map[string]string{"web-3": ""}), kubeSettle)

	// other never changed leader or term, while web went past its term.
	now := time.Now()
	for i := range other.Cluster.Members {
		for _, o := range other.Cluster.Checker.Changes(i, oagreed, now) {
			if o.Answer.Name != other.Name(ol) || o.Answer.Term != oterm {
				t.Errorf("other's leadership changed while only web had elections: %s", other.Cluster.Checker.describe(o))
			}
		}
		if o, err := other.Cluster.Observe(i); err != nil || o.Answer.Term != oterm || o.Answer.Name != other.Name(ol) {
			t.Errorf("%s now answers %+v (%v); want %s in term %d", other.Name(i), o.Answer, err, other.Name(ol), oterm)
		}
	}
	other.Cluster.Logf("web leads in term %d, other still in term %d under %s", wterm, oterm, other.Name(ol))

	// other-0 refused what web sent to web-3's address, and web saw the refusals. The
	// transport checks the recipient before the member checks the cluster id: a message for
	// web-3 reaching other-0 is refused as misdirected (421) before its cluster id (403) is
	// looked at; either refusal changes nothing in other-0.
	// web-3 becomes a member (a learner the leader sends heartbeats to) once web's current
	// leader has added it, which the kills above may have delayed: wait for the refusals.
	o0 := other.Index("other-0")
	count := func() (refused, seen float64, codes []string) {
		for _, code := range []string{"403", "421"} {
			v, err := other.Metric(o0, "raft_elector_rpc_served_total", map[string]string{"code": code})
			if err != nil {
				t.Fatal(err)
			}
			refused += v
			var s float64
			for i := range web.Cluster.Members {
				w, err := web.Metric(i, "raft_elector_rpc_requests_total", map[string]string{"code": code})
				if err != nil {
					t.Fatal(err)
				}
				s += w
			}
			seen += s
			codes = append(codes, fmt.Sprintf("%s: other-0 answered %v, web's members received %v", code, v, s))
		}
		return refused, seen, codes
	}
	refused, seen, codes := count()
	for deadline := time.Now().Add(10 * time.Second); (refused == 0 || seen == 0) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		refused, seen, codes = count()
	}
	other.Cluster.Logf("refusals of web's messages to web-3's address: %s", strings.Join(codes, "; "))
	if refused == 0 || seen == 0 {
		t.Errorf("other-0 refused %v requests and web's members saw %v refusals; want web's messages to web-3's address refused", refused, seen)
	}
	if line := findLogLine(other.Cluster.Members[o0].LogPath, "refused a peer request"); line != "" {
		other.Cluster.Logf("other-0 logged: %s", strings.TrimSpace(line))
	}
}

// 6. A member whose service account may not touch the pods of its namespace logs a clear
// error and keeps running: with no access at all (the pod watch is forbidden), and with read
// access but no patch (the label cannot be set; the member still leads).
func TestKubeForbiddenNamespaceIsLoggedAndSurvived(t *testing.T) {
	env := startKubeEnv(t)
	subnet := 106
	createNamespace(t, env, "home")
	kubeconfig := installSidecarRBAC(t, env, "home") // the sidecar's account, bound in "home" only
	createNamespace(t, env, "noaccess")
	createNamespace(t, env, "readonly")
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	readOnly := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
		},
	}
	if _, err := env.AdminClient.RbacV1().Roles("readonly").Create(ctx, readOnly, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.AdminClient.RbacV1().RoleBindings("readonly").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: readOnly.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sidecarSA, Namespace: "home"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ips := []string{kubeIP(subnet, 1), kubeIP(subnet, 2)}
	port := pickPeerPort(t, ips)
	noAccess := startKubeApp(t, env, kubeAppConfig{Namespace: "noaccess", App: "web", Kubeconfig: kubeconfig, PeerPort: port,
		Pods: []kubePod{{Name: "solo", IP: ips[0], Run: true}}})
	readonly := startKubeApp(t, env, kubeAppConfig{Namespace: "readonly", App: "web", Kubeconfig: kubeconfig, PeerPort: port,
		Pods: []kubePod{{Name: "ro-0", IP: ips[1], Run: true}}})

	line := noAccess.WaitLog(0, 20*time.Second, "forbidden")
	noAccess.Cluster.Logf("solo (no Role in noaccess) logged: %s", strings.TrimSpace(line))

	readonly.Cluster.WaitAgreedLeader([]int{0}, 15*time.Second)
	line = readonly.WaitLog(0, 20*time.Second, "forbidden", "patch")
	readonly.Cluster.Logf("ro-0 (get/list/watch but no patch in readonly) logged: %s", strings.TrimSpace(line))

	// Both keep running and healthy: a bounded observation, not a synchronisation.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		for _, a := range []*kubeApp{noAccess, readonly} {
			if !a.Cluster.Members[0].Running() {
				t.Fatalf("%s exited: %s", a.Name(0), tailLines(a.Cluster.Members[0].LogPath, 20))
			}
			if code, err := a.Healthz(0); err != nil || code != http.StatusOK {
				t.Fatalf("%s /healthz: %d %v, want 200", a.Name(0), code, err)
			}
		}
	}
	// The member that waits for its cluster is visible to monitoring: not leading, a learner.
	if v, err := noAccess.Metric(0, "raft_elector_is_leader", nil); err != nil || v != 0 {
		t.Errorf("solo raft_elector_is_leader while waiting: %v %v, want 0", v, err)
	}
	if v, err := noAccess.Metric(0, "raft_elector_state", map[string]string{"state": "learner"}); err != nil || v != 1 {
		t.Errorf("solo raft_elector_state{state=learner} while waiting: %v %v, want 1", v, err)
	}
	if o, err := readonly.Cluster.Observe(0); err != nil || !o.Answer.IsLeader {
		t.Errorf("ro-0 no longer leads its one-member cluster: %+v %v", o.Answer, err)
	}
	for _, a := range []*kubeApp{noAccess, readonly} {
		pod, err := a.GetPod(a.Name(0))
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := pod.Labels[roleLabel]; ok {
			t.Errorf("pod %s/%s got %s=%s through a service account that may not patch it", pod.Namespace, pod.Name, roleLabel, v)
		}
	}
}

// 7. API load in the steady state: requests the API server receives per member per minute,
// from its own apiserver_request_total, for raft-elector (3 members, leader labelled) and, in
// the same environment, for client-go's Lease-based elector with its default timings.
func TestKubeAPILoad(t *testing.T) {
	env := startKubeEnv(t)
	// The API server's own pod watches, if any, before anything else watches pods.
	ownWatches := readAPICounts(t, env, "pods").watches["pods"]
	app := startWebApp(t, env, "load", 107, 3, "")
	c := app.Cluster
	leader, term, _ := c.WaitAgreedLeader(c.All(), 10*time.Second)
	app.WaitLabels(app.LabelsFor(leader, nil), 10*time.Second)

	// Steady state: no pod reads or writes for 2 s (the last label patches are in). Watches
	// are not considered here; they are what the window measures.
	quietSince := time.Now()
	last := readAPICounts(t, env, "pods")
	settled := time.Now()
	for deadline := time.Now().Add(kubeSettle); ; {
		time.Sleep(250 * time.Millisecond)
		now := readAPICounts(t, env, "pods")
		if d := diffAPICounts(last, now); d.total("pods") != d.byVerb["pods"]["WATCH"] {
			last, quietSince = now, time.Now()
		} else if time.Since(quietSince) >= 2*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server still receives pod reads or writes %v after the labels settled", kubeSettle)
		}
	}
	c.Logf("steady state %s after the labels settled", time.Since(settled).Round(time.Millisecond))

	const window = 20 * time.Second
	before := readAPICounts(t, env, "pods", "leases")
	c.ExpectStableLeader(c.All(), leader, term, window) // the measurement window
	after := readAPICounts(t, env, "pods", "leases")
	raft := diffAPICounts(before, after)
	n := c.N()
	t.Logf("API load: raft-elector, %d members, steady state over %.1fs: %.2f requests/member/min (%.2f writes/member/min); "+
		"pods requests: %s; all service-account requests (APF flow schema service-accounts): %v; "+
		"open pod watches at the end: %v besides the test's own and the API server's %v",
		n, raft.window.Seconds(), raft.perMemberMinute(raft.total("pods"), n), raft.perMemberMinute(raft.writes("pods"), n),
		raft.verbs("pods"), raft.saDispatched, after.watches["pods"]-1-ownWatches, ownWatches)
	if w := raft.writes("pods"); w != 0 {
		t.Errorf("raft-elector wrote %v times to pods in the steady state, want 0", w)
	}
	// One watch per member, kept open: client-go's reflector asks the API server for watches of
	// 5 to 10 minutes, so in the window each member's watch ends at most once. More means
	// something cuts the watches short (a client timeout, say) and they are re-established:
	// polling in disguise.
	if w := raft.byVerb["pods"]["WATCH"]; w > float64(n) {
		t.Errorf("the members' pod watches ended %v times in %.1fs (%.1f per member per minute); want at most one per member: "+
			"watches should last minutes, not seconds", w, raft.window.Seconds(), raft.perMemberMinute(w, n))
	}
	if raft.saDispatched != raft.total("pods") {
		t.Errorf("the members sent %v requests in the steady state but only %v were for pods: something else is polled",
			raft.saDispatched, raft.total("pods"))
	}
	// The API server's own lease renewals (kube-system) happen in both windows: measured here,
	// subtracted from the client-go window below.
	ownLeases, ownLeaseWrites := raft.total("leases"), raft.writes("leases")

	// Stop the members so the second window holds client-go's requests only.
	for i := range c.Members {
		c.Kill(i)
	}

	cg := measureClientGoLeaseElector(t, env, window)
	scale := cg.delta.window.Seconds() / raft.window.Seconds()
	leases := cg.delta.total("leases") - ownLeases*scale
	leaseWrites := cg.delta.writes("leases") - ownLeaseWrites*scale
	t.Logf("API load (client-go Lease, defaults): %d candidates, steady state over %.1fs: %.2f requests/member/min (%.2f writes/member/min); "+
		"leases requests: %s, minus the API server's own %v (%v writes) scaled from the first window; "+
		"service-account requests (APF): %v; counted by the candidates' clients: %s",
		cg.candidates, cg.delta.window.Seconds(), cg.delta.perMemberMinute(leases, cg.candidates), cg.delta.perMemberMinute(leaseWrites, cg.candidates),
		cg.delta.verbs("leases"), ownLeases, ownLeaseWrites, cg.delta.saDispatched, cg.clientSide)
}

// clientGoLoad is the outcome of measureClientGoLeaseElector.
type clientGoLoad struct {
	candidates int
	delta      apiDelta
	clientSide string
}

// measureClientGoLeaseElector runs three client-go Lease electors with the default timings of
// tools/leaderelection (LeaseDuration 15s, RenewDeadline 10s, RetryPeriod 2s) as goroutines, each
// with its own clientset authenticated as a service account allowed to get, create and update
// leases in its namespace, and counts the API server's requests over window once one leads.
func measureClientGoLeaseElector(t *testing.T, env *kubeenv.Env, window time.Duration) clientGoLoad {
	t.Helper()
	const ns, candidates = "lease-elector", 3
	createNamespace(t, env, ns)
	installLeaseRBAC(t, env, ns)
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()

	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	var (
		leading  atomic.Int32
		requests [candidates]atomic.Int64
		writes   [candidates]atomic.Int64
	)
	for i := range candidates {
		cfg, _, err := env.ServiceAccountConfig(ctx, ns, leaseSA)
		if err != nil {
			t.Fatal(err)
		}
		cfg = rest.CopyConfig(cfg)
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				requests[i].Add(1)
				if r.Method != http.MethodGet {
					writes[i].Add(1)
				}
				return rt.RoundTrip(r)
			})
		})
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("candidate-%d", i)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Name: "bench", Namespace: ns},
				Client:     client.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: id},
			},
			LeaseDuration: 15 * time.Second,
			RenewDeadline: 10 * time.Second,
			RetryPeriod:   2 * time.Second,
			Name:          "bench",
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { leading.Add(1); t.Logf("client-go: %s leads", id) },
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { le.Run(runCtx) })
	}

	// Steady state: one leads, and every candidate has been through two retry periods since.
	deadline := time.Now().Add(kubeSettle)
	for leading.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no client-go candidate acquired the lease within %v", kubeSettle)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var base [candidates]int64
	for i := range candidates {
		base[i] = requests[i].Load()
	}
	for {
		done := true
		for i := range candidates {
			done = done && requests[i].Load()-base[i] >= 2
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client-go candidates did not settle within %v", kubeSettle)
		}
		time.Sleep(20 * time.Millisecond)
	}

	var reqBefore, wrBefore [candidates]int64
	for i := range candidates {
		reqBefore[i], wrBefore[i] = requests[i].Load(), writes[i].Load()
	}
	before := readAPICounts(t, env, "pods", "leases")
	time.Sleep(window) // the measurement window
	after := readAPICounts(t, env, "pods", "leases")
	if n := leading.Load(); n != 1 {
		t.Errorf("%d client-go leaderships started, want 1 (one acquire, then renewals)", n)
	}
	var parts []string
	for i := range candidates {
		parts = append(parts, fmt.Sprintf("candidate-%d %d requests (%d writes)", i, requests[i].Load()-reqBefore[i], writes[i].Load()-wrBefore[i]))
	}
	return clientGoLoad{candidates: candidates, delta: diffAPICounts(before, after), clientSide: strings.Join(parts, ", ")}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func countValue(m map[string]string, v string) int {
	n := 0
	for _, x := range m {
		if x == v {
			n++
		}
	}
	return n
}
