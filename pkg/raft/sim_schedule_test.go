package raft

// The fault schedule: during the fault phase a fault is injected every so often (partitions,
// one-way link cuts, healing, crashes and restarts, network behaviour changes, leadership
// transfers); then a calm phase checks that the cluster converges.

import (
	"fmt"
	"strings"
)

// simLivenessBound is how long after the calm phase begins the cluster must agree on a leader
// that holds the lease, as global time: 10 election timeouts of the slowest possible clock.
//
// Why that suffices (E = ElectionTicks; in the calm phase every member is up, all links work
// and delays stay below a quarter heartbeat, so a round trip takes well under a tick):
//   - stragglers: messages sent during the fault phase arrive within 2E (the longest delay
//     the schedule draws). One with a higher term can depose a leader elected meanwhile,
//     which costs at most one more election; after 2E there are none;
//   - within E every binding to an old leader ends: a follower's E ticks after its last
//     heartbeat, a restarted member's E ticks after it started, a leader without a quorum
//     steps down after E (CheckQuorum), a stuck transfer is abandoned after E;
//   - then a member times out within 2E, and its pre-vote and vote succeed within a few
//     round trips, unless another member timed out within the same round trip (split
//     vote), which the timeout randomized over [E, 2E) makes unlikely; each further attempt
//     costs at most 2E;
//   - the new leader's first heartbeat round is acknowledged within a round trip: lease.
//
// So 2E + E + 2E·k covers k election attempts after the last straggler; 10E leaves room for
// three. Measured: the slowest of the 3000 default schedules converges in 2.5E, the slowest
// of 500000 fault-only ones in 3.9E (the test logs the slowest with -v). Membership
// schedules are slower in the tail: a configuration with two voters splits its vote
// whenever both time out in the same tick (about one attempt in E, the timeout being drawn
// from E values), and seed 32516 takes 6.1E after four split elections in a row, the
// slowest of the first 50000 schedules.
func simLivenessBound(electionTicks int) simTime {
	slowest := float64(simNominalTick) * (1 + simDriftHalfWidth)
	return simTime(10 * float64(electionTicks) * slowest)
}

func (s *sim) electionTimeout() simTime {
	return simTime(s.p.electionTicks) * simNominalTick
}

func (s *sim) nextFaultTime() simTime {
	e := s.electionTimeout()
	return s.now + e/5 + simTime(s.rng.Int63n(int64(2*e)))
}

// randomNet draws a network behaviour for the fault phase.
func (s *sim) randomNet() simNet {
	n := simNet{minDelay: simTime(s.rng.Int63n(500))}
	n.maxDelay = n.minDelay + []simTime{simNominalTick / 10, simNominalTick / 2, 2 * simNominalTick, 5 * simNominalTick}[s.rng.Intn(4)]
	n.drop = []float64{0, 0, 0.05, 0.2, 0.5}[s.rng.Intn(5)]
	n.dup = []float64{0, 0, 0.05, 0.2}[s.rng.Intn(4)]
	n.longProb = []float64{0, 0, 0.02, 0.1}[s.rng.Intn(4)]
	n.longMax = s.electionTimeout() * simTime(1+s.rng.Intn(2))
	return n
}

func (s *sim) fault() {
	if s.calm {
		return
	}
	defer func() {
		if next := s.nextFaultTime(); next < s.calmAt {
			s.push(simEvent{at: next, kind: simEvFault})
		}
	}()
	switch x := s.rng.Intn(100); {
	case x < 22:
		s.partition()
	case x < 37:
		s.heal()
	case x < 57:
		s.crashFault()
	case x < 75:
		s.transfer()
	default:
		s.net = s.randomNet()
		s.trace.note(s.now, -1, "network: "+s.net.String())
	}
}

func (s *sim) partition() {
	n := s.p.size
	var what string
	switch s.rng.Intn(4) {
	case 0: // symmetric split into two random sides
		side := make([]int, n)
		for i := range side {
			side[i] = s.rng.Intn(2)
		}
		for i := range n {
			for j := range n {
				s.blocked[i][j] = side[i] != side[j]
			}
		}
		what = fmt.Sprintf("split %v", side)
	case 1: // isolate one member both ways
		x := s.rng.Intn(n)
		for i := range n {
			for j := range n {
				s.blocked[i][j] = i != j && (i == x || j == x)
			}
		}
		what = "isolate " + s.members[x].id
	case 2: // one-way: a member can send but not receive, or the reverse
		x := s.rng.Intn(n)
		out := s.rng.Intn(2) == 0
		for i := range n {
			if i == x {
				continue
			}
			if out {
				s.blocked[x][i] = true
			} else {
				s.blocked[i][x] = true
			}
		}
		what = fmt.Sprintf("cut %s one-way (outgoing=%v)", s.members[x].id, out)
	default: // random one-way links, on top of what is cut already
		var cut []string
		for i := range n {
			for j := range n {
				if i != j && s.rng.Intn(10) < 3 {
					s.blocked[i][j] = true
					cut = append(cut, s.members[i].id+"->"+s.members[j].id)
				}
			}
		}
		what = "cut links " + strings.Join(cut, ",")
	}
	s.trace.note(s.now, -1, "partition: "+what)
}

