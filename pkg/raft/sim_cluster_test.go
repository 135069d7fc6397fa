package raft

// The simulator: N members driven by one event queue in global simulated time. This file
// holds the model of the runtime (clocks, durable state, crashes) and of the network; the
// invariants are in sim_check_test.go, the fault schedule in sim_schedule_test.go, the
// membership changes in sim_membership_test.go and the trace in sim_trace_test.go.

import (
	"errors"
	"fmt"
	"math/rand"
)

// simTime is global simulated time in microseconds. No member can read it: each member only
// sees its own ticks.
type simTime int64

func (t simTime) String() string {
	sign := ""
	if t < 0 {
		sign, t = "-", -t
	}
	return fmt.Sprintf("%s%d.%03dms", sign, t/1000, t%1000)
}

// simNominalTick is the nominal tick period. Each member's real period is drawn around it
// within the drift bound (see simMember.period).
const simNominalTick simTime = 10_000

// simDriftHalfWidth: a member's tick period is nominal × (1 + d) with |d| <= MaxDrift/2, so
// the ratio of any two periods is at most (1+0.025)/(1-0.025) ≈ 1.0513, inside the
// 1/(1-MaxDrift) ≈ 1.0526 that MaxLeaseTicks is computed for.
const simDriftHalfWidth = DefaultMaxDrift / 2

// simSource is a small math/rand Source (splitmix64). Seeding math/rand's default source
// costs more than a short schedule, and every member incarnation gets its own.
type simSource struct{ x uint64 }

func (s *simSource) Seed(seed int64) { s.x = uint64(seed) }

