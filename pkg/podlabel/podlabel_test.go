package podlabel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
)

const (
	ns  = "app"
	key = DefaultKey
)

var podsResource = schema.GroupResource{Resource: "pods"}

// fakeAPI stands in for the API server's pods: it keeps resourceVersions and, like the real
// server, rejects a patch whose metadata.resourceVersion is not the current one (409). The
// fake clientset's own tracker does neither, so get and patch are answered here.
type fakeAPI struct {
	mu    sync.Mutex
	rv    int
	pods  map[string]*corev1.Pod
	calls []call
	// hook runs before a get or patch is answered; a non-nil error is returned instead. It
	// runs without the lock held, so it may block or change the pods.
	hook func(c call) error
	// cache, when set, replaces the up-to-date view the labeler gets as Config.Pods.
	cache func() []*corev1.Pod
}

type call struct {
	verb, name string
	rv         string // the patch's precondition
	value      string // the label value a patch sets
}

func newFakeAPI(pods ...*corev1.Pod) (*fake.Clientset, *fakeAPI) {
	api := &fakeAPI{pods: map[string]*corev1.Pod{}}
	for _, p := range pods {
		api.put(p.DeepCopy())
	}
	client := fake.NewClientset()
	client.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		name := a.(k8stesting.GetAction).GetName()
		c := call{verb: "get", name: name}
		if err := api.before(c); err != nil {
			return true, nil, err
		}
		api.mu.Lock()
		defer api.mu.Unlock()
		p, ok := api.pods[name]
		if !ok {
			return true, nil, apierrors.NewNotFound(podsResource, name)
		}
		return true, p.DeepCopy(), nil
	})
	client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		var body patchBody
		if err := json.Unmarshal(pa.GetPatch(), &body); err != nil {
			return true, nil, apierrors.NewBadRequest(err.Error())
		}
		c := call{verb: "patch", name: pa.GetName(), rv: body.Metadata.ResourceVersion, value: body.Metadata.Labels[key]}
		if err := api.before(c); err != nil {
			return true, nil, err
		}
		api.mu.Lock()
		defer api.mu.Unlock()
		p, ok := api.pods[c.name]
		if !ok {
			return true, nil, apierrors.NewNotFound(podsResource, c.name)
		}
		if c.rv != "" && c.rv != p.ResourceVersion {
			return true, nil, apierrors.NewConflict(podsResource, c.name,
				errors.New("the object has been modified; please apply your changes to the latest version and try again"))
		}
		p = p.DeepCopy()
		for k, v := range body.Metadata.Labels {
			if p.Labels == nil {
				p.Labels = map[string]string{}
			}
			p.Labels[k] = v
		}
		api.putLocked(p)
		return true, p.DeepCopy(), nil
	})
	return client, api
}

func (a *fakeAPI) before(c call) error {
	a.mu.Lock()
	a.calls = append(a.calls, c)
	hook := a.hook
	a.mu.Unlock()
	if hook != nil {
		return hook(c)
	}
	return nil
}

func (a *fakeAPI) put(p *corev1.Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.putLocked(p)
}

func (a *fakeAPI) putLocked(p *corev1.Pod) {
	a.rv++
	p.ResourceVersion = strconv.Itoa(a.rv)
	a.pods[p.Name] = p
}

// setLabel changes a label as another writer would.
func (a *fakeAPI) setLabel(name, value string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pods[name].DeepCopy()
	p.Labels[key] = value
	a.putLocked(p)
}

func (a *fakeAPI) setHook(h func(call) error) {
	a.mu.Lock()
	a.hook = h
	a.mu.Unlock()
}

func (a *fakeAPI) label(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pods[name].Labels[key]
}

func (a *fakeAPI) snapshot() []*corev1.Pod {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*corev1.Pod
	for _, p := range a.pods {
		out = append(out, p.DeepCopy())
	}
	return out
}

