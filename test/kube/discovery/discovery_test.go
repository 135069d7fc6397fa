// Package discovery_test runs Kubernetes discovery (pkg/discovery) against a real kube-apiserver
// and etcd (test/kubeenv), authenticated as a service account that holds only the Role a
// sidecar gets, so the informer's requests go through real authentication, RBAC, field and
// label selectors, watch and the API server's own restart.
package discovery_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/raft-elector/raft-elector/pkg/discovery"
	"github.com/raft-elector/raft-elector/test/kubeenv"
)

const (
	namespace      = "app"
	serviceAccount = "elector"
	selector       = "app=demo"
	peerPort       = 4041
	// waitLimit bounds every wait on a condition. The reflector backs off up to 30 s (60 with
	// jitter) between retries, so the wait for recovery after an outage gets twice that.
	waitLimit     = 30 * time.Second
	recoveryLimit = 2 * time.Minute
	// steadyWindow is the span over which the API requests of an idle discovery are counted.
	steadyWindow = 10 * time.Second
)

// logBuffer collects what discovery logs, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(s string) int {
	return strings.Count(b.String(), s)
}

func TestDiscoveryAgainstTheAPIServer(t *testing.T) {
	begin := time.Now()
	env := kubeenv.StartT(t, kubeenv.Options{})
	ctx := t.Context()
	admin := env.AdminClient
	createNamespaceAndRBAC(t, ctx, admin)

	// Discovery runs as the sidecar would: with the service account's token and nothing more.
	saConfig, _, err := env.ServiceAccountConfig(ctx, namespace, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	sidecar, err := kubernetes.NewForConfig(saConfig)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	t.Cleanup(func() { t.Logf("discovery log:\n%s", logs) })
	k, err := discovery.NewKubernetes(discovery.KubernetesConfig{
		Client:    sidecar,
		Namespace: namespace,
		Selector:  selector,
		PeerPort:  peerPort,
		// Trace shows each failed retry, which the outage below waits for.
		Logger: hclog.New(&hclog.LoggerOptions{Name: "discovery", Output: logs, Level: hclog.Trace}),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(runCtx) }()
	// Registered after StartT, so it runs before the environment is stopped.
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %s of the end of its context", waitLimit)
		}
	})
	syncCtx, cancelSync := context.WithTimeout(ctx, waitLimit)
	defer cancelSync()
	if err := k.WaitForSync(syncCtx); err != nil {
		t.Fatal(err)
	}
	if got := k.Members(); len(got) != 0 {
		t.Fatalf("members of an empty namespace: %+v", got)
	}

	// A pod of another application in the same namespace, which must never appear.
	stranger := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stranger", Labels: map[string]string{"app": "other"}}}
	if _, err := kubeenv.CreateRunningPod(ctx, admin, namespace, stranger, "127.0.0.99"); err != nil {
		t.Fatal(err)
	}

	// Three pods → three members at podIP:peerPort.
	step := time.Now()
	uids := map[string]string{}
	for i := range 3 {
		pod := createPod(t, ctx, admin, i)
		uids[pod.Name] = string(pod.UID)
	}
	want := []discovery.Member{memberOf("web-0", uids), memberOf("web-1", uids), memberOf("web-2", uids)}
	waitMembers(t, k, want...)
	t.Logf("3 pods created and seen as 3 members in %s", time.Since(step).Round(time.Millisecond))

	// Readiness does not matter: web-2 turns not ready and keeps counting. (Checked by the next
	// step: events arrive in order, so once the delete below is seen, so was this update.)
	if _, err := kubeenv.UpdatePodStatus(ctx, admin, namespace, "web-2", func(p *corev1.Pod) {
		kubeenv.SetRunning(p, p.Status.PodIP, false)
	}); err != nil {
		t.Fatal(err)
	}

	// Delete web-0. It is bound to a node, so the API server only marks it terminating (a
	// kubelet would remove it once its containers stopped); it stops counting at once.
	step = time.Now()
	if err := admin.CoreV1().Pods(namespace).Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, k, memberOf("web-1", uids), memberOf("web-2", uids))
	t.Logf("terminating pod left the members %s after the delete call", time.Since(step).Round(time.Millisecond))
	if p, err := admin.CoreV1().Pods(namespace).Get(ctx, "web-0", metav1.GetOptions{}); err != nil || p.DeletionTimestamp == nil {
		t.Fatalf("web-0 after a graceful delete: %v, %v; want it still there, terminating", p, err)
	}
	if !slices.Contains(podNames(k), "web-0") {
		t.Errorf("Pods() = %v lacks the terminating web-0 (the labeler must still see it)", podNames(k))
	}
	if err := kubeenv.ForceDeletePod(ctx, admin, namespace, "web-0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-0 to leave Pods() after the force delete", func() bool { return !slices.Contains(podNames(k), "web-0") })

	// web-1 loses its IP.
	if _, err := kubeenv.UpdatePodStatus(ctx, admin, namespace, "web-1", func(p *corev1.Pod) {
		p.Status.PodIP, p.Status.PodIPs = "", nil
	}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, k, memberOf("web-2", uids))

	// web-2 fails. The field selector makes the API server send it as a deletion, so it leaves
	// Pods() too.
	if _, err := kubeenv.UpdatePodStatus(ctx, admin, namespace, "web-2", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodFailed
	}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, k)
	waitFor(t, "the failed web-2 to leave Pods()", func() bool { return !slices.Contains(podNames(k), "web-2") })
	if got := podNames(k); !slices.Equal(got, []string{"web-1"}) {
		t.Errorf("Pods() = %v, want [web-1] (no IP, still held; the stranger never)", got)
	}

	// Two fresh members for the rest of the test.
	for i := 3; i <= 4; i++ {
		pod := createPod(t, ctx, admin, i)
		uids[pod.Name] = string(pod.UID)
	}
	want = []discovery.Member{memberOf("web-3", uids), memberOf("web-4", uids)}
	waitMembers(t, k, want...)

	measureSteadyState(t, ctx, env)

	// Stop the API server: the last view stays, and the outage is logged once.
	outage := time.Now()
	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	waitForWithin(t, recoveryLimit, "discovery to notice the outage", func() bool { return logs.count("pod watch failed") > 0 })
	t.Logf("outage noticed %s after the API server was killed", time.Since(outage).Round(time.Millisecond))
	if got := k.Members(); !slices.Equal(got, want) {
		t.Fatalf("members during the outage = %+v, want the last view %+v", got, want)
	}
	if got := podNames(k); !slices.Equal(got, []string{"web-1", "web-3", "web-4"}) {
		t.Errorf("Pods() during the outage = %v, want the last view", got)
	}
	// Keep it down through a few retries of the reflector (0.8 s, 1.6 s, ... with jitter):
	// they are traced, not logged as failures again, and the view does not change.
	waitForWithin(t, recoveryLimit, "two more failed retries", func() bool { return logs.count("pod watch still failing") >= 2 })
	t.Logf("API server still down %s after the kill, after retries", time.Since(outage).Round(time.Millisecond))
	if got := k.Members(); !slices.Equal(got, want) {
		t.Fatalf("members after retries during the outage = %+v, want the last view %+v", got, want)
	}

	// Restart it: a change made after the restart is seen.
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	pod := createPod(t, ctx, admin, 5)
	uids[pod.Name] = string(pod.UID)
	want = append(want, memberOf("web-5", uids))
	waitMembersWithin(t, k, recoveryLimit, want...)
	t.Logf("API server down for %s; a pod created after the restart was seen %s after it",
		restarted.Sub(outage).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	waitForWithin(t, recoveryLimit, "the recovery to be logged", func() bool { return logs.count("pod watch recovered") > 0 })
	if f, r := logs.count("pod watch failed"), logs.count("pod watch recovered"); f != 1 || r != 1 {
		t.Errorf("%d 'pod watch failed' and %d 'pod watch recovered' lines for one outage, want 1 and 1", f, r)
	}

	for _, name := range podNames(k) {
		if name == stranger.Name {
			t.Errorf("Pods() holds the pod of another selector")
		}
	}
	t.Logf("whole test took %s", time.Since(begin).Round(time.Millisecond))
}

