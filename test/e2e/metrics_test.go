package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// exposition is one scrape of a member's /metrics, parsed.
type exposition map[string]*dto.MetricFamily

// scrapeMetrics reads member i's /metrics over HTTP and parses the text exposition format.
func (c *Cluster) scrapeMetrics(i int) (exposition, error) {
	m := c.Members[i]
	code, body, err := c.get(m.OpsAddr(), "/metrics", 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", m.ID, err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: status %d: %s", m.ID, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", m.ID, err)
	}
	return exposition(mfs), nil
}

// value returns the value of the one sample of name whose labels include match (a
// histogram's sample count); ok is false when there is none, and the test fails when several
// match.
func (e exposition) value(t testing.TB, name string, match map[string]string) (float64, bool) {
	t.Helper()
	mf, ok := e[name]
	if !ok {
		return 0, false
	}
	var out []float64
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		matched := true
		for k, v := range match {
			matched = matched && labels[k] == v
		}
		if !matched {
			continue
		}
		switch {
		case m.Gauge != nil:
			out = append(out, m.Gauge.GetValue())
		case m.Counter != nil:
			out = append(out, m.Counter.GetValue())
		case m.Histogram != nil:
			out = append(out, float64(m.Histogram.GetSampleCount()))
		case m.Untyped != nil:
			out = append(out, m.Untyped.GetValue())
		}
	}
	switch len(out) {
	case 0:
		return 0, false
	case 1:
		return out[0], true
	}
	t.Fatalf("%d samples of %s match %v", len(out), name, match)
	return 0, false
}

// must is value for a sample that has to exist.
func (e exposition) must(t testing.TB, member, name string, match map[string]string) float64 {
	t.Helper()
	v, ok := e.value(t, name, match)
	if !ok {
		t.Fatalf("%s /metrics has no %s%v", member, name, match)
	}
	return v
}

// labelValues lists the values label takes in name's samples.
func (e exposition) labelValues(name, label string) []string {
	var out []string
	for _, m := range e[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				out = append(out, lp.GetValue())
			}
		}
	}
	sort.Strings(out)
	return out
}

// scrapeWithAnswer scrapes member i's /metrics between two GET /leader answers and retries
// until both answers carry the same index: the answer did not change across the scrape, so
// the metrics and the answer describe the same state.
func (c *Cluster) scrapeWithAnswer(t testing.TB, i int) (exposition, Answer) {
	t.Helper()
	m := c.Members[i]
	var last string
	for attempt := 0; attempt < 20; attempt++ {
		before, err := c.Query(i, "/leader", "metrics", time.Second)
		if err != nil {
			last = err.Error()
			continue
		}
		e, err := c.scrapeMetrics(i)
		if err != nil {
			last = err.Error()
			continue
		}
		after, err := c.Query(i, "/leader", "metrics", time.Second)
		if err != nil {
			last = err.Error()
			continue
		}
		if before.Answer.Index == after.Answer.Index {
			return e, after.Answer
		}
		last = fmt.Sprintf("answer changed during the scrape: index %d -> %d", before.Answer.Index, after.Answer.Index)
	}
	t.Fatalf("%s: no scrape between two equal answers in 20 attempts: %s", m.ID, last)
	return nil, Answer{}
}