func (a *fakeAPI) listPods() []*corev1.Pod {
	a.mu.Lock()
	cache := a.cache
	a.mu.Unlock()
	if cache != nil {
		return cache()
	}
	return a.snapshot()
}

func (a *fakeAPI) callLog() []call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]call(nil), a.calls...)
}

func (a *fakeAPI) count(verb string) int {
	n := 0
	for _, c := range a.callLog() {
		if c.verb == verb {
			n++
		}
	}
	return n
}

func pod(name, label string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "demo"}}}
	if label != "" {
		p.Labels[key] = label
	}
	return p
}

func leaderStatus(term uint64, lease time.Duration) node.Status {
	return node.Status{ID: "self", Term: term, State: raft.StateLeader, Leader: "self", LeaseExpiresAt: time.Now().Add(lease)}
}

func followerStatus(term uint64) node.Status {
	return node.Status{ID: "self", Term: term, State: raft.StateFollower, Leader: "other"}
}

// syncBuffer is a log sink the test reads while the labeler writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) lines(substr string) int {
	n := 0
	for _, line := range strings.Split(s.String(), "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

type harness struct {
	t    *testing.T
	api  *fakeAPI
	l    *Labeler
	logs *syncBuffer
	done chan error
}

func start(t *testing.T, mutate func(*Config), pods ...*corev1.Pod) *harness {
	t.Helper()
	h := newHarness(t, mutate, pods...)
	h.run()
	return h
}

func newHarness(t *testing.T, mutate func(*Config), pods ...*corev1.Pod) *harness {
	t.Helper()
	client, api := newFakeAPI(pods...)
	logs := &syncBuffer{}
	cfg := Config{
		Client:     client,
		Namespace:  ns,
		PodName:    "self",
		Pods:       api.listPods,
		Logger:     hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		MinBackoff: time.Millisecond,
		MaxBackoff: 10 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, api: api, l: l, logs: logs, done: make(chan error, 1)}
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { h.done <- h.l.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			h.t.Errorf("Run did not return after its context was cancelled")
		}
	})
}

// eventually waits for cond with a deadline.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; calls %+v; status %+v\nlogs:\n%s", what, h.api.callLog(), h.l.Status(), h.logs)
		}
		time.Sleep(time.Millisecond)
	}
}

// settle waits until a pass that started after the call has ended with the labels right.
// A pass may be in flight when settle starts, so it waits for two passes, each after a wake.
func (h *harness) settle() {
	h.t.Helper()
	for range 2 {
		passes := h.l.Status().Passes
		h.l.PodsChanged()
		h.eventually("a new pass", func() bool { return h.l.Status().Passes > passes })
	}
	h.eventually("labels synced", func() bool {
		if h.l.Synced() {
			return true
		}
		h.l.PodsChanged()
		return false
	})
}

