package raft

// The invariants the simulator checks after every event. Only the member an event happened
// to can change, so observing that member after each of its events checks every state the
// cluster passes through.

import (
	"fmt"
	"slices"
)

// simLease is an interval of global time [from, until) in which a member claimed a lease:
// from is when the member was first seen holding it, until is the global time of the tick
// its lease runs to. It is a promise: a member that crashes, or steps down on seeing a
// higher term, may have handed it out already (to itself or to the application), so the
// interval keeps its end. Only a leader that starts a handover gives up its protocol lease
// on purpose, and then the interval ends at that instant.
type simLease struct {
	member    int
	inc       int
	term      uint64
	from      simTime
	until     simTime
	untilTick uint64
}

func (l simLease) String() string {
	return fmt.Sprintf("m%d (incarnation %d) in term %d over [%v, %v), to its tick %d", l.member+1, l.inc,
		l.term, l.from, l.until, l.untilTick)
}

func (l simLease) overlaps(o simLease) bool { return l.from < o.until && o.from < l.until }

// simLeases collects the lease intervals of one kind and checks that no two members'
// intervals overlap.
type simLeases struct {
	kind string
	all  []simLease
	// open[m] is the index of member m's interval that is still being extended, or -1.
	open []int
}

func newSimLeases(kind string, size int) simLeases {
	ls := simLeases{kind: kind, open: make([]int, size)}
	for i := range ls.open {
		ls.open[i] = -1
	}
	return ls
}

// hold records that member (incarnation inc, term) holds the lease at now until the global
// time until. It returns an interval of another member that overlaps, if any.
func (ls *simLeases) hold(member, inc int, term uint64, now, until simTime, untilTick uint64) (simLease, bool) {
	i := ls.open[member]
	if i >= 0 {
		cur := &ls.all[i]
		if cur.inc == inc && cur.term == term && now <= cur.until {
			if until <= cur.until {
				return simLease{}, false // nothing new promised
			}
			cur.until, cur.untilTick = until, untilTick
			return ls.conflict(*cur)
		}
	}
	ls.all = append(ls.all, simLease{member: member, inc: inc, term: term, from: now, until: until, untilTick: untilTick})
	ls.open[member] = len(ls.all) - 1
	return ls.conflict(ls.all[len(ls.all)-1])
}

func (ls *simLeases) conflict(l simLease) (simLease, bool) {
	for _, o := range ls.all {
		if o.member != l.member && o.overlaps(l) {
			return o, true
		}
	}
	return simLease{}, false
}

// close stops extending member's open interval, ending it at end if that is earlier.
func (ls *simLeases) close(member int, end simTime) {
	if i := ls.open[member]; i >= 0 {
		ls.all[i].until = min(ls.all[i].until, end)
		if ls.all[i].until <= ls.all[i].from {
			ls.all[i].until = ls.all[i].from
		}
	}
	ls.open[member] = -1
}

const simForever simTime = 1 << 62

type simVoteKey struct {
	member int
	term   uint64
}

// simChecker holds what the invariants need to remember over the whole schedule, across
// crashes.
type simChecker struct {
	// leaders: every (term, leader) ever seen, including members that crashed later.
	leaders map[uint64]int
	// votes: the vote each member cast in each term, from its persisted HardState and from
	// the grants it sent.
	votes map[simVoteKey]string
	// maxTerm: the highest term each member ever reported, over all its incarnations.
	maxTerm []uint64
	lease   simLeases
	app     simLeases

	// maxCommit: the highest commit index each member ever reported, over all incarnations.
	maxCommit []uint64
	// committed: the configuration in force at each committed index some member persisted
	// (the snapshot of its log), with the entry's term; committedIdx lists those indexes in
	// order. Every configuration change that commits is seen here: a change is proposed only
	// once the previous one committed, so the first commit that covers a configuration entry
	// covers no later one.
	committed    map[uint64]simCommitted
	committedIdx []uint64
	// entries: every log entry any member persisted, by index and term.
	entries map[simEntryKey]simEntrySeen
}

type simCommitted struct {
	term   uint64
	config Configuration
	member int
	at     simTime
}

type simEntryKey struct{ index, term uint64 }

type simEntrySeen struct {
	entry  Entry
	member int
}

func (c *simChecker) init(size int) {
	c.leaders = map[uint64]int{}
	c.votes = map[simVoteKey]string{}
	c.maxTerm = make([]uint64, size)
	c.lease = newSimLeases("lease", size)
	c.app = newSimLeases("application lease", size)
	c.maxCommit = make([]uint64, size)
	c.committed = map[uint64]simCommitted{}
	c.entries = map[simEntryKey]simEntrySeen{}
}

func (c *simChecker) started(s *sim, m *simMember) {
	c.status(s, m, Status{})
}

