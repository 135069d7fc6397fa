package raft

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

// Test timings: E=10, heartbeat 2, lease MaxLeaseTicks(10, 0.05)=8, app lease 6.
const (
	testE  = 10
	testHB = 2
)

// fixedRand always returns the same offset, so timeouts are exact.
type fixedRand int

func (f fixedRand) Intn(n int) int { return int(f) % n }

func testConfig(id string, voters ...string) Config {
	return Config{ID: id, Cluster: "c1", Voters: voters, ElectionTicks: testE, HeartbeatTicks: testHB, Rand: fixedRand(0)}
}

// pastStartGuard ticks a fresh member through the minimum election timeout after its start,
// during which it refuses every vote (it may have acknowledged a round before a crash). Its
// own timeout must be longer (Rand offset > 0).
func pastStartGuard(t *testing.T, r *Raft) {
	t.Helper()
	for i := 0; i < testE; i++ {
		r.Tick()
	}
	if r.state != StateFollower {
		t.Fatalf("member campaigned during the start guard: %v", r.state)
	}
	r.Ready()
}

func newTestRaft(t *testing.T, c Config) *Raft {
	t.Helper()
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// network is a synchronous in-memory network of cores for rule tests.
type network struct {
	t     *testing.T
	nodes map[string]*Raft
	ids   []string
	cut   map[[2]string]bool
	log   []string // every delivered message, for failure output
	// disk is each member's persisted hard state and log, as the runtime would write them.
	disk  map[string]HardState
	disks map[string]LogState
}

func newNetwork(t *testing.T, ids ...string) *network {
	n := &network{t: t, nodes: map[string]*Raft{}, ids: ids, cut: map[[2]string]bool{}, disk: map[string]HardState{}, disks: map[string]LogState{}}
	for i, id := range ids {
		c := testConfig(id, ids...)
		// Distinct timeouts: member i times out after E+i ticks.
		c.Rand = fixedRand(i)
		n.nodes[id] = newTestRaft(t, c)
	}
	return n
}

func (n *network) isolate(id string) {
	for _, o := range n.ids {
		if o != id {
			n.cut[[2]string{id, o}] = true
			n.cut[[2]string{o, id}] = true
		}
	}
}

func (n *network) healAll() { n.cut = map[[2]string]bool{} }

// settle delivers messages until none are left.
func (n *network) settle() {
	for i := 0; i < 1000; i++ {
		var msgs []Message
		for _, id := range n.ids {
			rd := n.nodes[id].Ready()
			if rd.MustPersist {
				n.disk[id] = rd.HardState
				n.disks[id] = rd.Log
			}
			msgs = append(msgs, rd.Messages...)
		}
		if len(msgs) == 0 {
			return
		}
		for _, m := range msgs {
			if n.cut[[2]string{m.From, m.To}] {
				continue
			}
			n.log = append(n.log, fmt.Sprintf("%s->%s %s t%d pre=%v rej=%v", m.From, m.To, m.Type, m.Term, m.PreVote, m.Reject))
			if err := n.nodes[m.To].Step(m); err != nil {
				n.t.Fatalf("step %+v: %v", m, err)
			}
		}
	}
	n.t.Fatal("network did not settle")
}

// tick advances every member by k ticks, settling after each.
func (n *network) tick(k int) {
	for i := 0; i < k; i++ {
		for _, id := range n.ids {
			n.nodes[id].Tick()
		}
		n.settle()
	}
}

func (n *network) leaders() []string {
	var out []string
	for _, id := range n.ids {
		if n.nodes[id].state == StateLeader {
			out = append(out, id)
		}
	}
	return out
}

func (n *network) dump() string { return strings.Join(n.log, "\n") }

func TestSingleMemberElectsItselfAndHoldsLease(t *testing.T) {
	r := newTestRaft(t, testConfig("a", "a"))
	for i := 0; i < testE; i++ {
		r.Tick()
	}
	st := r.Status()
	if st.State != StateLeader || st.Term != 1 || !st.HoldsLease() {
		t.Fatalf("status %+v: want leader of term 1 with lease", st)
	}
	if rd := r.Ready(); !rd.MustPersist || rd.HardState != (HardState{Term: 1, Vote: "a"}) {
		t.Fatalf("ready %+v: want term 1 vote a persisted", rd)
	}
}

func TestInitialElectionElectsOneLeader(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	if l := n.leaders(); len(l) != 1 || l[0] != "a" {
		t.Fatalf("leaders %v, want [a]\n%s", l, n.dump())
	}
	for _, id := range n.ids {
		if st := n.nodes[id].Status(); st.Leader != "a" || st.Term != 1 {
			t.Fatalf("%s: %+v, want leader a term 1", id, st)
		}
	}
	// The lease comes with the first acknowledged heartbeat round.
	if !n.nodes["a"].Status().HoldsLease() {
		t.Fatal("leader holds no lease after its round was acknowledged")
	}
}

func TestTermStaysPutWithoutFailures(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	n.tick(20 * testE)
	for _, id := range n.ids {
		if st := n.nodes[id].Status(); st.Term != 1 || st.Leader != "a" {
			t.Fatalf("%s: %+v after a quiet period, want term 1 leader a", id, st)
		}
	}
}

func TestOneVotePerTerm(t *testing.T) {
	c := testConfig("c", "a", "b", "c")
	c.Rand = fixedRand(9)
	r := newTestRaft(t, c)
	pastStartGuard(t, r)
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "a", To: "c", Term: 1, LastLogIndex: 1})
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "b", To: "c", Term: 1, LastLogIndex: 1})
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "a", To: "c", Term: 1, LastLogIndex: 1}) // repeat: granted again
	rd := r.Ready()
	var got []string
	for _, m := range rd.Messages {
		got = append(got, fmt.Sprintf("%s:%v", m.To, !m.Reject))
	}
	if want := []string{"a:true", "b:false", "a:true"}; !slices.Equal(got, want) {
		t.Fatalf("votes %v, want %v", got, want)
	}
	if rd.HardState != (HardState{Term: 1, Vote: "a"}) || !rd.MustPersist {
		t.Fatalf("hard state %+v, want term 1 vote a to persist", rd.HardState)
	}
}

