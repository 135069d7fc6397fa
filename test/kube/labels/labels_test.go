// Package labels tests pkg/podlabel against a real kube-apiserver and etcd (test/kubeenv):
// labelers run as the sidecar's service account, bound to the Role the sidecar gets, read pods
// through an informer as discovery does, and are fed made-up member statuses.
package labels

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/podlabel"
	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/test/kubeenv"
)

const (
	serviceAccount = "elector"
	appSelector    = "app=demo"
	key            = podlabel.DefaultKey
	leader         = podlabel.DefaultLeaderValue
	follower       = podlabel.DefaultFollowerValue
	settleTimeout  = 30 * time.Second
)

// One API server for all subtests (it takes seconds to start); each subtest has its own
// namespace. The outage subtest restarts the API server and runs last.
func TestLabelsAgainstARealAPIServer(t *testing.T) {
	begin := time.Now()
	env := kubeenv.StartT(t, kubeenv.Options{})
	t.Logf("environment ready in %s", time.Since(begin).Round(time.Millisecond))

	t.Run("labels follow the lease and never name two leaders", func(t *testing.T) {
		testLabelsFollowTheLease(t, env)
	})
	t.Run("a stale patch conflicts and does not land", func(t *testing.T) {
		testStalePatchConflicts(t, env)
	})
	t.Run("forbidden namespace is logged and survived", func(t *testing.T) {
		testForbidden(t, env)
	})
	t.Run("labels catch up after an API server outage", func(t *testing.T) {
		testOutage(t, env)
	})
	t.Logf("whole test took %s", time.Since(begin).Round(time.Millisecond))
}

func testLabelsFollowTheLease(t *testing.T, env *kubeenv.Env) {
	app := newApp(t, env, "follow", "p0", "p1", "p2")
	// p2's member starts as an old leader that died: its pod says leader, nobody runs for it.
	app.setLabelAsAdmin(t, "p2", leader)
	violations := app.watchForTwoLeaders(t)

	p0 := app.startLabeler(t, "p0")
	p1 := app.startLabeler(t, "p1")
	p0.Observe(leaderStatus("p0", 1))
	p1.Observe(followerStatus("p1", 1, "p0"))
	start := time.Now()
	app.waitLabels(t, map[string]string{"p0": leader, "p1": follower, "p2": follower})
	t.Logf("labels right %s after the first statuses", time.Since(start).Round(time.Millisecond))

	for term := uint64(2); term <= 5; term++ {
		from, to := p0, p1
		fromName, toName := "p0", "p1"
		if term%2 == 1 {
			from, to, fromName, toName = p1, p0, "p1", "p0"
		}
		start := time.Now()
		// The old leader's lease has ended before the new one's starts (the protocol's
		// guarantee); its member learns of the new term a moment later.
		from.Observe(followerStatus(fromName, term-1, ""))
		to.Observe(leaderStatus(toName, term))
		from.Observe(followerStatus(fromName, term, toName))
		app.waitLabels(t, map[string]string{toName: leader, fromName: follower, "p2": follower})
		t.Logf("term %d: label moved to %s in %s", term, toName, time.Since(start).Round(time.Millisecond))
	}
	// Settled: the labelers send nothing more while the statuses stay as they are.
	before := p0.Status().Patches + p1.Status().Patches
	for range 20 { // term 5 is p0's
		p0.Observe(leaderStatus("p0", 5))
		p1.Observe(followerStatus("p1", 5, "p0"))
	}
	waitFor(t, "both labelers synced", func() bool { return p0.Synced() && p1.Synced() })
	if after := p0.Status().Patches + p1.Status().Patches; after != before {
		t.Errorf("%d patches sent with every label already right", after-before)
	}
	if v := violations(); len(v) > 0 {
		t.Fatalf("two pods labelled %s at once: %v", leader, v)
	}
}