func (s *sim) heal() {
	for i := range s.blocked {
		clear(s.blocked[i])
	}
	s.trace.note(s.now, -1, "heal")
}

func (s *sim) crashFault() {
	var up []*simMember
	for _, m := range s.members {
		if m.up {
			up = append(up, m)
		}
	}
	if len(up) == 0 {
		return
	}
	m := up[s.rng.Intn(len(up))]
	if l := s.leader(); l != nil && s.rng.Intn(2) == 0 {
		m = l // the leader's crash is what the lease must survive
	}
	if s.rng.Intn(10) < 3 {
		// Crash at the next persist, between writing the HardState and sending.
		m.crashAfterPersist = true
		s.trace.note(s.now, m.idx, "will crash after its next persist")
		return
	}
	s.crash(m, "")
	s.scheduleRestart(m)
}

// scheduleRestart draws a downtime: often a quick restart, since that is what tests the
// durable state and a restarted member's lease obligations hardest.
func (s *sim) scheduleRestart(m *simMember) {
	var down simTime
	if s.rng.Intn(10) < 3 {
		down = simTime(s.rng.Int63n(int64(2 * simNominalTick)))
	} else {
		down = simTime(s.rng.Int63n(int64(3 * s.electionTimeout())))
	}
	if at := s.now + down; at < s.calmAt {
		s.push(simEvent{at: at, kind: simEvRestart, member: int32(m.idx), inc: int32(m.inc)})
	}
}

func (s *sim) transfer() {
	l := s.leader()
	if l == nil {
		return
	}
	err := l.r.TransferLeadership(None)
	s.stats.transfers++
	s.check.transferred(s, l, err)
	s.afterEvent(l, simTraceRec{kind: simTraceTransfer, err: err})
}

// beginCalm ends the faults: every member up, all links healed, no drops or duplicates,
// delays well under a heartbeat. Messages already in flight still arrive.
func (s *sim) beginCalm() {
	s.calm = true
	s.heal()
	s.net = simNet{minDelay: 100, maxDelay: simTime(s.p.heartbeatTicks) * simNominalTick / 4}
	s.trace.note(s.now, -1, "calm: "+s.net.String())
	for _, m := range s.members {
		m.crashAfterPersist = false
		if !m.up && !m.gone {
			s.restart(m)
		}
	}
	s.deadline = s.now + simLivenessBound(s.p.electionTicks)
}

// converged reports whether a leader holds the lease and every member of its configuration
// is up and agrees on it and its term. Without membership changes that is every member; with
// them, members that were never added or were removed are not asked to agree (a removed
// member left running is a zombie that may still think it is a voter).
func (s *sim) converged() bool { return s.convergedLeader() != nil }

func (s *sim) convergedLeader() *simMember {
	var lead *simMember
	for _, m := range s.members {
		if m.up && m.st.HoldsLease() && !m.st.Transferring {
			lead = m
		}
	}
	if lead == nil {
		return nil
	}
	ok := true
	simForMembers(lead.st.Config, func(id string) {
		m := s.members[s.byID[id]]
		if !m.up || m.st.Term != lead.st.Term || m.st.Leader != lead.id {
			ok = false
		}
	})
	if !ok {
		return nil
	}
	return lead
}

// failLiveness reports that no leader emerged within simLivenessBound of since.
func (s *sim) failLiveness(since string) {
	var b strings.Builder
	for _, m := range s.members {
		if !m.up {
			fmt.Fprintf(&b, " %s down;", m.id)
			continue
		}
		fmt.Fprintf(&b, " %s %s term %d leader %q lease %d now %d", m.id, m.st.State, m.st.Term,
			m.st.Leader, m.st.LeaseUntil, m.st.Now)
		if s.p.membership {
			fmt.Fprintf(&b, " %v", m.st.Config)
		}
		b.WriteString(";")
	}
	s.fail("liveness: no leader holding the lease that all members of its configuration agree on within %v (10 election timeouts) of %s:%s",
		simLivenessBound(s.p.electionTicks), since, b.String())
}
