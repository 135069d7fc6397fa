package raft

import (
	"errors"
	"slices"
	"testing"
)

// join adds a member that has no configuration yet (it waits to be added as a learner).
func (n *network) join(id string) *Raft {
	c := testConfig(id)
	c.Rand = fixedRand(len(n.ids))
	r := newTestRaft(n.t, c)
	n.nodes[id] = r
	n.ids = append(n.ids, id)
	return r
}

func (n *network) propose(leader string, cc ConfChange) {
	n.t.Helper()
	if err := n.nodes[leader].ProposeConfChange(cc); err != nil {
		n.t.Fatalf("propose %v: %v", cc, err)
	}
	n.settle()
}

func mustConfig(t *testing.T, r *Raft, voters, learners []string) {
	t.Helper()
	st := r.Status()
	if !slices.Equal(st.Config.Voters, voters) || !slices.Equal(st.Config.Learners, learners) {
		t.Fatalf("%s uses %v, want voters=%v learners=%v", r.id, st.Config, voters, learners)
	}
}

func TestStaticBootstrapIsTheFirstCommittedEntry(t *testing.T) {
	r := newTestRaft(t, testConfig("a", "c", "a", "b"))
	rd := r.Ready()
	want := Snapshot{Index: 1, Term: 0, Config: Configuration{Voters: []string{"a", "b", "c"}}}
	if !rd.MustPersist || rd.Log.Snapshot.Index != 1 || !rd.Log.Snapshot.Config.Equal(want.Config) || len(rd.Log.Entries) != 0 {
		t.Fatalf("ready %+v: want the bootstrap configuration persisted", rd)
	}
	// Restarted with its log, it does not bootstrap again (the Voters given are ignored).
	c := testConfig("a", "x")
	c.Log = rd.Log
	r2 := newTestRaft(t, c)
	mustConfig(t, r2, []string{"a", "b", "c"}, nil)
	if r2.Ready().MustPersist {
		t.Fatal("a restarted member rewrote an unchanged log")
	}
}

func TestMemberWithoutConfigurationWaitsAsLearner(t *testing.T) {
	r := newTestRaft(t, testConfig("d"))
	for i := 0; i < 10*testE; i++ {
		r.Tick()
	}
	st := r.Status()
	if st.State != StateLearner || st.Term != 0 || !st.Config.IsEmpty() || len(r.Ready().Messages) != 0 {
		t.Fatalf("unconfigured member: %+v", st)
	}
}

func TestNewLeaderCommitsNoopAndCompacts(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	n.tick(testHB) // the next round carries the commit index to the followers
	for _, id := range n.ids {
		st := n.nodes[id].Status()
		if st.Commit != 2 || st.LastIndex != 2 {
			t.Fatalf("%s: commit %d last %d, want the leader's no-op (2) committed", id, st.Commit, st.LastIndex)
		}
		if d := n.disks[id]; d.Snapshot.Index != 2 || d.Snapshot.Term != 1 || len(d.Entries) != 0 {
			t.Fatalf("%s persisted %+v, want the log compacted to index 2 term 1", id, d)
		}
	}
	if !n.nodes["a"].Status().TermCommitted {
		t.Fatal("leader does not know its term's entry is committed")
	}
}

func TestVoteRequiresAnUpToDateLog(t *testing.T) {
	c := testConfig("b", "a", "b", "c")
	c.Rand = fixedRand(9)
	c.HardState = HardState{Term: 2}
	c.Log = LogState{Snapshot: Snapshot{Index: 3, Term: 2, Config: Configuration{Voters: []string{"a", "b", "c"}}}}
	for _, tc := range []struct {
		name              string
		lastIndex, lastTm uint64
		grant             bool
	}{
		{"older last term", 9, 1, false},
		{"same term, shorter", 2, 2, false},
		{"same term, same length", 3, 2, true},
		{"newer last term", 1, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRaft(t, c)
			pastStartGuard(t, r)
			r.Step(Message{Type: MsgVote, Cluster: "c1", From: "c", To: "b", Term: 3, LastLogIndex: tc.lastIndex, LastLogTerm: tc.lastTm})
			rd := r.Ready()
			if len(rd.Messages) != 1 || rd.Messages[0].Reject == tc.grant {
				t.Fatalf("reply %+v, want granted=%v", rd.Messages, tc.grant)
			}
			if got := r.vote == "c"; got != tc.grant {
				t.Fatalf("vote %q, want granted=%v", r.vote, tc.grant)
			}
		})
	}
}