// TestMetricsMatchTheLeaderAnswers scrapes every member of a real 3-member cluster over HTTP
// and checks the metrics against what the same members answer on GET /leader, before and
// after the leader is killed.
func TestMetricsMatchTheLeaderAnswers(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	leaderID := c.Members[l].ID

	scrapes := map[int]exposition{}
	var cluster string
	sumLeader := 0.0
	for _, i := range c.All() {
		id := c.Members[i].ID
		e, a := c.scrapeWithAnswer(t, i)
		scrapes[i] = e
		isLeader := e.must(t, id, "raft_elector_is_leader", nil)
		sumLeader += isLeader
		if want := map[bool]float64{true: 1, false: 0}[a.IsLeader]; isLeader != want {
			t.Errorf("%s: raft_elector_is_leader %v, /leader says isLeader %v", id, isLeader, a.IsLeader)
		}
		if got := e.must(t, id, "raft_elector_term", nil); got != float64(a.Term) {
			t.Errorf("%s: raft_elector_term %v, /leader says term %d", id, got, a.Term)
		}
		if a.Term != term {
			t.Errorf("%s: /leader term %d, the agreed term was %d", id, a.Term, term)
		}
		for _, s := range []string{"leader", "follower", "candidate", "learner"} {
			want := map[bool]float64{true: 1, false: 0}[s == a.State]
			if got := e.must(t, id, "raft_elector_state", map[string]string{"state": s}); got != want {
				t.Errorf("%s: raft_elector_state{state=%q} %v, /leader says state %q", id, s, got, a.State)
			}
		}
		if got := e.must(t, id, "raft_elector_state", map[string]string{"state": "leader"}); (got == 1) != (i == l) {
			t.Errorf("%s: raft_elector_state{state=\"leader\"} %v; the leader is %s", id, got, leaderID)
		}
		// client-go's metric agrees with ours, and names one election for the whole cluster.
		names := e.labelValues("leader_election_master_status", "name")
		if len(names) != 1 {
			t.Fatalf("%s: leader_election_master_status names %v, want one election", id, names)
		}
		if cluster == "" {
			cluster = names[0]
		} else if names[0] != cluster {
			t.Errorf("%s: leader_election_master_status{name=%q}, another member says %q", id, names[0], cluster)
		}
		if got := e.must(t, id, "leader_election_master_status", map[string]string{"name": names[0]}); got != isLeader {
			t.Errorf("%s: leader_election_master_status %v, raft_elector_is_leader %v", id, got, isLeader)
		}
		if got := e.must(t, id, "raft_elector_peers", map[string]string{"role": "voter"}); got != 3 {
			t.Errorf("%s: raft_elector_peers{role=\"voter\"} %v, want 3", id, got)
		}
		if got := e.must(t, id, "raft_elector_peers", map[string]string{"role": "learner"}); got != 0 {
			t.Errorf("%s: raft_elector_peers{role=\"learner\"} %v, want 0", id, got)
		}
		// The leader counts itself among the reachable voters; the others report none.
		wantReachable := map[bool]float64{true: 3, false: 0}[i == l]
		if got := e.must(t, id, "raft_elector_peers", map[string]string{"role": "reachable"}); got != wantReachable {
			t.Errorf("%s: raft_elector_peers{role=\"reachable\"} %v, want %v", id, got, wantReachable)
		}
		lease := e.must(t, id, "raft_elector_lease_remaining_seconds", nil)
		switch {
		case !a.IsLeader && lease != 0:
			t.Errorf("%s: raft_elector_lease_remaining_seconds %v without the lease", id, lease)
		case lease < 0 || lease > (3*fast.Heartbeat).Seconds():
			// The reported lease is 3 heartbeat intervals from an acknowledged round.
			t.Errorf("%s: raft_elector_lease_remaining_seconds %v, want within [0, %v]", id, lease, (3 * fast.Heartbeat).Seconds())
		}
		for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "raft_elector_leader_changes_total"} {
			e.must(t, id, name, nil)
		}
		e.must(t, id, "raft_elector_heartbeat_rtt_seconds", nil)
		if e["raft_elector_heartbeat_rtt_seconds"].GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("%s: raft_elector_heartbeat_rtt_seconds is a %v", id, e["raft_elector_heartbeat_rtt_seconds"].GetType())
		}
		for _, r := range []string{"won", "lost", "prevote_failed"} {
			e.must(t, id, "raft_elector_elections_total", map[string]string{"result": r})
		}
	}
	if sumLeader != 1 {
		t.Errorf("raft_elector_is_leader sums to %v over the cluster, want 1", sumLeader)
	}
	le := scrapes[l]
	if ok := le.must(t, leaderID, "raft_elector_rpc_requests_total", map[string]string{"rpc": "append-entries", "code": "200"}); ok < 1 {
		t.Errorf("%s: raft_elector_rpc_requests_total{rpc=\"append-entries\",code=\"200\"} %v", leaderID, ok)
	}
	if won := le.must(t, leaderID, "raft_elector_elections_total", map[string]string{"result": "won"}); won < 1 {
		t.Errorf("%s leads with raft_elector_elections_total{result=\"won\"} %v", leaderID, won)
	}

	// The leader keeps heartbeating: its round-trip histogram grows between two scrapes.
	rtt0 := le.must(t, leaderID, "raft_elector_heartbeat_rtt_seconds", nil)
	if rtt0 < 1 {
		t.Errorf("%s: no heartbeat round trip observed yet", leaderID)
	}
	c.WaitUntil(5*time.Second, leaderID+"'s heartbeat_rtt_seconds_count to grow", func() bool {
		e, err := c.scrapeMetrics(l)
		return err == nil && e.must(t, leaderID, "raft_elector_heartbeat_rtt_seconds", nil) > rtt0
	})

	// Kill the leader: a survivor takes over in a higher term, and the counters say so.
	survivors := c.Except(l)
	before := map[int]exposition{}
	for _, i := range survivors {
		e, err := c.scrapeMetrics(i)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = e
	}
	c.Kill(l)
	l2, term2, _ := c.WaitAgreedLeader(survivors, leaderWithin)
	newID := c.Members[l2].ID
	if term2 <= term {
		t.Fatalf("new leader %s in term %d, not above %d", newID, term2, term)
	}
	sumLeader = 0
	for _, i := range survivors {
		id := c.Members[i].ID
		e, a := c.scrapeWithAnswer(t, i)
		isLeader := e.must(t, id, "raft_elector_is_leader", nil)
		sumLeader += isLeader
		if (isLeader == 1) != a.IsLeader || (isLeader == 1) != (i == l2) {
			t.Errorf("%s: raft_elector_is_leader %v, /leader isLeader %v; the new leader is %s", id, isLeader, a.IsLeader, newID)
		}
		gotTerm := e.must(t, id, "raft_elector_term", nil)
		if gotTerm != float64(a.Term) || gotTerm <= float64(term) {
			t.Errorf("%s: raft_elector_term %v, /leader term %d, the killed leader's term %d", id, gotTerm, a.Term, term)
		}
		b := before[i]
		changes0 := b.must(t, id, "raft_elector_leader_changes_total", nil)
		changes := e.must(t, id, "raft_elector_leader_changes_total", nil)
		if changes <= changes0 {
			t.Errorf("%s: raft_elector_leader_changes_total %v -> %v across a failover", id, changes0, changes)
		}
		c.Logf("%s: leader_changes_total %v -> %v, term %v", id, changes0, changes, gotTerm)
		if i == l2 {
			won0 := b.must(t, id, "raft_elector_elections_total", map[string]string{"result": "won"})
			won := e.must(t, id, "raft_elector_elections_total", map[string]string{"result": "won"})
			if won <= won0 {
				t.Errorf("%s leads: raft_elector_elections_total{result=\"won\"} %v -> %v", id, won0, won)
			}
		}
	}
	if sumLeader != 1 {
		t.Errorf("raft_elector_is_leader sums to %v over the survivors, want 1", sumLeader)
	}
	if t.Failed() {
		var sb strings.Builder
		for _, i := range survivors {
			e, err := c.scrapeMetrics(i)
			if err != nil {
				continue
			}
			for _, name := range []string{"raft_elector_term", "raft_elector_is_leader", "raft_elector_leader_changes_total"} {
				v, _ := e.value(t, name, nil)
				fmt.Fprintf(&sb, "\n  %s %s %v", c.Members[i].ID, name, v)
			}
		}
		t.Logf("survivors' metrics now:%s", sb.String())
	}
}