func TestDurableVoteSurvivesRestart(t *testing.T) {
	c := testConfig("c", "a", "b", "c")
	c.HardState = HardState{Term: 3, Vote: "a"}
	c.Rand = fixedRand(9)
	r := newTestRaft(t, c)
	pastStartGuard(t, r)
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "b", To: "c", Term: 3, LastLogIndex: 1})
	if rd := r.Ready(); len(rd.Messages) != 1 || !rd.Messages[0].Reject || rd.MustPersist {
		t.Fatalf("restarted member voted again in term 3: %+v", rd)
	}
}

func TestStepDownOnHigherTerm(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	a := n.nodes["a"]
	// An append-entries response of a higher term (a member that moved on) makes the leader
	// adopt the term, forget its vote, drop its lease and follow.
	if err := a.Step(Message{Type: MsgAppendResp, Cluster: "c1", From: "b", To: "a", Term: 5, Reject: true}); err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	if st.State != StateFollower || st.Term != 5 || st.Vote != None || st.LeaseUntil != 0 {
		t.Fatalf("status %+v: want follower of term 5, no vote, no lease", st)
	}
}

func TestRejectRequestOfStaleTerm(t *testing.T) {
	c := testConfig("b", "a", "b", "c")
	c.HardState = HardState{Term: 4}
	r := newTestRaft(t, c)
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "a", To: "b", Term: 3, LastLogIndex: 1})
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 3, Round: 7})
	rd := r.Ready()
	if len(rd.Messages) != 2 {
		t.Fatalf("messages %+v", rd.Messages)
	}
	for _, m := range rd.Messages {
		if !m.Reject || m.Term != 4 {
			t.Fatalf("reply %+v: want a rejection carrying term 4", m)
		}
	}
	if st := r.Status(); st.Leader != None || st.Term != 4 {
		t.Fatalf("stale leader accepted: %+v", st)
	}
}