func testStalePatchConflicts(t *testing.T, env *kubeenv.Env) {
	ctx := t.Context()
	app := newApp(t, env, "stale", "p0", "p1", "p2")
	p0 := app.startLabeler(t, "p0")
	p1 := app.startLabeler(t, "p1")
	p0.Observe(leaderStatus("p0", 1))
	p1.Observe(followerStatus("p1", 1, "p0"))
	app.waitLabels(t, map[string]string{"p0": leader, "p1": follower, "p2": ""})

	// What the former leader p0 read before it lost the lease.
	old, err := app.sa.CoreV1().Pods(app.ns).Get(ctx, "p0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p0.Observe(followerStatus("p0", 1, ""))
	p1.Observe(leaderStatus("p1", 2))
	p0.Observe(followerStatus("p0", 2, "p1"))
	app.waitLabels(t, map[string]string{"p0": follower, "p1": leader, "p2": ""})

	// p0's delayed patch, decided on the old version, arrives now.
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": old.ResourceVersion, "labels": map[string]string{key: leader}}})
	_, err = app.sa.CoreV1().Pods(app.ns).Patch(ctx, "p0", types.MergePatchType, body, metav1.PatchOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("patch with the resourceVersion from before the handover: got %v, want 409 Conflict", err)
	}
	app.checkLabels(t, map[string]string{"p0": follower, "p1": leader, "p2": ""})

	// The labeler's own patches carry the same precondition. p2's labeler decides on a cache
	// that missed a change of its pod: its patch is refused, it reads the pod again and
	// patches the current version.
	stale, err := app.sa.CoreV1().Pods(app.ns).Get(ctx, "p2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	app.setAnnotationAsAdmin(t, "p2", "touched", "1")
	p2 := app.startLabelerWithCache(t, "p2", func() []*corev1.Pod { return []*corev1.Pod{stale} })
	p2.Observe(followerStatus("p2", 2, "p1"))
	app.waitLabels(t, map[string]string{"p0": follower, "p1": leader, "p2": follower})
	waitFor(t, "p2 synced", p2.Synced)
	if s := p2.Status(); s.Conflicts != 1 || s.Patches != 2 {
		t.Fatalf("p2's labeler: %d conflicts, %d patches; want 1 conflict, then 1 patch that landed", s.Conflicts, s.Patches)
	}
}

func testForbidden(t *testing.T, env *kubeenv.Env) {
	ctx := t.Context()
	app := newApp(t, env, "allowed", "p0")
	stranger := "forbidden"
	if _, err := env.AdminClient.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stranger}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := kubeenv.CreateRunningPod(ctx, env.AdminClient, stranger,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "victim", Labels: map[string]string{"app": "demo"}}}, "127.0.0.9")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	l, err := podlabel.New(podlabel.Config{
		Client:    app.sa, // the service account of namespace "allowed"
		Namespace: stranger,
		PodName:   "victim",
		// As if the cache had it: the labeler goes straight to the patch.
		Pods:           func() []*corev1.Pod { return []*corev1.Pod{pod} },
		Logger:         hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
		ForbiddenRetry: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Observe(leaderStatus("victim", 1))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	waitFor(t, "several refused attempts", func() bool { return l.Status().Failures >= 3 })
	select {
	case err := <-done:
		t.Fatalf("Run returned %v on a 403", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	text := logs.String()
	t.Logf("labeler log:\n%s", text)
	if n := strings.Count(text, "not allowed to patch pods in namespace forbidden"); n != 1 {
		t.Errorf("%d forbidden lines, want exactly 1", n)
	}
	for _, want := range []string{"get and patch on pods", "system:serviceaccount:allowed:elector", "forbidden"} {
		if !strings.Contains(text, want) {
			t.Errorf("forbidden log line does not mention %q", want)
		}
	}
	got, err := env.AdminClient.CoreV1().Pods(stranger).Get(ctx, "victim", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Labels[key]; ok {
		t.Errorf("pod in the forbidden namespace got labelled: %v", got.Labels)
	}
}

func testOutage(t *testing.T, env *kubeenv.Env) {
	ctx := t.Context()
	app := newApp(t, env, "outage", "p0", "p1")
	p0 := app.startLabeler(t, "p0")
	p1 := app.startLabeler(t, "p1")
	p0.Observe(leaderStatus("p0", 1))
	p1.Observe(followerStatus("p1", 1, "p0"))
	app.waitLabels(t, map[string]string{"p0": leader, "p1": follower})

	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	// The members keep electing without the API: p1 takes over, long-lived leases so that
	// the outage does not end them.
	p0.Observe(followerStatus("p0", 1, ""))
	p1.Observe(leaderStatus("p1", 2))
	p0.Observe(followerStatus("p0", 2, "p1"))
	waitFor(t, "both labelers failing against the stopped API server", func() bool {
		return p0.Status().Failures > 0 && p1.Status().Failures > 0
	})
	t.Logf("while stopped: p0 %+v; p1 %+v", p0.Status(), p1.Status())

	restart := time.Now()
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	app.waitLabels(t, map[string]string{"p0": follower, "p1": leader})
	t.Logf("API server restart took %s; labels correct %s after it was ready",
		ready.Sub(restart).Round(time.Millisecond), time.Since(ready).Round(time.Millisecond))
}

// app is one application's namespace: pods, the sidecar's service account, Role and binding,
// and a client authenticated as that service account.
type app struct {
	env *kubeenv.Env
	ns  string
	sa  kubernetes.Interface
	cfg *rest.Config

	mu     sync.Mutex
	caches map[string]func() []*corev1.Pod // each running labeler's view of the pods
}

func newApp(t *testing.T, env *kubeenv.Env, ns string, pods ...string) *app {
	t.Helper()
	ctx := t.Context()
	admin := env.AdminClient
	if _, err := admin.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "raft-elector"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""},
			Resources: []string{"pods"},
			Verbs:     []string{"get", "list", "watch", "patch"},
		}},
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "raft-elector"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: ns}},
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, name := range pods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "demo"}}}
		pod.Spec.ServiceAccountName = serviceAccount
		if _, err := kubeenv.CreateRunningPod(ctx, admin, ns, pod, fmt.Sprintf("127.0.0.%d", i+2)); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _, err := env.ServiceAccountConfig(ctx, ns, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &app{env: env, ns: ns, sa: sa, cfg: cfg, caches: map[string]func() []*corev1.Pod{}}
}