func (s *simSource) Uint64() uint64 {
	s.x += 0x9e3779b97f4a7c15
	z := s.x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (s *simSource) Int63() int64 { return int64(s.Uint64() >> 1) }

// newSimRand returns a math/rand generator seeded from a schedule's seed.
func newSimRand(seed int64) *rand.Rand { return rand.New(&simSource{x: uint64(seed)}) }

// simParams is everything a schedule is made of apart from the random draws during the run.
type simParams struct {
	seed           int64
	size           int
	electionTicks  int
	heartbeatTicks int
	// faultPhase is how long faults are injected; the calm phase follows.
	faultPhase simTime
	// membership: only the members in boot bootstrap the cluster (as its voters), the others
	// start with no configuration and wait to be added, and the leader is asked to change the
	// configuration during the fault phase. Otherwise every member bootstraps as a voter and
	// the configuration never changes.
	membership bool
	boot       []string
}

func (p simParams) String() string {
	s := fmt.Sprintf("%d members, ElectionTicks=%d HeartbeatTicks=%d, faults for %v", p.size,
		p.electionTicks, p.heartbeatTicks, p.faultPhase)
	if p.membership {
		s += fmt.Sprintf(", membership changes from voters %v", p.boot)
	}
	return s
}

// simMutation deliberately breaks the runtime model, so that tests can show the invariant
// checks catch what they claim to catch.
type simMutation uint8

const (
	simMutationNone simMutation = iota
	// simMutationForgetHardState restarts members with an empty data directory (HardState
	// and log lost): members then vote twice in one term and terms go back.
	simMutationForgetHardState
	// simMutationFastClocks lets clock rates differ by far more than the drift bound the
	// lease is computed for.
	simMutationFastClocks
	// simMutationForgetLog restarts members with their HardState but an empty log, as if
	// the runtime persisted Ready().HardState and not Ready().Log: commit indexes go back.
	simMutationForgetLog
	// simMutationConcurrentConfChanges lets the leader propose a second configuration change
	// before the first is committed (it bypasses the core's ErrConfChangePending), and makes
	// it propose one right after each accepted change.
	simMutationConcurrentConfChanges
)

// membership reports whether the mutation only shows in membership schedules.
func (mut simMutation) membership() bool { return mut == simMutationConcurrentConfChanges }

// simOptions select the model of a run.
type simOptions struct {
	mut simMutation
}

// simMember is one member as the runtime sees it: the core plus its clock and durable state.
type simMember struct {
	idx int
	id  string
	up  bool
	// inc counts incarnations; a tick scheduled for an earlier incarnation is ignored.
	inc int
	r   *Raft
	// start is the global time the incarnation started (its tick 0); tick k of this
	// incarnation happens at start + k·period exactly.
	start  simTime
	period simTime
	ticks  uint64
	// persisted and log are the durable state: exactly what the member persisted (HardState
	// and Ready().Log, written together), nothing more.
	persisted HardState
	log       LogState
	// boot: the member bootstraps the cluster with the sim's voters when its log is empty (a
	// static member); otherwise it starts with no configuration and waits to be added.
	boot bool
	// Membership schedules: retired is set once the leader accepted the member's removal (its
	// id is never added again: a pod's id includes its UID). Once the removal is committed the
	// member is either gone (crashed for good, like a deleted pod) or a zombie (it keeps
	// running, cut off from the cluster's heartbeats, and must not disrupt it).
	retired, gone, zombie bool
	// st is the status observed after the member's last event.
	st Status
	// crashAfterPersist: crash right after the next persist, before its messages are sent.
	crashAfterPersist bool
}

// globalTime converts a tick of the member's current incarnation to global time.
func (m *simMember) globalTime(tick uint64) simTime {
	return m.start + simTime(tick)*m.period
}

type simEventKind uint8

// The order of kinds breaks ties at one instant. Ticks come first: the runtime applies tick
// k before a message that arrives at the instant of tick k (a message is never stepped
// before a tick that is due).
const (
	simEvTick simEventKind = iota
	simEvFault
	simEvConfChange
	simEvRestart
	simEvCalm
	simEvDeliver
)

// simEvent is kept free of pointers (the message of a delivery is in sim.inflight), which
// makes the queue cheap to reorder.
type simEvent struct {
	at     simTime
	seq    uint64
	kind   simEventKind
	member int32 // tick, restart, one-off configuration change: the member; deliver: the recipient
	inc    int32 // tick, restart, one-off configuration change: the incarnation it belongs to
	from   int32 // deliver: the sender
	msg    int32 // deliver: index into sim.inflight
}

// simQueue is a binary min-heap of events, typed so that pushing and popping allocate
// nothing (container/heap boxes every element in an interface).
type simQueue []simEvent

func (q simQueue) less(i, j int) bool {
	a, b := &q[i], &q[j]
	if a.at != b.at {
		return a.at < b.at
	}
	if a.kind != b.kind {
		return a.kind < b.kind
	}
	return a.seq < b.seq
}

func (q *simQueue) push(ev simEvent) {
	*q = append(*q, ev)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *simQueue) pop() simEvent {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && h.less(l, m) {
			m = l
		}
		if r < n && h.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

// simNet is the current behaviour of the network.
type simNet struct {
	drop, dup          float64
	minDelay, maxDelay simTime
	// longProb is the probability of a long delay, up to longMax: such a message arrives
	// after many later ones.
	longProb float64
	longMax  simTime
}

func (n simNet) String() string {
	return fmt.Sprintf("drop=%.2f dup=%.2f delay=[%v,%v] long=%.2f/%v", n.drop, n.dup, n.minDelay,
		n.maxDelay, n.longProb, n.longMax)
}

// simStats counts what a schedule exercised.
type simStats struct {
	events, deliveries, drops  int
	leaders, leases, transfers int
	crashes, restarts          int
	// converged is how long after the calm phase began the members agreed on a leader
	// holding the lease.
	converged simTime
	// unknown counts messages refused because their sender is not in the recipient's
	// configuration.
	unknown int
	// Membership schedules: configuration changes proposed to a leader and accepted by it;
	// committed changes by type (in simConfChangeTypes order); members removed for good
	// (pods gone) and removed members left running (zombies). configConverged (every
	// schedule) is how long after the cluster agreed on its final leader every member of that
	// leader's configuration knew it committed.
	confProposed, confAccepted int
	confCommitted              [4]int
	gone, zombies              int
	configConverged            simTime
}

func (st simStats) String() string {
	s := fmt.Sprintf("%d events, %d messages delivered (%d refused: sender unknown), %d lost; %d leaders, %d leases, %d transfers; %d crashes, %d restarts; converged %v after the faults",
		st.events, st.deliveries, st.unknown, st.drops, st.leaders, st.leases, st.transfers, st.crashes, st.restarts, st.converged)
	if st.confProposed > 0 {
		s += fmt.Sprintf("; %d configuration changes proposed, %d accepted, committed %v; %d pods gone, %d zombies; configuration known %v after that",
			st.confProposed, st.confAccepted, st.confCommitted, st.gone, st.zombies, st.configConverged)
	}
	return s
}

// sim runs one schedule.
type sim struct {
	p   simParams
	opt simOptions
	rng *rand.Rand
	// offNet, when set, takes the messages to ids that are not members of the simulation
	// (the fuzzer's hostile peer) instead of the network.
	offNet func(m *simMember, msg Message)
	// mrng draws everything about membership changes. It is separate from rng so that a
	// fault-only schedule draws exactly what it drew before membership schedules existed.
	mrng *rand.Rand

	now   simTime
	queue simQueue
	seq   uint64
	// inflight holds the messages of pending deliveries; free lists its unused slots.
	inflight []Message
	free     []int32
	members  []*simMember
	byID     map[string]int
	voters   []string
	// blocked[i][j]: messages from member i to member j are lost.
	blocked [][]bool
	net     simNet

	calm     bool
	calmAt   simTime
	deadline simTime // calm phase: the liveness bound
	liveAt   simTime // calm phase: when the cluster first converged (0: not yet)
	// Calm phase, after liveAt: agreed is the leader the cluster agrees on since agreedAt, in
	// term agreedTerm (nil while there is no agreement). Every member of its configuration
	// must know that configuration committed within simConfigBound of agreedAt, and in any
	// case within simLivenessBound of liveAt; configAt is when they did (0: not yet).
	agreed     *simMember
	agreedTerm uint64
	agreedAt   simTime
	configAt   simTime
	// steadyAt: when the agreed leader first held a lease resting on a calm-phase round; from
	// then on nothing may disrupt it (checkSteady).
	steadyAt simTime
	end      simTime

	check simChecker
	trace simTrace
	stats simStats
	err   *simFailure
}

// simFailure is a violated invariant.
type simFailure struct {
	at  simTime
	msg string
}

func newSim(seed int64, opt simOptions) *sim {
	rng := newSimRand(seed)
	p := simParams{seed: seed}
	p.size = []int{3, 5, 7}[rng.Intn(3)]
	p.electionTicks = []int{10, 20}[rng.Intn(2)]
	// HeartbeatTicks in [2, 5] with ElectionTicks >= 3·HeartbeatTicks.
	p.heartbeatTicks = 2 + rng.Intn(min(5, p.electionTicks/3)-1)
	p.faultPhase = simTime(10+rng.Intn(21)) * simTime(p.electionTicks) * simNominalTick

	s := &sim{p: p, opt: opt, rng: rng, mrng: newSimRand(seed ^ simMembershipSalt), byID: map[string]int{}}
	// Drawn even when the mutation forces membership, so that the draws after it do not move.
	p.membership = s.mrng.Intn(simMembershipOneIn) == 0 || opt.mut.membership()
	s.setUp(p)
	return s
}

// setUp creates the members for p (with membership, a random non-empty subset drawn from
// s.mrng bootstraps), starts them, and schedules the first calm, fault and membership events.
func (s *sim) setUp(p simParams) {
	boot := map[int]bool{}
	if p.membership {
		// A random non-empty subset bootstraps; all of them with the same Voters list.
		for _, i := range s.mrng.Perm(p.size)[:1+s.mrng.Intn(p.size)] {
			boot[i] = true
		}
	}
	for i := range p.size {
		id := fmt.Sprintf("m%d", i+1)
		m := &simMember{idx: i, id: id, boot: !p.membership || boot[i]}
		if m.boot {
			s.voters = append(s.voters, id)
		}
		s.byID[id] = i
		s.members = append(s.members, m)
		s.blocked = append(s.blocked, make([]bool, p.size))
	}
	if p.membership {
		p.boot = s.voters
	}
	s.p = p
	s.check.init(p.size)
	s.net = s.randomNet()
	// Members start within one nominal tick of each other, so their ticks are not aligned.
	for _, m := range s.members {
		s.start(m, simTime(s.rng.Int63n(int64(simNominalTick))))
	}
	s.calmAt = p.faultPhase
	s.push(simEvent{at: s.calmAt, kind: simEvCalm})
	s.push(simEvent{at: s.nextFaultTime(), kind: simEvFault})
	if p.membership {
		s.push(simEvent{at: s.nextConfChangeTime(), kind: simEvConfChange})
	}
}

func (s *sim) push(ev simEvent) {
	s.seq++
	ev.seq = s.seq
	s.queue.push(ev)
}

func (s *sim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = &simFailure{at: s.now, msg: fmt.Sprintf(format, args...)}
	}
}

// run executes the schedule until the end of the calm phase or the first violation.
func (s *sim) run() *simFailure {
	for len(s.queue) > 0 && s.err == nil {
		ev := s.queue.pop()
		if s.calm {
			if s.liveAt == 0 && ev.at > s.deadline {
				s.now = s.deadline
				s.failLiveness("the calm phase")
				break
			}
			if s.liveAt != 0 && s.configAt == 0 {
				if s.agreed != nil && ev.at > s.agreedAt+simConfigBound(s.p.heartbeatTicks) {
					s.now = s.agreedAt + simConfigBound(s.p.heartbeatTicks)
					s.failConfigLiveness()
					break
				}
				if ev.at > s.liveAt+simLivenessBound(s.p.electionTicks) {
					s.now = s.liveAt + simLivenessBound(s.p.electionTicks)
					s.failLiveness("the first agreement, which was lost")
					break
				}
			}
			if s.configAt != 0 && ev.at > s.end {
				break
			}
		}
		if !s.handle(ev) && ev.kind == simEvCalm {
			s.beginCalm()
		}
		if s.calm && s.configAt == 0 && s.err == nil {
			s.watchConvergence()
		} else if s.configAt != 0 && s.err == nil {
			s.checkSteady()
		}
	}
	s.stats.confCommitted = s.check.committedChanges()
	return s.err
}

// handle advances the clock to ev and handles it, if it is an event of the schedule's own
// kinds (tick, fault, membership change, restart, delivery); it reports false for any other
// kind, which the caller handles.
func (s *sim) handle(ev simEvent) bool {
	s.now = ev.at
	s.stats.events++
	switch ev.kind {
	case simEvTick:
		s.tick(ev)
	case simEvFault:
		s.fault()
	case simEvConfChange:
		if ev.inc != 0 {
			s.confChangeOnce(s.members[ev.member], int(ev.inc))
		} else {
			s.confChange()
		}
	case simEvRestart:
		if m := s.members[ev.member]; !m.up && !m.gone && int(ev.inc) == m.inc {
			s.restart(m)
		}
	case simEvDeliver:
		s.deliver(ev)
	default:
		return false
	}
	return true
}

// watchConvergence follows the calm phase: when the cluster agrees on a leader (converged),
// on which leader since when, and when the members of its configuration know it committed.
func (s *sim) watchConvergence() {
	lead := s.convergedLeader()
	if lead == nil {
		s.agreed = nil
		return
	}
	if s.liveAt == 0 {
		s.liveAt = s.now
		s.stats.converged = s.now - s.calmAt
		s.trace.note(s.now, -1, fmt.Sprintf("converged %v after the calm phase began", s.stats.converged))
	}
	if s.agreed != lead || s.agreedTerm != lead.st.Term {
		s.agreed, s.agreedTerm, s.agreedAt = lead, lead.st.Term, s.now
	}
	if s.configKnown(lead) {
		s.configAt = s.now
		s.stats.configConverged = s.now - s.agreedAt
		// Keep running a little to check the invariants in the steady state too.
		s.end = s.now + 2*simTime(s.p.electionTicks)*simNominalTick
		if s.p.membership {
			s.trace.note(s.now, -1, fmt.Sprintf("configuration known committed %v after the agreement on %s", s.stats.configConverged, lead.id))
		}
	}
}

// checkSteady: once the cluster converged, knows its configuration, and its leader's lease
// rests on a round sent in the calm phase (an older one may still lapse, and the leader step
// down for lack of a quorum it lost during the faults), nothing may disrupt it for the rest
// of the run: a removed member left running may still believe it is a voter and campaign.
func (s *sim) checkSteady() {
	l := s.agreed
	if s.steadyAt == 0 {
		lease := uint64(MaxLeaseTicks(s.p.electionTicks, DefaultMaxDrift))
		if l.up && l.st.HoldsLease() && l.st.Term == s.agreedTerm && l.globalTime(l.st.LeaseUntil-lease) >= s.calmAt {
			s.steadyAt = s.now
		}
		return
	}
	if !l.up || l.st.State != StateLeader || l.st.Term != s.agreedTerm {
		s.fail("steady state disrupted: %s, the leader of term %d the cluster agreed on at %v (renewed its lease in the calm phase at %v), is now %s in term %d",
			l.id, s.agreedTerm, s.agreedAt, s.steadyAt, l.st.State, l.st.Term)
	}
}

// drawPeriod draws a member's tick period within the drift bound.
func (s *sim) drawPeriod() simTime {
	if s.opt.mut == simMutationFastClocks {
		// Half or one and a half times the nominal rate: a factor of three between clocks.
		return simNominalTick/2 + simTime(s.rng.Intn(2))*simNominalTick
	}
	w := int64(float64(simNominalTick) * simDriftHalfWidth)
	return simNominalTick + simTime(s.rng.Int63n(2*w+1)-w)
}

// start (re)creates a member from its durable state with a fresh clock at time at.
func (s *sim) start(m *simMember, at simTime) {
	switch s.opt.mut {
	case simMutationForgetHardState:
		m.persisted, m.log = HardState{}, LogState{}
	case simMutationForgetLog:
		m.log = LogState{}
	}
	// Like the runtime, a static member passes its bootstrap voters every time; the core
	// uses them only when the log is empty. A joiner passes none.
	var voters []string
	if m.boot {
		voters = s.voters
	}
	r, err := New(Config{
		ID:             m.id,
		Cluster:        "sim",
		Voters:         voters,
		Log:            m.log,
		ElectionTicks:  s.p.electionTicks,
		HeartbeatTicks: s.p.heartbeatTicks,
		HardState:      m.persisted,
		Rand:           newSimRand(s.rng.Int63()),
	})
	if err != nil {
		s.fail("%s: New: %v", m.id, err)
		return
	}
	m.inc++
	m.up = true
	m.r = r
	m.start = at
	m.period = s.drawPeriod()
	m.ticks = 0
	m.crashAfterPersist = false
	m.st = r.Status()
	s.push(simEvent{at: m.globalTime(1), kind: simEvTick, member: int32(m.idx), inc: int32(m.inc)})
	// The runtime persists what New produced (a bootstrap writes its first configuration)
	// before the member does anything else.
	rd := r.Ready()
	s.check.ready(s, m, rd)
	if rd.MustPersist {
		s.check.persist(s, m, rd)
		m.persisted, m.log = rd.HardState, rd.Log
	}
	if len(rd.Messages) > 0 {
		s.fail("%s sends %d messages before its first tick", m.id, len(rd.Messages))
	}
	s.check.started(s, m)
}

func (s *sim) crash(m *simMember, why string) {
	m.up = false
	m.r = nil // its pending ticks die with it: they check up and the incarnation
	s.stats.crashes++
	s.check.crashed(s, m)
	s.trace.note(s.now, m.idx, "crash"+why)
}

func (s *sim) restart(m *simMember) {
	s.start(m, s.now)
	s.stats.restarts++
	s.trace.note(s.now, m.idx, fmt.Sprintf("restart from %+v, log %s, tick period %v", m.persisted, simFormatLog(m.log), m.period))
}

func (s *sim) tick(ev simEvent) {
	m := s.members[ev.member]
	if !m.up || int(ev.inc) != m.inc {
		return
	}
	m.r.Tick()
	m.ticks++
	s.push(simEvent{at: m.globalTime(m.ticks + 1), kind: simEvTick, member: int32(m.idx), inc: int32(m.inc)})
	s.afterEvent(m, simTraceRec{kind: simTraceTick})
}

func (s *sim) deliver(ev simEvent) {
	msg := s.inflight[ev.msg]
	s.inflight[ev.msg] = Message{}
	s.free = append(s.free, ev.msg)
	m := s.members[ev.member]
	if !m.up || s.blocked[ev.from][ev.member] {
		s.stats.drops++
		return
	}
	s.stats.deliveries++
	if err := m.r.Step(msg); err != nil {
		// The core refuses a request from a member its configuration does not name (unless
		// it is a leader that shows a configuration naming it); a removed member's
		// messages, or a new voter's before this member learned of it, are such.
		if !errors.Is(err, ErrUnknownMember) || simIsMember(m.st.Config, msg.From) {
			s.fail("%s refused a message from a correct peer: %v (%s)", m.id, err, simFormatMsg(msg))
		}
		s.stats.unknown++
		s.check.refused(s, m, msg, err)
	}
	s.afterEvent(m, simTraceRec{kind: simTraceDeliver, msg: msg})
}

// afterEvent is the runtime's loop after a Tick, Step or TransferLeadership: persist the
// HardState, then send the messages; then observe the member and check the invariants.
func (s *sim) afterEvent(m *simMember, rec simTraceRec) {
	rd := m.r.Ready()
	s.check.ready(s, m, rd)
	if rd.MustPersist {
		s.check.persist(s, m, rd)
		m.persisted, m.log = rd.HardState, rd.Log
		if m.crashAfterPersist {
			rec.sent = len(rd.Messages)
			s.observe(m, rec)
			s.crash(m, fmt.Sprintf(" after persisting %+v, before sending %d messages", rd.HardState, len(rd.Messages)))
			s.scheduleRestart(m)
			return
		}
	}
	for _, msg := range rd.Messages {
		if _, member := s.byID[msg.To]; !member && s.offNet != nil {
			s.offNet(m, msg)
			continue
		}
		s.check.sent(s, m, msg)
		s.send(m.idx, msg)
	}
	rec.sent = len(rd.Messages)
	s.observe(m, rec)
}

// observe records the member's status and checks it, and traces the event.
func (s *sim) observe(m *simMember, rec simTraceRec) {
	prev := m.st
	m.st = m.r.Status()
	s.check.status(s, m, prev)
	if s.p.membership && m.st.State == StateLeader && prev.State != StateLeader {
		s.elected(m)
	}
	rec.at = s.now
	rec.member = int8(m.idx)
	if rec.kind != simTraceTick || rec.sent > 0 || simStatusChanged(prev, m.st) {
		rec.st = simStatusOf(m.st, prev)
		s.trace.add(rec)
	}
}

func (s *sim) send(from int, msg Message) {
	to, ok := s.byID[msg.To]
	if !ok {
		return // reported by the checker
	}
	if s.blocked[from][to] || s.rng.Float64() < s.net.drop {
		s.stats.drops++
		return
	}
	copies := 1
	if s.rng.Float64() < s.net.dup {
		copies = 2
	}
	for range copies {
		var slot int32
		if n := len(s.free); n > 0 {
			slot = s.free[n-1]
			s.free = s.free[:n-1]
			s.inflight[slot] = msg
		} else {
			slot = int32(len(s.inflight))
			s.inflight = append(s.inflight, msg)
		}
		s.push(simEvent{at: s.now + s.delay(), kind: simEvDeliver, member: int32(to), from: int32(from), msg: slot})
	}
}

func (s *sim) delay() simTime {
	if s.net.longProb > 0 && s.rng.Float64() < s.net.longProb {
		return s.net.minDelay + simTime(s.rng.Int63n(int64(s.net.longMax)+1))
	}
	return s.net.minDelay + simTime(s.rng.Int63n(int64(s.net.maxDelay-s.net.minDelay)+1))
}

// leader returns the up member that leads in the highest term, or nil.
func (s *sim) leader() *simMember {
	var best *simMember
	for _, m := range s.members {
		if m.up && m.st.State == StateLeader && (best == nil || m.st.Term > best.st.Term) {
			best = m
		}
	}
	return best
}
