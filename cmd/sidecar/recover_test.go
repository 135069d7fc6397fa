package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/raft-elector/raft-elector/pkg/bootstrap"
	"github.com/raft-elector/raft-elector/pkg/discovery"
	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
)

const revNS, revSel = "app", "app=demo"

func revPod(name, ip string, terminating bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: revNS, UID: types.UID("uid-" + name), Labels: map[string]string{"app": "demo"}},
		Spec:       corev1.PodSpec{NodeName: "n1"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if terminating {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	return p
}

func revID(name string) string { return discovery.PodID(name, "uid-"+name) }

// revMember builds a member (not running) whose stored configuration has the given voters and
// that has seen no leader, plus the kube parts over a fake API holding pods and the object.
func revMember(t *testing.T, voters []string, pods ...*corev1.Pod) (*member, *kubeParts) {
	t.Helper()
	return revMemberWith(t, voters, nil, pods...)
}

// revMemberWith is revMember with the voters the object records (nil: none, as an older
// version wrote it). With voters nil the member has no state: it never joined.
func revMemberWith(t *testing.T, voters, recorded []string, pods ...*corev1.Pod) (*member, *kubeParts) {
	t.Helper()
	const cluster = "k8s-x-g1-abc"
	self := revID("a")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "boot", Namespace: revNS, ResourceVersion: "7"},
		Data: map[string]string{bootstrap.KeyCluster: cluster, bootstrap.KeyGeneration: "1", bootstrap.KeyBootstrapper: self}}
	if recorded != nil {
		cm.Data[bootstrap.KeyVoters], cm.Data[bootstrap.KeyConfigIndex] = strings.Join(recorded, ","), "40"
	}
	objs := []runtimeObject{cm}
	for _, p := range pods {
		objs = append(objs, p)
	}
	client := fake.NewClientset(toRuntime(objs)...)
	boot, err := bootstrap.New(bootstrap.Config{Client: client, Namespace: revNS, Name: "boot", Base: "k8s-x"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := boot.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewKubernetes(discovery.KubernetesConfig{Client: client, Namespace: revNS, Selector: revSel, PeerPort: 4041})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go disc.Run(ctx)
	if err := disc.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}

	st, err := node.OpenStorage(t.TempDir(), cluster, self)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if voters != nil {
		log := raft.LogState{Snapshot: raft.Snapshot{Index: 5, Term: 3, Config: raft.Configuration{Voters: voters}}}
		if err := st.Save(raft.HardState{Term: 3}, log); err != nil {
			t.Fatal(err)
		}
	}
	n, err := node.New(node.Config{ID: self, Cluster: cluster, HeartbeatInterval: 100 * time.Millisecond,
		ElectionTimeout: time.Second, Storage: st})
	if err != nil {
		t.Fatal(err)
	}
	c := &config{ID: self, RecoverAfter: 10 * time.Second, ElectionTimeout: time.Second}
	m := &member{cfg: c, log: hclog.NewNullLogger(), node: n, storage: st, replaced: make(chan bootstrap.Record, 1)}
	k := &kubeParts{disc: disc, boot: boot, cluster: rec, client: client, namespace: revNS, selector: revSel,
		labelKey: DefaultLabelKey, leaderVal: DefaultLeaderValue}
	return m, k
}

type runtimeObject = interface{ GetName() string }

func toRuntime(objs []runtimeObject) []runtime.Object {
	out := make([]runtime.Object, len(objs))
	for i, o := range objs {
		out[i] = o.(runtime.Object)
	}
	return out
}

func leaderLabelled(p *corev1.Pod) *corev1.Pod {
	p.Labels[DefaultLabelKey] = DefaultLeaderValue
	return p
}

