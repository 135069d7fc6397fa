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