func TestRandomizedTimeoutOnEveryReset(t *testing.T) {
	rng := &recordingRand{r: rand.New(rand.NewSource(1))}
	c := testConfig("b", "a", "b", "c")
	c.Rand = rng
	r := newTestRaft(t, c)
	draws := len(rng.draws) // the initial follower reset
	if draws != 1 {
		t.Fatalf("draws at start %d, want 1", draws)
	}
	// A heartbeat resets the timer: a new draw. A granted vote resets it too.
	for _, m := range []Message{
		{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 1, Round: 1},
		{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 1, Round: 2},
		{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 2, LastLogIndex: 1, Transfer: true},
	} {
		before := len(rng.draws)
		r.Step(m)
		if len(rng.draws) == before {
			t.Fatalf("%s reset the timer without drawing a new timeout", m.Type)
		}
	}
	for _, d := range rng.draws {
		if d.n != testE {
			t.Fatalf("drawn from [0,%d), want [0,%d): timeouts must come from [E, 2E)", d.n, testE)
		}
	}
	// The drawn timeout is the one used: the member campaigns after exactly E+draw ticks.
	want := testE + rng.draws[len(rng.draws)-1].v
	for i := 1; i <= want; i++ {
		r.Tick()
		if i < want && r.state != StateFollower {
			t.Fatalf("campaigned after %d ticks, want %d", i, want)
		}
	}
	if r.state != StatePreCandidate {
		t.Fatalf("state %v after %d ticks, want pre-candidate", r.state, want)
	}
}

type draw struct{ n, v int }

type recordingRand struct {
	r     *rand.Rand
	draws []draw
}

func (r *recordingRand) Intn(n int) int {
	v := r.r.Intn(n)
	r.draws = append(r.draws, draw{n, v})
	return v
}

func TestCandidateYieldsToValidLeader(t *testing.T) {
	c := testConfig("b", "a", "b", "c")
	c.DisablePreVote = true
	r := newTestRaft(t, c)
	for r.state != StateCandidate {
		r.Tick()
	}
	term := r.term
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: term, Round: 1})
	st := r.Status()
	if st.State != StateFollower || st.Leader != "a" || st.Term != term {
		t.Fatalf("status %+v: want follower of a in term %d", st, term)
	}
	if st.Vote != "b" {
		t.Fatalf("vote %q: stepping down in the same term must keep the vote for itself", st.Vote)
	}
}

func TestPreVoteDoesNotBumpTerms(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	// c is cut off, times out repeatedly, and returns: its pre-votes fail and nobody's term
	// moves, so the healthy leader is not disrupted.
	n.isolate("c")
	n.tick(5 * testE)
	if st := n.nodes["c"].Status(); st.Term != 1 || st.State != StatePreCandidate && st.State != StateFollower {
		t.Fatalf("isolated member %+v: pre-vote must not bump its term", st)
	}
	n.healAll()
	n.tick(2 * testE)
	for _, id := range n.ids {
		if st := n.nodes[id].Status(); st.Term != 1 || st.Leader != "a" {
			t.Fatalf("%s after c returned: %+v, want term 1 leader a\n%s", id, st, n.dump())
		}
	}
}

func TestPreVoteResponderKeepsState(t *testing.T) {
	c := testConfig("b", "a", "b", "c")
	c.HardState = HardState{Term: 2}
	c.Rand = fixedRand(9)
	r := newTestRaft(t, c)
	pastStartGuard(t, r)
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 3, LastLogIndex: 1, PreVote: true})
	rd := r.Ready()
	if rd.MustPersist || r.term != 2 || r.vote != None {
		t.Fatalf("pre-vote changed durable state: term %d vote %q", r.term, r.vote)
	}
	if len(rd.Messages) != 1 || rd.Messages[0].Reject || rd.Messages[0].Term != 3 || !rd.Messages[0].PreVote {
		t.Fatalf("reply %+v: want a granted pre-vote echoing term 3", rd.Messages)
	}
}

func TestFollowerInLeaseIgnoresVoteRequests(t *testing.T) {
	c := testConfig("b", "a", "b", "c")
	c.Rand = fixedRand(5) // its own timeout (15 ticks) stays out of the way
	r := newTestRaft(t, c)
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 1, Round: 1})
	r.Ready()
	for i := 0; i < testE-1; i++ {
		r.Tick()
		for _, pre := range []bool{true, false} {
			r.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 2, LastLogIndex: 1, PreVote: pre})
			rd := r.Ready()
			if len(rd.Messages) != 1 || !rd.Messages[0].Reject || r.term != 1 || r.vote != None || r.lead != "a" {
				t.Fatalf("tick %d pre=%v: in-lease follower must refuse and keep term/leader: %+v, term %d lead %q", i+1, pre, rd, r.term, r.lead)
			}
		}
	}
	// Once the minimum election timeout has passed since the heartbeat it votes again.
	r.Tick()
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 2, LastLogIndex: 1})
	if rd := r.Ready(); len(rd.Messages) != 1 || rd.Messages[0].Reject || r.term != 2 || r.vote != "c" {
		t.Fatalf("after the lease window: %+v term %d vote %q, want vote for c in term 2", rd.Messages, r.term, r.vote)
	}
}

