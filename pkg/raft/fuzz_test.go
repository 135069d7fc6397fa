package raft

// Fuzz targets for the core.
//
// FuzzSimSchedule runs the simulator (sim_*_test.go) on a schedule read from the fuzz input,
// with a hostile peer injecting arbitrary messages, and checks every simulator invariant after
// every event. FuzzStep feeds one member arbitrary messages, ticks, restarts and requests, and
// checks what must hold for any input whatever its peers do. The committed corpora are in
// testdata/fuzz/<FuzzName>/; `go test` runs them as seeds, `make fuzz` fuzzes
// (docs/reliability.md).

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

// simByteSource is a math/rand source that reads the fuzz input: each draw takes one byte,
// spread over 64 bits (every bit of the draw depends on it, so Intn, Int63n and Float64 all
// take one of 256 values over their range). Once the input is used up, the draws continue
// from a splitmix64 stream seeded by the input, so a short input still runs a whole schedule,
// and the same input always runs the same one.
type simByteSource struct {
	data []byte
	used int
	tail simSource
}

func newSimByteSource(data []byte) *simByteSource {
	h := fnv.New64a()
	h.Write(data)
	return &simByteSource{data: data, tail: simSource{x: h.Sum64()}}
}

func (s *simByteSource) Uint64() uint64 {
	if s.used < len(s.data) {
		b := simSource{x: uint64(s.data[s.used])}
		s.used++
		return b.Uint64()
	}
	return s.tail.Uint64()
}

func (s *simByteSource) Int63() int64 { return int64(s.Uint64() >> 1) }
func (s *simByteSource) Seed(int64)   {}

// simEvHostile is the event at which the hostile peer injects a message. It is not one of the
// simulator's kinds (sim.run ignores it); simHostile.run handles it.
const simEvHostile = simEvDeliver + 1

// simFuzzHeader is the part of a fuzz input read as plain numbers, not as random draws.
const simFuzzHeader = 4

// simHostile is a peer that is not a member and sends whatever it likes: any type, any
// term and log fields, ids that are empty, too long, its own or a member's (then with a wrong
// cluster or recipient, since a peer that speaks for a member with the right cluster is out of
// what the protocol can defend against without authentication), and configurations that name
// anyone but itself as a voter (a member accepts a leader it does not know if that leader
// shows a configuration naming itself a voter: the trust a joining member needs, which only
// authentication protects).
type simHostile struct {
	every simTime // mean interval between injections; 0: none
	// termEdges: the terms include edge values (MaxTerm and around), with which the hostile
	// peer can push members' terms to the limit, where they can no longer elect a leader.
	termEdges bool
	// injected counts the messages, refused those the core refused (err != nil).
	injected, refused int
}

// simFuzzStrangers are the ids the hostile peer uses; none is ever a member.
var simFuzzStrangers = []string{"x", "m9"}

// newFuzzSim builds a schedule from a fuzz input, as newSim does from a seed: the header gives
// the cluster size (3 to 5), the timings, the length of the fault phase, whether the membership
// changes and how often the hostile peer speaks; the rest of the input drives every random
// draw of the schedule (faults, network, clocks, membership changes, hostile messages).
func newFuzzSim(data []byte) (*sim, *simHostile) {
	var hdr [simFuzzHeader]byte
	copy(hdr[:], data)
	rest := data[min(len(data), simFuzzHeader):]
	rng := rand.New(newSimByteSource(rest))

	p := simParams{seed: -1}
	p.size = 3 + int(hdr[0])%3
	p.electionTicks = []int{10, 20}[hdr[1]&1]
	p.heartbeatTicks = 2 + int(hdr[1]>>1)%(min(5, p.electionTicks/3)-1)
	p.faultPhase = simTime(3+int(hdr[2])%10) * simTime(p.electionTicks) * simNominalTick
	p.membership = hdr[3]&1 == 1
	h := &simHostile{termEdges: hdr[3]&8 != 0}
	if rate := int(hdr[3]>>1) % 4; rate > 0 {
		h.every = simTime(p.electionTicks) * simNominalTick / simTime(2*rate)
	}

	s := &sim{p: p, rng: rng, mrng: rng, byID: map[string]int{}}
	s.setUp(p)
	h.schedule(s)
	return s, h
}