// measureSteadyState counts the pod requests the API server answers while discovery idles
// with a synced watch. Only discovery touches pods during the window, so these are its
// requests. The figure is logged; the test only asserts that nothing polls.
func measureSteadyState(t *testing.T, ctx context.Context, env *kubeenv.Env) {
	t.Helper()
	verbs := []string{"LIST", "GET", "WATCH"}
	read := func() map[string]float64 {
		text, err := env.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]float64{}
		for _, verb := range append(verbs, "") {
			match := map[string]string{"resource": "pods"}
			if verb != "" {
				match["verb"] = verb
			}
			if counts[verb], err = kubeenv.SumMetric(text, "apiserver_request_total", match); err != nil {
				t.Fatal(err)
			}
		}
		return counts
	}
	before := read()
	// A measurement window, not a wait for a condition.
	time.Sleep(steadyWindow)
	after := read()
	var parts []string
	for _, verb := range verbs {
		parts = append(parts, fmt.Sprintf("%s=%v", verb, after[verb]-before[verb]))
	}
	total := after[""] - before[""]
	t.Logf("steady state: %v pod requests in %s from one idle discovery (%s); %.1f per minute",
		total, steadyWindow, strings.Join(parts, " "), total*float64(time.Minute)/float64(steadyWindow))
	if d := after["LIST"] - before["LIST"]; d != 0 {
		t.Errorf("%v pod LIST requests during the steady window, want none (no polling)", d)
	}
	if d := after["GET"] - before["GET"]; d != 0 {
		t.Errorf("%v pod GET requests during the steady window, want none (no polling)", d)
	}
}

