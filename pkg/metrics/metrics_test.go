package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
)

func TestMetricsFollowTheMembersState(t *testing.T) {
	m := New("c1")
	now := time.Now()
	m.now = func() time.Time { return now }
	m.Observe(node.Status{ID: "a", State: raft.StateFollower, Voters: 3})
	m.Observe(node.Status{ID: "a", Term: 1, State: raft.StatePreCandidate, Voters: 3})
	m.Observe(node.Status{ID: "a", Term: 2, State: raft.StateCandidate, Voters: 3})
	m.Observe(node.Status{ID: "a", Term: 2, State: raft.StateLeader, Leader: "a", Voters: 3,
		LeaseExpiresAt: now.Add(250 * time.Millisecond), Reachable: []string{"b"}})
	if got := testutil.ToFloat64(m.term); got != 2 {
		t.Fatalf("term %v", got)
	}
	if got := testutil.ToFloat64(m.isLeader); got != 1 {
		t.Fatalf("is_leader %v while holding the lease", got)
	}
	if got := testutil.ToFloat64(m.elections.WithLabelValues("won")); got != 1 {
		t.Fatalf("elections won %v", got)
	}
	if got := testutil.ToFloat64(m.leaderChanges); got != 1 {
		t.Fatalf("leader changes %v", got)
	}
	if got := testutil.ToFloat64(m.state.WithLabelValues("leader")); got != 1 {
		t.Fatalf("state leader %v", got)
	}
	if got := testutil.ToFloat64(m.peers.WithLabelValues("reachable")); got != 2 {
		t.Fatalf("reachable %v", got)
	}
	m.ObserveRPC("append-entries", 200, 3*time.Millisecond)
	m.ObserveRPC("request-vote", 0, 0)
	m.ObserveServed("append-entries", 400)

	// Past the lease the gauges say so without a new observation.
	now = now.Add(time.Second)
	if got := testutil.ToFloat64(m.isLeader); got != 0 {
		t.Fatalf("is_leader %v after the lease", got)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"raft_elector_is_leader 0", "raft_elector_term 2", `raft_elector_state{state="leader"} 1`,
		`raft_elector_elections_total{result="won"} 1`, `raft_elector_rpc_requests_total{code="0",rpc="request-vote"} 1`,
		`raft_elector_rpc_served_total{code="400",rpc="append-entries"} 1`, "raft_elector_heartbeat_rtt_seconds_count 1",
		"raft_elector_lease_remaining_seconds 0", `leader_election_master_status{name="c1"} 0`,
		"go_goroutines", "process_resident_memory_bytes", `raft_elector_peers{role="voter"} 3`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestLeaderChangesCountLeaderships: a leadership is a leader and its term. A failover counts
// once on a member that sees it (not once for losing the leader and once for the successor),
// losing sight of the leader and hearing from it again in the same term counts nothing, and
// the same member leading again in a newer term counts.
func TestLeaderChangesCountLeaderships(t *testing.T) {
	m := New("c1")
	steps := []struct {
		st   node.Status
		want float64
	}{
		{node.Status{ID: "b", State: raft.StateFollower}, 0},
		{node.Status{ID: "b", Term: 1, State: raft.StateFollower, Leader: "a"}, 1},
		// a's heartbeats stop: b pre-votes, hears from a again in the same term.
		{node.Status{ID: "b", Term: 1, State: raft.StatePreCandidate}, 1},
		{node.Status{ID: "b", Term: 1, State: raft.StateFollower, Leader: "a"}, 1},
		// a dies: b pre-votes, campaigns and wins.
		{node.Status{ID: "b", Term: 1, State: raft.StatePreCandidate}, 1},
		{node.Status{ID: "b", Term: 2, State: raft.StateCandidate}, 1},
		{node.Status{ID: "b", Term: 2, State: raft.StateLeader, Leader: "b"}, 2},
		// b loses its majority and steps down, then wins again in a newer term.
		{node.Status{ID: "b", Term: 2, State: raft.StateFollower}, 2},
		{node.Status{ID: "b", Term: 3, State: raft.StateLeader, Leader: "b"}, 3},
		// c takes over in term 4.
		{node.Status{ID: "b", Term: 4, State: raft.StateFollower}, 3},
		{node.Status{ID: "b", Term: 4, State: raft.StateFollower, Leader: "c"}, 4},
	}
	for i, s := range steps {
		m.Observe(s.st)
		if got := testutil.ToFloat64(m.leaderChanges); got != s.want {
			t.Fatalf("step %d (%s term %d leader %q): leader_changes_total %v, want %v", i, s.st.State, s.st.Term, s.st.Leader, got, s.want)
		}
	}
	if got := testutil.ToFloat64(m.elections.WithLabelValues("won")); got != 2 {
		t.Errorf("elections won %v, want 2", got)
	}
}