func (h *simHostile) schedule(s *sim) {
	if h.every == 0 {
		return
	}
	if at := s.now + h.every/2 + simTime(s.rng.Int63n(int64(h.every))); at < s.calmAt {
		s.push(simEvent{at: at, kind: simEvHostile})
	}
}

// simTermHeadroom: a member whose term got this close to MaxTerm (only a hostile peer can do
// that) may not be able to elect a leader again; the calm phase then checks safety only.
const simTermHeadroom = 1 << 16

// run runs the schedule: the fault phase here, with the hostile peer's events, then the
// calm phase with sim.run and its liveness checks, unless the hostile peer pushed a term near
// MaxTerm, when the calm phase runs for simLivenessBound with the safety checks alone.
func (h *simHostile) run(s *sim) *simFailure {
	for len(s.queue) > 0 && s.err == nil {
		ev := s.queue.pop()
		if ev.kind == simEvCalm {
			if slices.Max(s.check.maxTerm) < MaxTerm-simTermHeadroom {
				s.push(ev)
				return s.run()
			}
			s.trace.note(ev.at, -1, "terms near MaxTerm: the calm phase checks safety only")
			s.now = ev.at
			s.beginCalm()
			end := s.now + simLivenessBound(s.p.electionTicks)
			for len(s.queue) > 0 && s.err == nil && s.queue[0].at <= end {
				h.dispatch(s, s.queue.pop())
			}
			return s.err
		}
		h.dispatch(s, ev)
	}
	return s.err
}

// dispatch handles one event as sim.run does, and the hostile peer's.
func (h *simHostile) dispatch(s *sim, ev simEvent) {
	if !s.handle(ev) && ev.kind == simEvHostile {
		h.inject(s)
		h.schedule(s)
	}
}

// inject has the hostile peer send one message to a member that is up and has a
// configuration (one without a configuration follows the first leader of its cluster it hears
// from: see simHostile).
func (h *simHostile) inject(s *sim) {
	var targets []*simMember
	for _, m := range s.members {
		if m.up && !m.st.Config.IsEmpty() {
			targets = append(targets, m)
		}
	}
	if len(targets) == 0 {
		return
	}
	m := targets[s.rng.Intn(len(targets))]
	msg := h.draw(s, m)
	h.injected++
	err := m.r.Step(msg)
	res := "accepted"
	if err != nil {
		res = err.Error()
	}
	s.trace.note(s.now, m.idx, "hostile: "+simFormatMsg(msg)+fmt.Sprintf(" cluster=%.12q", msg.Cluster)+" => "+res)
	if err != nil {
		h.refused++
		s.check.refused(s, m, msg, err)
		return
	}
	// What Step promises to refuse.
	if msg.Validate() != nil || msg.Cluster != "sim" || msg.To != m.id {
		s.fail("%s accepted a message it must refuse: %s (cluster %q)", m.id, simFormatMsg(msg), msg.Cluster)
		return
	}
	h.after(s, m, msg)
}

// after is sim.afterEvent for a hostile message: replies to the hostile peer are checked as
// sent and then lost; anything to members goes to the network.
func (h *simHostile) after(s *sim, m *simMember, msg Message) {
	s.offNet = func(m *simMember, out Message) {
		if err := out.Validate(); err != nil {
			s.fail("%s answers the hostile peer with an invalid message: %v (%s)", m.id, err, simFormatMsg(out))
		}
		if out.From != m.id || out.Cluster != "sim" {
			s.fail("%s answers the hostile peer from %q of cluster %q", m.id, out.From, out.Cluster)
		}
		if out.Type == MsgVoteResp && !out.PreVote && !out.Reject {
			if m.persisted != (HardState{Term: out.Term, Vote: out.To}) {
				s.fail("%s grants its vote in term %d to %s before persisting it (persisted %+v)", m.id, out.Term, out.To, m.persisted)
			}
			s.check.vote(s, m, out.Term, out.To, "granted to the hostile peer")
		}
	}
	s.afterEvent(m, simTraceRec{kind: simTraceDeliver, msg: msg})
	s.offNet = nil
}