func TestConsistencyCheckTruncatesAConflictingTail(t *testing.T) {
	// b holds an uncommitted no-op of term 2 at index 3 that the leader of term 3 never had.
	c := testConfig("b", "a", "b", "c")
	c.Rand = fixedRand(9)
	c.HardState = HardState{Term: 2}
	cfg := Configuration{Voters: []string{"a", "b", "c"}}
	c.Log = LogState{Snapshot: Snapshot{Index: 2, Term: 1, Config: cfg},
		Entries: []Entry{{Index: 3, Term: 2, Type: EntryNoop}}}
	r := newTestRaft(t, c)
	r.Ready()
	// The leader's log is (2,1) then its no-op (3,3); it starts optimistic, at next=4.
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 3, Round: 1, PrevLogIndex: 3, PrevLogTerm: 3, Commit: 3})
	rd := r.Ready()
	if len(rd.Messages) != 1 || !rd.Messages[0].Reject || rd.Messages[0].Index != 2 {
		t.Fatalf("reply %+v: want a rejection hinting index 2", rd.Messages)
	}
	if r.lead != "a" {
		t.Fatal("a failed consistency check must still acknowledge the leader")
	}
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 3, PrevLogIndex: 2, PrevLogTerm: 1,
		Entries: []Entry{{Index: 3, Term: 3, Type: EntryNoop}}, Commit: 3})
	rd = r.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].Reject || rd.Messages[0].Index != 3 {
		t.Fatalf("reply %+v: want an acknowledgement of index 3", rd.Messages)
	}
	if st := r.Status(); st.Commit != 3 || !rd.MustPersist || rd.Log.Snapshot.Index != 3 || rd.Log.Snapshot.Term != 3 {
		t.Fatalf("status %+v ready %+v: want the leader's entry at 3 committed and persisted", st, rd)
	}
	// A message that would overwrite a committed entry is refused: nothing changes.
	before := r.log.state()
	r.Step(Message{Type: MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 4, PrevLogIndex: 2, PrevLogTerm: 1,
		Entries: []Entry{{Index: 3, Term: 4, Type: EntryNoop}}})
	if after := r.log.state(); after.Snapshot.Term != before.Snapshot.Term || r.log.commit != 3 {
		t.Fatalf("a committed entry was overwritten: %+v", after)
	}
}

func TestConfChangePreconditions(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	a, b := n.nodes["a"], n.nodes["b"]
	if err := b.ProposeConfChange(ConfChange{ConfAddLearner, "d"}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower proposed: %v", err)
	}
	for _, tc := range []struct {
		cc ConfChange
	}{
		{ConfChange{ConfAddLearner, "b"}},
		{ConfChange{ConfPromote, "b"}},
		{ConfChange{ConfPromote, "zz"}},
		{ConfChange{ConfDemote, "a"}},
		{ConfChange{ConfRemove, "a"}},
		{ConfChange{ConfRemove, "zz"}},
		{ConfChange{ConfAddLearner, ""}},
		{ConfChange{"bogus", "d"}},
	} {
		if err := a.ProposeConfChange(tc.cc); !errors.Is(err, ErrInvalidConfChange) {
			t.Fatalf("%v: %v, want ErrInvalidConfChange", tc.cc, err)
		}
	}
	// One change at a time: the second waits for the first to commit.
	n.isolate("a")
	if err := a.ProposeConfChange(ConfChange{ConfAddLearner, "d"}); err != nil {
		t.Fatal(err)
	}
	if err := a.ProposeConfChange(ConfChange{ConfAddLearner, "e"}); !errors.Is(err, ErrConfChangePending) {
		t.Fatalf("second change while the first is pending: %v", err)
	}
	// The change takes effect on the leader as soon as it is appended.
	mustConfig(t, a, []string{"a", "b", "c"}, []string{"d"})
}

func TestNoConfChangeBeforeTheLeaderCommitsInItsTerm(t *testing.T) {
	c := testConfig("a", "a", "b", "c")
	c.DisablePreVote = true
	r := newTestRaft(t, c)
	for r.state != StateCandidate {
		r.Tick()
	}
	r.Step(Message{Type: MsgVoteResp, Cluster: "c1", From: "b", To: "a", Term: 1})
	if r.state != StateLeader {
		t.Fatal("not elected")
	}
	if err := r.ProposeConfChange(ConfChange{ConfAddLearner, "d"}); !errors.Is(err, ErrNotReadyForConfChange) {
		t.Fatalf("change before the no-op committed: %v", err)
	}
	r.Step(Message{Type: MsgAppendResp, Cluster: "c1", From: "b", To: "a", Term: 1, Round: 1, Index: 2})
	if err := r.ProposeConfChange(ConfChange{ConfAddLearner, "d"}); err != nil {
		t.Fatalf("change after the no-op committed: %v", err)
	}
}

