package raft

// Membership schedules: a subset of the members bootstraps the cluster, the others start with
// no configuration, and during the fault phase whoever leads at that moment is asked, at
// random times, for a random single-member change. A member whose removal is committed is
// then either crashed for good (its pod is gone) or left running, cut off (a zombie), to show
// that it cannot disrupt the cluster. The invariants these schedules add are checked in
// sim_check_test.go; the calm phase's liveness bounds are in sim_schedule_test.go and here.

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// simMembershipOneIn: one schedule in this many is a membership schedule. The default 3000
// schedules then hold about 1500 of them.
const simMembershipOneIn = 2

// simMembershipSalt separates the membership generator's stream from the fault generator's.
const simMembershipSalt = 0x6d656d62657273 // "members"

// simConfChangeTypes are the single-member changes the leader is asked for, in the order
// simStats.confCommitted counts them.
var simConfChangeTypes = [...]ConfChangeType{ConfAddLearner, ConfPromote, ConfDemote, ConfRemove}

// simConfigBound is how long, after the members agreed on a leader holding the lease in the
// calm phase, every member of that leader's configuration may take to hold it and know it
// committed: four heartbeat intervals of the slowest possible clock.
//
// Why that suffices (H = HeartbeatTicks; in the calm phase a message takes at most H/4
// nominal ticks, so a round trip at most H/2): every member of the configuration already
// follows the leader. The leader starts a round within H. A member that lacks entries
// rejects it with its last index as a hint, and the leader answers at once with the entries
// it lacks (or its snapshot), which the member acknowledges: two round trips, H in all, so
// the leader holds a majority's acknowledgement, and commits its last entry, by 2H. The
// next round, started by 3H, carries that commit index to every member by 3H + H/4.
func simConfigBound(heartbeatTicks int) simTime {
	slowest := float64(simNominalTick) * (1 + simDriftHalfWidth)
	return simTime(4 * float64(heartbeatTicks) * slowest)
}

// nextConfChangeTime: the leader is asked for a change every E/10 to 11E/10, about twice as
// often as faults are injected, since many requests are refused (a change pending, the no-op
// not committed yet, a lease not backed by the new voters).
func (s *sim) nextConfChangeTime() simTime {
	e := s.electionTimeout()
	return s.now + e/10 + simTime(s.mrng.Int63n(int64(e)))
}

// confChange asks a leader for a random single-member change and checks that a refusal
// changes nothing and an acceptance changes exactly what was asked.
func (s *sim) confChange() {
	if s.calm {
		return
	}
	defer func() {
		if next := s.nextConfChangeTime(); next < s.calmAt {
			s.push(simEvent{at: next, kind: simEvConfChange})
		}
	}()
	s.retireRemoved()
	var leaders []*simMember
	for _, m := range s.members {
		if m.up && m.st.State == StateLeader {
			leaders = append(leaders, m)
		}
	}
	if len(leaders) == 0 {
		return
	}
	// Whoever leads: usually the leader of the highest term, sometimes a stale one that has
	// not noticed it was deposed.
	l := leaders[s.mrng.Intn(len(leaders))]
	if m := s.leader(); s.mrng.Intn(4) != 0 {
		l = m
	}
	s.propose(l, true)
}

// elected: half the time, a new leader is asked for a change within two ticks, often before it
// committed its no-op, which it must then refuse (ErrNotReadyForConfChange).
func (s *sim) elected(m *simMember) {
	if s.calm || s.mrng.Intn(2) != 0 {
		return
	}
	s.push(simEvent{at: s.now + simTime(s.mrng.Int63n(int64(2*simNominalTick))), kind: simEvConfChange,
		member: int32(m.idx), inc: int32(m.inc)})
}

// confChangeOnce asks member m (incarnation inc) for a change if it still leads.
func (s *sim) confChangeOnce(m *simMember, inc int) {
	if s.calm || !m.up || m.inc != inc || m.st.State != StateLeader {
		return
	}
	s.propose(m, true)
}

// propose asks leader l for one random change; more asks for a second one at once when the
// mutation that allows concurrent changes is on.
func (s *sim) propose(l *simMember, more bool) {
	cc, valid := s.drawConfChange(l)
	before := l.r.Status()
	var err error
	if s.opt.mut == simMutationConcurrentConfChanges {
		// The core has no hook for this: reach into its unexported state so that the
		// pending change looks committed to ProposeConfChange.
		saved := l.r.confIndex
		l.r.confIndex = min(l.r.confIndex, l.r.log.commit)
		if err = l.r.ProposeConfChange(cc); err != nil {
			l.r.confIndex = saved
		}
	} else {
		err = l.r.ProposeConfChange(cc)
	}
	s.stats.confProposed++
	s.check.proposed(s, l, cc, valid, before, err)
	if err == nil {
		s.stats.confAccepted++
		if cc.Type == ConfRemove {
			s.members[s.byID[cc.ID]].retired = true
		}
	}
	s.afterEvent(l, simTraceRec{kind: simTraceConfChange, cc: cc, err: err})
	if err == nil && more && s.opt.mut == simMutationConcurrentConfChanges && l.up && l.st.State == StateLeader {
		s.propose(l, false)
	}
}

