package main

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

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
	const cluster = "k8s-x-g1-abc"
	self := revID("a")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "boot", Namespace: revNS, ResourceVersion: "7"},
		Data: map[string]string{bootstrap.KeyCluster: cluster, bootstrap.KeyGeneration: "1", bootstrap.KeyBootstrapper: self}}
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
	log := raft.LogState{Snapshot: raft.Snapshot{Index: 5, Term: 3, Config: raft.Configuration{Voters: voters}}}
	if err := st.Save(raft.HardState{Term: 3}, log); err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{ID: self, Cluster: cluster, HeartbeatInterval: 100 * time.Millisecond,
		ElectionTimeout: time.Second, Storage: st})
	if err != nil {
		t.Fatal(err)
	}
	c := &config{ID: self, RecoverAfter: 10 * time.Second, ElectionTimeout: time.Second}
	m := &member{cfg: c, log: hclog.NewNullLogger(), node: n, replaced: make(chan bootstrap.Record, 1)}
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