func TestLeaderWithoutQuorumStepsDownAndDropsLease(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	a := n.nodes["a"]
	n.isolate("a")
	var lostLease, steppedDown int
	for i := 1; i <= 2*testE; i++ {
		n.tick(1)
		st := a.Status()
		if lostLease == 0 && !st.HoldsLease() {
			lostLease = i
		}
		if steppedDown == 0 && st.State != StateLeader {
			steppedDown = i
		}
	}
	if lostLease == 0 || steppedDown == 0 {
		t.Fatalf("isolated leader kept lease (%d) or leadership (%d)", lostLease, steppedDown)
	}
	if lostLease > a.leaseTicks || steppedDown > testE || lostLease > steppedDown {
		t.Fatalf("lost lease after %d ticks (limit %d), stepped down after %d (limit %d)", lostLease, a.leaseTicks, steppedDown, testE)
	}
	if st := a.Status(); st.LeaseUntil != 0 || st.Term != 1 {
		t.Fatalf("after stepping down: %+v", st)
	}
}

func TestLeaseStartsFromAcknowledgedRoundNotVotes(t *testing.T) {
	c := testConfig("a", "a", "b", "c")
	c.DisablePreVote = true
	r := newTestRaft(t, c)
	for r.state != StateCandidate {
		r.Tick()
	}
	r.Ready()
	r.Step(Message{Type: MsgVoteResp, Cluster: "c1", From: "b", To: "a", Term: 1})
	if r.state != StateLeader {
		t.Fatal("not elected")
	}
	if r.Status().HoldsLease() {
		t.Fatal("a leader holds a lease from its votes alone")
	}
	rd := r.Ready()
	var round uint64
	for _, m := range rd.Messages {
		if m.Type == MsgAppend {
			round = m.Round
		}
	}
	sent := r.now
	r.Tick()
	r.Tick()
	r.Step(Message{Type: MsgAppendResp, Cluster: "c1", From: "c", To: "a", Term: 1, Round: round})
	st := r.Status()
	if !st.HoldsLease() || st.LeaseUntil != sent+uint64(r.leaseTicks) {
		t.Fatalf("lease until %d, want %d: counted from the tick the round was sent", st.LeaseUntil, sent+uint64(r.leaseTicks))
	}
	if st.AppLeaseUntil != sent+uint64(r.appLeaseTicks) || st.AppLeaseUntil > st.LeaseUntil {
		t.Fatalf("app lease until %d, want %d (<= lease)", st.AppLeaseUntil, sent+uint64(r.appLeaseTicks))
	}
	// A stale acknowledgement of an unknown round renews nothing.
	r.Step(Message{Type: MsgAppendResp, Cluster: "c1", From: "b", To: "a", Term: 1, Round: 999})
	if r.Status().LeaseUntil != st.LeaseUntil {
		t.Fatal("an acknowledgement of an unknown round renewed the lease")
	}
}

func TestLeaseIsSafeBound(t *testing.T) {
	for e := 3; e < 200; e++ {
		l := MaxLeaseTicks(e, DefaultMaxDrift)
		// A follower refuses votes for at least e-1 whole ticks of its own clock, which may
		// run fast by the drift bound; the leader's lease must end before that.
		if float64(l) > float64(e-1)*(1-DefaultMaxDrift) {
			t.Fatalf("E=%d: lease %d ticks exceeds (E-1)(1-drift)", e, l)
		}
	}
	c := testConfig("a", "a")
	c.LeaseTicks = MaxLeaseTicks(testE, DefaultMaxDrift) + 1
	if _, err := New(c); err == nil {
		t.Fatal("a lease longer than the safe maximum was accepted")
	}
}

func TestTransferSkipsLease(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	a := n.nodes["a"]
	if err := a.TransferLeadership("b"); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.HoldsLease() || !st.Transferring {
		t.Fatalf("handing-over leader still claims the lease: %+v", st)
	}
	n.tick(a.appLeaseTicks + 1)
	// b was elected although every follower heard from a within the election timeout.
	for _, id := range n.ids {
		if st := n.nodes[id].Status(); st.Leader != "b" || st.Term != 2 {
			t.Fatalf("%s: %+v, want leader b in term 2\n%s", id, st, n.dump())
		}
	}
	if !n.nodes["b"].Status().HoldsLease() {
		t.Fatal("successor holds no lease")
	}
}