// drawConfChange draws a change for leader l: its type, then a member it applies to. It
// reports whether the change applies to l's configuration; one in ten times, or when no
// member fits, the target is any member, so that refusals are exercised too.
func (s *sim) drawConfChange(l *simMember) (ConfChange, bool) {
	cfg := l.st.Config
	var cc ConfChange
	var fit []string
	switch x := s.mrng.Intn(100); {
	case x < 30:
		cc.Type = ConfAddLearner
		for _, m := range s.members {
			if !m.retired && !slices.Contains(cfg.Voters, m.id) && !slices.Contains(cfg.Learners, m.id) {
				fit = append(fit, m.id)
			}
		}
	case x < 60:
		cc.Type = ConfPromote
		// Caught up or not: the runtime promotes only caught-up learners, the core must stay
		// safe and live either way.
		fit = append(fit, cfg.Learners...)
	case x < 80:
		cc.Type = ConfDemote
		for _, id := range cfg.Voters {
			if id != l.id {
				fit = append(fit, id)
			}
		}
	default:
		cc.Type = ConfRemove
		for _, id := range append(slices.Clone(cfg.Voters), cfg.Learners...) {
			if id != l.id {
				fit = append(fit, id)
			}
		}
	}
	if len(fit) > 0 && s.mrng.Intn(10) != 0 {
		cc.ID = fit[s.mrng.Intn(len(fit))]
		return cc, true
	}
	// Any member, the leader included, but never a retired one as a new learner: ids are
	// not reused.
	any := []string{l.id}
	for _, m := range s.members {
		if !m.retired || cc.Type != ConfAddLearner {
			any = append(any, m.id)
		}
	}
	cc.ID = any[s.mrng.Intn(len(any))]
	_, err := cc.apply(cfg, l.id)
	return cc, err == nil
}

// simCaughtUp is pkg/node's rule for promoting a learner: it acknowledged the leader within
// an election timeout and holds the leader's whole log.
func simCaughtUp(st Status, id string, electionTicks int) bool {
	at, acked := st.LastAck[id]
	return acked && st.Now-at < uint64(electionTicks) && st.Match[id] == st.LastIndex
}

// retireRemoved acts out the members whose removal is committed: most are crashed for good,
// like a pod that was deleted; the others keep running, which must not disrupt the cluster.
func (s *sim) retireRemoved() {
	newest, ok := s.check.newestCommitted()
	if !ok {
		return
	}
	for _, m := range s.members {
		if !m.retired || m.gone || m.zombie ||
			slices.Contains(newest.Voters, m.id) || slices.Contains(newest.Learners, m.id) {
			continue
		}
		if s.mrng.Intn(4) == 0 {
			m.zombie = true
			s.stats.zombies++
			s.trace.note(s.now, m.idx, "removed; keeps running")
			continue
		}
		m.gone = true
		s.stats.gone++
		if m.up {
			s.crash(m, " for good: removed, its pod is gone")
		} else {
			s.trace.note(s.now, m.idx, "removed while down: never restarts")
		}
	}
}

// configKnown reports whether every member of the configuration of lead, the leader the
// cluster agrees on (see convergedLeader), holds that configuration and knows it committed.
func (s *sim) configKnown(lead *simMember) bool {
	if lead.st.ConfigIndex > lead.st.Commit {
		return false
	}
	ok := true
	simForMembers(lead.st.Config, func(id string) {
		m := s.members[s.byID[id]]
		if !m.up || !m.st.Config.Equal(lead.st.Config) || m.st.Commit < lead.st.ConfigIndex {
			ok = false
		}
	})
	return ok
}

func (s *sim) failConfigLiveness() {
	lead := s.agreed
	var b strings.Builder
	fmt.Fprintf(&b, " leader %s uses %v (index %d, commit %d);", lead.id, lead.st.Config, lead.st.ConfigIndex, lead.st.Commit)
	for _, m := range s.members {
		if !m.up {
			fmt.Fprintf(&b, " %s down;", m.id)
			continue
		}
		fmt.Fprintf(&b, " %s %s uses %v (index %d), commit %d last %d;", m.id, m.st.State, m.st.Config,
			m.st.ConfigIndex, m.st.Commit, m.st.LastIndex)
	}
	s.fail("liveness: the members of the leader's configuration do not all hold it committed within %v (4 heartbeat intervals) of agreeing on %s at %v:%s",
		simConfigBound(s.p.heartbeatTicks), lead.id, s.agreedAt, b.String())
}