// fakeTimers makes the labeler's waits fire at once for the first n waits of length d (all
// lengths if d is 0) and never for the others, and records every wait asked for.
func (h *harness) fakeTimers(n int, d time.Duration) func() []time.Duration {
	var mu sync.Mutex
	var waits []time.Duration
	fired := 0
	h.l.newTimer = func(w time.Duration) (<-chan time.Time, func() bool) {
		mu.Lock()
		defer mu.Unlock()
		waits = append(waits, w)
		c := make(chan time.Time, 1)
		if (d == 0 || w == d) && fired < n {
			fired++
			c <- time.Now()
		}
		return c, func() bool { return true }
	}
	return func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), waits...)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	client, api := newFakeAPI()
	valid := func() Config {
		return Config{Client: client, Namespace: ns, PodName: "self", Pods: api.listPods}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"key with a space", func(c *Config) { c.Key = "raft elector/role" }, "--label-key"},
		{"key with two slashes", func(c *Config) { c.Key = "a/b/c" }, "--label-key"},
		{"leader value too long", func(c *Config) { c.LeaderValue = strings.Repeat("x", 64) }, "--leader-label-value"},
		{"leader value with a slash", func(c *Config) { c.LeaderValue = "lead/er" }, "--leader-label-value"},
		{"follower value with a space", func(c *Config) { c.FollowerValue = "fol lower" }, "--follower-label-value"},
		{"equal values", func(c *Config) { c.LeaderValue, c.FollowerValue = "x", "x" }, "must differ"},
		{"default leader value as follower", func(c *Config) { c.FollowerValue = DefaultLeaderValue }, "must differ"},
		{"no namespace", func(c *Config) { c.Namespace = "" }, "--namespace"},
		{"no pod name", func(c *Config) { c.PodName = "" }, "POD_NAME"},
		{"no client", func(c *Config) { c.Client = nil }, "client"},
		{"no pod cache", func(c *Config) { c.Pods = nil }, "Pods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.mutate(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	l, err := New(valid())
	if err != nil {
		t.Fatalf("New with a valid config: %v", err)
	}
	if l.cfg.Key != DefaultKey || l.cfg.LeaderValue != DefaultLeaderValue || l.cfg.FollowerValue != DefaultFollowerValue {
		t.Fatalf("defaults: key=%q leader=%q follower=%q", l.cfg.Key, l.cfg.LeaderValue, l.cfg.FollowerValue)
	}
	if _, err := New(Config{Client: client, Namespace: ns, PodName: "self", Pods: api.listPods,
		Key: "example.com/elected", LeaderValue: "primary", FollowerValue: "replica"}); err != nil {
		t.Fatalf("New with custom key and values: %v", err)
	}
}

func TestMemberWithoutStatusLabelsItselfFollower(t *testing.T) {
	h := start(t, nil, pod("self", ""), pod("other", DefaultLeaderValue))
	h.eventually("own pod labelled follower", func() bool { return h.api.label("self") == DefaultFollowerValue })
	h.settle()
	if got := h.api.label("other"); got != DefaultLeaderValue {
		t.Errorf("a follower changed another pod's label to %q; only a lease holder demotes others", got)
	}
	if n := h.api.count("patch"); n != 1 {
		t.Errorf("%d patches, want 1: %+v", n, h.api.callLog())
	}
	if n := h.logs.lines("pod label changed"); n != 1 {
		t.Errorf("%d 'pod label changed' log lines, want 1:\n%s", n, h.logs)
	}
	for _, want := range []string{"pod=app/self", `old="(none)"`, "new=follower", "term=0"} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("log has no %q:\n%s", want, h.logs)
		}
	}
}

func TestNoPatchWhenLabelsAreAlreadyRight(t *testing.T) {
	h := newHarness(t, nil, pod("self", DefaultLeaderValue), pod("other", DefaultFollowerValue))
	h.l.Observe(leaderStatus(3, time.Hour))
	h.run()
	for i := range 200 {
		h.l.Observe(leaderStatus(3, time.Hour))
		if i%50 == 0 {
			h.settle()
		}
	}
	h.settle()
	if calls := h.api.callLog(); len(calls) != 0 {
		t.Fatalf("API calls with every label already right: %+v", calls)
	}
	if !h.l.Synced() {
		t.Fatalf("not synced: %+v", h.l.Status())
	}
}

