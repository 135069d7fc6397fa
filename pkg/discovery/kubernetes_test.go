package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

const (
	testNamespace = "app"
	testSelector  = "app=demo"
	testPort      = 4041
	// waitLimit bounds every wait on a condition. Nothing should take long; a loaded CI machine
	// with the race detector may take seconds.
	waitLimit = 20 * time.Second
)

// logBuffer collects the lines an hclog.Logger writes, safe for concurrent use.
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

// count returns the number of lines containing s.
func (b *logBuffer) count(s string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func newLogger(t *testing.T) (hclog.Logger, *logBuffer) {
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("discovery log:\n%s", buf.String())
		}
	})
	return hclog.New(&hclog.LoggerOptions{Name: "discovery", Output: buf, Level: hclog.Debug}), buf
}

// newPod is a pod of the test selector that counts: scheduled, Running, with an IP.
func newPod(name, uid, ip string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: testNamespace,
			UID:       types.UID(uid),
			Labels:    map[string]string{"app": "demo"},
		},
		Spec:   corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	for _, m := range mutate {
		m(pod)
	}
	return pod
}

func member(name, uid, addr string) Member {
	return Member{ID: PodID(name, uid), Addr: addr, Name: name, Node: "node-1"}
}

// startDiscovery runs discovery on client until the test ends and waits for its first sync.
func startDiscovery(t *testing.T, client *fake.Clientset) (*Kubernetes, *logBuffer) {
	t.Helper()
	log, buf := newLogger(t)
	k, err := NewKubernetes(KubernetesConfig{Client: client, Namespace: testNamespace, Selector: testSelector, PeerPort: testPort, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
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
	return k, buf
}

// waitMembers waits, on Changed and with a deadline, until Members equals want.
func waitMembers(t *testing.T, k *Kubernetes, want ...Member) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		changed := k.Changed()
		got := k.Members()
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("members after %s:\n  %+v\nwant\n  %+v", waitLimit, got, want)
		}
	}
}

// waitClosed waits for ch, one channel returned by Changed, to be closed.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("Changed was not closed within %s of %s", waitLimit, what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (k *Kubernetes) changeCount() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changes
}

// membershipCases is the membership rule of the Kubernetes doc comment, one pod per row.
var membershipCases = []struct {
	name      string
	pod       *corev1.Pod
	counts    bool
	addr      string // when counts
	malformed bool   // when not: ignored with a warning
}{
	{name: "running", pod: newPod("running", "u1", "10.0.0.1"), counts: true, addr: "10.0.0.1:4041"},
	{name: "pending with an IP", pod: newPod("pending", "u2", "10.0.0.2", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
	}), counts: true, addr: "10.0.0.2:4041"},
	{name: "unknown (node unreachable)", pod: newPod("unknown", "u3", "10.0.0.3", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodUnknown
	}), counts: true, addr: "10.0.0.3:4041"},
	{name: "running, not ready", pod: newPod("not-ready", "u4", "10.0.0.4", func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	}), counts: true, addr: "10.0.0.4:4041"},
	{name: "IPv6", pod: newPod("ipv6", "u5", "fd00::5"), counts: true, addr: "[fd00::5]:4041"},
	{name: "succeeded", pod: newPod("succeeded", "u6", "10.0.0.6", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodSucceeded
	})},
	{name: "failed", pod: newPod("failed", "u7", "10.0.0.7", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodFailed
	})},
	{name: "not scheduled", pod: newPod("unscheduled", "u8", "", func(p *corev1.Pod) {
		p.Spec.NodeName = ""
		p.Status.Phase = corev1.PodPending
	})},
	{name: "scheduled, no IP yet", pod: newPod("no-ip", "u9", "", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
	})},
	{name: "terminating", pod: newPod("terminating", "u10", "10.0.0.10", func(p *corev1.Pod) {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	})},
	{name: "IP is not an address", pod: newPod("bad-ip", "u11", "10.0.0.300"), malformed: true},
	{name: "IP with an IPv6 zone", pod: newPod("zoned-ip", "u12", "fe80::1%eth0"), malformed: true},
	{name: "unspecified IP", pod: newPod("zero-ip", "u13", "0.0.0.0"), malformed: true},
	{name: "undefined phase", pod: newPod("odd-phase", "u14", "10.0.0.14", func(p *corev1.Pod) {
		p.Status.Phase = "Sleeping"
	}), malformed: true},
	{name: "no UID", pod: newPod("no-uid", "", "10.0.0.15"), malformed: true},
	{name: "UID with the separator", pod: newPod("odd-uid", "a_b", "10.0.0.16"), malformed: true},
	{name: "id longer than raft.MaxIDLength", pod: newPod(strings.Repeat("n", 253), strings.Repeat("u", raft.MaxIDLength-253), "10.0.0.17"), malformed: true},
	{name: "name that is not a DNS subdomain", pod: newPod("Bad_Name", "u18", "10.0.0.18"), malformed: true},
}