func TestTransferWaitsForReportedLease(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	a := n.nodes["a"]
	appLease := a.Status().AppLeaseUntil
	if appLease <= a.now {
		t.Fatal("leader has no reported lease")
	}
	if err := a.TransferLeadership(""); err != nil {
		t.Fatal(err)
	}
	n.settle()
	for a.now < appLease {
		if a.transferSent {
			t.Fatalf("timeout-now sent at tick %d, before the reported lease ended at %d", a.now, appLease)
		}
		// Acknowledgements during the wait must not extend the promise.
		n.tick(1)
	}
	n.tick(1)
	if !a.transferSent && a.state == StateLeader {
		t.Fatal("timeout-now not sent after the reported lease ended")
	}
}

func TestRenouncedLeaderNeverReclaimsLease(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	a := n.nodes["a"]
	// b never gets the timeout-now (lost): a must not lead with a lease again in this term.
	n.cut[[2]string{"a", "b"}] = true
	if err := a.TransferLeadership("b"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2*testE; i++ {
		n.tick(1)
		if st := a.Status(); st.Term == 1 && st.HoldsLease() {
			t.Fatalf("tick %d: leader reclaimed its lease after sending timeout-now", i)
		}
	}
	if st := a.Status(); st.Term == 1 && st.State == StateLeader {
		t.Fatal("failed transfer did not end with the leader stepping down")
	}
}

func TestTimeoutNowOnlyFromCurrentLeader(t *testing.T) {
	r := newTestRaft(t, testConfig("b", "a", "b", "c"))
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 1, Round: 1})
	r.Ready()
	r.Step(Message{Type: MsgTimeoutNow, Cluster: "c1", From: "c", To: "b", Term: 1})
	if r.state != StateFollower || r.term != 1 {
		t.Fatalf("timeout-now from a non-leader started an election: %v term %d", r.state, r.term)
	}
	r.Step(Message{Type: MsgTimeoutNow, Cluster: "c1", From: "a", To: "b", Term: 1})
	rd := r.Ready()
	if r.state != StateCandidate || r.term != 2 {
		t.Fatalf("timeout-now from the leader: %v term %d, want candidate of term 2", r.state, r.term)
	}
	for _, m := range rd.Messages {
		if m.Type != MsgVote || m.PreVote || !m.Transfer {
			t.Fatalf("message %+v: want a real vote request marked transfer", m)
		}
	}
}

func TestLearnerNeverCampaignsOrVotesCount(t *testing.T) {
	c := testConfig("l", "a", "b", "c")
	c.Learners = []string{"l"}
	r := newTestRaft(t, c)
	for i := 0; i < 10*testE; i++ {
		r.Tick()
	}
	if st := r.Status(); st.State != StateLearner || st.Term != 0 || len(r.Ready().Messages) != 0 {
		t.Fatalf("learner campaigned: %+v", st)
	}
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "l", Term: 1, Round: 1})
	if st := r.Status(); st.Leader != "a" || st.State != StateLearner {
		t.Fatalf("learner does not know the leader: %+v", st)
	}
	// A leader does not count a learner's acknowledgement toward its quorum.
	lc := testConfig("a", "a", "b", "c")
	lc.Learners = []string{"l"}
	lc.DisablePreVote = true
	ldr := newTestRaft(t, lc)
	for ldr.state != StateCandidate {
		ldr.Tick()
	}
	ldr.Step(Message{Type: MsgVoteResp, Cluster: "c1", From: "b", To: "a", Term: 1})
	rd := ldr.Ready()
	ldr.Step(Message{Type: MsgAppendResp, Cluster: "c1", From: "l", To: "a", Term: 1, Round: rd.Messages[len(rd.Messages)-1].Round})
	if ldr.Status().HoldsLease() {
		t.Fatal("a learner's acknowledgement gave the leader a lease")
	}
}