func TestLeaderDemotesOtherLeaderPodsBeforeLabellingItself(t *testing.T) {
	h := start(t, nil, pod("self", DefaultFollowerValue), pod("old-a", DefaultLeaderValue),
		pod("old-b", DefaultLeaderValue), pod("quiet", DefaultFollowerValue), pod("new", ""))
	h.settle()
	h.l.Observe(leaderStatus(7, time.Hour))
	h.eventually("own pod labelled leader", func() bool { return h.api.label("self") == DefaultLeaderValue })
	h.settle()

	var order []string
	for _, c := range h.api.callLog() {
		if c.verb == "patch" {
			order = append(order, c.name+"="+c.value)
		}
	}
	if len(order) != 3 || order[2] != "self=leader" ||
		!(order[0] == "old-a=follower" && order[1] == "old-b=follower" || order[0] == "old-b=follower" && order[1] == "old-a=follower") {
		t.Fatalf("patches %v; want old-a and old-b demoted, then self=leader, nothing else", order)
	}
	for name, want := range map[string]string{"old-a": "follower", "old-b": "follower", "quiet": "follower", "new": "", "self": "leader"} {
		if got := h.api.label(name); got != want {
			t.Errorf("pod %s labelled %q, want %q", name, got, want)
		}
	}
	if n := h.logs.lines("pod label changed"); n != 3 {
		t.Errorf("%d 'pod label changed' lines, want 3:\n%s", n, h.logs)
	}
	if !strings.Contains(h.logs.String(), "term=7") {
		t.Errorf("log does not name the term:\n%s", h.logs)
	}
}

// A delayed patch must not land on a pod that changed since it was read; after the 409 the
// labeler reads the pod again and decides again on what it wants now.
func TestConflictRereadsAndReevaluatesTheLease(t *testing.T) {
	h := newHarness(t, nil, pod("self", DefaultFollowerValue))
	var once sync.Once
	h.api.setHook(func(c call) error {
		if c.verb == "patch" && c.value == DefaultLeaderValue {
			once.Do(func() {
				// While the patch is in flight the member loses its lease, and someone else
				// writes the pod, so the patch's resourceVersion is stale.
				h.l.Observe(followerStatus(8))
				h.api.setLabel("self", DefaultLeaderValue)
			})
		}
		return nil
	})
	h.l.Observe(leaderStatus(7, time.Hour))
	h.run()
	h.eventually("own pod back to follower", func() bool { return h.api.label("self") == DefaultFollowerValue })
	h.settle()

	calls := h.api.callLog()
	want := []string{"patch self=leader", "get self", "patch self=follower"}
	var got []string
	for _, c := range calls {
		if c.verb == "patch" {
			got = append(got, "patch "+c.name+"="+c.value)
		} else {
			got = append(got, c.verb+" "+c.name)
		}
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("calls %v, want %v", got, want)
	}
	if s := h.l.Status(); s.Conflicts != 1 || s.Want != DefaultFollowerValue || !s.Synced {
		t.Fatalf("status %+v; want one conflict, synced as follower", s)
	}
	// The conflicted patch changed nothing, so only the follower patch is logged as a change.
	if n := h.logs.lines("pod label changed"); n != 1 {
		t.Errorf("%d 'pod label changed' lines, want 1:\n%s", n, h.logs)
	}
}

func TestConflictWhileStillLeaderRetriesOnTheFreshVersion(t *testing.T) {
	h := newHarness(t, nil, pod("self", DefaultFollowerValue))
	var once sync.Once
	h.api.setHook(func(c call) error {
		if c.verb == "patch" {
			once.Do(func() {
				h.api.mu.Lock()
				p := h.api.pods["self"].DeepCopy()
				p.Annotations = map[string]string{"touched": "yes"}
				h.api.putLocked(p)
				h.api.mu.Unlock()
			})
		}
		return nil
	})
	h.l.Observe(leaderStatus(2, time.Hour))
	h.run()
	h.eventually("own pod labelled leader", func() bool { return h.api.label("self") == DefaultLeaderValue })
	calls := h.api.callLog()
	if len(calls) != 3 || calls[1].verb != "get" || calls[2].rv == calls[0].rv {
		t.Fatalf("calls %+v; want patch (409), get, patch on the new resourceVersion", calls)
	}
}