// simFuzzNumber draws a number near base, or (with edges) an edge value: 0, MaxTerm and
// around, the largest uint64.
func simFuzzNumber(r *rand.Rand, base uint64, edges bool) uint64 {
	x := r.Intn(16)
	if !edges && x >= 12 {
		x -= 4
	}
	switch x {
	case 0:
		return 0
	case 1:
		return base - min(base, 1)
	case 2, 3, 4:
		return base
	case 5:
		return base + 1
	case 6, 7:
		return base + uint64(2+r.Intn(50))
	case 12:
		return MaxTerm - 1
	case 13:
		return MaxTerm
	case 14:
		return MaxTerm + 1
	case 15:
		return math.MaxUint64
	default:
		return uint64(r.Intn(6))
	}
}

// simFuzzConfig draws a configuration over ids; usually sorted and without repeats, sometimes
// not.
func simFuzzConfig(r *rand.Rand, ids []string) Configuration {
	var c Configuration
	for range r.Intn(len(ids)) {
		c.Voters = append(c.Voters, ids[r.Intn(len(ids))])
	}
	for range r.Intn(3) {
		c.Learners = append(c.Learners, ids[r.Intn(len(ids))])
	}
	if r.Intn(4) != 0 {
		slices.Sort(c.Voters)
		slices.Sort(c.Learners)
		c.Voters = slices.Compact(c.Voters)
		c.Learners = slices.DeleteFunc(slices.Compact(c.Learners), func(id string) bool { return slices.Contains(c.Voters, id) })
	}
	return c
}

var simFuzzTypes = []MessageType{MsgVote, MsgVoteResp, MsgAppend, MsgAppendResp, MsgTimeoutNow, "install-snapshot", ""}

// simFuzzMessage draws a message to member to (whose status is st and persisted log l) of
// cluster, from the given sender: any type and fields (configurations over ids), half the time
// with the fields that do not belong to its type cleared, so that more of them pass validation.
func simFuzzMessage(r *rand.Rand, ids []string, cluster, from, to string, st Status, l LogState, termEdges bool) Message {
	lastTerm := l.Snapshot.Term
	if n := len(l.Entries); n > 0 {
		lastTerm = l.Entries[n-1].Term
	}
	m := Message{Type: simFuzzTypes[r.Intn(len(simFuzzTypes))], Cluster: cluster, From: from, To: to}
	m.Term = simFuzzNumber(r, st.Term, termEdges)
	m.PreVote, m.Transfer, m.Reject = r.Intn(3) == 0, r.Intn(5) == 0, r.Intn(4) == 0
	m.LastLogIndex, m.LastLogTerm = simFuzzNumber(r, st.LastIndex, true), simFuzzNumber(r, lastTerm, true)
	m.Round, m.Commit, m.Index = simFuzzNumber(r, 1, true), simFuzzNumber(r, st.Commit, true), simFuzzNumber(r, st.LastIndex, true)
	m.PrevLogIndex, m.PrevLogTerm = simFuzzNumber(r, st.LastIndex, true), simFuzzNumber(r, lastTerm, true)
	for i := range r.Intn(4) {
		e := Entry{Index: m.PrevLogIndex + uint64(i) + 1, Term: m.Term, Type: EntryNoop}
		if r.Intn(4) == 0 {
			e.Index, e.Term = simFuzzNumber(r, e.Index, true), simFuzzNumber(r, m.PrevLogTerm, true)
		}
		switch r.Intn(6) {
		case 0, 1, 2:
			c := simFuzzConfig(r, ids)
			e.Type, e.Config = EntryConfig, &c
		case 3:
			e.Type = "data"
		}
		m.Entries = append(m.Entries, e)
	}
	if r.Intn(4) == 0 {
		m.Snapshot = &Snapshot{Index: simFuzzNumber(r, st.Commit, true), Term: simFuzzNumber(r, lastTerm, true), Config: simFuzzConfig(r, ids)}
		if r.Intn(2) == 0 {
			m.PrevLogIndex, m.PrevLogTerm = m.Snapshot.Index, m.Snapshot.Term
		}
	}
	if r.Intn(4) == 0 {
		c := simFuzzConfig(r, ids)
		m.Config = &c
	}
	if r.Intn(2) == 0 {
		// The fields Validate allows on this type only.
		if m.Type != MsgVote {
			m.LastLogIndex, m.LastLogTerm = 0, 0
		}
		if m.Type != MsgVote && m.Type != MsgVoteResp {
			m.PreVote, m.Transfer = false, false
		}
		if m.Type.IsRequest() {
			m.Reject = false
		}
		if m.Type != MsgAppend {
			m.PrevLogIndex, m.PrevLogTerm, m.Entries, m.Snapshot, m.Config, m.Commit = 0, 0, nil, nil, nil, 0
		}
		if m.Type != MsgAppendResp {
			m.Index = 0
		}
	}
	return m
}