func (c *simChecker) crashed(s *sim, m *simMember) {
	// The promised intervals keep their ends: the crash takes nothing back.
	c.lease.close(m.idx, simForever)
	c.app.close(m.idx, simForever)
}

// ready checks what the core asks the runtime to do.
func (c *simChecker) ready(s *sim, m *simMember, rd Ready) {
	// Whether HardState matches the member's state is checked by status, after the persist.
	if !rd.MustPersist && rd.HardState != m.persisted {
		s.fail("%s: HardState changed from %+v to %+v without MustPersist", m.id, m.persisted, rd.HardState)
	}
}

// persist checks what the member persists: invariant 3 on the HardState (the persisted term
// never goes back and a vote, once persisted, never changes within its term), and the log
// (invariants 5 to 7).
func (c *simChecker) persist(s *sim, m *simMember, rd Ready) {
	c.persistHardState(s, m, rd.HardState)
	c.persistLog(s, m, rd.Log)
}

func (c *simChecker) persistHardState(s *sim, m *simMember, hs HardState) {
	old := m.persisted
	if hs.Term < old.Term {
		s.fail("%s: persisted term goes back from %d to %d", m.id, old.Term, hs.Term)
	}
	if hs.Term == old.Term && old.Vote != None && hs.Vote != old.Vote {
		s.fail("%s: persisted vote in term %d changes from %q to %q", m.id, hs.Term, old.Vote, hs.Vote)
	}
	if hs.Vote != None {
		c.vote(s, m, hs.Term, hs.Vote, "persisted")
	}
}

// persistLog checks a log the member persists: valid, its commit index (the snapshot's)
// never going back (invariant 7); every entry agreeing with any other persisted entry of the
// same index and term (log matching); and the snapshot, which is committed, agreeing with
// every other committed configuration (invariants 5 and 6).
func (c *simChecker) persistLog(s *sim, m *simMember, l LogState) {
	if err := l.Validate(); err != nil {
		s.fail("%s persists an invalid log: %v (%s)", m.id, err, simFormatLog(l))
		return
	}
	if l.Snapshot.Index < m.log.Snapshot.Index {
		s.fail("%s: persisted commit index goes back from %d to %d", m.id, m.log.Snapshot.Index, l.Snapshot.Index)
	}
	for _, e := range l.Entries {
		k := simEntryKey{e.Index, e.Term}
		seen, ok := c.entries[k]
		if !ok {
			c.entries[k] = simEntrySeen{entry: e, member: m.idx}
			continue
		}
		if seen.entry.Type != e.Type || (e.Config == nil) != (seen.entry.Config == nil) ||
			e.Config != nil && !e.Config.Equal(*seen.entry.Config) {
			s.fail("log matching: %s persists entry %d of term %d as %s, %s persisted it as %s", m.id, e.Index, e.Term,
				simFormatEntry(e), s.members[seen.member].id, simFormatEntry(seen.entry))
		}
	}
	snap := l.Snapshot
	if snap.Index == 0 {
		return // never joined
	}
	if seen, ok := c.entries[simEntryKey{snap.Index, snap.Term}]; ok && seen.entry.Type == EntryConfig && !seen.entry.Config.Equal(snap.Config) {
		s.fail("%s commits index %d of term %d with configuration %v, but the entry there holds %v", m.id,
			snap.Index, snap.Term, snap.Config, *seen.entry.Config)
	}
	c.commit(s, m, snap)
}

// commit records that m committed snap: the configuration in force at snap.Index.
//
// Invariant 5: every member that committed an index agrees on the term of its entry and on
// the configuration in force there.
//
// Invariant 6: committed configurations, in index order, differ from one to the next by at
// most one member added as a learner, promoted, demoted or removed (so the voters by at most
// one), and the terms of their entries never decrease.
func (c *simChecker) commit(s *sim, m *simMember, snap Snapshot) {
	if got, ok := c.committed[snap.Index]; ok {
		if got.term != snap.Term || !got.config.Equal(snap.Config) {
			s.fail("committed configurations disagree at index %d: %s committed term %d %v, %s committed term %d %v at %v",
				snap.Index, m.id, snap.Term, snap.Config, s.members[got.member].id, got.term, got.config, got.at)
		}
		return
	}
	cur := simCommitted{term: snap.Term, config: snap.Config.Clone(), member: m.idx, at: s.now}
	i, _ := slices.BinarySearch(c.committedIdx, snap.Index)
	if i > 0 {
		c.followsCommitted(s, c.committedIdx[i-1], snap.Index, c.committed[c.committedIdx[i-1]], cur)
	}
	if i < len(c.committedIdx) {
		c.followsCommitted(s, snap.Index, c.committedIdx[i], cur, c.committed[c.committedIdx[i]])
	}
	c.committedIdx = slices.Insert(c.committedIdx, i, snap.Index)
	c.committed[snap.Index] = cur
}

