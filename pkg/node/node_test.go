package node

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

func TestStorageRoundTripAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStorage(dir, "c1", "a")
	if err != nil {
		t.Fatal(err)
	}
	if hs, l, err := s.Load(); err != nil || hs != (raft.HardState{}) || l.Snapshot.Index != 0 || len(l.Entries) != 0 {
		t.Fatalf("fresh dir: %+v %+v %v", hs, l, err)
	}
	want := raft.HardState{Term: 7, Vote: "b"}
	wantLog := raft.LogState{
		Snapshot: raft.Snapshot{Index: 4, Term: 6, Config: raft.Configuration{Voters: []string{"a", "b"}, Learners: []string{"c"}}},
		Entries:  []raft.Entry{{Index: 5, Term: 7, Type: raft.EntryNoop}},
	}
	if err := s.Save(want, wantLog); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenStorage(dir, "c1", "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if hs, l, err := s2.Load(); err != nil || hs != want || !l.Snapshot.Config.Equal(wantLog.Snapshot.Config) ||
		l.Snapshot.Index != 4 || len(l.Entries) != 1 || l.Entries[0] != wantLog.Entries[0] {
		t.Fatalf("after reopen: %+v %+v %v, want %+v %+v", hs, l, err, want, wantLog)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 { // state file and lock, no temp files
		t.Fatalf("data dir holds %d entries, want 2", len(entries))
	}
}

func TestStorageIsExclusive(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStorage(dir, "c1", "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenStorage(dir, "c1", "a"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open of a data dir: %v, want an in-use error", err)
	}
}

func TestStorageRefusesCorruptOrForeignState(t *testing.T) {
	cases := map[string]func(path string, t *testing.T){
		"garbage": func(p string, t *testing.T) { os.WriteFile(p, []byte("{not json"), 0o600) },
		"truncated": func(p string, t *testing.T) {
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o600)
		},
		"edited term": func(p string, t *testing.T) {
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `\"term\":7`, `\"term\":1`, 1)), 0o600)
			var d onDisk
			json.Unmarshal(b, &d)
			d.State = json.RawMessage(`{"term":1}`)
			nb, _ := json.Marshal(d)
			os.WriteFile(p, nb, 0o600)
		},
		"future version": func(p string, t *testing.T) {
			b, _ := os.ReadFile(p)
			var d onDisk
			json.Unmarshal(b, &d)
			d.Version = 99
			nb, _ := json.Marshal(d)
			os.WriteFile(p, nb, 0o600)
		},
		"unreadable": func(p string, t *testing.T) {
			os.Remove(p)
			os.Mkdir(p, 0o700) // a directory where the file should be
		},
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := OpenStorage(dir, "c1", "a")
			if err := s.Save(raft.HardState{Term: 7, Vote: "b"}, raft.LogState{}); err != nil {
				t.Fatal(err)
			}
			corrupt(filepath.Join(dir, stateFile), t)
			if hs, _, err := s.Load(); err == nil {
				t.Fatalf("corrupt state loaded as %+v", hs)
			}
			s.Close()
		})
	}
	t.Run("other member", func(t *testing.T) {
		dir := t.TempDir()
		s, _ := OpenStorage(dir, "c1", "a")
		s.Save(raft.HardState{Term: 7, Vote: "b"}, raft.LogState{})
		s.Close()
		s2, _ := OpenStorage(dir, "c1", "b")
		defer s2.Close()
		if _, _, err := s2.Load(); err == nil {
			t.Fatal("state of member a loaded by member b")
		}
	})
}

// diskCheckingSender fails the test if any message goes out whose term or vote is not yet on
// disk: the rule that durable state is written before dependent messages are sent.
type diskCheckingSender struct {
	t    *testing.T
	dir  string
	mu   sync.Mutex
	sent []raft.Message
}

func (s *diskCheckingSender) Send(msgs ...raft.Message) {
	st, _ := OpenStorageForRead(s.dir)
	for _, m := range msgs {
		if m.Type == raft.MsgVote && !m.PreVote && (st.Term < m.Term || st.Vote != m.From) {
			s.t.Errorf("vote request for term %d sent with %+v on disk", m.Term, st)
		}
	}
	s.mu.Lock()
	s.sent = append(s.sent, msgs...)
	s.mu.Unlock()
}

// OpenStorageForRead reads the state file without the lock (test helper).
func OpenStorageForRead(dir string) (raft.HardState, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return raft.HardState{}, err
	}
	var d onDisk
	if err := json.Unmarshal(b, &d); err != nil {
		return raft.HardState{}, err
	}
	var hs raft.HardState
	err = json.Unmarshal(d.State, &hs)
	return hs, err
}