// The informer cache may show a version of the pod older than the one the labeler wrote or
// read; the labeler must not patch it again for that.
func TestStaleCacheDoesNotCauseRepeatedPatches(t *testing.T) {
	h := newHarness(t, nil, pod("self", ""))
	frozen := h.api.snapshot() // the cache never catches up
	h.api.cache = func() []*corev1.Pod { return frozen }
	h.run()
	h.eventually("own pod labelled follower", func() bool { return h.api.label("self") == DefaultFollowerValue })
	for range 20 {
		h.l.Observe(followerStatus(1))
		h.settle()
	}
	if n := h.api.count("patch"); n != 1 {
		t.Fatalf("%d patches with a stale cache, want 1: %+v", n, h.api.callLog())
	}

	// Someone else sets the label behind a cache that does not show it: the patch decided on
	// the stale version conflicts, and the fresh copy says the label is right already.
	h2 := newHarness(t, nil, pod("self", ""))
	stale := h2.api.snapshot()
	h2.api.cache = func() []*corev1.Pod { return stale }
	h2.api.setLabel("self", DefaultFollowerValue)
	h2.run()
	h2.settle()
	calls := h2.api.callLog()
	if len(calls) != 2 || calls[0].verb != "patch" || calls[1].verb != "get" {
		t.Fatalf("calls %+v; want one patch (409) and one get, then nothing", calls)
	}
}

// Two writers fighting over a pod must not spin: a few conflicts are retried at once, then
// the labeler backs off like for any other error.
func TestRepeatedConflictsBackOff(t *testing.T) {
	h := newHarness(t, nil, pod("self", ""))
	waits := h.fakeTimers(0, 0) // no wait ever ends
	h.api.setHook(func(c call) error {
		if c.verb == "patch" {
			return apierrors.NewConflict(podsResource, c.name, errors.New("changed"))
		}
		return nil
	})
	h.run()
	h.eventually("a backoff wait", func() bool { return len(waits()) > 0 })
	if got := h.api.count("patch"); got != maxConflictsInARow+1 {
		t.Fatalf("%d patches before the first wait, want %d", got, maxConflictsInARow+1)
	}
	if w := waits()[0]; w < time.Millisecond/2 || w > time.Millisecond {
		t.Fatalf("first wait %v, want a MinBackoff (1ms) with jitter", w)
	}
}

func TestLeaseCheckedAgainBeforeLabellingItself(t *testing.T) {
	h := newHarness(t, nil, pod("self", DefaultFollowerValue), pod("old", DefaultLeaderValue))
	release := make(chan struct{})
	var once sync.Once
	h.api.setHook(func(c call) error {
		if c.verb == "patch" && c.name == "old" {
			once.Do(func() { <-release })
		}
		return nil
	})
	h.l.Observe(leaderStatus(4, time.Hour))
	h.run()
	h.eventually("the demotion of the old leader in flight", func() bool { return h.api.count("patch") == 1 })
	// The lease ends while the slow patch is in flight.
	h.l.Observe(leaderStatus(4, -time.Second))
	close(release)
	h.eventually("old demoted", func() bool { return h.api.label("old") == DefaultFollowerValue })
	h.settle()
	for _, c := range h.api.callLog() {
		if c.name == "self" && c.value == DefaultLeaderValue {
			t.Fatalf("labelled itself leader after its lease ended: %+v", h.api.callLog())
		}
	}
	if got := h.api.label("self"); got != DefaultFollowerValue {
		t.Fatalf("own label %q, want follower", got)
	}
}

// The node publishes no status when a lease runs out; the labeler must notice by itself.
func TestLeaseRunningOutDemotesOwnPod(t *testing.T) {
	h := start(t, nil, pod("self", DefaultFollowerValue))
	h.l.Observe(leaderStatus(5, 300*time.Millisecond))
	h.eventually("own pod labelled leader", func() bool { return h.api.label("self") == DefaultLeaderValue })
	h.eventually("own pod labelled follower after the lease ran out", func() bool { return h.api.label("self") == DefaultFollowerValue })
}