func TestInvalidMessagesChangeNothing(t *testing.T) {
	cases := []struct {
		name string
		m    Message
		err  error
	}{
		{"unknown type", Message{Type: "bogus", Cluster: "c1", From: "a", To: "b", Term: 9}, ErrInvalidMessage},
		{"zero term", Message{Type: MsgVote, Cluster: "c1", From: "a", To: "b"}, ErrInvalidMessage},
		{"term over limit", Message{Type: MsgVote, Cluster: "c1", From: "a", To: "b", Term: MaxTerm + 1}, ErrInvalidMessage},
		{"empty from", Message{Type: MsgVote, Cluster: "c1", To: "b", Term: 9}, ErrInvalidMessage},
		{"huge id", Message{Type: MsgVote, Cluster: "c1", From: strings.Repeat("x", MaxIDLength+1), To: "b", Term: 9}, ErrInvalidMessage},
		{"from self", Message{Type: MsgAppend, Cluster: "c1", From: "b", To: "b", Term: 9}, ErrInvalidMessage},
		{"pre-vote on heartbeat", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PreVote: true}, ErrInvalidMessage},
		{"reject on request", Message{Type: MsgVote, Cluster: "c1", From: "a", To: "b", Term: 9, Reject: true}, ErrInvalidMessage},
		{"other cluster", Message{Type: MsgAppend, Cluster: "c2", From: "a", To: "b", Term: 9}, ErrWrongCluster},
		{"other recipient", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "c", Term: 9}, ErrWrongRecipient},
		{"entries not contiguous", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 1,
			Entries: []Entry{{Index: 3, Term: 9, Type: EntryNoop}}}, ErrInvalidMessage},
		{"entry above the term", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 1,
			Entries: []Entry{{Index: 2, Term: 10, Type: EntryNoop}}}, ErrInvalidMessage},
		{"config entry without voters", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 1,
			Entries: []Entry{{Index: 2, Term: 9, Type: EntryConfig, Config: &Configuration{Learners: []string{"x"}}}}}, ErrInvalidMessage},
		{"unsorted config", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 1,
			Entries: []Entry{{Index: 2, Term: 9, Type: EntryConfig, Config: &Configuration{Voters: []string{"b", "a"}}}}}, ErrInvalidMessage},
		{"duplicate member", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 1,
			Entries: []Entry{{Index: 2, Term: 9, Type: EntryConfig, Config: &Configuration{Voters: []string{"a"}, Learners: []string{"a"}}}}}, ErrInvalidMessage},
		{"no-op with config", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 1,
			Entries: []Entry{{Index: 2, Term: 9, Type: EntryNoop, Config: &Configuration{Voters: []string{"a"}}}}}, ErrInvalidMessage},
		{"unknown entry type", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 1,
			Entries: []Entry{{Index: 2, Term: 9, Type: "data"}}}, ErrInvalidMessage},
		{"snapshot not the previous entry", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: 4,
			Snapshot: &Snapshot{Index: 5, Term: 3, Config: Configuration{Voters: []string{"a"}}}}, ErrInvalidMessage},
		{"log fields on a vote", Message{Type: MsgVote, Cluster: "c1", From: "a", To: "b", Term: 9, Commit: 3}, ErrInvalidMessage},
		{"index over limit", Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 9, PrevLogIndex: MaxTerm + 1}, ErrInvalidMessage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRaft(t, testConfig("b", "a", "b", "c"))
			r.Ready()
			before := r.Status()
			if err := r.Step(tc.m); !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if after := r.Status(); after.Term != before.Term || after.Leader != before.Leader || after.State != before.State || r.HasReady() {
				t.Fatalf("state changed: %+v -> %+v", before, after)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []func(*Config){
		func(c *Config) { c.ID = "" },
		func(c *Config) { c.Cluster = "" },
		func(c *Config) { c.ElectionTicks = 0 },
		func(c *Config) { c.HeartbeatTicks = 5 }, // E=10 < 3*5
		func(c *Config) { c.Voters = []string{"a", "a"} },
		func(c *Config) { c.Rand = nil },
		func(c *Config) { c.MaxDrift = 0.9 },
		func(c *Config) { c.HardState.Term = MaxTerm + 1 },
	}
	for i, mut := range cases {
		c := testConfig("a", "a", "b", "c")
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("case %d: invalid config accepted: %+v", i, c)
		}
	}
}