// draw makes the hostile peer's next message to member m.
func (h *simHostile) draw(s *sim, m *simMember) Message {
	r := s.rng
	from := simFuzzStrangers[r.Intn(len(simFuzzStrangers))]
	switch r.Intn(8) {
	case 0:
		from = s.members[r.Intn(len(s.members))].id // a member's id: see below
	case 1:
		from = []string{"", m.id, strings.Repeat("y", MaxIDLength+1)}[r.Intn(3)]
	}
	cluster := []string{"sim", "sim", "sim", "sim", "other", ""}[r.Intn(6)]
	to := m.id
	if r.Intn(8) == 0 {
		to = []string{"x", s.members[r.Intn(len(s.members))].id}[r.Intn(2)]
	}
	ids := []string{""}
	for _, o := range s.members {
		ids = append(ids, o.id)
	}
	msg := simFuzzMessage(r, append(ids, simFuzzStrangers...), cluster, from, to, m.st, m.log, h.termEdges)
	if _, member := s.byID[msg.From]; member && msg.From != msg.To && msg.Cluster == "sim" && msg.To == m.id {
		msg.Cluster = "other" // speaking for a member: out of scope (see simHostile)
	}
	for _, c := range []*Configuration{msg.Config, snapConfig(msg.Snapshot)} {
		if c != nil {
			c.Voters = slices.DeleteFunc(c.Voters, func(id string) bool { return id == msg.From })
		}
	}
	return msg
}

func snapConfig(s *Snapshot) *Configuration {
	if s == nil {
		return nil
	}
	return &s.Config
}

// simFuzzReport describes a failed fuzz input: the decoded schedule (its parameters and
// every decision it made: faults, membership changes and hostile messages, from a replay that
// keeps the whole trace) and the last events before the failure.
func simFuzzReport(data []byte) string {
	s, h := newFuzzSim(data)
	s.trace.keepAll = true
	err := h.run(s)
	var b strings.Builder
	fmt.Fprintf(&b, "schedule from the fuzz input (%d bytes): %v; hostile peer every %v (term edge values %v)\n", len(data), s.p, h.every, h.termEdges)
	fmt.Fprintf(&b, "%v; %d hostile messages, %d refused\n", s.stats, h.injected, h.refused)
	if err == nil {
		b.WriteString("the replay passed: the fuzz target is not deterministic\n")
		return b.String()
	}
	fmt.Fprintf(&b, "failed at %v: %s\n", err.at, err.msg)
	b.WriteString("decisions of the schedule:\n")
	var notes []simTraceRec
	for _, r := range s.trace.all {
		if r.kind == simTraceNote || r.kind == simTraceConfChange || r.kind == simTraceTransfer {
			notes = append(notes, r)
		}
	}
	b.WriteString(simFormatTrace(notes))
	events := s.trace.all[max(0, len(s.trace.all)-200):]
	fmt.Fprintf(&b, "last %d events:\n%s", len(events), simFormatTrace(events))
	return b.String()
}