func TestObserveNeverBlocksWhileTheAPIIsSlow(t *testing.T) {
	h := newHarness(t, nil, pod("self", ""))
	release := make(chan struct{})
	var once sync.Once
	h.api.setHook(func(c call) error {
		once.Do(func() { <-release })
		return nil
	})
	h.run()
	h.eventually("a call stuck in the API", func() bool { return len(h.api.callLog()) == 1 })

	observed := make(chan struct{})
	go func() {
		defer close(observed)
		for i := range 100000 {
			if i%2 == 0 {
				h.l.Observe(leaderStatus(uint64(i), time.Hour))
			} else {
				h.l.Observe(followerStatus(uint64(i)))
			}
			h.l.PodsChanged()
		}
		h.l.Observe(leaderStatus(100000, time.Hour))
	}()
	select {
	case <-observed:
	case <-time.After(30 * time.Second):
		t.Fatal("Observe blocked while Run was stuck in an API call")
	}
	close(release)
	h.eventually("own pod labelled with the last observed role", func() bool { return h.api.label("self") == DefaultLeaderValue })
	h.eventually("the change logged with the last term", func() bool { return strings.Contains(h.logs.String(), "term=100000") })
}

func TestErrorsAreRetriedWithCappedExponentialBackoff(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.MinBackoff = 100 * time.Millisecond
		c.MaxBackoff = 5 * time.Second
	}, pod("self", ""))
	const failures = 12
	// Backoff waits fire at once; the test looks at the durations Run asked for.
	waits := h.fakeTimers(failures, 0)
	var n int
	h.api.setHook(func(c call) error {
		n++
		if n <= failures {
			return apierrors.NewInternalError(fmt.Errorf("etcd is sulking (%d)", n))
		}
		return nil
	})
	h.run()
	h.eventually("own pod labelled after the errors stop", func() bool { return h.api.label("self") == DefaultFollowerValue })
	h.eventually("synced", h.l.Synced)

	got := waits()[:failures]
	ceiling := 100 * time.Millisecond
	for i, d := range got {
		if d < ceiling/2 || d > ceiling {
			t.Errorf("wait %d after an error: %v, want within [%v, %v]", i+1, d, ceiling/2, ceiling)
		}
		ceiling = min(2*ceiling, 5*time.Second)
	}
	if ceiling != 5*time.Second {
		t.Fatalf("backoff never reached its cap; waits %v", got)
	}
	if n := h.logs.lines("cannot update pod labels"); n != 1 {
		t.Errorf("%d warnings for one streak of failures, want 1:\n%s", n, h.logs)
	}
	if n := h.logs.lines("up to date again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, h.logs)
	}
}

func TestForbiddenIsLoggedOnceAndRetriedSlowly(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ForbiddenRetry = 42 * time.Second }, pod("self", ""))
	waits := h.fakeTimers(8, 0)
	h.api.setHook(func(c call) error {
		return apierrors.NewForbidden(podsResource, c.name, errors.New(`User "system:serviceaccount:app:elector" cannot patch resource "pods"`))
	})
	h.run()
	h.eventually("several refused attempts", func() bool { return h.l.Status().Failures >= 9 })
	select {
	case err := <-h.done:
		t.Fatalf("Run returned %v on 403", err)
	default:
	}
	if n := h.logs.lines("not allowed to patch pods in namespace app"); n != 1 {
		t.Errorf("%d forbidden lines, want exactly 1:\n%s", n, h.logs)
	}
	if !strings.Contains(h.logs.String(), "granting get and patch on pods") {
		t.Errorf("the forbidden line does not say which permission is missing:\n%s", h.logs)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 42, 42}
	got := waits()
	if len(got) < len(want) {
		t.Fatalf("waits after 403: %v, want at least %d", got, len(want))
	}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("waits after 403: %v, want %v s: from 1s doubling up to ForbiddenRetry (42s)", got, want)
		}
	}
}