func TestReElectionAfterLeaderCutOff(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	n.isolate("a")
	n.tick(3 * testE)
	var other []string
	for _, id := range []string{"b", "c"} {
		if n.nodes[id].state == StateLeader {
			other = append(other, id)
		}
	}
	if len(other) != 1 {
		t.Fatalf("leaders among b,c: %v\n%s", other, n.dump())
	}
	if n.nodes["a"].Status().HoldsLease() {
		t.Fatal("cut-off leader still holds its lease")
	}
	// The old leader returns and follows the new one.
	n.healAll()
	n.tick(2 * testE)
	if l := n.leaders(); len(l) != 1 || l[0] != other[0] {
		t.Fatalf("leaders %v after heal, want [%s]\n%s", l, other[0], n.dump())
	}
	if st := n.nodes["a"].Status(); st.Leader != other[0] {
		t.Fatalf("old leader follows %q, want %q", st.Leader, other[0])
	}
}

func TestNoLeaderWithoutMajority(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	for _, id := range n.ids {
		n.isolate(id)
	}
	n.tick(5 * testE)
	for _, id := range n.ids {
		if st := n.nodes[id].Status(); st.State == StateLeader || st.HoldsLease() {
			t.Fatalf("%s leads without a majority: %+v", id, st)
		}
	}
}

func TestRestartedMemberRefusesVotesForElectionTimeout(t *testing.T) {
	// b acknowledged a's round just before it crashed; after the restart it must keep the
	// promise that acknowledgement made: no vote for anyone else for a minimum election timeout.
	c := testConfig("b", "a", "b", "c")
	c.HardState = HardState{Term: 1}
	c.Rand = fixedRand(5)
	r := newTestRaft(t, c)
	for i := 0; i < testE; i++ {
		for _, pre := range []bool{true, false} {
			r.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 2, LastLogIndex: 1, PreVote: pre})
			if rd := r.Ready(); len(rd.Messages) != 1 || !rd.Messages[0].Reject || r.term != 1 || r.vote != None {
				t.Fatalf("tick %d pre=%v: restarted member voted: %+v", i, pre, rd)
			}
		}
		r.Tick()
	}
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 2, LastLogIndex: 1})
	if rd := r.Ready(); len(rd.Messages) != 1 || rd.Messages[0].Reject {
		t.Fatalf("after the guard: %+v, want a granted vote", rd)
	}
}

func TestRepliesOfAFreshMemberAreValid(t *testing.T) {
	c := testConfig("a", "a", "b", "c")
	c.Learners = []string{"l"}
	r := newTestRaft(t, c)
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "l", To: "a", Term: 1})
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "b", To: "a", Term: 1, LastLogIndex: 1, PreVote: true})
	for _, m := range r.Ready().Messages {
		if err := m.Validate(); err != nil {
			t.Fatalf("reply %+v does not validate: %v", m, err)
		}
	}
}

func TestDeposedLeaderStillRefusesVotesWhileItsLeaseRuns(t *testing.T) {
	// Seed 1144946 of the simulator: a leader deposed by a stale rejection carrying a higher
	// term must not vote for that candidate while the lease it counted itself in still runs.
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	a := n.nodes["a"]
	if !a.Status().HoldsLease() {
		t.Fatal("no lease")
	}
	a.Step(Message{Type: MsgAppendResp, Cluster: "c1", From: "c", To: "a", Term: 2, Reject: true})
	if a.state != StateFollower || a.term != 2 {
		t.Fatalf("not deposed: %v term %d", a.state, a.term)
	}
	a.Ready()
	a.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "a", Term: 2, LastLogIndex: 1})
	if rd := a.Ready(); len(rd.Messages) != 1 || !rd.Messages[0].Reject || a.vote != None {
		t.Fatalf("deposed leader voted in the same term while its lease ran: %+v", rd.Messages)
	}
}

func TestFollowerAdoptingStaleTermStillRefusesVotes(t *testing.T) {
	// Seed 3323099: a follower acknowledges a round, then adopts a higher term from a late
	// rejection of its own old pre-vote; the lease it acknowledged still binds it.
	c := testConfig("b", "a", "b", "c")
	c.Rand = fixedRand(9)
	r := newTestRaft(t, c)
	pastStartGuard(t, r)
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 1, Round: 5})
	r.Step(Message{Type: MsgVoteResp, Cluster: "c1", From: "c", To: "b", Term: 2, PreVote: true, Reject: true})
	if r.term != 2 || r.lead != None {
		t.Fatalf("term %d lead %q", r.term, r.lead)
	}
	r.Ready()
	r.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 2, LastLogIndex: 1})
	if rd := r.Ready(); len(rd.Messages) != 1 || !rd.Messages[0].Reject {
		t.Fatalf("follower voted inside the lease it acknowledged: %+v", rd.Messages)
	}
}