func simIsMember(c Configuration, id string) bool {
	return slices.Contains(c.Voters, id) || slices.Contains(c.Learners, id)
}

// simForMembers calls f for every voter and learner of c.
func simForMembers(c Configuration, f func(id string)) {
	for _, id := range c.Voters {
		f(id)
	}
	for _, id := range c.Learners {
		f(id)
	}
}

// simConfStep returns the single-member change that turns a into b. ok is false if b is not
// a, nor a with exactly one member added as a learner, promoted, demoted or removed; same
// reports whether a and b are equal.
func simConfStep(a, b Configuration) (cc ConfChange, same, ok bool) {
	role := func(c Configuration, id string) byte {
		switch {
		case slices.Contains(c.Voters, id):
			return 'v'
		case slices.Contains(c.Learners, id):
			return 'l'
		}
		return 0
	}
	var changed []string
	for _, c := range []Configuration{a, b} {
		simForMembers(c, func(id string) {
			if role(a, id) != role(b, id) && !slices.Contains(changed, id) {
				changed = append(changed, id)
			}
		})
	}
	switch len(changed) {
	case 0:
		return ConfChange{}, true, true
	case 1:
	default:
		return ConfChange{}, false, false
	}
	id := changed[0]
	switch [2]byte{role(a, id), role(b, id)} {
	case [2]byte{0, 'l'}:
		return ConfChange{ConfAddLearner, id}, false, true
	case [2]byte{'l', 'v'}:
		return ConfChange{ConfPromote, id}, false, true
	case [2]byte{'v', 'l'}:
		return ConfChange{ConfDemote, id}, false, true
	case [2]byte{'v', 0}, [2]byte{'l', 0}:
		return ConfChange{ConfRemove, id}, false, true
	}
	return ConfChange{}, false, false // a new voter that was no learner
}

// proposed checks the leader after ProposeConfChange: a refusal changes nothing and leaves
// nothing to persist or send; an acceptance appends exactly one entry holding exactly the
// change asked for, in use at once. valid says the change applies to the configuration, so
// that ErrInvalidConfChange would be wrong.
func (c *simChecker) proposed(s *sim, l *simMember, cc ConfChange, valid bool, before Status, err error) {
	after := l.r.Status()
	if err != nil {
		known := false
		for _, e := range []error{ErrTransferring, ErrConfChangePending, ErrNotReadyForConfChange, ErrInvalidConfChange} {
			known = known || errors.Is(err, e)
		}
		if !known {
			s.fail("%s: ProposeConfChange(%v) as leader: unexpected error %v", l.id, cc, err)
		}
		if valid && errors.Is(err, ErrInvalidConfChange) {
			s.fail("%s refuses the change %v to %v as invalid: %v", l.id, cc, before.Config, err)
		}
		if !after.Config.Equal(before.Config) || after.LastIndex != before.LastIndex ||
			after.ConfigIndex != before.ConfigIndex || after.Commit != before.Commit ||
			after.Term != before.Term || after.State != before.State || after.LeaseUntil != before.LeaseUntil {
			s.fail("%s refused %v (%v) but changed: %+v -> %+v", l.id, cc, err, before, after)
		}
		if l.r.HasReady() {
			s.fail("%s refused %v (%v) but has something to persist or send", l.id, cc, err)
		}
		return
	}
	if !valid {
		s.fail("%s accepts %v, which does not apply to %v", l.id, cc, before.Config)
	}
	// The rules ProposeConfChange documents. Not checked under the mutation that breaks one
	// on purpose: that test shows what the invariants on committed configurations catch.
	if !before.TermCommitted {
		s.fail("%s accepts %v before it committed an entry of its term %d", l.id, cc, before.Term)
	}
	if before.ConfigIndex > before.Commit && s.opt.mut != simMutationConcurrentConfChanges {
		s.fail("%s accepts %v while the change at %d is pending (commit %d)", l.id, cc, before.ConfigIndex, before.Commit)
	}
	if got, _, ok := simConfStep(before.Config, after.Config); !ok || got != cc {
		s.fail("%s accepts %v but goes from %v to %v", l.id, cc, before.Config, after.Config)
	}
	if after.LastIndex != before.LastIndex+1 || after.ConfigIndex != after.LastIndex {
		s.fail("%s accepts %v: last index %d -> %d, configuration index %d, want one new entry holding it",
			l.id, cc, before.LastIndex, after.LastIndex, after.ConfigIndex)
	}
	if !l.r.HasReady() {
		s.fail("%s accepts %v with nothing to persist", l.id, cc)
	}
}