func TestMembershipRule(t *testing.T) {
	for _, tc := range membershipCases {
		t.Run(tc.name, func(t *testing.T) {
			m, why, malformed := memberOf(tc.pod, "4041")
			if counts := why == ""; counts != tc.counts || malformed != tc.malformed {
				t.Fatalf("memberOf: counts=%v malformed=%v (%q), want counts=%v malformed=%v", counts, malformed, why, tc.counts, tc.malformed)
			}
			if !tc.counts {
				return
			}
			want := Member{ID: PodID(tc.pod.Name, string(tc.pod.UID)), Addr: tc.addr, Name: tc.pod.Name, Node: "node-1"}
			if m != want {
				t.Fatalf("memberOf = %+v, want %+v", m, want)
			}
		})
	}
}

func TestMembershipRuleThroughTheInformer(t *testing.T) {
	client := fake.NewClientset()
	var want []Member
	for _, tc := range membershipCases {
		if _, err := client.CoreV1().Pods(testNamespace).Create(t.Context(), tc.pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.counts {
			want = append(want, Member{ID: PodID(tc.pod.Name, string(tc.pod.UID)), Addr: tc.addr, Name: tc.pod.Name, Node: "node-1"})
		}
	}
	slices.SortFunc(want, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	k, logs := startDiscovery(t, client)
	// WaitForSync returns once the initial list has been through the event handler.
	if got := k.Members(); !slices.Equal(got, want) {
		t.Fatalf("members:\n  %+v\nwant\n  %+v", got, want)
	}
	for _, tc := range membershipCases {
		if tc.malformed && logs.count("ignoring a malformed pod") == 0 {
			t.Errorf("%s: no warning logged", tc.name)
		}
		if _, ok := k.Self(tc.pod.Name); ok != tc.counts {
			t.Errorf("Self(%s) = %v, want %v", tc.pod.Name, ok, tc.counts)
		}
	}
	if got, wantWarnings := logs.count("ignoring a malformed pod"), countMalformed(); got != wantWarnings {
		t.Errorf("%d warnings about malformed pods, want one per malformed pod (%d)", got, wantWarnings)
	}
}

func countMalformed() int {
	n := 0
	for _, tc := range membershipCases {
		if tc.malformed {
			n++
		}
	}
	return n
}

func TestZoneComesFromThePodLabel(t *testing.T) {
	pod := newPod("web-0", "u1", "10.0.0.1", func(p *corev1.Pod) {
		p.Labels[corev1.LabelTopologyZone] = "eu-west-1a"
	})
	m, why, _ := memberOf(pod, "4041")
	if why != "" || m.Zone != "eu-west-1a" || m.Node != "node-1" {
		t.Fatalf("memberOf = %+v (%q), want zone eu-west-1a on node-1", m, why)
	}
}

func TestInformerIsNarrowedOnTheServer(t *testing.T) {
	client := fake.NewClientset()
	startDiscovery(t, client)
	var lists, watches int
	for _, a := range client.Actions() {
		if a.GetResource().Resource != "pods" {
			continue
		}
		var labelSel, fieldSel string
		switch a := a.(type) {
		case k8stesting.ListActionImpl:
			lists++
			labelSel, fieldSel = a.GetListRestrictions().Labels.String(), a.GetListRestrictions().Fields.String()
		case k8stesting.WatchActionImpl:
			watches++
			labelSel, fieldSel = a.GetWatchRestrictions().Labels.String(), a.GetWatchRestrictions().Fields.String()
		default:
			t.Errorf("unexpected request %s %s", a.GetVerb(), a.GetResource().Resource)
			continue
		}
		// The fake parses the selectors, which sorts their terms.
		if a.GetNamespace() != testNamespace || labelSel != testSelector || fieldSel != fields.ParseSelectorOrDie(PodFieldSelector).String() {
			t.Errorf("%s in %q with labels %q fields %q, want %q, %q, %q",
				a.GetVerb(), a.GetNamespace(), labelSel, fieldSel, testNamespace, testSelector, PodFieldSelector)
		}
	}
	// The watch may not have been opened yet when the sync completes; at most one of each.
	if lists != 1 || watches > 1 {
		t.Errorf("%d lists and %d watches, want one informer: 1 list and at most 1 watch", lists, watches)
	}
	if PodFieldSelector != "status.phase!=Succeeded,status.phase!=Failed" {
		t.Errorf("PodFieldSelector = %q", PodFieldSelector)
	}
}

func TestChangedOnAddUpdateDelete(t *testing.T) {
	client := fake.NewClientset()
	pods := client.CoreV1().Pods(testNamespace)
	ctx := t.Context()
	k, _ := startDiscovery(t, client)
	if got := k.Members(); len(got) != 0 {
		t.Fatalf("members of an empty namespace: %+v", got)
	}

	ch := k.Changed()
	if _, err := pods.Create(ctx, newPod("web-0", "u0", "10.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, "an add")
	waitMembers(t, k, member("web-0", "u0", "10.0.0.1:4041"))

	ch = k.Changed()
	if isClosed(ch) {
		t.Fatal("Changed returned a closed channel after the change was seen")
	}
	if _, err := pods.Update(ctx, newPod("web-0", "u0", "10.0.0.9"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, "an address change")
	waitMembers(t, k, member("web-0", "u0", "10.0.0.9:4041"))

	// An update that does not change the members (a label the labeler sets, say) closes
	// nothing. Events are handled in order, so once the next real change is visible the
	// label change has been handled too.
	before := k.changeCount()
	if _, err := pods.Update(ctx, newPod("web-0", "u0", "10.0.0.9", func(p *corev1.Pod) {
		p.Labels["raft-elector/role"] = "leader"
	}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, newPod("web-1", "u1", "10.0.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, k, member("web-0", "u0", "10.0.0.9:4041"), member("web-1", "u1", "10.0.0.2:4041"))
	if got := k.changeCount() - before; got != 1 {
		t.Errorf("%d changes for a label update and an add, want 1", got)
	}

	// Stopping to count (terminating) and going away are both changes.
	ch = k.Changed()
	now := metav1.Now()
	if _, err := pods.Update(ctx, newPod("web-1", "u1", "10.0.0.2", func(p *corev1.Pod) { p.DeletionTimestamp = &now }), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, "a pod starting to terminate")
	waitMembers(t, k, member("web-0", "u0", "10.0.0.9:4041"))
	if len(k.Pods()) != 2 {
		t.Errorf("Pods() = %d pods, want the terminating one still there", len(k.Pods()))
	}
	// It is no member any more, but its peers keep its address until it is gone.
	if got, want := k.Addressable(), []Member{member("web-0", "u0", "10.0.0.9:4041"), member("web-1", "u1", "10.0.0.2:4041")}; !slices.Equal(got, want) {
		t.Errorf("Addressable() = %v, want %v", got, want)
	}

	ch = k.Changed()
	if err := pods.Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, "a delete")
	waitMembers(t, k)
}

func TestRecreatedPodIsANewMember(t *testing.T) {
	client := fake.NewClientset(newPod("web-0", "uid-1", "10.0.0.1"))
	pods := client.CoreV1().Pods(testNamespace)
	ctx := t.Context()
	k, _ := startDiscovery(t, client)
	waitMembers(t, k, member("web-0", "uid-1", "10.0.0.1:4041"))

	if err := pods.Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, newPod("web-0", "uid-2", "10.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, k, member("web-0", "uid-2", "10.0.0.1:4041"))
	if self, ok := k.Self("web-0"); !ok || self.ID != PodID("web-0", "uid-2") || NameOf(self.ID) != "web-0" {
		t.Errorf("Self(web-0) = %+v, %v; want the re-created pod", self, ok)
	}
}

// TestReplacedPodIsANewMember covers the other way a re-created pod can arrive: when the watch
// missed the delete and the create, the next list turns them into one update of the key.
func TestReplacedPodIsANewMember(t *testing.T) {
	k := newIdleDiscovery(t)
	k.observe(newPod("web-0", "uid-1", "10.0.0.1"), false)
	k.observe(newPod("web-0", "uid-2", "10.0.0.2"), false)
	if got, want := k.Members(), []Member{member("web-0", "uid-2", "10.0.0.2:4041")}; !slices.Equal(got, want) {
		t.Fatalf("members = %+v, want %+v", got, want)
	}
}

// newIdleDiscovery is discovery that is never run: tests feed its event handler directly.
func newIdleDiscovery(t *testing.T) *Kubernetes {
	t.Helper()
	log, _ := newLogger(t)
	k, err := NewKubernetes(KubernetesConfig{Client: fake.NewClientset(), Namespace: testNamespace, Selector: testSelector, PeerPort: testPort, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestBadObjectsAreIgnored(t *testing.T) {
	client := fake.NewClientset(newPod("good", "u1", "10.0.0.1"), newPod("bad", "u2", "not-an-ip"))
	pods := client.CoreV1().Pods(testNamespace)
	ctx := t.Context()
	k, logs := startDiscovery(t, client)
	waitMembers(t, k, member("good", "u1", "10.0.0.1:4041"))
	if n := logs.count("ignoring a malformed pod"); n != 1 {
		t.Fatalf("%d warnings, want 1 for the bad pod", n)
	}

	// Updates that leave the pod just as malformed do not repeat the warning; a fix makes it count.
	for i := range 3 {
		if _, err := pods.Update(ctx, newPod("bad", "u2", "not-an-ip", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"touch": fmt.Sprint(i)}
		}), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pods.Update(ctx, newPod("bad", "u2", "10.0.0.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, k, member("bad", "u2", "10.0.0.2:4041"), member("good", "u1", "10.0.0.1:4041"))
	if n := logs.count("ignoring a malformed pod"); n != 1 {
		t.Errorf("%d warnings after updates of the same malformed pod, want still 1", n)
	}

	// Whatever the event handler is given, it does not crash.
	idle := newIdleDiscovery(t)
	idle.observe("not a pod", false)
	idle.observe(nil, false)
	idle.observe(cache.DeletedFinalStateUnknown{Key: testNamespace + "/gone"}, true)
	idle.observe(cache.DeletedFinalStateUnknown{Key: "x", Obj: &corev1.ConfigMap{}}, true)
	idle.observe(&corev1.Pod{}, false)
	idle.observe(newPod("a", "u1", "10.0.0.1"), false)
	idle.observe(cache.DeletedFinalStateUnknown{Key: testNamespace + "/a", Obj: newPod("a", "u1", "10.0.0.1")}, true)
	if got := idle.Members(); len(got) != 0 {
		t.Errorf("members after odd events = %+v, want none", got)
	}
}

func TestPodsAndSelf(t *testing.T) {
	other := newPod("other-app", "u9", "10.0.0.9")
	other.Labels = map[string]string{"app": "other"}
	client := fake.NewClientset(
		newPod("web-1", "u1", "10.0.0.1"),
		newPod("web-0", "u0", "", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		newPod("web-2", "u2", "10.0.0.2", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
		other,
	)
	k, _ := startDiscovery(t, client)
	// The fake client ignores selectors: discovery must apply them itself too.
	waitMembers(t, k, member("web-1", "u1", "10.0.0.1:4041"))

	pods := k.Pods()
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	if want := []string{"web-0", "web-1"}; !slices.Equal(names, want) {
		t.Fatalf("Pods() = %v, want %v (members or not, of the selector, not finished)", names, want)
	}
	pods[0].Labels["app"] = "changed by the caller"
	if again := k.Pods(); again[0].Labels["app"] != "demo" {
		t.Error("Pods() returned the cached objects, not copies")
	}

	if m, ok := k.Self("web-1"); !ok || m != member("web-1", "u1", "10.0.0.1:4041") {
		t.Errorf("Self(web-1) = %+v, %v", m, ok)
	}
	for _, name := range []string{"web-0", "web-2", "other-app", "nobody"} {
		if m, ok := k.Self(name); ok {
			t.Errorf("Self(%s) = %+v, want not a member", name, m)
		}
	}
	members := k.Members()
	members[0].Addr = "changed by the caller"
	if k.Members()[0].Addr != "10.0.0.1:4041" {
		t.Error("Members() returned its own slice")
	}
}

func TestBadConfigIsRejected(t *testing.T) {
	client := fake.NewClientset()
	good := KubernetesConfig{Client: client, Namespace: testNamespace, Selector: testSelector, PeerPort: testPort}
	if _, err := NewKubernetes(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*KubernetesConfig)
		wantErr string
	}{
		{"no client", func(c *KubernetesConfig) { c.Client = nil }, "no API client"},
		{"no namespace", func(c *KubernetesConfig) { c.Namespace = "" }, "--namespace"},
		{"bad namespace", func(c *KubernetesConfig) { c.Namespace = "Not_A_Namespace" }, "--namespace"},
		{"empty selector", func(c *KubernetesConfig) { c.Selector = "" }, "--selector is empty"},
		{"blank selector", func(c *KubernetesConfig) { c.Selector = "  " }, "--selector is empty"},
		{"unbalanced set", func(c *KubernetesConfig) { c.Selector = "app in (a,b" }, "--selector"},
		{"bad operator", func(c *KubernetesConfig) { c.Selector = "app=>demo" }, "--selector"},
		{"bad label value", func(c *KubernetesConfig) { c.Selector = "app=-demo-" }, "--selector"},
		{"selects everything", func(c *KubernetesConfig) { c.Selector = "," }, "--selector"},
		{"port 0", func(c *KubernetesConfig) { c.PeerPort = 0 }, "peer port"},
		{"port too big", func(c *KubernetesConfig) { c.PeerPort = 65536 }, "peer port"},
	} {
		cfg := good
		tc.mutate(&cfg)
		_, err := NewKubernetes(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
	for _, sel := range []string{"app=demo,tier!=cache", "app in (a,b)", "app", "!legacy,app=x"} {
		cfg := good
		cfg.Selector = sel
		if _, err := NewKubernetes(cfg); err != nil {
			t.Errorf("selector %q rejected: %v", sel, err)
		}
	}
}

func TestRunOnceAndWaitForSyncHonoursItsContext(t *testing.T) {
	k := newIdleDiscovery(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := k.WaitForSync(ctx); err == nil {
		t.Fatal("WaitForSync without Run returned nil before its context ended")
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(runCtx) }()
	syncCtx, cancelSync := context.WithTimeout(context.Background(), waitLimit)
	defer cancelSync()
	if err := k.WaitForSync(syncCtx); err != nil {
		t.Fatal(err)
	}
	if err := k.Run(runCtx); err == nil {
		t.Error("a second Run returned nil, want an error")
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after its context ended, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestWatchOutageIsLoggedOnce drives the informer through failing list requests: one line
// when they start failing, one when they work again, none per retry.
func TestWatchOutageIsLoggedOnce(t *testing.T) {
	client := fake.NewClientset(newPod("web-0", "u0", "10.0.0.1"))
	var calls atomic.Int32
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if calls.Add(1) <= 2 {
			return true, nil, errors.New("dial tcp 10.96.0.1:443: connect: connection refused")
		}
		return false, nil, nil
	})
	k, logs := startDiscovery(t, client) // waits through two backoffs of the reflector
	waitMembers(t, k, member("web-0", "u0", "10.0.0.1:4041"))
	if calls.Load() < 3 {
		t.Fatalf("%d list calls, want the two failures and a success", calls.Load())
	}
	if n := logs.count("pod watch failed"); n != 1 {
		t.Errorf("%d 'pod watch failed' lines for two failed lists, want 1", n)
	}
	if n := logs.count("pod watch recovered"); n != 1 {
		t.Errorf("%d 'pod watch recovered' lines, want 1", n)
	}
}

func TestWatchHealth(t *testing.T) {
	log, logs := newLogger(t)
	h := watchHealth{log: log}
	ctx := context.Background()
	refused := errors.New("connection refused")

	h.result(ctx, nil) // healthy from the start: nothing to say
	h.result(ctx, io.EOF)
	h.result(ctx, apierrors.NewResourceExpired("too old resource version"))
	h.result(ctx, apierrors.NewGone("gone"))
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	h.result(canceled, context.Canceled)
	if s := logs.String(); s != "" {
		t.Fatalf("logged for ordinary watch ends:\n%s", s)
	}

	for range 5 {
		h.result(ctx, refused)
	}
	h.result(ctx, nil)
	h.result(ctx, nil)
	if f, r := logs.count("pod watch failed"), logs.count("pod watch recovered"); f != 1 || r != 1 {
		t.Fatalf("%d failure and %d recovery lines for one outage of five failures, want 1 and 1:\n%s", f, r, logs)
	}
	if !strings.Contains(logs.String(), "failed_requests=5") {
		t.Errorf("recovery line does not count the failed requests:\n%s", logs)
	}

	// A second outage, caused by missing RBAC, says what to fix.
	h.result(ctx, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("no")))
	if f := logs.count("pod watch failed"); f != 2 || !strings.Contains(logs.String(), "list and watch on pods") {
		t.Errorf("forbidden: want a second failure line that names the missing permissions:\n%s", logs)
	}
}