func TestLearnerJoinsIsPromotedAndCounts(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	d := n.join("d")
	n.propose("a", ConfChange{ConfAddLearner, "d"})
	for _, id := range n.ids {
		mustConfig(t, n.nodes[id], []string{"a", "b", "c"}, []string{"d"})
	}
	if st := d.Status(); st.State != StateLearner || st.Leader != "a" || st.Term != 1 {
		t.Fatalf("new learner: %+v", st)
	}
	n.tick(testHB)
	n.propose("a", ConfChange{ConfPromote, "d"})
	for _, id := range n.ids {
		mustConfig(t, n.nodes[id], []string{"a", "b", "c", "d"}, nil)
	}
	if st := d.Status(); st.State != StateFollower {
		t.Fatalf("promoted member: %+v", st)
	}
	// Four voters: the leader needs three acknowledgements for its lease.
	n.isolate("b")
	n.isolate("c")
	n.cut[[2]string{"a", "d"}], n.cut[[2]string{"d", "a"}] = false, false
	n.tick(testE)
	if n.nodes["a"].Status().HoldsLease() {
		t.Fatal("a leader backed by 2 of 4 voters holds the lease")
	}
}

func TestRemovedAndDemotedMembers(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	n.propose("a", ConfChange{ConfDemote, "c"})
	mustConfig(t, n.nodes["c"], []string{"a", "b"}, []string{"c"})
	if st := n.nodes["c"].Status(); st.State != StateLearner || st.Leader != "a" {
		t.Fatalf("demoted voter: %+v", st)
	}
	n.tick(testHB)
	n.propose("a", ConfChange{ConfRemove, "c"})
	mustConfig(t, n.nodes["a"], []string{"a", "b"}, nil)
	// A removed member hears nothing more: it never campaigns (it is no voter of its own
	// configuration), and the two voters keep their leader.
	n.tick(10 * testE)
	if st := n.nodes["c"].Status(); st.State != StateLearner || st.Term != 1 {
		t.Fatalf("removed member: %+v", st)
	}
	if l := n.leaders(); len(l) != 1 || l[0] != "a" || !n.nodes["a"].Status().HoldsLease() {
		t.Fatalf("leaders %v", l)
	}
}

func TestLaggingMemberCatchesUpFromTheSnapshot(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	n.join("d")
	n.join("e")
	n.isolate("c")
	n.propose("a", ConfChange{ConfAddLearner, "d"})
	n.tick(testHB)
	n.propose("a", ConfChange{ConfAddLearner, "e"})
	n.tick(testHB)
	n.propose("a", ConfChange{ConfPromote, "d"})
	n.tick(testHB)
	mustConfig(t, n.nodes["c"], []string{"a", "b", "c"}, nil)
	n.healAll()
	n.tick(2 * testHB)
	for _, id := range n.ids {
		mustConfig(t, n.nodes[id], []string{"a", "b", "c", "d"}, []string{"e"})
		if st := n.nodes[id].Status(); st.Commit != st.LastIndex || st.Commit != 5 {
			t.Fatalf("%s: commit %d last %d, want 5", id, st.Commit, st.LastIndex)
		}
	}
}

func TestConfChangeWaitsUntilTheNewVotersBackTheReportedLease(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	n.join("d")
	n.propose("a", ConfChange{ConfAddLearner, "d"})
	n.tick(testHB)
	a := n.nodes["a"]
	// Only b acknowledges now: the lease rests on {a, b}.
	n.isolate("c")
	n.isolate("d")
	n.cut[[2]string{"a", "b"}], n.cut[[2]string{"b", "a"}] = false, false
	n.tick(testE)
	if !a.Status().HoldsLease() {
		t.Fatal("leader backed by a and b lost its lease")
	}
	// Removing b would leave {a, c}: nobody who acknowledged the rounds behind the lease
	// would be in a majority of the new voters.
	if err := a.ProposeConfChange(ConfChange{ConfRemove, "b"}); !errors.Is(err, ErrNotReadyForConfChange) {
		t.Fatalf("remove b: %v, want ErrNotReadyForConfChange", err)
	}
	// Promoting d needs d's acknowledgement too (3 of 4).
	if err := a.ProposeConfChange(ConfChange{ConfPromote, "d"}); !errors.Is(err, ErrNotReadyForConfChange) {
		t.Fatalf("promote d: %v, want ErrNotReadyForConfChange", err)
	}
	n.healAll()
	n.tick(testHB)
	n.propose("a", ConfChange{ConfPromote, "d"})
	if st := a.Status(); !st.HoldsLease() {
		t.Fatalf("leader lost its lease over a change the new voters back: %+v", st)
	}
}