// createNamespaceAndRBAC creates the namespace, the sidecar's service account and a Role that
// lets it read pods (get, list, watch) and nothing else, bound to the account.
func createNamespaceAndRBAC(t *testing.T, ctx context.Context, admin kubernetes.Interface) {
	t.Helper()
	if _, err := admin.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""},
			Resources: []string{"pods"},
			Verbs:     []string{"get", "list", "watch"},
		}},
	}
	if _, err := admin.RbacV1().Roles(namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: namespace}},
	}
	if _, err := admin.RbacV1().RoleBindings(namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// createPod creates the running pod web-i of the selector at 127.0.0.(i+2).
func createPod(t *testing.T, ctx context.Context, admin kubernetes.Interface, i int) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name:   fmt.Sprintf("web-%d", i),
		Labels: map[string]string{"app": "demo"},
	}}
	created, err := kubeenv.CreateRunningPod(ctx, admin, namespace, pod, podIP(i))
	if err != nil {
		t.Fatal(err)
	}
	return created
}

func podIP(i int) string { return fmt.Sprintf("127.0.0.%d", i+2) }

// memberOf is the member pod web-i should be.
func memberOf(name string, uids map[string]string) discovery.Member {
	var i int
	fmt.Sscanf(name, "web-%d", &i)
	return discovery.Member{
		ID:   discovery.PodID(name, uids[name]),
		Addr: fmt.Sprintf("%s:%d", podIP(i), peerPort),
		Name: name,
		Node: kubeenv.NodeName,
	}
}

func podNames(k *discovery.Kubernetes) []string {
	var names []string
	for _, p := range k.Pods() {
		names = append(names, p.Name)
	}
	return names
}

func waitMembers(t *testing.T, k *discovery.Kubernetes, want ...discovery.Member) {
	t.Helper()
	waitMembersWithin(t, k, waitLimit, want...)
}

// waitMembersWithin waits on Changed, with a deadline, until Members equals want (sorted by ID).
func waitMembersWithin(t *testing.T, k *discovery.Kubernetes, limit time.Duration, want ...discovery.Member) {
	t.Helper()
	want = slices.Clone(want)
	slices.SortFunc(want, func(a, b discovery.Member) int { return strings.Compare(a.ID, b.ID) })
	deadline := time.After(limit)
	for {
		changed := k.Changed()
		got := k.Members()
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("members after %s:\n  %+v\nwant\n  %+v", limit, got, want)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, waitLimit, what, cond)
}

// waitForWithin polls cond until it holds or limit passes.
func waitForWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