// An API server that has just started answers 403 until its RBAC cache is loaded: one 403
// is retried after a second and not reported as a missing permission.
func TestSingleForbiddenIsNotReportedAsMissingPermission(t *testing.T) {
	h := newHarness(t, nil, pod("self", ""))
	waits := h.fakeTimers(1, 0)
	var n int
	h.api.setHook(func(c call) error {
		if n++; n == 1 {
			return apierrors.NewForbidden(podsResource, c.name, errors.New("RBAC not loaded yet"))
		}
		return nil
	})
	h.run()
	h.eventually("own pod labelled", func() bool { return h.api.label("self") == DefaultFollowerValue })
	h.eventually("synced", h.l.Synced)
	if got := waits(); len(got) == 0 || got[0] != time.Second {
		t.Fatalf("waits %v; want the first retry after 1s", got)
	}
	if strings.Contains(h.logs.String(), "not allowed to") {
		t.Fatalf("a single 403 was reported as a missing permission:\n%s", h.logs)
	}
	if h.logs.lines("cannot update pod labels") != 1 || h.logs.lines("up to date again") != 1 {
		t.Fatalf("want one warning and one recovery line:\n%s", h.logs)
	}
}

func TestOwnPodGoneWaitsForTheRoleToChange(t *testing.T) {
	h := start(t, nil, pod("other", ""))
	h.eventually("the own pod looked up", func() bool { return h.api.count("get") == 1 })
	h.eventually("the pass recorded", func() bool { return h.l.Status().Passes == 1 })
	for range 100 {
		h.l.Observe(followerStatus(1))
		h.l.PodsChanged()
	}
	// A role change is the only thing that ends the wait; use it as the barrier.
	h.l.Observe(leaderStatus(2, time.Hour))
	h.eventually("the own pod looked up again", func() bool { return h.api.count("get") == 2 })
	h.eventually("the pass recorded", func() bool { return h.l.Status().Passes == 2 })
	if calls := h.api.callLog(); len(calls) != 2 {
		t.Fatalf("calls %+v; want one get per wanted role, nothing more", calls)
	}
	if !strings.Contains(h.logs.String(), "own pod not found") {
		t.Errorf("missing pod not logged:\n%s", h.logs)
	}
	// Once it exists, the next role change labels it.
	h.api.put(pod("self", ""))
	h.l.Observe(followerStatus(3))
	h.eventually("own pod labelled follower", func() bool {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		return h.api.pods["self"].Labels[key] == DefaultFollowerValue
	})
}

func TestCustomKeyAndValues(t *testing.T) {
	client, api := newFakeAPI(pod("self", ""))
	l, err := New(Config{Client: client, Namespace: ns, PodName: "self", Pods: api.listPods,
		Key: "example.com/elected", LeaderValue: "primary", FollowerValue: "replica"})
	if err != nil {
		t.Fatal(err)
	}
	var body patchBody
	client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		_ = json.Unmarshal(a.(k8stesting.PatchAction).GetPatch(), &body)
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.Observe(leaderStatus(1, time.Hour))
	if err := l.pass(ctx, "primary", leaderStatus(1, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if body.Metadata.Labels["example.com/elected"] != "primary" || body.Metadata.ResourceVersion == "" {
		t.Fatalf("patch %+v; want example.com/elected=primary with a resourceVersion precondition", body)
	}
}

func TestBackoffAndJitterBounds(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	d := time.Duration(0)
	var seq []time.Duration
	for range 10 {
		d = nextBackoff(d, lo, hi)
		seq = append(seq, d)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000}
	for i := range want {
		if seq[i] != want[i]*time.Millisecond {
			t.Fatalf("backoff sequence %v, want %v ms", seq, want)
		}
	}
	for range 1000 {
		if j := jitter(time.Second); j < 500*time.Millisecond || j > time.Second {
			t.Fatalf("jitter(1s) = %v, want within [500ms, 1s]", j)
		}
	}
}
