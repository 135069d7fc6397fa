// Package raft is the Raft leader election and heartbeat protocol as a deterministic state
// machine: no I/O, no goroutines, no clock. It is driven like etcd's raft: Tick() advances
// logical time, Step() feeds a received message, and Ready() hands back the messages to send,
// the durable state to persist first, and the state to publish.
//
// Beyond Figure 2 of the Raft paper (election part) it implements PreVote, CheckQuorum with a
// leader lease, and leadership transfer (timeout-now).
//
// # The lease and what it guarantees
//
// A follower that heard from its leader less than ElectionTicks ago neither votes nor
// campaigns (unless asked by a leadership transfer). The leader numbers its heartbeat rounds;
// when a majority of voters (itself included) acknowledged the round it sent at tick s, it
// holds the lease until tick s+LeaseTicks. LeaseTicks is at most (ElectionTicks-1)·(1-drift),
// so every member of that majority refuses to help elect anyone else until after the lease
// ended, as long as no two clocks run at rates more than the drift bound apart. The lease
// starts from an acknowledged heartbeat round, never from the votes: a voter that has not yet
// heard from its new leader is not bound by it.
//
// The lease reported to the application (AppLeaseUntil) is shorter still, so that a leader
// that hands over on shutdown waits only that long before its successor may start.
//
// What the lease cannot do is stop a paused or slow application from acting on an answer it
// read while the lease was valid. Use the term as a fencing token where that matters.
package raft

import (
	"errors"
	"fmt"
	"slices"
)

// None is the empty member id: no leader known, no vote cast.
const None = ""

// StateType is the role of a member.
type StateType uint8

const (
	StateFollower StateType = iota
	StatePreCandidate
	StateCandidate
	StateLeader
	StateLearner
)

var stateNames = [...]string{"follower", "pre-candidate", "candidate", "leader", "learner"}

// Role is the name the outside world uses for the state: leader, follower, candidate
// (pre-candidates included) or learner, as in the local API and the metrics.
func (s StateType) Role() string {
	switch s {
	case StateLeader:
		return "leader"
	case StateCandidate, StatePreCandidate:
		return "candidate"
	case StateLearner:
		return "learner"
	}
	return "follower"
}

func (s StateType) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// HardState is what a member must persist before sending any message that depends on it:
// the current term and the vote cast in it.
type HardState struct {
	Term uint64 `json:"term"`
	Vote string `json:"vote,omitempty"`
}

// Rand is the injected random source; only the randomized election timeout uses it.
type Rand interface {
	Intn(n int) int
}

// Config configures one member. Times are in ticks; the runtime decides how long a tick is.
type Config struct {
	// ID identifies this member in the cluster. It is never reused: in Kubernetes it includes
	// the pod UID.
	ID string
	// Cluster is the cluster id every message carries; messages of another cluster are refused.
	Cluster string
	// Voters and Learners are the first configuration, used only when Log is empty: the
	// member then bootstraps the cluster with it as the committed entry at index 1 (term 0).
	// Every member of a static cluster bootstraps with the same list, so their logs agree.
	// A member that joins an existing cluster leaves both empty and waits, as a learner, for
	// the leader to add it. Voters vote and may lead; learners receive heartbeats and know the
	// leader, but never vote or campaign.
	Voters   []string
	Learners []string

	// Log is the durable log loaded at start (see LogState).
	Log LogState

	// ElectionTicks is the minimum election timeout E. A follower campaigns after a randomized
	// timeout in [E, 2E) without hearing from a leader, redrawn on every reset; and it refuses
	// to vote for E ticks after hearing from its leader.
	ElectionTicks int
	// HeartbeatTicks is how often the leader starts a heartbeat round. Must be well below
	// ElectionTicks so the lease can be renewed before it runs out.
	HeartbeatTicks int
	// LeaseTicks is how long a majority-acknowledged heartbeat round lets the leader claim
	// leadership, counted from the tick the round was sent. Zero means MaxLeaseTicks(E, drift).
	LeaseTicks int
	// AppLeaseTicks is the lease reported to the application, counted from the same round. It
	// is what a handover waits for, so a few heartbeats keep handover fast. Zero means three
	// heartbeat intervals. It is capped at LeaseTicks.
	AppLeaseTicks int
	// MaxDrift is the bound on the relative rate difference of two members' clocks, used for
	// the default LeaseTicks. Zero means DefaultMaxDrift.
	MaxDrift float64

	// DisablePreVote turns off the pre-vote phase (only tests should).
	DisablePreVote bool

	// HardState is the durable state loaded at start.
	HardState HardState

	// Rand draws the randomized election timeouts.
	Rand Rand
}

// DefaultMaxDrift bounds the relative clock-rate difference between two members: 5%, far above
// what quartz clocks do, so that a VM's clock slewing does not break the lease.
const DefaultMaxDrift = 0.05

// MaxLeaseTicks is the longest safe lease for minimum election timeout e under drift bound
// drift. A follower refuses votes for at least e-1 whole ticks after it received a heartbeat
// (it may receive it just before its next tick), and its clock may run faster than the
// leader's by the drift bound.
func MaxLeaseTicks(e int, drift float64) int {
	return int(float64(e-1) * (1 - drift))
}

// Errors returned by the core.
var (
	ErrNotLeader        = errors.New("not the leader")
	ErrNoTransferTarget = errors.New("no other voter to transfer leadership to")
	ErrTransferring     = errors.New("leadership transfer already in progress")
	ErrUnknownMember    = errors.New("unknown member")
	ErrWrongCluster     = errors.New("message for another cluster")
	ErrWrongRecipient   = errors.New("message for another member")
)