// Recovery must not fire while the old cluster may still have a leader, and must fire when a
// majority of the voters' pods are really gone. Found by review; each case is a scenario the
// review described.
func TestRecoveryDecision(t *testing.T) {
	a, b, c := revID("a"), revID("b"), revID("c")
	for _, tc := range []struct {
		name    string
		pods    []*corev1.Pod
		recover bool
	}{
		// b and c are terminating (evicted from a node cut off from the control plane): their
		// sidecars may still run and hold a majority with a leader.
		{"terminating voters still count", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("b", "10.0.0.2", true), revPod("c", "10.0.0.3", true)}, false},
		// a missed the entries that replaced b and c by d and e; d leads the real configuration.
		{"a pod unknown to the configuration leads", []*corev1.Pod{revPod("a", "10.0.0.1", false), leaderLabelled(revPod("d", "10.0.0.4", false)), revPod("e", "10.0.0.5", false)}, false},
		// b and c are gone for good; the pods that replaced them have not joined anyone.
		{"majority gone, replacements not leading", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("d", "10.0.0.4", false), revPod("e", "10.0.0.5", false)}, true},
		{"majority gone", []*corev1.Pod{revPod("a", "10.0.0.1", false)}, true},
		{"one voter gone of three", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("b", "10.0.0.2", false)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, k := revMember(t, []string{a, b, c}, tc.pods...)
			last := time.Now().Add(-time.Minute)
			got := k.maybeRecover(context.Background(), m, &last)
			if got != tc.recover {
				t.Fatalf("recovered = %v, want %v", got, tc.recover)
			}
			if got {
				rec := <-m.replaced
				if rec.Generation != 2 || rec.Bootstrapper != a {
					t.Fatalf("new record %+v, want generation 2 bootstrapped by a", rec)
				}
			}
			// Too early: never.
			recent := time.Now()
			if k2m, k2 := revMember(t, []string{a, b, c}, tc.pods...); k2.maybeRecover(context.Background(), k2m, &recent) {
				t.Fatal("recovered before --recover-after without a leader")
			}
		})
	}
}

// The bootstrapper's crash window: it claimed the object, then died before saving the
// cluster's first configuration. Its intent tells that apart from a lost data dir.
func TestResolveClusterAfterACrashInTheClaimWindow(t *testing.T) {
	self := revID("a")
	const cluster = "k8s-x-g1-abc"
	for _, tc := range []struct {
		name   string
		intent string
		won    bool
	}{
		{"crashed after the claim", cluster, true},
		{"data dir lost", "", false},
		{"claimed another cluster, lost", "k8s-x-g1-zzz", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "boot", Namespace: revNS, ResourceVersion: "7"},
				Data: map[string]string{bootstrap.KeyCluster: cluster, bootstrap.KeyGeneration: "1", bootstrap.KeyBootstrapper: self}}
			client := fake.NewClientset(cm)
			boot, err := bootstrap.New(bootstrap.Config{Client: client, Namespace: revNS, Name: "boot", Base: "k8s-x"})
			if err != nil {
				t.Fatal(err)
			}
			st, err := node.OpenStorage(t.TempDir(), "k8s-x", self)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if tc.intent != "" {
				if err := st.SetIntent(tc.intent); err != nil {
					t.Fatal(err)
				}
			}
			k := &kubeParts{boot: boot}
			won, err := k.resolveCluster(t.Context(), st, self, "", hclog.NewNullLogger())
			if err != nil || won != tc.won || k.cluster.ClusterID != cluster {
				t.Fatalf("resolve: won=%v cluster=%q err=%v, want won=%v in %s", won, k.cluster.ClusterID, err, tc.won, cluster)
			}
			if intent, _ := st.Intent(); !tc.won && intent != "" {
				t.Fatalf("intent %q left behind after a lost claim", intent)
			}
		})
	}
}