// startLabeler runs the labeler of pod name as the member's sidecar would: its own client
// for the service account, and an informer on the app's pods (as discovery has) for its cache.
func (a *app) startLabeler(t *testing.T, name string) *podlabel.Labeler {
	t.Helper()
	client, err := kubernetes.NewForConfig(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(a.ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = appSelector }))
	podInformer := factory.Core().V1().Pods()
	lister := podInformer.Lister()
	pods := func() []*corev1.Pod {
		pods, _ := lister.List(labels.Everything())
		return pods
	}
	var l *podlabel.Labeler
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { l.PodsChanged() },
		UpdateFunc: func(any, any) { l.PodsChanged() },
		DeleteFunc: func(any) { l.PodsChanged() },
	}); err != nil {
		t.Fatal(err)
	}
	l = a.newLabeler(t, name, client, pods)
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	t.Cleanup(factory.Shutdown)
	t.Cleanup(cancel)
	if !cache.WaitForCacheSync(t.Context().Done(), podInformer.Informer().HasSynced) {
		t.Fatalf("informer of %s did not sync", name)
	}
	a.run(t, name, l, pods)
	return l
}

// startLabelerWithCache runs the labeler of pod name with pods as its cache.
func (a *app) startLabelerWithCache(t *testing.T, name string, pods func() []*corev1.Pod) *podlabel.Labeler {
	t.Helper()
	client, err := kubernetes.NewForConfig(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := a.newLabeler(t, name, client, pods)
	a.run(t, name, l, nil)
	return l
}

func (a *app) newLabeler(t *testing.T, name string, client kubernetes.Interface, pods func() []*corev1.Pod) *podlabel.Labeler {
	t.Helper()
	l, err := podlabel.New(podlabel.Config{
		Client:    client,
		Namespace: a.ns,
		PodName:   name,
		Pods:      pods,
		Logger:    hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: testWriter{t}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// run runs l until the test ends. A non-nil cache is checked by waitLabels.
func (a *app) run(t *testing.T, name string, l *podlabel.Labeler, cache func() []*corev1.Pod) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("labeler %s: Run returned %v", name, err)
		}
	})
	if cache != nil {
		a.mu.Lock()
		a.caches[name] = cache
		a.mu.Unlock()
	}
}