func TestTransferWaitsForTheTransfereeToCatchUp(t *testing.T) {
	n := newNetwork(t, "a", "b", "c")
	n.tick(testE + 1)
	n.tick(testHB)
	n.join("d")
	a := n.nodes["a"]
	n.isolate("b")
	n.cut[[2]string{"a", "c"}], n.cut[[2]string{"c", "a"}] = false, false
	n.propose("a", ConfChange{ConfAddLearner, "d"}) // b lacks it
	if err := a.TransferLeadership("b"); err != nil {
		t.Fatal(err)
	}
	n.tick(testE / 2)
	for _, m := range n.log {
		if m == "a->b timeout-now t1 pre=false rej=false" {
			t.Fatal("timeout-now sent to a transferee without the whole log")
		}
	}
	n.healAll()
	n.tick(testE / 2)
	if st := n.nodes["b"].Status(); st.State != StateLeader || st.Term != 2 {
		t.Fatalf("transferee: %+v", st)
	}
}

func TestLoadedLogIsValidated(t *testing.T) {
	cfg := Configuration{Voters: []string{"a"}}
	for name, l := range map[string]LogState{
		"gap":             {Snapshot: Snapshot{Index: 1, Config: cfg}, Entries: []Entry{{Index: 3, Term: 1, Type: EntryNoop}}},
		"term above hard": {Snapshot: Snapshot{Index: 1, Term: 7, Config: cfg}},
		"no voters":       {Snapshot: Snapshot{Index: 1, Config: Configuration{Learners: []string{"a"}}}},
		"config at 0":     {Snapshot: Snapshot{Config: cfg}},
	} {
		c := testConfig("a")
		c.HardState = HardState{Term: 2}
		c.Log = l
		if _, err := New(c); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func TestSoleVoterPromotesALearnerRightAfterAHeartbeat(t *testing.T) {
	// A sole voter renews its lease the moment it sends a round (its own acknowledgement is a
	// majority), so the newest round a learner acknowledged is always one behind. What the
	// new voters must back is the lease already reported, and the learner's acknowledgement
	// binds it for a whole election timeout: the promotion goes through at once.
	n := newNetwork(t, "a")
	n.tick(2 * testE)
	n.join("b")
	n.propose("a", ConfChange{ConfAddLearner, "b"})
	n.tick(testHB)
	a := n.nodes["a"]
	a.Tick()
	for a.heartbeatElapsed != 0 {
		a.Tick() // to the tick a round is sent, before b's acknowledgement of it is delivered
	}
	if err := a.ProposeConfChange(ConfChange{ConfPromote, "b"}); err != nil {
		t.Fatalf("promote b right after a round: %v", err)
	}
	n.settle()
	mustConfig(t, n.nodes["b"], []string{"a", "b"}, nil)
	if st := a.Status(); !st.HoldsLease() || st.Commit != st.ConfigIndex {
		t.Fatalf("leader after the promotion: %+v", st)
	}
}

func TestLearnerForgetsADeadLeader(t *testing.T) {
	n := newNetwork(t, "a")
	n.tick(testE + 1)
	b := n.join("b")
	n.propose("a", ConfChange{ConfAddLearner, "b"})
	if st := b.Status(); st.Leader != "a" {
		t.Fatalf("learner: %+v, want leader a", st)
	}
	n.isolate("a")
	n.tick(2 * testE)
	if st := b.Status(); st.Leader != None || st.State != StateLearner {
		t.Fatalf("learner cut off from its leader for two election timeouts: %+v, want no leader", st)
	}
	n.healAll()
	n.tick(testHB)
	if st := b.Status(); st.Leader != "a" {
		t.Fatalf("learner after the leader came back: %+v", st)
	}
}