// A fresh member that creates the object records its intent before the create.
func TestResolveClusterRecordsTheIntentBeforeClaiming(t *testing.T) {
	self := revID("a")
	client := fake.NewClientset()
	boot, err := bootstrap.New(bootstrap.Config{Client: client, Namespace: revNS, Name: "boot", Base: "k8s-x"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := node.OpenStorage(t.TempDir(), "k8s-x", self)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k := &kubeParts{boot: boot}
	won, err := k.resolveCluster(t.Context(), st, self, "", hclog.NewNullLogger())
	if err != nil || !won {
		t.Fatalf("resolve on an empty API: won=%v err=%v", won, err)
	}
	if intent, err := st.Intent(); err != nil || intent != k.cluster.ClusterID {
		t.Fatalf("intent %q (%v), want %q recorded before the create", intent, err, k.cluster.ClusterID)
	}
}

// Every pod of the application was replaced at once (scaled to zero and back, a node pool
// replaced): the new pods start without state, so they have no configuration, and go by the
// voters the old leader recorded in the bootstrap object. Each case is a scenario of the
// design: recover when the recorded voters' pods are gone; wait while anything says the
// cluster may live.
func TestRecoveryOfAMemberThatNeverJoined(t *testing.T) {
	a := revID("a")
	recorded := []string{revID("b"), revID("c"), revID("d")} // sorted, as the leader records them
	for _, tc := range []struct {
		name    string
		pods    []*corev1.Pod
		recover bool
	}{
		// The old pods are gone; a, e and f are the new ones, none leading.
		{"every recorded voter's pod is gone", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("e", "10.0.0.5", false), revPod("f", "10.0.0.6", false)}, true},
		{"one recorded voter of three left", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("b", "10.0.0.2", false)}, true},
		// A pod labelled leader that this member does not know (it knows none) may lead a
		// cluster whose configuration the object has not caught up with yet.
		{"a live pod is labelled leader", []*corev1.Pod{revPod("a", "10.0.0.1", false), leaderLabelled(revPod("e", "10.0.0.5", false)), revPod("f", "10.0.0.6", false)}, false},
		// The recorded voters can still elect: this member was simply not added yet.
		{"the recorded voters have a majority of pods", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("b", "10.0.0.2", false), revPod("c", "10.0.0.3", false)}, false},
		{"terminating recorded voters still count", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("b", "10.0.0.2", true), revPod("d", "10.0.0.4", true)}, false},
		{"its own pod is gone", []*corev1.Pod{revPod("e", "10.0.0.5", false)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, k := revMemberWith(t, nil, recorded, tc.pods...)
			if v := m.node.Status().Config.Voters; len(v) != 0 {
				t.Fatalf("the member has voters %v; want a member that never joined", v)
			}
			// Too early: never.
			recent := time.Now()
			if k.maybeRecover(context.Background(), m, &recent) {
				t.Fatal("recovered before --recover-after without a leader")
			}
			k.boot.SetBeforeClaim(func(r bootstrap.Record) error { return m.storage.SetIntent(r.ClusterID) })
			last := time.Now().Add(-time.Minute)
			got := k.maybeRecover(context.Background(), m, &last)
			if got != tc.recover {
				t.Fatalf("recovered = %v, want %v", got, tc.recover)
			}
			if !got {
				if rec, err := k.boot.Get(context.Background()); err != nil || rec.Generation != 1 {
					t.Fatalf("the object is %+v (%v), want generation 1 untouched", rec, err)
				}
				return
			}
			rec := <-m.replaced
			if rec.Generation != 2 || rec.Bootstrapper != a || !slices.Equal(rec.Voters(), []string{a}) || rec.ConfigIndex != 1 {
				t.Fatalf("new record %+v (voters %v), want generation 2 bootstrapped by a, its only voter at index 1", rec, rec.Voters())
			}
			// The member restarts in-process (main.go) to join the new generation: with no
			// state to discard, its intent alone tells it that it won, so it bootstraps.
			boot, err := bootstrap.New(bootstrap.Config{Client: k.client, Namespace: revNS, Name: "boot", Base: "k8s-x"})
			if err != nil {
				t.Fatal(err)
			}
			k2 := &kubeParts{boot: boot}
			won, err := k2.resolveCluster(t.Context(), m.storage, a, rec.ClusterID, hclog.NewNullLogger())
			if err != nil || !won || k2.cluster.ClusterID != rec.ClusterID || k2.cluster.Generation != 2 {
				t.Fatalf("restart: won=%v cluster=%+v err=%v; want to bootstrap %s", won, k2.cluster, err, rec.ClusterID)
			}
		})
	}
}

