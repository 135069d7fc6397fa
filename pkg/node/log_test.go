package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/pkg/transport"
)

func TestReasonNamesTheTransition(t *testing.T) {
	f, pc, c, l, lr := raft.StateFollower, raft.StatePreCandidate, raft.StateCandidate, raft.StateLeader, raft.StateLearner
	st := func(s raft.StateType, term uint64, leader string) Status {
		return Status{State: s, Term: term, Leader: leader}
	}
	transferring := st(l, 3, "a")
	transferring.Transferring = true
	for _, tc := range []struct {
		old, new Status
		want     string
	}{
		{st(f, 3, "b"), st(pc, 3, ""), "no heartbeat from the leader for an election timeout: pre-vote"},
		{st(f, 0, ""), st(pc, 0, ""), "election timeout: pre-vote"},
		{st(pc, 3, ""), st(c, 4, ""), "won the pre-vote: campaigning"},
		{st(c, 4, ""), st(pc, 4, ""), "election timeout without a winner: pre-vote again"},
		{st(c, 4, ""), st(c, 5, ""), "election timeout without a winner: campaigning again"},
		{st(f, 3, "b"), st(c, 4, ""), "asked by the leader to take over (timeout-now)"},
		{st(c, 4, ""), st(l, 4, "a"), "won the election"},
		{st(f, 0, ""), st(l, 1, "a"), "won the election"},
		{st(pc, 3, ""), st(f, 3, ""), "pre-vote refused by a majority"},
		{st(c, 4, ""), st(f, 4, ""), "vote refused by a majority"},
		{st(c, 4, ""), st(f, 4, "b"), "heard from the leader"},
		{st(f, 3, ""), st(f, 3, "b"), "heard from the leader"},
		{st(f, 3, "b"), st(f, 4, ""), "saw a higher term"},
		{st(f, 3, "b"), st(f, 4, "c"), "heard from the leader of a newer term"},
		{st(l, 3, "a"), transferring, "handing over leadership"},
		{transferring, st(f, 3, ""), "stepped down: the handover found no successor within an election timeout"},
		{transferring, st(f, 4, "b"), "stepped down: saw a higher term"},
		{st(l, 3, "a"), st(f, 3, ""), "stepped down: no majority acknowledged a heartbeat round for an election timeout (check-quorum)"},
		{st(l, 3, "a"), st(lr, 3, ""), "stepped down: no longer a voter"},
		{st(f, 3, "b"), st(lr, 3, "b"), "no longer a voter: now a learner"},
		{st(lr, 3, "b"), st(f, 3, "b"), "promoted to voter"},
		{st(lr, 3, "b"), st(lr, 3, ""), "no heartbeat from the leader for an election timeout"},
	} {
		if got := reason(tc.old, tc.new); got != tc.want {
			t.Errorf("%v/%d/%q -> %v/%d/%q: reason %q, want %q", tc.old.State, tc.old.Term, tc.old.Leader,
				tc.new.State, tc.new.Term, tc.new.Leader, got, tc.want)
		}
	}
}

// logLine is one JSON log line of a member.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

func parseLog(t *testing.T, id string, b *lockedBuffer) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s: log line is not JSON: %q: %v", id, sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

func hasLine(t *testing.T, id string, b *lockedBuffer, msg string) bool {
	for _, l := range parseLog(t, id, b) {
		if l.str("@message") == msg {
			return true
		}
	}
	return false
}