func (c *simChecker) followsCommitted(s *sim, ai, bi uint64, a, b simCommitted) {
	if a.term > b.term {
		s.fail("committed entries' terms go back: index %d has term %d (%s), index %d term %d (%s)",
			ai, a.term, s.members[a.member].id, bi, b.term, s.members[b.member].id)
	}
	if _, _, ok := simConfStep(a.config, b.config); !ok {
		s.fail("committed configurations at index %d (%v, by %s) and %d (%v, by %s) differ by more than one single-member change",
			ai, a.config, s.members[a.member].id, bi, b.config, s.members[b.member].id)
	}
}

// newestCommitted returns the configuration at the highest index any member committed.
func (c *simChecker) newestCommitted() (Configuration, bool) {
	if len(c.committedIdx) == 0 {
		return Configuration{}, false
	}
	return c.committed[c.committedIdx[len(c.committedIdx)-1]].config, true
}

// committedChanges counts the committed configuration changes by type.
func (c *simChecker) committedChanges() [4]int {
	var n [4]int
	for i := 1; i < len(c.committedIdx); i++ {
		cc, same, ok := simConfStep(c.committed[c.committedIdx[i-1]].config, c.committed[c.committedIdx[i]].config)
		if same || !ok {
			continue
		}
		n[slices.Index(simConfChangeTypes[:], cc.Type)]++
	}
	return n
}

func (c *simChecker) vote(s *sim, m *simMember, term uint64, cand, how string) {
	k := simVoteKey{m.idx, term}
	if prev, ok := c.votes[k]; ok && prev != cand {
		s.fail("%s voted for %s and for %s in term %d (%s)", m.id, prev, cand, term, how)
		return
	}
	c.votes[k] = cand
}

// sent checks a message before the network gets it: well formed, from this member, and a
// granted vote only after the vote was persisted.
func (c *simChecker) sent(s *sim, m *simMember, msg Message) {
	if err := msg.Validate(); err != nil {
		s.fail("%s sends an invalid message: %v (%s)", m.id, err, simFormatMsg(msg))
	}
	if msg.From != m.id || msg.Cluster != "sim" {
		s.fail("%s sends a message from %q of cluster %q", m.id, msg.From, msg.Cluster)
	}
	if _, ok := s.byID[msg.To]; !ok {
		s.fail("%s sends to unknown member %q", m.id, msg.To)
	}
	// Invariant 8: only a voter of its own configuration asks for votes, so a member with no
	// configuration never does.
	if msg.Type == MsgVote {
		if cfg := m.r.Status().Config; !slices.Contains(cfg.Voters, m.id) {
			s.fail("%s asks %s for a vote (pre-vote=%v) but is no voter of its configuration %v", m.id, msg.To, msg.PreVote, cfg)
		}
	}
	if msg.Type == MsgVoteResp && !msg.PreVote && !msg.Reject {
		if m.persisted != (HardState{Term: msg.Term, Vote: msg.To}) {
			s.fail("%s grants its vote in term %d to %s before persisting it (persisted %+v)", m.id, msg.Term, msg.To, m.persisted)
		}
		c.vote(s, m, msg.Term, msg.To, "granted")
	}
}

// status checks a member's status after one of its events (prev is the status before).
func (c *simChecker) status(s *sim, m *simMember, prev Status) {
	st := m.st
	if st.Now != m.ticks {
		s.fail("%s: Status().Now is %d after %d ticks", m.id, st.Now, m.ticks)
	}
	if st.Term != m.persisted.Term || st.Vote != m.persisted.Vote {
		s.fail("%s: term %d vote %q after the event, but persisted %+v", m.id, st.Term, st.Vote, m.persisted)
	}

	// Invariant 3: terms never go back over the member's lifetime, restarts included.
	if st.Term < c.maxTerm[m.idx] {
		s.fail("%s: term goes back from %d to %d", m.id, c.maxTerm[m.idx], st.Term)
	}
	c.maxTerm[m.idx] = max(c.maxTerm[m.idx], st.Term)

	c.statusLog(s, m, prev)

	// Invariant 1: at most one leader per term.
	if st.State == StateLeader {
		if l, ok := c.leaders[st.Term]; ok && l != m.idx {
			s.fail("two leaders in term %d: %s and %s", st.Term, s.members[l].id, m.id)
		} else if !ok {
			c.leaders[st.Term] = m.idx
			s.stats.leaders++
		}
		if st.Leader != m.id {
			s.fail("%s leads term %d but reports leader %q", m.id, st.Term, st.Leader)
		}
	}

	// The shape of the lease fields.
	if st.LeaseUntil != 0 && (st.State != StateLeader || st.Transferring) {
		s.fail("%s reports LeaseUntil %d as %s (transferring=%v)", m.id, st.LeaseUntil, st.State, st.Transferring)
	}
	if st.AppLeaseUntil > st.LeaseUntil {
		s.fail("%s: AppLeaseUntil %d is beyond LeaseUntil %d", m.id, st.AppLeaseUntil, st.LeaseUntil)
	}

	// Invariant 2: no two members hold the lease (or the application lease) at one instant.
	if st.HoldsLease() {
		until := m.globalTime(st.LeaseUntil)
		if !prev.HoldsLease() || prev.Term != st.Term {
			s.stats.leases++
		}
		c.hold(s, &c.lease, m, until, st.LeaseUntil)
	}
	if st.State == StateLeader && !st.Transferring && st.Now < st.AppLeaseUntil {
		until := m.globalTime(st.AppLeaseUntil)
		c.hold(s, &c.app, m, until, st.AppLeaseUntil)
	}
}