func newTestNode(t *testing.T, dir, id string, voters ...string) *Node {
	t.Helper()
	s, err := OpenStorage(dir, "c1", id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	n, err := New(Config{ID: id, Cluster: "c1", Voters: voters, HeartbeatInterval: 10 * time.Millisecond,
		ElectionTimeout: 100 * time.Millisecond, Storage: s, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestVotePersistedBeforeSendAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	n := newTestNode(t, dir, "a", "a", "b", "c")
	snd := &diskCheckingSender{t: t, dir: dir}
	ctx, cancel := context.WithCancel(context.Background())
	go n.Run(ctx, snd)
	// a grants its vote to b in term 5 and answers only once the vote is durable.
	resp, err := n.Step(ctx, raft.Message{Type: raft.MsgVote, Cluster: "c1", From: "b", To: "a", Term: 5, Transfer: true, LastLogIndex: 1})
	if err != nil || resp == nil || resp.Reject || resp.Type != raft.MsgVoteResp {
		t.Fatalf("vote: %+v %v", resp, err)
	}
	if hs, err := OpenStorageForRead(dir); err != nil || hs != (raft.HardState{Term: 5, Vote: "b"}) {
		t.Fatalf("on disk after the reply: %+v %v", hs, err)
	}
	cancel()
	<-n.Done()
	n.storage.Close()

	// Restarted, it refuses c in the same term.
	n2 := newTestNode(t, dir, "a", "a", "b", "c")
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go n2.Run(ctx2, snd)
	resp, err = n2.Step(ctx2, raft.Message{Type: raft.MsgVote, Cluster: "c1", From: "c", To: "a", Term: 5, Transfer: true, LastLogIndex: 1})
	if err != nil || resp == nil || !resp.Reject {
		t.Fatalf("restarted member voted twice in term 5: %+v %v", resp, err)
	}
}

func TestSingleMemberLeadsAndReportsLease(t *testing.T) {
	n := newTestNode(t, t.TempDir(), "a", "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx, &diskCheckingSender{t: t})
	waitFor(t, "a to lead", 5*time.Second, func() bool { return n.Status().HoldsLease(time.Now()) })
	st := n.Status()
	if st.LeaseExpiresAt.After(st.ProtocolLeaseExpiresAt) {
		t.Fatalf("reported lease %v ends after the protocol lease %v", st.LeaseExpiresAt, st.ProtocolLeaseExpiresAt)
	}
	if d := time.Until(st.LeaseExpiresAt); d > 3*10*time.Millisecond {
		t.Fatalf("reported lease runs %v into the future, more than 3 heartbeats", d)
	}
	// A reader that looks after the lease end (a process that was paused) sees no lease.
	if st.HoldsLease(st.LeaseExpiresAt) {
		t.Fatal("lease held at its own expiry")
	}
	if err := n.Healthy(time.Now()); err != nil {
		t.Fatal(err)
	}
	if succ, err := n.Handover(ctx); err == nil || succ != "" {
		t.Fatalf("single member handover: %q %v, want an error (no one to hand over to)", succ, err)
	}
}

func TestStepRefusesBadMessageWithoutStateChange(t *testing.T) {
	n := newTestNode(t, t.TempDir(), "a", "a", "b", "c")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx, &diskCheckingSender{t: t})
	before := n.Status()
	for _, m := range []raft.Message{
		{Type: raft.MsgVote, Cluster: "other", From: "b", To: "a", Term: 9},
		{Type: raft.MsgVote, Cluster: "c1", From: "z", To: "q", Term: 9},
		{Type: raft.MsgVote, Cluster: "c1", From: "b", To: "a", Term: raft.MaxTerm + 1},
	} {
		if resp, err := n.Step(ctx, m); err == nil || resp != nil {
			t.Fatalf("%+v accepted: %+v %v", m, resp, err)
		}
	}
	if after := n.Status(); after.Term != before.Term {
		t.Fatalf("term moved %d -> %d", before.Term, after.Term)
	}
}

func TestStorageDiscardsOnlyAReplacedCluster(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStorage(dir, "base", "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if c, err := s.StoredCluster(); err != nil || c != "" {
		t.Fatalf("fresh dir: %q %v", c, err)
	}
	s.SetCluster("g1")
	if err := s.Save(raft.HardState{Term: 3}, raft.LogState{}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.StoredCluster(); err != nil || c != "g1" {
		t.Fatalf("stored cluster %q %v, want g1", c, err)
	}
	if err := s.Discard("g2"); err != nil { // not the stored one: nothing happens
		t.Fatal(err)
	}
	if hs, _, err := s.Load(); err != nil || hs.Term != 3 {
		t.Fatalf("state of g1 after discarding g2: %+v %v", hs, err)
	}
	if err := s.Discard("g1"); err != nil { // the cluster in use: kept
		t.Fatal(err)
	}
	if c, _ := s.StoredCluster(); c != "g1" {
		t.Fatal("discarded the state of the cluster in use")
	}
	s.SetCluster("g2")
	if err := s.Discard("g1"); err != nil {
		t.Fatal(err)
	}
	if c, err := s.StoredCluster(); err != nil || c != "" {
		t.Fatalf("after discarding g1: %q %v", c, err)
	}
}

// A member that does not know its cluster yet (Kubernetes mode, before the bootstrap object
// answers) reports the term on disk, whatever the cluster: never 0 after a restart.
func TestStoredTermIgnoresTheClusterButNotTheMember(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStorage(dir, "g1", "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.StoredTerm(); got != 0 {
		t.Fatalf("fresh dir: stored term %d", got)
	}
	if err := s.Save(raft.HardState{Term: 55, Vote: "b"}, raft.LogState{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	unknown, err := OpenStorage(dir, "", "a") // the cluster is not known yet
	if err != nil {
		t.Fatal(err)
	}
	if got := unknown.StoredTerm(); got != 55 {
		t.Errorf("stored term before the cluster is known: %d, want 55", got)
	}
	unknown.Close()
	other, err := OpenStorage(dir, "g1", "z") // another member's data dir
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if got := other.StoredTerm(); got != 0 {
		t.Errorf("stored term of member a read as member z: %d, want 0", got)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := other.StoredTerm(); got != 0 {
		t.Errorf("stored term of a corrupt file: %d, want 0", got)
	}
}