// An object written by an older version records no voters: a member that never joined cannot
// tell whether its cluster is gone, so it waits, and says once what the operator should do.
func TestRecoveryWithoutRecordedVotersWaitsAndSaysWhy(t *testing.T) {
	m, k := revMemberWith(t, nil, nil, revPod("a", "10.0.0.1", false))
	var buf syncBuffer
	m.log = hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	for range 3 {
		last := time.Now().Add(-time.Minute)
		if k.maybeRecover(context.Background(), m, &last) {
			t.Fatal("recovered without knowing any voters")
		}
	}
	out := buf.String()
	if n := strings.Count(out, "records no voters"); n != 1 {
		t.Fatalf("logged %d times that the object records no voters, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "delete the bootstrap ConfigMap") || !strings.Contains(out, revNS+"/boot") {
		t.Errorf("the line does not tell the operator what to delete:\n%s", out)
	}
}

// The leader records its voters only when its configuration is committed and names other
// voters than the object, at a higher index: never in the steady state, nor for a new leader
// whose no-op moved the index of the same voters.
func TestVotersToRecord(t *testing.T) {
	const cluster = "k8s-x-g1-abc"
	a, b, c := revID("a"), revID("b"), revID("c")
	api := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "boot", Namespace: revNS, ResourceVersion: "7"},
		Data: map[string]string{bootstrap.KeyCluster: cluster, bootstrap.KeyGeneration: "1", bootstrap.KeyBootstrapper: a,
			bootstrap.KeyVoters: a + "," + b, bootstrap.KeyConfigIndex: "4"}})
	boot, err := bootstrap.New(bootstrap.Config{Client: api, Namespace: revNS, Name: "boot", Base: "k8s-x"})
	if err != nil {
		t.Fatal(err)
	}
	latest, err := boot.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	three := raft.Configuration{Voters: []string{a, b, c}}
	leader := func(cfg raft.Configuration, index, commit uint64) node.Status {
		return node.Status{State: raft.StateLeader, Config: cfg, ConfigIndex: index, Commit: commit}
	}
	for _, tc := range []struct {
		name    string
		st      node.Status
		latest  bootstrap.Record
		cluster string
		want    bool
	}{
		{"a new committed configuration", leader(three, 6, 6), latest, cluster, true},
		{"committed, the log went on", leader(three, 6, 9), latest, cluster, true},
		{"not committed yet", leader(three, 6, 5), latest, cluster, false},
		{"not the leader", node.Status{State: raft.StateFollower, Config: three, ConfigIndex: 6, Commit: 6}, latest, cluster, false},
		{"same voters at a higher index", leader(raft.Configuration{Voters: []string{a, b}, Learners: []string{c}}, 9, 9), latest, cluster, false},
		{"an older index", leader(three, 3, 3), latest, cluster, false},
		{"the object names another cluster", leader(three, 6, 6), latest, "k8s-x-g2-def", false},
		{"the object not read yet", leader(three, 6, 6), bootstrap.Record{}, cluster, false},
	} {
		if got := votersToRecord(tc.st, tc.latest, tc.cluster); got != tc.want {
			t.Errorf("%s: votersToRecord = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The watch cache only spares the API server a list while it holds a majority of the voters'
// pods; the decision to recover is made on the fresh list. Here the cache lags behind the API:
// it lacks pods that the fresh list has.
func TestRecoveryDecidesOnTheFreshList(t *testing.T) {
	a, b, c := revID("a"), revID("b"), revID("c")
	for _, tc := range []struct {
		name    string
		fresh   []*corev1.Pod
		recover bool
	}{
		{"terminating voters the cache has not seen", []*corev1.Pod{revPod("a", "10.0.0.1", false), revPod("b", "10.0.0.2", true), revPod("c", "10.0.0.3", true)}, false},
		{"a leader the cache has not seen", []*corev1.Pod{revPod("a", "10.0.0.1", false), leaderLabelled(revPod("d", "10.0.0.4", false))}, false},
		{"nothing the cache has not seen", []*corev1.Pod{revPod("a", "10.0.0.1", false)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, k := revMember(t, []string{a, b, c}, revPod("a", "10.0.0.1", false))
			lists := 0
			k.client.(*fake.Clientset).PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				lists++
				list := &corev1.PodList{}
				for _, p := range tc.fresh {
					list.Items = append(list.Items, *p)
				}
				return true, list, nil
			})
			last := time.Now().Add(-time.Minute)
			if got := k.maybeRecover(context.Background(), m, &last); got != tc.recover {
				t.Fatalf("recovered = %v, want %v", got, tc.recover)
			}
			if lists != 1 {
				t.Errorf("%d fresh lists, want 1", lists)
			}
		})
	}

	// While the cache holds a majority of the voters' pods, no list is made at all.
	m, k := revMember(t, []string{a, b, c}, revPod("a", "10.0.0.1", false), revPod("b", "10.0.0.2", false))
	lists := 0
	k.client.(*fake.Clientset).PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		lists++
		return false, nil, nil
	})
	last := time.Now().Add(-time.Minute)
	if k.maybeRecover(context.Background(), m, &last) || lists != 0 {
		t.Errorf("with 2 of 3 voters' pods in the cache: recovered or listed the pods (%d lists)", lists)
	}
}