// TestLogOneInfoLinePerChangeNonePerHeartbeat runs three members on the in-memory network with
// an info-level JSON logger: the steady state writes nothing, every change of role, term or
// leader writes exactly one line with its term, leader and reason, and so does a lease that
// lapses and comes back while the leader keeps its role.
func TestLogOneInfoLinePerChangeNonePerHeartbeat(t *testing.T) {
	ids := []string{"a", "b", "c"}
	net := transport.NewNetwork(transport.WithSeed(1))
	ctx, cancel := context.WithCancel(context.Background())
	logs := map[string]*lockedBuffer{}
	nodes := map[string]*Node{}
	for i, id := range ids {
		s, err := OpenStorage(t.TempDir(), "c1", id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		logs[id] = &lockedBuffer{}
		logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, JSONFormat: true, Output: logs[id]})
		// A long election timeout next to 50ms heartbeats: a lease (3 heartbeats) can lapse
		// and come back well before a follower campaigns.
		n, err := New(Config{ID: id, Cluster: "c1", Voters: ids, HeartbeatInterval: 50 * time.Millisecond,
			ElectionTimeout: time.Second, Storage: s, Seed: int64(i + 1), Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = n
		go n.Run(ctx, net.Join(id, n))
	}
	t.Cleanup(func() {
		cancel()
		for _, n := range nodes {
			<-n.Done()
		}
		net.Close()
		if t.Failed() {
			for _, id := range ids {
				t.Logf("log of %s:\n%s", id, logs[id].String())
			}
		}
	})
	agreed := func() string {
		lead, st := leaderOf(nodes)
		if lead == "" || !st.HoldsLease(time.Now()) {
			return ""
		}
		for _, n := range nodes {
			if n.Status().Leader != lead {
				return ""
			}
		}
		return lead
	}
	var lead string
	waitFor(t, "a leader every member names", 10*time.Second, func() bool { lead = agreed(); return lead != "" })

	// Steady state: 25 heartbeat rounds renew the lease and change nothing else.
	before := map[string]int{}
	for _, id := range ids {
		before[id] = len(parseLog(t, id, logs[id]))
	}
	ln := nodes[lead]
	deadline := time.After(10 * time.Second)
	for renewals, last := 0, ln.Status().LeaseExpiresAt; renewals < 25; {
		ch := ln.Changed()
		if st := ln.Status(); st.LeaseExpiresAt.After(last) {
			renewals, last = renewals+1, st.LeaseExpiresAt
			continue
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("only %d lease renewals in 10s", renewals)
		}
	}
	for _, id := range ids {
		if lines := parseLog(t, id, logs[id]); len(lines) != before[id] {
			t.Errorf("%s logged %d lines in the steady state, want none: %v", id, len(lines)-before[id], lines[before[id]:])
		}
	}

	// The leader's lease lapses while it keeps leading, then comes back.
	net.Isolate(lead)
	waitFor(t, lead+` to log "lease lost"`, 5*time.Second, func() bool { return hasLine(t, lead, logs[lead], "lease lost") })
	net.Reconnect(lead)
	waitFor(t, lead+` to log "lease regained"`, 5*time.Second, func() bool { return hasLine(t, lead, logs[lead], "lease regained") })

	// Cut off for good, it steps down (check-quorum) and the others elect a new leader.
	net.Isolate(lead)
	old := lead
	waitFor(t, "a new leader", 15*time.Second, func() bool {
		l, st := leaderOf(nodes)
		return l != "" && l != old && st.HoldsLease(time.Now()) && nodes[old].Status().State != raft.StateLeader
	})

	for _, id := range ids {
		var prev logLine
		changes := 0
		for _, l := range parseLog(t, id, logs[id]) {
			msg := l.str("@message")
			if l.str("@level") != "info" {
				t.Errorf("%s: %s line at an info-level logger: %v", id, l.str("@level"), l)
			}
			switch msg {
			case "state changed", "lease lost", "lease regained":
			default:
				continue
			}
			for _, k := range []string{"term", "leader", "reason", "state"} {
				if _, ok := l[k]; !ok {
					t.Errorf("%s: %q line without %s: %v", id, msg, k, l)
				}
			}
			if msg != "state changed" {
				continue
			}
			changes++
			// One line per change: each starts where the previous one ended, and none
			// repeats its predecessor.
			if prev != nil {
				if l.str("from_state") != prev.str("state") {
					t.Errorf("%s: %v follows %v: a change was not logged", id, l, prev)
				}
				if l.str("state") == prev.str("state") && l["term"] == prev["term"] && l.str("leader") == prev.str("leader") {
					t.Errorf("%s: %v repeats %v", id, l, prev)
				}
			}
			prev = l
		}
		if changes == 0 {
			t.Errorf("%s logged no state change", id)
		}
	}
	lines := parseLog(t, old, logs[old])
	var seq []string
	for _, l := range lines {
		switch m := l.str("@message"); m {
		case "lease lost", "lease regained":
			seq = append(seq, m)
		case "state changed":
			seq = append(seq, fmt.Sprintf("%s (%s)", l.str("state"), l.str("reason")))
		}
	}
	got := strings.Join(seq, ", ")
	for _, want := range []string{"leader (won the election), lease lost, lease regained, lease lost, follower (stepped down: no majority acknowledged"} {
		if !strings.Contains(got, want) {
			t.Errorf("%s logged %s; want it to contain %s", old, got, want)
		}
	}
}