// FuzzSimSchedule reads a schedule for a cluster of 3 to 5 members from the fuzz input
// (newFuzzSim): faults, network behaviour, clock rates, crashes and restarts, leadership
// transfers, membership changes, and a hostile peer injecting arbitrary messages. After every
// event it checks the simulator's invariants (TestSimulator lists them: at most one leader per
// term, no two lease holders at one instant, terms and commit indexes never going back, one
// vote per term persisted before it is granted, committed configurations agreeing and
// changing one member at a time, only voters campaigning), plus: a message the core refuses
// changes nothing, one of another cluster or for another member is refused, and every reply
// to the hostile peer is valid. Once the faults stop, the cluster must elect a leader within
// the simulator's liveness bound, unless the hostile peer pushed a term near MaxTerm.
//
// A failure prints the decoded schedule; go test saves the input under testdata/fuzz, and
// `go test ./pkg/raft -run FuzzSimSchedule/<file>` replays it.
func FuzzSimSchedule(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{1, 3, 4, 7, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, h := newFuzzSim(data)
		if err := h.run(s); err != nil {
			t.Fatalf("%s", simFuzzReport(data))
		}
	})
}

// FuzzStep drives one member, a of cluster c (whose other members are b and d), with
// operations read from the fuzz input: ticks, arbitrary messages from anyone (members,
// strangers, other clusters; any fields), restarts from what it persisted, leadership
// transfers and configuration changes. Its peers may be broken or lying, so only what the
// member guarantees on its own is checked, after every operation: it never panics; a message
// it refuses changes nothing; its term never goes back and its vote in a term never changes;
// its commit index never goes back while it runs; what it persists is a valid state that New
// accepts, and a restart from it resumes the same term, vote and log; every message it sends
// is valid, from a to a member of c; its status is consistent (commit and configuration
// index within the log, learner exactly when not a voter, a lease only while leading and
// not handing over, the application's lease within the protocol's).
func FuzzStep(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Fuzz(func(t *testing.T, data []byte) {
		var mode byte
		if len(data) > 0 {
			mode, data = data[0], data[1:]
		}
		r := rand.New(newSimByteSource(data))
		cfg := Config{ID: "a", Cluster: "c", ElectionTicks: 10, HeartbeatTicks: 2, Rand: rand.New(&simSource{x: 1})}
		switch mode % 4 {
		case 0:
			cfg.Voters = []string{"a", "b", "d"}
		case 1:
			cfg.Voters = []string{"a"}
		case 2: // joins: no configuration
		case 3:
			cfg.Voters, cfg.Learners = []string{"b", "d"}, []string{"a"}
		}
		var trace []string
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("mode %d, after:\n  %s\n%s", mode%4, strings.Join(trace, "\n  "), fmt.Sprintf(format, args...))
		}
		node, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var persisted HardState
		var log LogState
		maxTerm, maxCommit := uint64(0), uint64(0)
		votes := map[uint64]string{}
		// drain applies the member's Ready as the runtime does, checking it.
		drain := func() {
			rd := node.Ready()
			if rd.MustPersist {
				hs := rd.HardState
				if hs.Term < persisted.Term || hs.Term == persisted.Term && persisted.Vote != None && hs.Vote != persisted.Vote {
					fail("persisted %+v after %+v", hs, persisted)
				}
				if hs.Term > MaxTerm {
					fail("persists term %d, above MaxTerm", hs.Term)
				}
				if err := rd.Log.Validate(); err != nil {
					fail("persists an invalid log: %v (%s)", err, simFormatLog(rd.Log))
				}
				persisted, log = hs, rd.Log
			} else if rd.HardState != persisted {
				fail("HardState changed from %+v to %+v without MustPersist", persisted, rd.HardState)
			}
			if persisted.Vote != None {
				if v, ok := votes[persisted.Term]; ok && v != persisted.Vote {
					fail("voted for %s and %s in term %d", v, persisted.Vote, persisted.Term)
				}
				votes[persisted.Term] = persisted.Vote
			}
			for _, m := range rd.Messages {
				if err := m.Validate(); err != nil {
					fail("sends an invalid message: %v (%s)", err, simFormatMsg(m))
				}
				if m.From != "a" || m.Cluster != "c" {
					fail("sends %s of cluster %q", simFormatMsg(m), m.Cluster)
				}
				if m.Type == MsgVoteResp && !m.PreVote && !m.Reject && persisted != (HardState{Term: m.Term, Vote: m.To}) {
					fail("grants its vote in term %d to %s before persisting it (persisted %+v)", m.Term, m.To, persisted)
				}
			}
			st := node.Status()
			if st.Term != persisted.Term || st.Vote != persisted.Vote {
				fail("status term %d vote %q, persisted %+v", st.Term, st.Vote, persisted)
			}
			if st.Term < maxTerm || st.Commit < maxCommit {
				fail("term %d or commit %d went back from %d, %d", st.Term, st.Commit, maxTerm, maxCommit)
			}
			maxTerm, maxCommit = st.Term, st.Commit
			if st.Commit > st.LastIndex || st.ConfigIndex > st.LastIndex || st.Commit != log.Snapshot.Index ||
				st.LastIndex != log.Snapshot.Index+uint64(len(log.Entries)) {
				fail("status commit %d config index %d last %d, persisted log %s", st.Commit, st.ConfigIndex, st.LastIndex, simFormatLog(log))
			}
			if voter := slices.Contains(st.Config.Voters, "a"); voter == (st.State == StateLearner) {
				fail("%s with configuration %v", st.State, st.Config)
			}
			if st.LeaseUntil != 0 && (st.State != StateLeader || st.Transferring) || st.AppLeaseUntil > st.LeaseUntil {
				fail("lease %d, application lease %d as %s (transferring %v)", st.LeaseUntil, st.AppLeaseUntil, st.State, st.Transferring)
			}
		}
		drain()
		senders := []string{"b", "d", "x", "a", ""}
		for op := 0; op < 64 && r.Intn(16) != 0; op++ {
			switch x := r.Intn(20); {
			case x < 6:
				n := 1 + r.Intn(12)
				trace = append(trace, fmt.Sprintf("tick ×%d", n))
				for range n {
					node.Tick()
					drain()
				}
			case x < 17:
				st := node.Status()
				cluster := []string{"c", "c", "c", "c", "other"}[r.Intn(5)]
				to := "a"
				if r.Intn(10) == 0 {
					to = "b"
				}
				msg := simFuzzMessage(r, []string{"", "a", "b", "d", "e", "x"}, cluster, senders[r.Intn(len(senders))], to, st, log, true)
				err := node.Step(msg)
				trace = append(trace, fmt.Sprintf("step %s cluster=%q => %v", simFormatMsg(msg), msg.Cluster, err))
				if err != nil {
					if after := node.Status(); after.Term != st.Term || after.Vote != st.Vote || after.State != st.State ||
						after.Leader != st.Leader || after.Commit != st.Commit || after.LastIndex != st.LastIndex || node.HasReady() {
						fail("refused the message (%v) but changed: %+v -> %+v", err, st, after)
					}
					continue
				}
				if msg.Validate() != nil || msg.Cluster != "c" || msg.To != "a" {
					fail("accepted a message it must refuse")
				}
				drain()
			case x < 18:
				// A restart from what was persisted.
				cfg.Log, cfg.HardState = log, persisted
				cfg.Rand = rand.New(&simSource{x: uint64(op)})
				node, err = New(cfg)
				trace = append(trace, fmt.Sprintf("restart from %+v %s => %v", persisted, simFormatLog(log), err))
				if err != nil {
					fail("cannot restart from what it persisted: %v", err)
				}
				if st := node.Status(); st.Term != persisted.Term || st.Vote != persisted.Vote || st.Commit != log.Snapshot.Index {
					fail("restarted as %+v", st)
				}
				drain()
			case x < 19:
				err := node.TransferLeadership([]string{None, "b", "x"}[r.Intn(3)])
				trace = append(trace, fmt.Sprintf("TransferLeadership => %v", err))
				drain()
			default:
				cc := ConfChange{Type: []ConfChangeType{ConfAddLearner, ConfPromote, ConfDemote, ConfRemove, "bogus"}[r.Intn(5)],
					ID: []string{"b", "d", "e", "a", ""}[r.Intn(5)]}
				err := node.ProposeConfChange(cc)
				trace = append(trace, fmt.Sprintf("ProposeConfChange(%v) => %v", cc, err))
				drain()
			}
		}
	})
}
