package raft

// The invariants the simulator checks after every event. Only the member an event happened
// to can change, so observing that member after each of its events checks every state the
// cluster passes through.

import "fmt"

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
}

func (c *simChecker) init(size int) {
	c.leaders = map[uint64]int{}
	c.votes = map[simVoteKey]string{}
	c.maxTerm = make([]uint64, size)
	c.lease = newSimLeases("lease", size)
	c.app = newSimLeases("application lease", size)
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

// persist checks invariant 3 on the durable state: the persisted term never goes back and a
// vote, once persisted, never changes within its term.
func (c *simChecker) persist(s *sim, m *simMember, hs HardState) {
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

func (c *simChecker) hold(s *sim, ls *simLeases, m *simMember, until simTime, untilTick uint64) {
	if o, bad := ls.hold(m.idx, m.inc, m.st.Term, s.now, until, untilTick); bad {
		s.fail("%s overlap: %v, while %v", ls.kind, ls.all[ls.open[m.idx]], o)
	}
}

// transferred: a leader that starts a handover stops claiming its protocol lease at once (its
// successor's election skips the followers' leases); what it promised the application stands.
func (c *simChecker) transferred(s *sim, m *simMember, err error) {
	if err == nil {
		c.lease.close(m.idx, s.now)
	}
}