func (c *Config) validate() error {
	if c.ID == "" {
		return errors.New("member id is empty")
	}
	if c.Cluster == "" {
		return errors.New("cluster id is empty")
	}
	if c.ElectionTicks <= 0 || c.HeartbeatTicks <= 0 {
		return fmt.Errorf("election ticks (%d) and heartbeat ticks (%d) must be positive", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.ElectionTicks < 3*c.HeartbeatTicks {
		return fmt.Errorf("election timeout (%d ticks) must be at least 3 heartbeat intervals (%d ticks each) so the lease can be renewed before it runs out",
			c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.MaxDrift < 0 || c.MaxDrift >= 0.5 {
		return fmt.Errorf("drift bound %v must be in [0, 0.5)", c.MaxDrift)
	}
	max := MaxLeaseTicks(c.ElectionTicks, c.MaxDrift)
	if c.LeaseTicks > max {
		return fmt.Errorf("lease of %d ticks is longer than the safe maximum %d for election timeout %d", c.LeaseTicks, max, c.ElectionTicks)
	}
	if c.LeaseTicks <= c.HeartbeatTicks {
		return fmt.Errorf("lease of %d ticks is not longer than the heartbeat interval (%d ticks): it would lapse between rounds", c.LeaseTicks, c.HeartbeatTicks)
	}
	if c.AppLeaseTicks <= 0 || c.AppLeaseTicks > c.LeaseTicks {
		return fmt.Errorf("reported lease of %d ticks must be positive and at most the lease (%d ticks)", c.AppLeaseTicks, c.LeaseTicks)
	}
	if c.Rand == nil {
		return errors.New("no random source")
	}
	seen := map[string]bool{}
	for _, id := range append(append([]string{}, c.Voters...), c.Learners...) {
		if id == "" || len(id) > MaxIDLength {
			return fmt.Errorf("member id %q is empty or longer than %d bytes", truncate(id), MaxIDLength)
		}
		if seen[id] {
			return fmt.Errorf("member %q listed twice", id)
		}
		seen[id] = true
	}
	if c.HardState.Term > MaxTerm {
		return fmt.Errorf("persisted term %d exceeds the limit", c.HardState.Term)
	}
	if err := c.Log.Validate(); err != nil {
		return fmt.Errorf("persisted log: %w", err)
	}
	if c.Log.Snapshot.Term > c.HardState.Term {
		return fmt.Errorf("persisted log has term %d above the persisted term %d", c.Log.Snapshot.Term, c.HardState.Term)
	}
	if n := len(c.Log.Entries); n > 0 && c.Log.Entries[n-1].Term > c.HardState.Term {
		return fmt.Errorf("persisted log has term %d above the persisted term %d", c.Log.Entries[n-1].Term, c.HardState.Term)
	}
	return nil
}

// progress is what a leader knows of one member's log.
type progress struct {
	match uint64 // highest index known to be replicated on the member
	next  uint64 // index of the next entry to send
}

// round is one heartbeat round the leader sent and is counting acknowledgements for.
type round struct {
	id   uint64
	sent uint64 // tick
	acks map[string]bool
}

// Raft is one member's protocol state. It is not safe for concurrent use.
type Raft struct {
	id      string
	cluster string
	voters  map[string]bool
	learner map[string]bool

	term  uint64
	vote  string
	state StateType
	lead  string

	electionTicks  int
	heartbeatTicks int
	leaseTicks     int
	appLeaseTicks  int
	preVote        bool
	rand           Rand

	// now counts ticks since start: the member's logical clock.
	now uint64
	// electionElapsed counts ticks since the last reset of the election timer (a heartbeat from
	// the leader, a granted vote, a role change).
	electionElapsed   int
	randomizedTimeout int
	heartbeatElapsed  int

	votes map[string]bool // (pre-)candidate: votes received, true = granted

	// Leader state.
	round        uint64
	rounds       []*round
	quorumTick   uint64 // send tick of the newest majority-acknowledged round (or of election)
	leaseUntil   uint64 // protocol lease held while now < leaseUntil
	appLease     uint64 // reported lease, <= leaseUntil
	lastAck      map[string]uint64
	transferee   string
	transferSent bool
	transferAt   uint64 // tick the transfer started
	// renounced: this leader sent timeout-now in this term and must never claim the lease
	// again in it, since its successor's election skips the followers' leases.
	renounced bool

	msgs      []Message
	persisted HardState

	// log is the configuration log; logDirty marks changes not yet handed out by Ready.
	log      raftLog
	logDirty bool
	// confIndex is the index of the entry holding the configuration in use.
	confIndex uint64
	// Leader state: each member's log progress, and the index of the no-op that opened this
	// leader's term (it changes the configuration only once that is committed).
	prs       map[string]*progress
	termStart uint64

	// boundUntil: this member refuses non-transfer votes while now < boundUntil, whatever
	// its term or role, because it acknowledged a heartbeat round (or, as leader, sent one
	// and counted itself) that a lease may rest on. Adopting a higher term from a stale
	// message does not release it: the lease of that round runs on regardless.
	boundUntil uint64
}

// New returns a member in the follower (or learner) state of its persisted term.
func New(c Config) (*Raft, error) {
	if c.AppLeaseTicks == 0 {
		c.AppLeaseTicks = 3 * c.HeartbeatTicks
	}
	if c.MaxDrift == 0 {
		c.MaxDrift = DefaultMaxDrift
	}
	if c.LeaseTicks == 0 {
		c.LeaseTicks = MaxLeaseTicks(c.ElectionTicks, c.MaxDrift)
	}
	if c.AppLeaseTicks > c.LeaseTicks {
		c.AppLeaseTicks = c.LeaseTicks
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}
	r := &Raft{
		id:             c.ID,
		cluster:        c.Cluster,
		voters:         map[string]bool{},
		learner:        map[string]bool{},
		term:           c.HardState.Term,
		vote:           c.HardState.Vote,
		electionTicks:  c.ElectionTicks,
		heartbeatTicks: c.HeartbeatTicks,
		leaseTicks:     c.LeaseTicks,
		appLeaseTicks:  c.AppLeaseTicks,
		preVote:        !c.DisablePreVote,
		rand:           c.Rand,
		persisted:      c.HardState,
	}
	r.log = raftLog{snap: c.Log.Snapshot.Clone(), commit: c.Log.Snapshot.Index}
	if _, err := r.log.append(c.Log.Entries); err != nil {
		return nil, fmt.Errorf("raft config: persisted log: %w", err)
	}
	if r.log.lastIndex() == 0 && len(c.Voters) > 0 {
		voters, learners := map[string]bool{}, map[string]bool{}
		for _, id := range c.Voters {
			voters[id] = true
		}
		for _, id := range c.Learners {
			learners[id] = true
		}
		r.log.snap = Snapshot{Index: 1, Config: newConfiguration(voters, learners)}
		r.log.commit = 1
		r.logDirty = true
	}
	r.applyConfig()
	r.becomeFollower(r.term, None)
	return r, nil
}

// applyConfig makes the newest configuration in the log the one in use, and moves the member
// between the voter and learner roles if the change concerns it.
func (r *Raft) applyConfig() {
	cfg, idx := r.log.config()
	r.confIndex = idx
	r.voters, r.learner = make(map[string]bool, len(cfg.Voters)), make(map[string]bool, len(cfg.Learners))
	for _, id := range cfg.Voters {
		r.voters[id] = true
	}
	for _, id := range cfg.Learners {
		r.learner[id] = true
	}
	switch {
	case r.state == StateLearner && r.isVoter():
		r.state = StateFollower
		r.resetElectionTimer()
	case r.state != StateLearner && !r.isVoter():
		if r.state == StateLeader {
			// Never by its own proposal (it refuses to demote or remove itself), only
			// if a configuration it does not hold came to it: step down.
			r.becomeFollower(r.term, None)
			return
		}
		lead := r.lead
		r.becomeFollower(r.term, lead)
	}
	if r.state == StateLeader {
		for id := range r.prs {
			if !r.known(id) {
				delete(r.prs, id)
				delete(r.lastAck, id)
			}
		}
		for _, id := range r.peers() {
			if r.prs[id] == nil {
				r.prs[id] = &progress{next: r.log.lastIndex() + 1}
			}
		}
		r.recountLease()
	}
}

// ID returns the member's id.
func (r *Raft) ID() string { return r.id }

// Voters returns the voters of the member's configuration, sorted.
func (r *Raft) Voters() []string { return sortedKeys(r.voters) }

// Now returns the member's tick count.
func (r *Raft) Now() uint64 { return r.now }

func (r *Raft) isVoter() bool { return r.voters[r.id] }

func (r *Raft) quorum() int { return len(r.voters)/2 + 1 }

// members returns every other member (voters and learners) in a stable order.
func (r *Raft) peers() []string {
	out := make([]string, 0, len(r.voters)+len(r.learner))
	for _, set := range []map[string]bool{r.voters, r.learner} {
		for _, id := range sortedKeys(set) {
			if id != r.id {
				out = append(out, id)
			}
		}
	}
	return out
}

func (r *Raft) voterPeers() []string {
	out := make([]string, 0, len(r.voters))
	for _, id := range sortedKeys(r.voters) {
		if id != r.id {
			out = append(out, id)
		}
	}
	return out
}

func (r *Raft) resetElectionTimer() {
	r.electionElapsed = 0
	// Randomized on every reset, so that members that reset together do not time out together.
	r.randomizedTimeout = r.electionTicks + r.rand.Intn(r.electionTicks)
}

func (r *Raft) reset(term uint64) {
	if r.term != term {
		r.term = term
		r.vote = None
	}
	r.lead = None
	r.resetElectionTimer()
	r.heartbeatElapsed = 0
	r.votes = nil
	r.rounds = nil
	r.leaseUntil = 0
	r.appLease = 0
	r.lastAck = nil
	r.prs = nil
	r.transferee = None
	r.transferSent = false
	r.renounced = false
}

func (r *Raft) becomeFollower(term uint64, lead string) {
	r.reset(term)
	r.lead = lead
	if r.isVoter() {
		r.state = StateFollower
	} else {
		r.state = StateLearner
	}
}

func (r *Raft) becomePreCandidate() {
	if r.state == StateLeader {
		panic("invalid transition [leader -> pre-candidate]")
	}
	// The term does not move and the vote is kept: a pre-vote changes nothing durable.
	r.lead = None
	r.resetElectionTimer()
	r.votes = map[string]bool{}
	r.state = StatePreCandidate
}

func (r *Raft) becomeCandidate() {
	if r.state == StateLeader {
		panic("invalid transition [leader -> candidate]")
	}
	r.reset(r.term + 1)
	r.vote = r.id
	r.votes = map[string]bool{}
	r.state = StateCandidate
}

func (r *Raft) becomeLeader() {
	if r.state != StateCandidate {
		panic(fmt.Sprintf("invalid transition [%s -> leader]", r.state))
	}
	r.reset(r.term)
	r.lead = r.id
	r.state = StateLeader
	r.quorumTick = r.now
	r.lastAck = map[string]uint64{}
	r.prs = map[string]*progress{}
	for _, id := range r.peers() {
		r.prs[id] = &progress{next: r.log.lastIndex() + 1}
	}
	// Commit an entry of its own term first: only then may it change the configuration, and
	// only then does it know which entries are committed.
	r.termStart = r.log.lastIndex() + 1
	r.appendEntry(Entry{Type: EntryNoop})
	r.broadcastHeartbeat()
}

// appendEntry appends an entry of the leader's term to its own log.
func (r *Raft) appendEntry(e Entry) {
	e.Index, e.Term = r.log.lastIndex()+1, r.term
	if _, err := r.log.append([]Entry{e}); err != nil {
		panic(fmt.Sprintf("leader cannot append to its own log: %v", err))
	}
	r.logDirty = true
	r.maybeCommit()
}

// maybeCommit advances the commit index to the highest entry of the leader's term that a
// majority of voters holds.
func (r *Raft) maybeCommit() {
	matches := make([]uint64, 0, len(r.voters))
	for id := range r.voters {
		switch {
		case id == r.id:
			matches = append(matches, r.log.lastIndex())
		case r.prs[id] != nil:
			matches = append(matches, r.prs[id].match)
		default:
			matches = append(matches, 0)
		}
	}
	if len(matches) == 0 {
		return
	}
	slices.Sort(matches)
	n := matches[len(matches)-r.quorum()]
	if t, ok := r.log.term(n); ok && t == r.term && r.log.commitTo(n) {
		r.logDirty = true
	}
}

// Tick advances the member's clock by one tick.
func (r *Raft) Tick() {
	r.now++
	switch r.state {
	case StateLeader:
		r.tickLeader()
	case StateLearner:
		// A learner never campaigns; it only ages its view of the leader, and forgets a
		// leader it has not heard from for an election timeout, as a follower would by
		// campaigning: it must not name a dead leader to its application.
		r.electionElapsed++
		if r.lead != None && r.electionElapsed >= r.randomizedTimeout {
			r.lead = None
		}
	default:
		r.electionElapsed++
		if r.electionElapsed >= r.randomizedTimeout {
			r.campaign(false)
		}
	}
}

func (r *Raft) tickLeader() {
	// CheckQuorum: a leader that has not had a round acknowledged by a majority for an
	// election timeout steps down. By then its lease ran out long ago (LeaseTicks < E).
	if r.now-r.quorumTick >= uint64(r.electionTicks) {
		r.becomeFollower(r.term, None)
		return
	}
	if r.transferee != None {
		r.maybeSendTimeoutNow()
		// A transfer that has not produced a successor within an election timeout is
		// abandoned by stepping down: having sent timeout-now, this leader may never claim
		// the lease again in this term.
		if r.now-r.transferAt >= uint64(r.electionTicks) {
			r.becomeFollower(r.term, None)
			return
		}
	}
	r.heartbeatElapsed++
	if r.heartbeatElapsed >= r.heartbeatTicks {
		r.broadcastHeartbeat()
	}
}

func (r *Raft) send(m Message) {
	m.Cluster = r.cluster
	m.From = r.id
	if m.Term == 0 {
		m.Term = r.term
	}
	r.msgs = append(r.msgs, m)
}

func (r *Raft) broadcastHeartbeat() {
	r.heartbeatElapsed = 0
	r.round++
	rd := &round{id: r.round, sent: r.now, acks: map[string]bool{r.id: true}}
	// Keep only the rounds that could still renew the lease.
	keep := r.leaseTicks/r.heartbeatTicks + 2
	if len(r.rounds) >= keep {
		r.rounds = append(r.rounds[:0], r.rounds[len(r.rounds)-keep+1:]...)
	}
	r.rounds = append(r.rounds, rd)
	r.boundUntil = max(r.boundUntil, r.now+uint64(r.electionTicks))
	for _, id := range r.peers() {
		r.sendAppend(id, rd.id)
	}
	r.maybeRenewLease(rd)
}

// sendAppend sends a member the entries it lacks (or the snapshot, if it lacks compacted
// ones) as part of heartbeat round rd (zero: a catch-up message outside any round).
func (r *Raft) sendAppend(id string, rd uint64) {
	pr := r.prs[id]
	if pr == nil {
		return
	}
	m := Message{Type: MsgAppend, To: id, Round: rd}
	if pr.next <= r.log.snap.Index {
		snap := r.log.snap.Clone()
		m.Snapshot = &snap
		m.PrevLogIndex, m.PrevLogTerm = snap.Index, snap.Term
	} else {
		m.PrevLogIndex = pr.next - 1
		m.PrevLogTerm, _ = r.log.term(m.PrevLogIndex)
	}
	m.Entries = r.log.entriesFrom(m.PrevLogIndex + 1)
	if pr.match < r.confIndex {
		// It may not hold the configuration that names this leader yet.
		cfg, _ := r.log.config()
		m.Config = &cfg
	}
	m.Commit = min(r.log.commit, m.PrevLogIndex+uint64(len(m.Entries)))
	r.send(m)
}

// backedBy reports whether a majority of voters acknowledged rd.
func (rd *round) backedBy(voters map[string]bool) bool {
	n := 0
	for id := range rd.acks {
		if voters[id] {
			n++
		}
	}
	return n >= len(voters)/2+1
}

func (r *Raft) maybeRenewLease(rd *round) {
	if !rd.backedBy(r.voters) {
		return
	}
	if rd.sent > r.quorumTick {
		r.quorumTick = rd.sent
	}
	if r.transferee != None || r.renounced {
		return // handing over: no new lease, no new promise to the application
	}
	if until := rd.sent + uint64(r.leaseTicks); until > r.leaseUntil {
		r.leaseUntil = until
	}
	if until := rd.sent + uint64(r.appLeaseTicks); until > r.appLease {
		r.appLease = until
	}
}

// campaign starts an election: the pre-vote phase first, unless it is disabled or the
// election was asked for by timeout-now.
func (r *Raft) campaign(transfer bool) {
	if !r.isVoter() {
		return
	}
	if r.term >= MaxTerm || r.log.lastIndex() >= MaxTerm {
		// The next term, or the new leader's no-op, would pass the limit every member
		// refuses (and New refuses to load): stay a follower. Only a broken or hostile peer
		// can push a term or an index this far.
		return
	}
	if r.preVote && !transfer {
		r.becomePreCandidate()
		r.requestVotes(true, false)
		return
	}
	r.startElection(transfer)
}

// startElection runs the real election: a new term and a vote for itself.
func (r *Raft) startElection(transfer bool) {
	r.becomeCandidate()
	r.requestVotes(false, transfer)
}

func (r *Raft) requestVotes(pre, transfer bool) {
	term := r.term
	if pre {
		term = r.term + 1
	}
	r.votes[r.id] = true
	if r.tally() {
		return
	}
	for _, id := range r.voterPeers() {
		r.send(Message{Type: MsgVote, To: id, Term: term, PreVote: pre, Transfer: transfer,
			LastLogIndex: r.lastLogIndex(), LastLogTerm: r.lastLogTerm()})
	}
}

// tally acts on the votes counted so far; it reports whether the election is decided.
func (r *Raft) tally() bool {
	granted, rejected := 0, 0
	for id, ok := range r.votes {
		if !r.voters[id] {
			continue
		}
		if ok {
			granted++
		} else {
			rejected++
		}
	}
	switch {
	case granted >= r.quorum():
		if r.state == StatePreCandidate {
			r.startElection(false)
			return true
		}
		r.becomeLeader()
		return true
	case rejected >= r.quorum():
		r.becomeFollower(r.term, None)
		return true
	}
	return false
}

func (r *Raft) lastLogIndex() uint64 { return r.log.lastIndex() }
func (r *Raft) lastLogTerm() uint64  { return r.log.lastTerm() }

// logNewer reports whether a log ending at (index, term) is strictly more up to date.
func (r *Raft) logNewer(index, term uint64) bool {
	return term > r.lastLogTerm() || term == r.lastLogTerm() && index > r.lastLogIndex()
}

func (r *Raft) logUpToDate(index, term uint64) bool {
	return term > r.lastLogTerm() || term == r.lastLogTerm() && index >= r.lastLogIndex()
}

// inLease reports whether this member is bound by a leader's lease: it is the leader, or it
// acknowledged a heartbeat round (or sent one as leader) less than a minimum election timeout
// ago, whatever happened to its term since.
//
// A member that just (re)started is treated as having just heard from a leader: it may have
// acknowledged a heartbeat round right before it crashed, and the lease that round granted
// relies on it refusing votes for a minimum election timeout.
func (r *Raft) inLease() bool {
	if r.state == StateLeader {
		return true
	}
	if r.now < uint64(r.electionTicks) {
		return true
	}
	return r.now < r.boundUntil
}

func (r *Raft) known(id string) bool { return r.voters[id] || r.learner[id] }

// acceptsUnknownLeader: a member with no configuration follows whoever its cluster's leader
// is; one with a configuration that lacks the sender follows it only if the sender shows a
// configuration naming itself a voter and this member a member. (Without peer
// authentication, a peer that lies can do more than this; see --auth-secret-file.)
func (r *Raft) acceptsUnknownLeader(m Message) bool {
	if len(r.voters) == 0 && len(r.learner) == 0 {
		return true
	}
	c := m.Config
	if c == nil && m.Snapshot != nil {
		c = &m.Snapshot.Config
	}
	return c != nil && slices.Contains(c.Voters, m.From) &&
		(slices.Contains(c.Voters, r.id) || slices.Contains(c.Learners, r.id))
}

// Step feeds a message received from a peer. A message that fails validation, comes from
// another cluster or an unknown member, or is addressed to someone else is refused with an
// error and changes nothing.
func (r *Raft) Step(m Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if m.Cluster != r.cluster {
		return fmt.Errorf("%w: %q", ErrWrongCluster, truncate(m.Cluster))
	}
	if m.To != r.id {
		return fmt.Errorf("%w: %q", ErrWrongRecipient, truncate(m.To))
	}
	if m.Type == MsgVote && !r.voters[m.From] && !r.logNewer(m.LastLogIndex, m.LastLogTerm) {
		// A candidate this member's configuration does not make a voter is either ahead of
		// it (added or promoted by entries it lacks: its log is then strictly newer, and the
		// vote is decided as usual below) or a learner, a removed or a stray member: refused,
		// without moving the term.
		if !r.known(m.From) {
			return fmt.Errorf("%w: %q", ErrUnknownMember, truncate(m.From))
		}
		r.send(Message{Type: MsgVoteResp, To: m.From, PreVote: m.PreVote, Reject: true})
		return nil
	}
	if !r.known(m.From) {
		switch {
		case !m.Type.IsRequest():
			return nil // a late response from a member that left: nothing to learn from it
		case m.Type == MsgVote:
			// Strictly newer log: see above.
		case m.Type == MsgAppend && r.acceptsUnknownLeader(m):
			// A leader this member has not heard of: it has not joined yet, or it missed
			// the entries that added the leader.
		default:
			return fmt.Errorf("%w: %q", ErrUnknownMember, truncate(m.From))
		}
	}

	switch {
	case m.Term > r.term:
		switch {
		case m.Type == MsgVote:
			if r.inLease() && !m.Transfer {
				// A member that hears from a live leader does not let a returning or
				// cut-off member disrupt it, and keeps the lease promise it made.
				r.send(Message{Type: MsgVoteResp, To: m.From, Term: r.term, PreVote: m.PreVote, Reject: true})
				return nil
			}
			if m.PreVote {
				break // a pre-vote never moves the term
			}
			r.becomeFollower(m.Term, None)
		case m.Type == MsgVoteResp && m.PreVote && !m.Reject:
			// A granted pre-vote echoes the future term; nothing to adopt.
		default:
			lead := None
			if m.Type == MsgAppend || m.Type == MsgTimeoutNow {
				lead = m.From
			}
			r.becomeFollower(m.Term, lead)
		}
	case m.Term < r.term:
		switch m.Type {
		case MsgAppend:
			// Tell a stale leader about the newer term so it steps down.
			r.send(Message{Type: MsgAppendResp, To: m.From, Round: m.Round, Reject: true})
		case MsgVote:
			r.send(Message{Type: MsgVoteResp, To: m.From, PreVote: m.PreVote, Reject: true})
		}
		// Anything else from an older term is stale: drop it.
		return nil
	}

	switch m.Type {
	case MsgVote:
		r.handleVote(m)
	case MsgVoteResp:
		r.handleVoteResp(m)
	case MsgAppend:
		r.handleAppend(m)
	case MsgAppendResp:
		r.handleAppendResp(m)
	case MsgTimeoutNow:
		r.handleTimeoutNow(m)
	}
	return nil
}

func (r *Raft) handleVote(m Message) {
	var canVote bool
	if m.PreVote {
		// The candidate's future term must exceed ours; the lease was checked above.
		canVote = m.Term > r.term
	} else {
		// One vote per term; and a member that already follows a leader in this term
		// does not vote for anyone else in it.
		// The lease binds in the current term too: a member that adopted this term from a
		// stale message may still owe a lease it helped grant in the previous one.
		canVote = r.vote == m.From || r.vote == None && r.lead == None && (m.Transfer || !r.inLease())
	}
	if canVote && r.logUpToDate(m.LastLogIndex, m.LastLogTerm) {
		r.send(Message{Type: MsgVoteResp, To: m.From, Term: m.Term, PreVote: m.PreVote})
		if !m.PreVote {
			r.vote = m.From
			r.resetElectionTimer()
		}
		return
	}
	r.send(Message{Type: MsgVoteResp, To: m.From, Term: r.term, PreVote: m.PreVote, Reject: true})
}

func (r *Raft) handleVoteResp(m Message) {
	switch {
	case r.state == StatePreCandidate && m.PreVote:
		if !m.Reject && m.Term != r.term+1 {
			return // for another pre-vote round
		}
	case r.state == StateCandidate && !m.PreVote:
		if m.Term != r.term {
			return
		}
	default:
		return // not campaigning, or a response to another phase
	}
	if _, seen := r.votes[m.From]; seen {
		return
	}
	r.votes[m.From] = !m.Reject
	r.tally()
}

func (r *Raft) handleAppend(m Message) {
	switch r.state {
	case StateLeader:
		// Two leaders in one term would be a protocol violation; never acknowledge.
		return
	case StateCandidate, StatePreCandidate:
		// A candidate that meets a valid leader of its term steps down.
		r.becomeFollower(r.term, m.From)
	}
	if r.lead != m.From {
		r.lead = m.From
	}
	r.resetElectionTimer()
	r.boundUntil = max(r.boundUntil, r.now+uint64(r.electionTicks))

	if m.Snapshot != nil && m.Snapshot.Index > r.log.commit {
		r.log.restore(*m.Snapshot)
		r.logDirty = true
		r.applyConfig()
	}
	if !r.log.matches(m.PrevLogIndex, m.PrevLogTerm) {
		// The consistency check failed: tell the leader where to back up to. The member
		// still acknowledges the leader, and its round: it is bound by the lease all the same.
		hint := r.log.lastIndex()
		if m.PrevLogIndex <= hint && m.PrevLogIndex > 0 {
			hint = m.PrevLogIndex - 1
		}
		r.send(Message{Type: MsgAppendResp, To: m.From, Round: m.Round, Reject: true, Index: hint})
		return
	}
	changed, err := r.log.append(m.Entries)
	if changed {
		r.logDirty = true
		r.applyConfig()
	}
	if err != nil {
		// Only a broken leader sends this; acknowledge nothing of it.
		return
	}
	last := m.PrevLogIndex + uint64(len(m.Entries))
	if r.log.commitTo(min(m.Commit, last)) {
		r.logDirty = true
	}
	r.send(Message{Type: MsgAppendResp, To: m.From, Round: m.Round, Index: last})
}

func (r *Raft) handleAppendResp(m Message) {
	if r.state != StateLeader {
		return
	}
	pr := r.prs[m.From]
	if pr == nil {
		return // not (or no longer) a member
	}
	r.lastAck[m.From] = r.now
	// A rejection of the same term is a failed consistency check, not a refusal of the
	// leader: it acknowledges the round all the same.
	for _, rd := range r.rounds {
		if rd.id == m.Round && m.Round != 0 {
			rd.acks[m.From] = true
			r.maybeRenewLease(rd)
			break
		}
	}
	if m.Reject {
		if next := max(pr.match+1, min(pr.next-1, m.Index+1)); next < pr.next {
			pr.next = next
			r.sendAppend(m.From, 0)
		}
		return
	}
	if m.Index > r.log.lastIndex() {
		return // acknowledges entries this leader never sent
	}
	if m.Index > pr.match {
		pr.match = m.Index
		pr.next = max(pr.next, pr.match+1)
		r.maybeCommit()
		if pr.match < r.log.lastIndex() {
			r.sendAppend(m.From, 0) // more than one message could carry
		}
	}
	if r.transferee == m.From {
		r.maybeSendTimeoutNow()
	}
}

func (r *Raft) handleTimeoutNow(m Message) {
	if r.lead != m.From || !r.isVoter() || r.state != StateFollower {
		return
	}
	r.campaign(true)
}

// ProposeConfChange appends a single-member change of the configuration to the leader's log.
// It takes effect on each member as soon as that member appends it.
//
// Changing one member at a time keeps every majority of the old configuration overlapping
// every majority of the new one. Three conditions make that enough:
//
//   - one change at a time: the previous configuration entry must be committed;
//   - the leader must have committed an entry of its own term (its no-op) first, or two
//     leaders of consecutive terms could each add a different member to the same base and
//     their majorities could be disjoint;
//   - the lease: the leader may already have reported a lease to the application, backed by
//     a round acknowledged by a majority of the current voters. A candidate of a later term
//     may count its votes in this configuration or the one before it, so a majority of the
//     new voters must also be bound until that lease ends: some round they acknowledged must
//     give a protocol lease (the time its acknowledgers refuse votes) reaching past the
//     reported one. Otherwise a later change could build a majority that overlaps none of
//     those bound. The change waits (ErrNotReadyForConfChange) until a round the new voters
//     acknowledge does, or the reported lease has run out.
func (r *Raft) ProposeConfChange(cc ConfChange) error {
	if r.state != StateLeader {
		return ErrNotLeader
	}
	if r.transferee != None || r.renounced {
		return ErrTransferring
	}
	if r.confIndex > r.log.commit {
		return ErrConfChangePending
	}
	if r.log.commit < r.termStart {
		return fmt.Errorf("%w: no entry of term %d committed yet", ErrNotReadyForConfChange, r.term)
	}
	if r.log.lastIndex() >= MaxTerm {
		return fmt.Errorf("%w: the log is at the index limit %d", ErrInvalidConfChange, r.log.lastIndex())
	}
	cur, _ := r.log.config()
	next, err := cc.apply(cur, r.id)
	if err != nil {
		return err
	}
	if !slices.Equal(cur.Voters, next.Voters) && r.now < r.appLease {
		voters := make(map[string]bool, len(next.Voters))
		for _, id := range next.Voters {
			voters[id] = true
		}
		if lease, _, _ := r.leaseUnder(voters); lease < r.appLease {
			return fmt.Errorf("%w: the reported lease is not backed by a majority of the new voters yet", ErrNotReadyForConfChange)
		}
	}
	r.appendEntry(Entry{Type: EntryConfig, Config: &next})
	r.applyConfig()
	r.maybeCommit() // counted again with the new voters: a leader left alone commits at once
	// Replicate at once rather than at the next heartbeat: a rolling update waits on it.
	r.broadcastHeartbeat()
	return nil
}

// leaseUnder computes the leader's lease, reported lease and newest quorum tick from the
// rounds it still tracks, counting only the given voters.
func (r *Raft) leaseUnder(voters map[string]bool) (lease, app, quorumTick uint64) {
	for _, rd := range r.rounds {
		if rd.backedBy(voters) {
			quorumTick = max(quorumTick, rd.sent)
			lease = max(lease, rd.sent+uint64(r.leaseTicks))
			app = max(app, rd.sent+uint64(r.appLeaseTicks))
		}
	}
	return lease, app, quorumTick
}

// recountLease recomputes the leader's lease from the rounds it still tracks, counting only
// the current voters: a lease is only as good as the majority behind it.
func (r *Raft) recountLease() {
	lease, app, qt := r.leaseUnder(r.voters)
	if r.transferee != None || r.renounced {
		lease, app = 0, r.appLease
	}
	// A lease already reported stays a promise (a handover waits for it); ProposeConfChange
	// made sure the new voters' protocol lease covers it.
	r.leaseUntil, r.appLease = lease, max(r.appLease, app)
	r.quorumTick = max(qt, r.quorumTick)
}

// TransferLeadership starts a leadership transfer to target, or to the most recently
// responsive voter if target is None. The leader stops claiming the lease at once, keeps
// heartbeating so nobody else campaigns, waits until every lease it may have reported to the
// application has expired, and then sends timeout-now.
func (r *Raft) TransferLeadership(target string) error {
	if r.state != StateLeader {
		return ErrNotLeader
	}
	if r.transferee != None || r.renounced {
		return ErrTransferring
	}
	if target == None {
		target = r.bestTransferee()
	}
	if target == None || target == r.id || !r.voters[target] {
		return ErrNoTransferTarget
	}
	r.transferee = target
	r.transferAt = r.now
	r.leaseUntil = 0 // stop claiming; appLease keeps the last promise made to the app
	r.maybeSendTimeoutNow()
	return nil
}

// maybeSendTimeoutNow sends timeout-now once every reported lease has expired and the
// transferee holds the leader's whole log (or the voters would refuse it their votes).
func (r *Raft) maybeSendTimeoutNow() {
	if r.transferSent || r.now < r.appLease {
		return
	}
	if pr := r.prs[r.transferee]; pr == nil || pr.match < r.log.lastIndex() {
		return // the heartbeats carry what it lacks
	}
	r.sendTimeoutNow()
}

// bestTransferee picks the voter that holds the whole log and acknowledged most recently;
// failing that, the one that acknowledged most recently.
func (r *Raft) bestTransferee() string {
	best, bestAt, bestUpToDate := None, uint64(0), false
	for _, id := range r.voterPeers() {
		at, ok := r.lastAck[id]
		if !ok {
			continue
		}
		upToDate := r.prs[id] != nil && r.prs[id].match == r.log.lastIndex()
		if best == None || upToDate && !bestUpToDate || upToDate == bestUpToDate && at > bestAt {
			best, bestAt, bestUpToDate = id, at, upToDate
		}
	}
	return best
}

func (r *Raft) sendTimeoutNow() {
	r.transferSent = true
	r.renounced = true
	r.send(Message{Type: MsgTimeoutNow, To: r.transferee})
}

// Status is a snapshot of a member's state.
type Status struct {
	ID     string
	Term   uint64
	Vote   string
	State  StateType
	Leader string
	// Now is the member's tick count.
	Now uint64
	// LeaseUntil: the member holds the leader lease while Now < LeaseUntil. Zero when it
	// does not lead, or leads without a lease (not yet acknowledged, or handing over).
	LeaseUntil uint64
	// AppLeaseUntil is the lease the member may report to the application, <= LeaseUntil;
	// zero whenever LeaseUntil is.
	AppLeaseUntil uint64
	// Transferring: the leader is handing over and claims no lease.
	Transferring bool
	// LastAck is, for a leader, the tick each peer last acknowledged a heartbeat.
	LastAck map[string]uint64

	// Config is the configuration in use: the newest in the member's log.
	Config Configuration
	// ConfigIndex is the index of the entry holding Config; it is pending while above Commit.
	ConfigIndex uint64
	// Commit and LastIndex are the member's commit index and the index of its last entry.
	Commit, LastIndex uint64
	// Match is, for a leader, the highest log index known to be on each member.
	Match map[string]uint64
	// TermCommitted: a leader has committed an entry of its own term, so it may change the
	// configuration.
	TermCommitted bool
}

// HoldsLease reports whether the member holds a valid leader lease at its current tick.
func (s Status) HoldsLease() bool { return s.State == StateLeader && s.Now < s.LeaseUntil }

// Status returns the member's current state.
func (r *Raft) Status() Status {
	s := Status{ID: r.id, Term: r.term, Vote: r.vote, State: r.state, Leader: r.lead, Now: r.now,
		ConfigIndex: r.confIndex, Commit: r.log.commit, LastIndex: r.log.lastIndex()}
	// Configurations are never changed in place (the log copies what it appends), so the
	// status may share the log's: Status runs on every tick.
	s.Config, _ = r.log.config()
	if r.state == StateLeader {
		s.TermCommitted = r.log.commit >= r.termStart
		s.Match = make(map[string]uint64, len(r.prs))
		for id, pr := range r.prs {
			s.Match[id] = pr.match
		}
		s.Transferring = r.transferee != None || r.renounced
		if !s.Transferring && r.now < r.leaseUntil {
			s.LeaseUntil = r.leaseUntil
			s.AppLeaseUntil = min(r.appLease, r.leaseUntil)
		}
		s.LastAck = make(map[string]uint64, len(r.lastAck))
		for k, v := range r.lastAck {
			s.LastAck[k] = v
		}
	}
	return s
}

// Ready is what the member produced since the last call: the state to persist first, then
// the messages to send.
type Ready struct {
	// HardState and Log must be persisted, together, before any of Messages is sent, when
	// MustPersist is set. Log is the whole log (it is small: compacted to its committed
	// configuration).
	HardState   HardState
	Log         LogState
	MustPersist bool
	Messages    []Message
}

// Ready returns the pending output and clears it. The caller persists HardState and Log
// (when MustPersist) before sending Messages.
func (r *Raft) Ready() Ready {
	hs := HardState{Term: r.term, Vote: r.vote}
	rd := Ready{HardState: hs, MustPersist: hs != r.persisted || r.logDirty, Messages: r.msgs}
	if rd.MustPersist {
		rd.Log = r.log.state()
	}
	r.persisted = hs
	r.logDirty = false
	r.msgs = nil
	return rd
}

// HasReady reports whether Ready would return anything.
func (r *Raft) HasReady() bool {
	return len(r.msgs) > 0 || r.logDirty || (HardState{Term: r.term, Vote: r.vote}) != r.persisted
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