func (a *app) labels(t *testing.T) (map[string]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	pods, err := a.env.AdminClient.CoreV1().Pods(a.ns).List(ctx, metav1.ListOptions{LabelSelector: appSelector})
	if err != nil {
		return nil, err
	}
	got := map[string]string{}
	for _, p := range pods.Items {
		got[p.Name] = p.Labels[key]
	}
	return got, nil
}

func (a *app) checkLabels(t *testing.T, want map[string]string) {
	t.Helper()
	got, err := a.labels(t)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(got, want) {
		t.Fatalf("labels %v, want %v", got, want)
	}
}

// waitLabels waits, with a deadline, until the pods carry exactly the wanted role labels in
// the API server and in the informer cache of every running labeler, so that the next step
// starts from a state every member has seen.
func (a *app) waitLabels(t *testing.T, want map[string]string) {
	t.Helper()
	var got map[string]string
	var err error
	deadline := time.Now().Add(settleTimeout)
	for {
		got, err = a.labels(t)
		if err == nil && equal(got, want) && a.cachesShow(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: labels %v (error %v), want %v (caches agree: %v)", settleTimeout, got, err, want, a.cachesShow(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *app) cachesShow(want map[string]string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, pods := range a.caches {
		got := map[string]string{}
		for _, p := range pods() {
			got[p.Name] = p.Labels[key]
		}
		if !equal(got, want) {
			return false
		}
	}
	return true
}

func (a *app) setLabelAsAdmin(t *testing.T, name, value string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{key: value}}})
	if _, err := a.env.AdminClient.CoreV1().Pods(a.ns).Patch(t.Context(), name, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (a *app) setAnnotationAsAdmin(t *testing.T, name, k, v string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{k: v}}})
	if _, err := a.env.AdminClient.CoreV1().Pods(a.ns).Patch(t.Context(), name, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// watchForTwoLeaders follows every change of the app's pods, in the API server's order, and
// returns a function listing the moments at which two pods were labelled leader.
func (a *app) watchForTwoLeaders(t *testing.T) func() []string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	list, err := a.env.AdminClient.CoreV1().Pods(a.ns).List(ctx, metav1.ListOptions{LabelSelector: appSelector})
	if err != nil {
		t.Fatal(err)
	}
	w, err := a.env.AdminClient.CoreV1().Pods(a.ns).Watch(ctx, metav1.ListOptions{
		LabelSelector: appSelector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var violations []string
	current := map[string]string{}
	for _, p := range list.Items {
		current[p.Name] = p.Labels[key]
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			mu.Lock()
			if ev.Type == watch.Deleted {
				delete(current, p.Name)
			} else {
				current[p.Name] = p.Labels[key]
			}
			var leaders []string
			for name, v := range current {
				if v == leader {
					leaders = append(leaders, name)
				}
			}
			if len(leaders) > 1 {
				violations = append(violations, fmt.Sprintf("rv %s: %v", p.ResourceVersion, leaders))
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		w.Stop()
		<-done
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), violations...)
	}
}

func leaderStatus(id string, term uint64) node.Status {
	return node.Status{ID: id, Term: term, State: raft.StateLeader, Leader: id, LeaseExpiresAt: time.Now().Add(time.Hour)}
}

func followerStatus(id string, term uint64, leaderID string) node.Status {
	return node.Status{ID: id, Term: term, State: raft.StateFollower, Leader: leaderID}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", settleTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// testWriter sends the labelers' logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

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