// statusLog checks the member's log and configuration after one of its events.
func (c *simChecker) statusLog(s *sim, m *simMember, prev Status) {
	st := m.st
	// Invariant 7: the commit index never goes back over the member's lifetime, restarts
	// included; and the log in memory is the one persisted (it was persisted before the
	// messages that depend on it were sent), so a restart loses nothing of it.
	if st.Commit < c.maxCommit[m.idx] {
		s.fail("%s: commit index goes back from %d to %d", m.id, c.maxCommit[m.idx], st.Commit)
	}
	c.maxCommit[m.idx] = max(c.maxCommit[m.idx], st.Commit)
	if last := m.log.Snapshot.Index + uint64(len(m.log.Entries)); st.Commit != m.log.Snapshot.Index || st.LastIndex != last {
		s.fail("%s: commit %d and last index %d after the event, but persisted %d and %d", m.id, st.Commit, st.LastIndex,
			m.log.Snapshot.Index, last)
	}
	if st.Commit > st.LastIndex || st.ConfigIndex > st.LastIndex {
		s.fail("%s: commit %d or configuration index %d beyond the last index %d", m.id, st.Commit, st.ConfigIndex, st.LastIndex)
	}

	// Invariant 7: the member uses the newest configuration of its log, so never one older
	// than the committed one it holds; the voters it counts are those of that configuration.
	if st.ConfigIndex <= st.Commit && !st.Config.Equal(m.log.Snapshot.Config) {
		s.fail("%s uses %v (index %d), not the committed %v at its commit index %d", m.id, st.Config, st.ConfigIndex,
			m.log.Snapshot.Config, st.Commit)
	}
	if st.ConfigIndex != prev.ConfigIndex || st.LastIndex != prev.LastIndex || st.Commit != prev.Commit || st.Now == 0 {
		if v := m.r.Voters(); !slices.Equal(v, st.Config.Voters) {
			s.fail("%s counts voters %v, but its configuration is %v", m.id, v, st.Config)
		}
	}

	// A member left running after its removal committed (a zombie) is never elected again.
	if m.zombie && st.State == StateLeader && prev.State != StateLeader {
		s.fail("%s, whose removal is committed, is elected leader of term %d", m.id, st.Term)
	}

	// Invariant 8: only a voter of its own configuration is ever pre-candidate, candidate or
	// leader (or a follower); any other member is a learner.
	voter := slices.Contains(st.Config.Voters, m.id)
	if st.State == StateLearner && voter || st.State != StateLearner && !voter {
		s.fail("%s is %s with configuration %v", m.id, st.State, st.Config)
	}
}

func (c *simChecker) hold(s *sim, ls *simLeases, m *simMember, until simTime, untilTick uint64) {
	if o, bad := ls.hold(m.idx, m.inc, m.st.Term, s.now, until, untilTick); bad {
		s.fail("%s overlap: %v, while %v", ls.kind, ls.all[ls.open[m.idx]], o)
	}
}

// refused: a message the core refused (err) changed nothing and leaves nothing to send.
func (c *simChecker) refused(s *sim, m *simMember, msg Message, err error) {
	st := m.r.Status()
	if st.Term != m.st.Term || st.Vote != m.st.Vote || st.State != m.st.State || st.Leader != m.st.Leader ||
		st.Commit != m.st.Commit || st.LastIndex != m.st.LastIndex || st.ConfigIndex != m.st.ConfigIndex ||
		st.LeaseUntil != m.st.LeaseUntil || m.r.HasReady() {
		s.fail("%s refused %s (%v) but changed: %+v -> %+v", m.id, simFormatMsg(msg), err, m.st, st)
	}
}

// transferred: a leader that starts a handover stops claiming its protocol lease at once (its
// successor's election skips the followers' leases); what it promised the application stands.
func (c *simChecker) transferred(s *sim, m *simMember, err error) {
	if err == nil {
		c.lease.close(m.idx, s.now)
	}
}
