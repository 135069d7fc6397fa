package node

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/membership"
	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/pkg/transport"
)

// runMembers starts one member per id on an in-memory network: the first bootstraps with
// itself as the only voter, the others start with no configuration, as in Kubernetes mode.
func runMembers(t *testing.T, ids []string, maxVoters int) (map[string]*Node, *transport.Network, context.CancelFunc) {
	t.Helper()
	net := transport.NewNetwork(transport.WithSeed(1))
	ctx, cancel := context.WithCancel(context.Background())
	var logs lockedBuffer
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &logs})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("member logs:\n%s", logs.String())
		}
	})
	nodes := map[string]*Node{}
	for i, id := range ids {
		s, err := OpenStorage(t.TempDir(), "c1", id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		var voters []string
		if i == 0 {
			voters = []string{id}
		}
		n, err := New(Config{ID: id, Cluster: "c1", Voters: voters, MaxVoters: maxVoters, HeartbeatInterval: 20 * time.Millisecond,
			ElectionTimeout: 400 * time.Millisecond, Storage: s, Seed: int64(i + 1), Logger: logger.Named(id)})
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = n
		tr := net.Join(id, n)
		go n.Run(ctx, tr)
	}
	t.Cleanup(func() {
		cancel()
		for _, n := range nodes {
			<-n.Done()
		}
		net.Close()
	})
	return nodes, net, cancel
}

func pods(ids ...string) []membership.Pod {
	out := make([]membership.Pod, len(ids))
	for i, id := range ids {
		out[i] = membership.Pod{ID: id}
	}
	return out
}

func setPods(t *testing.T, nodes map[string]*Node, alive []membership.Pod) {
	t.Helper()
	for _, n := range nodes {
		if err := n.SetPods(context.Background(), alive); err != nil {
			t.Fatal(err)
		}
	}
}

func leaderOf(nodes map[string]*Node) (string, Status) {
	for id, n := range nodes {
		if st := n.Status(); st.State == raft.StateLeader && !st.Transferring {
			return id, st
		}
	}
	return "", Status{}
}

// everyoneUses reports whether every member in ids uses the same committed configuration
// with the given numbers of voters and learners.
func everyoneUses(nodes map[string]*Node, ids []string, voters, learners int) bool {
	var first raft.Configuration
	for i, id := range ids {
		st := nodes[id].Status()
		if len(st.Config.Voters) != voters || len(st.Config.Learners) != learners || st.Commit < st.ConfigIndex || st.Leader == "" {
			return false
		}
		if i == 0 {
			first = st.Config
		} else if !first.Equal(st.Config) {
			return false
		}
	}
	return true
}

func TestMembershipFollowsThePods(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e", "f", "g"}
	nodes, _, _ := runMembers(t, ids, 5)
	// Before any pod list: a alone leads, the others wait with no configuration.
	waitFor(t, "a to lead alone", 5*time.Second, func() bool { id, _ := leaderOf(nodes); return id == "a" })
	if st := nodes["b"].Status(); st.State != raft.StateLearner || !st.Config.IsEmpty() {
		t.Fatalf("b before being added: %+v", st)
	}
	setPods(t, nodes, pods(ids...))
	waitFor(t, "5 voters and 2 learners everywhere", 10*time.Second, func() bool { return everyoneUses(nodes, ids, 5, 2) })

	// Scale down to b, c: the leader (a, its pod gone) hands over; the others are removed.
	setPods(t, nodes, pods("b", "c"))
	waitFor(t, "b and c alone, both voters", 10*time.Second, func() bool { return everyoneUses(nodes, []string{"b", "c"}, 2, 0) })
	id, st := leaderOf(nodes)
	if id != "b" && id != "c" {
		t.Fatalf("leader %q after the scale-down (%+v)", id, st)
	}
	if slices.Contains(st.Config.Voters, "a") {
		t.Fatalf("a, whose pod is gone, is still a voter: %v", st.Config)
	}
}

func TestUnreachableVoterIsNotRemoved(t *testing.T) {
	ids := []string{"a", "b", "c"}
	nodes, net, _ := runMembers(t, ids, 5)
	setPods(t, nodes, pods(ids...))
	waitFor(t, "3 voters", 10*time.Second, func() bool { return everyoneUses(nodes, ids, 3, 0) })
	lead, _ := leaderOf(nodes)
	var other string
	for _, id := range ids {
		if id != lead {
			other = id
			break
		}
	}
	net.Isolate(other)
	// A bounded observation: the voter stays while its pod is alive.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, st := leaderOf(nodes); st.ID != "" && !slices.Contains(st.Config.Voters, other) {
			t.Fatalf("unreachable voter %s removed: %v", other, st.Config)
		}
	}
	// Its pod goes away: now it is removed.
	var rest []string
	for _, id := range ids {
		if id != other {
			rest = append(rest, id)
		}
	}
	setPods(t, nodes, pods(rest...))
	waitFor(t, fmt.Sprintf("%s removed", other), 10*time.Second, func() bool { return everyoneUses(nodes, rest, 2, 0) })
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLeavingIsRecomputedFromEveryPodList(t *testing.T) {
	// One list without a's own pod (its IP not yet written when the informer synced, say),
	// then the right one: a must not keep handing leadership away.
	ids := []string{"a", "b", "c"}
	nodes, _, _ := runMembers(t, ids, 5)
	waitFor(t, "a to lead alone", 5*time.Second, func() bool { id, _ := leaderOf(nodes); return id == "a" })
	if err := nodes["a"].SetPods(context.Background(), pods("b", "c")); err != nil {
		t.Fatal(err)
	}
	setPods(t, nodes, pods(ids...))
	waitFor(t, "3 voters", 10*time.Second, func() bool { return everyoneUses(nodes, ids, 3, 0) })
	// A bounded observation, not a synchronisation: a keeps leading.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if id, _ := leaderOf(nodes); id != "a" && id != "" {
			t.Fatalf("leader is %q: a handed over although its pod is alive", id)
		}
	}
}

func TestPodsUnknownLeaveTheConfigurationAlone(t *testing.T) {
	ids := []string{"a", "b", "c"}
	nodes, _, _ := runMembers(t, ids, 5)
	setPods(t, nodes, pods(ids...))
	waitFor(t, "3 voters", 10*time.Second, func() bool { return everyoneUses(nodes, ids, 3, 0) })
	// The watch fails (nil: unknown): nothing is removed although no pod is listed.
	for _, n := range nodes {
		if err := n.SetPods(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, st := leaderOf(nodes); st.ID != "" && len(st.Config.Voters) != 3 {
			t.Fatalf("configuration changed while the pods were unknown: %v", st.Config)
		}
	}
}
