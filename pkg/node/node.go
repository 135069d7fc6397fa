// Package node runs one raft-elector member: it owns the only ticker, drives the deterministic
// core in pkg/raft, persists its term and vote before any message that depends on them goes
// out, hands messages to a transport, and publishes every change of the member's state to
// observers.
//
// Real time enters in one place. Tick k of the core is applied no earlier than start+k·tick
// (late ticks are caught up at once, also after the process was paused), and a received
// message is stepped only after every due tick was applied. So the core's tick count never
// runs ahead of real time, and a lease end computed as start+k·tick is never later than the
// lease the protocol grants. The lease reported to the application is checked against the
// monotonic clock when it is read, so a process that wakes up from a pause does not claim a
// lease that ran out while it slept.
package node

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/membership"
	"github.com/raft-elector/raft-elector/pkg/raft"
)

// Sender is the part of a transport the node needs: queue messages, never block.
type Sender interface {
	Send(msgs ...raft.Message)
}

// Observer receives the member's status after every change. Observe is called from the
// member's loop and must not block.
type Observer interface {
	Observe(Status)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Status)

// Observe calls f.
func (f ObserverFunc) Observe(s Status) { f(s) }

// Status is what the member publishes: its role, the leader it knows, and the lease it may
// report to the application.
type Status struct {
	ID     string
	Term   uint64
	State  raft.StateType
	Leader string
	// LeaseExpiresAt is the end of the lease this member may report to the application
	// (zero unless it leads with a valid lease). It carries a monotonic clock reading;
	// compare it with time.Now(), never with a wall clock from elsewhere.
	LeaseExpiresAt time.Time
	// ProtocolLeaseExpiresAt is the end of the lease the protocol grants (>= LeaseExpiresAt).
	ProtocolLeaseExpiresAt time.Time
	// Transferring: the member leads but is handing over and claims no lease.
	Transferring bool
	// Voters is the number of voters in the member's configuration.
	Voters int
	// Config is the member's configuration (the newest in its log) and ConfigIndex the index
	// of its entry; Commit is the member's commit index. The configuration is pending while
	// ConfigIndex > Commit.
	Config      raft.Configuration
	ConfigIndex uint64
	Commit      uint64
	// Reachable lists, for a leader, the peers that acknowledged a heartbeat within the
	// last election timeout.
	Reachable []string
}

// HoldsLease reports whether the member holds the reported lease at now.
func (s Status) HoldsLease(now time.Time) bool {
	return s.State == raft.StateLeader && !s.Transferring && now.Before(s.LeaseExpiresAt)
}

// Config configures a member.
type Config struct {
	ID      string
	Cluster string
	// Voters bootstraps a new cluster: a member whose data dir holds no log starts with these
	// voters as its committed configuration. Every member of a static cluster gives the same
	// list; in Kubernetes only the member that created the bootstrap object gives one (itself),
	// the others start empty and wait to be added.
	Voters []string
	// MaxVoters caps the voters the leader promotes learners to (see pkg/membership). Zero
	// means DefaultMaxVoters.
	MaxVoters int
	// InitialTerm is the term a member whose data dir holds no state starts from. A member
	// that rejoins a cluster replaced by a recovery starts above every term it reported, and
	// the new generation's bootstrapper above every term of the old generation, so that the
	// term the application uses as a fencing token never goes back.
	InitialTerm uint64

	// HeartbeatInterval is how often the leader sends a heartbeat round.
	HeartbeatInterval time.Duration
	// ElectionTimeout is the minimum election timeout; followers draw theirs from [t, 2t).
	ElectionTimeout time.Duration
	// ReportedLease is how long after a majority-acknowledged round the leader tells the
	// application it leads. Zero means three heartbeat intervals; it is capped at the
	// protocol lease. It bounds how long a handover waits.
	ReportedLease time.Duration
	// TicksPerHeartbeat sets the tick length (HeartbeatInterval / TicksPerHeartbeat): the
	// resolution of every timer. Zero means DefaultTicksPerHeartbeat.
	TicksPerHeartbeat int

	// Storage holds the durable term and vote. Required.
	Storage *Storage
	// Logger; nil means no logs.
	Logger hclog.Logger
	// Seed seeds the randomized election timeout; zero draws one from crypto/rand.
	Seed int64
	// Observers are told of every status change.
	Observers []Observer
}

// DefaultTicksPerHeartbeat: a heartbeat interval of 100ms gives 20ms ticks.
const DefaultTicksPerHeartbeat = 5

// DefaultMaxVoters: five voters survive two failures; more only slow elections down.
const DefaultMaxVoters = 5

// Errors returned by the node.
var (
	ErrStopped = errors.New("member is stopped")
)

type stepReq struct {
	m    raft.Message
	resp chan stepResult
}

type podsReq struct {
	pods []membership.Pod
	done chan struct{}
}

type stepResult struct {
	m   *raft.Message
	err error
}

// Node is a running member.
type Node struct {
	cfg       Config
	log       hclog.Logger
	tick      time.Duration
	raft      *raft.Raft
	storage   *Storage
	observers []Observer

	stepc     chan stepReq
	transferc chan chan error
	podsc     chan podsReq
	done      chan struct{}

	// alive is what discovery last reported (nil: never, so the configuration is left alone);
	// leaving is set once this member's own pod is gone, so it hands over if it leads.
	alive         []membership.Pod
	leaving       bool
	lastRefusal   string
	nextReconcile uint64

	// claiming is whether the member held the reported lease when publish last looked, and
	// leaseLostTerm the term in which it last logged losing it without a change of role: a
	// lease can lapse with time alone (no majority acknowledged a round in time, or the
	// process was paused), and the log says so once, and once more when it comes back.
	claiming      bool
	leaseLostTerm uint64

	start    time.Time
	status   atomic.Pointer[Status]
	lastLoop atomic.Int64 // unix nanos of the last loop iteration (for /healthz)

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every status change

	runErr error
}

// New builds a member from its persisted state. It does not start it; call Run.
func New(cfg Config) (*Node, error) {
	if cfg.Storage == nil {
		return nil, errors.New("node: no storage")
	}
	if cfg.HeartbeatInterval <= 0 || cfg.ElectionTimeout <= 0 {
		return nil, errors.New("node: heartbeat interval and election timeout must be positive")
	}
	if cfg.TicksPerHeartbeat == 0 {
		cfg.TicksPerHeartbeat = DefaultTicksPerHeartbeat
	}
	if cfg.MaxVoters == 0 {
		cfg.MaxVoters = DefaultMaxVoters
	}
	if cfg.MaxVoters < 1 {
		return nil, fmt.Errorf("node: max voters %d must be at least 1", cfg.MaxVoters)
	}
	tick := cfg.HeartbeatInterval / time.Duration(cfg.TicksPerHeartbeat)
	if tick < time.Millisecond {
		return nil, fmt.Errorf("node: heartbeat interval %v is too short: the tick would be under 1ms", cfg.HeartbeatInterval)
	}
	if cfg.ReportedLease == 0 {
		cfg.ReportedLease = 3 * cfg.HeartbeatInterval
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	hs, rlog, err := cfg.Storage.Load()
	if err != nil {
		return nil, err
	}
	if hs.Term == 0 && rlog.Snapshot.Index == 0 && len(rlog.Entries) == 0 && cfg.InitialTerm > 0 {
		if cfg.InitialTerm > raft.MaxTerm {
			return nil, fmt.Errorf("node: initial term %d exceeds the limit", cfg.InitialTerm)
		}
		hs.Term = cfg.InitialTerm
		if err := cfg.Storage.Save(hs, rlog); err != nil {
			return nil, err
		}
	}
	seed := cfg.Seed
	if seed == 0 {
		var b [8]byte
		if _, err := crand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("node: seed: %w", err)
		}
		seed = int64(binary.LittleEndian.Uint64(b[:]))
	}
	electionTicks := int(cfg.ElectionTimeout / tick)
	leaseTicks := raft.MaxLeaseTicks(electionTicks, raft.DefaultMaxDrift)
	appTicks := int(cfg.ReportedLease / tick)
	if appTicks > leaseTicks {
		appTicks = leaseTicks
	}
	if appTicks < 1 {
		return nil, fmt.Errorf("node: reported lease %v is shorter than one tick (%v)", cfg.ReportedLease, tick)
	}
	r, err := raft.New(raft.Config{
		ID:             cfg.ID,
		Cluster:        cfg.Cluster,
		Voters:         cfg.Voters,
		ElectionTicks:  electionTicks,
		HeartbeatTicks: cfg.TicksPerHeartbeat,
		LeaseTicks:     leaseTicks,
		AppLeaseTicks:  appTicks,
		HardState:      hs,
		Log:            rlog,
		Rand:           rand.New(rand.NewSource(seed)),
	})
	if err != nil {
		return nil, err
	}
	// A member that bootstraps writes its first configuration now, before anything runs: a
	// crash right after start must not leave a cluster whose bootstrapper holds nothing.
	if rd := r.Ready(); rd.MustPersist {
		if err := cfg.Storage.Save(rd.HardState, rd.Log); err != nil {
			return nil, err
		}
	}
	n := &Node{
		cfg:       cfg,
		log:       log,
		tick:      tick,
		raft:      r,
		storage:   cfg.Storage,
		observers: cfg.Observers,
		stepc:     make(chan stepReq),
		transferc: make(chan chan error),
		podsc:     make(chan podsReq),
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
	}
	n.start = time.Now()
	n.lastLoop.Store(n.start.UnixNano())
	st := n.makeStatus()
	n.status.Store(&st)
	log.Info("member loaded", "term", hs.Term, "vote", hs.Vote, "configuration", st.Config.String(), "commit", st.Commit,
		"tick", tick, "election_ticks", electionTicks, "lease", time.Duration(leaseTicks)*tick,
		"reported_lease", time.Duration(appTicks)*tick)
	return n, nil
}

// Status returns the member's latest published status.
func (n *Node) Status() Status { return *n.status.Load() }

// Changed returns a channel closed at the next status change.
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

// Healthy reports whether the member's loop ran recently: it is alive and ticking, not wedged.
func (n *Node) Healthy(now time.Time) error {
	last := time.Unix(0, n.lastLoop.Load())
	limit := 10*n.tick + time.Second
	if d := now.Sub(last); d > limit {
		return fmt.Errorf("member loop has not run for %v", d.Round(time.Millisecond))
	}
	select {
	case <-n.done:
		if n.runErr != nil {
			return fmt.Errorf("member stopped: %w", n.runErr)
		}
		return ErrStopped
	default:
	}
	return nil
}

// Step hands a message received from a peer to the member, waits until it is processed and
// the state it changed is durable, and returns the response to it, if any.
func (n *Node) Step(ctx context.Context, m raft.Message) (*raft.Message, error) {
	req := stepReq{m: m, resp: make(chan stepResult, 1)}
	select {
	case n.stepc <- req:
	case <-n.done:
		return nil, ErrStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-req.resp:
		return res.m, res.err
	case <-n.done:
		return nil, ErrStopped
	}
}

// Run drives the member until ctx is cancelled or persisting state fails. It sends through s.
func (n *Node) Run(ctx context.Context, s Sender) error {
	defer close(n.done)
	ticker := time.NewTicker(n.tick)
	defer ticker.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			n.catchUp()
			if now := n.raft.Now(); now >= n.nextReconcile {
				// Once a heartbeat interval: the planner is cheap, but not free.
				n.nextReconcile = now + uint64(n.cfg.TicksPerHeartbeat)
				n.reconcile()
			}
			_, err = n.processReady(s, nil)
		case req := <-n.stepc:
			n.catchUp()
			var res stepResult
			if res.err = n.raft.Step(req.m); res.err == nil {
				res.m, err = n.processReady(s, &req.m)
			} else {
				_, err = n.processReady(s, nil)
			}
			if err != nil {
				res = stepResult{err: err}
			}
			req.resp <- res
		case req := <-n.podsc:
			n.catchUp()
			n.alive = req.pods
			n.reconcile()
			_, err = n.processReady(s, nil)
			close(req.done)
		case errc := <-n.transferc:
			n.catchUp()
			target := raft.None
			if n.alive != nil {
				// Prefer a successor whose pod is not leaving too (a rolling update).
				rs := n.raft.Status()
				target = n.aliveTransferee(rs, uint64(n.cfg.ElectionTimeout/n.tick))
			}
			terr := n.raft.TransferLeadership(target)
			_, err = n.processReady(s, nil)
			errc <- terr
		}
		n.lastLoop.Store(time.Now().UnixNano())
		if err != nil {
			n.runErr = err
			n.log.Error("member stopping: cannot persist its state", "error", err)
			return err
		}
	}
}

// catchUp applies every tick that is due: tick k is applied no earlier than start+k·tick.
func (n *Node) catchUp() {
	due := uint64(time.Since(n.start) / n.tick)
	for n.raft.Now() < due {
		n.raft.Tick()
	}
}

// processReady persists, then sends, then publishes. For a stepped request it returns the
// response addressed back to the sender instead of sending it.
func (n *Node) processReady(s Sender, req *raft.Message) (*raft.Message, error) {
	if n.raft.HasReady() {
		rd := n.raft.Ready()
		if rd.MustPersist {
			if err := n.storage.Save(rd.HardState, rd.Log); err != nil {
				return nil, err
			}
		}
		var resp *raft.Message
		out := rd.Messages[:0:0]
		for i := range rd.Messages {
			m := rd.Messages[i]
			if req != nil && resp == nil && m.To == req.From && m.Type == req.Type.ResponseType() {
				resp = &m
				continue
			}
			out = append(out, m)
		}
		if len(out) > 0 && s != nil {
			s.Send(out...)
		}
		n.publish()
		return resp, nil
	}
	n.publish()
	return nil, nil
}

func (n *Node) tickTime(k uint64) time.Time {
	return n.start.Add(time.Duration(k) * n.tick)
}

func (n *Node) makeStatus() Status {
	rs := n.raft.Status()
	st := Status{ID: rs.ID, Term: rs.Term, State: rs.State, Leader: rs.Leader,
		Transferring: rs.Transferring, Config: rs.Config, ConfigIndex: rs.ConfigIndex, Commit: rs.Commit}
	voters := rs.Config.Voters
	st.Voters = len(voters)
	if rs.LeaseUntil != 0 {
		st.ProtocolLeaseExpiresAt = n.tickTime(rs.LeaseUntil)
		st.LeaseExpiresAt = n.tickTime(rs.AppLeaseUntil)
	}
	if rs.State == raft.StateLeader {
		window := uint64(n.cfg.ElectionTimeout / n.tick)
		for _, id := range voters {
			if at, ok := rs.LastAck[id]; ok && rs.Now-at < window {
				st.Reachable = append(st.Reachable, id)
			}
		}
	}
	return st
}

// publish stores the member's status, logs what changed and tells the observers. It runs on
// every loop iteration: the log has one info line per change of role, term, leader or handover,
// and one when the reported lease lapses or comes back while the role stays, never one per
// heartbeat.
func (n *Node) publish() {
	now := time.Now()
	st := n.makeStatus()
	old := *n.status.Load()
	changed := !sameStatus(old, st)
	if !changed {
		st = old
	}
	roleChanged := old.State != st.State || old.Term != st.Term || old.Leader != st.Leader || old.Transferring != st.Transferring
	if roleChanged {
		n.log.Info("state changed", "state", st.State.String(), "term", st.Term, "leader", st.Leader,
			"from_state", old.State.String(), "reason", reason(old, st))
	}
	n.logLease(st, now, roleChanged)
	if !changed {
		return
	}
	n.status.Store(&st)
	if old.ConfigIndex != st.ConfigIndex || !old.Config.Equal(st.Config) {
		n.log.Info("configuration changed", "voters", st.Config.Voters, "learners", st.Config.Learners,
			"index", st.ConfigIndex, "committed", st.ConfigIndex <= st.Commit, "term", st.Term)
	} else if old.Commit < st.ConfigIndex && st.Commit >= st.ConfigIndex {
		n.log.Debug("configuration committed", "index", st.ConfigIndex)
	}
	n.mu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
	for _, o := range n.observers {
		o.Observe(st)
	}
}

// logLease logs the reported lease lapsing or coming back while the member keeps leading in
// the same term. A lease lost together with a change of role (stepping down, handing over) is
// told by that change's line; the first lease of a term follows "won the election" within a
// heartbeat round and is logged at debug level only.
func (n *Node) logLease(st Status, now time.Time, roleChanged bool) {
	held := st.HoldsLease(now)
	if held == n.claiming {
		return
	}
	n.claiming = held
	switch {
	case held && n.leaseLostTerm == st.Term:
		n.leaseLostTerm = 0
		n.log.Info("lease regained", "state", st.State.String(), "term", st.Term, "leader", st.Leader,
			"reason", "a majority acknowledged a heartbeat round again")
	case held:
		n.leaseLostTerm = 0
		n.log.Debug("lease acquired", "term", st.Term, "until", st.LeaseExpiresAt.Sub(now).Round(time.Millisecond))
	case !roleChanged:
		n.leaseLostTerm = st.Term
		n.log.Info("lease lost", "state", st.State.String(), "term", st.Term, "leader", st.Leader,
			"reason", "no heartbeat round acknowledged by a majority within the reported lease (slow or unreachable peers, or this process was paused)")
	}
}

func sameStatus(a, b Status) bool {
	return a.ID == b.ID && a.Term == b.Term && a.State == b.State && a.Leader == b.Leader &&
		a.LeaseExpiresAt.Equal(b.LeaseExpiresAt) && a.ProtocolLeaseExpiresAt.Equal(b.ProtocolLeaseExpiresAt) &&
		a.Transferring == b.Transferring && len(a.Reachable) == len(b.Reachable) && a.Voters == b.Voters &&
		a.ConfigIndex == b.ConfigIndex && a.Commit == b.Commit && a.Config.Equal(b.Config)
}

// reason says why the member's role, term or leader changed from old to st, for the log. The
// core does not report its reasons; they follow from the pair of states (raft.go: tickLeader,
// campaign, tally, handleAppend and the term rules).
func reason(old, st Status) string {
	wasCampaigning := old.State == raft.StatePreCandidate || old.State == raft.StateCandidate
	switch {
	case st.Transferring && !old.Transferring:
		return "handing over leadership"
	case st.State == raft.StateLeader && old.State != raft.StateLeader:
		return "won the election"
	case old.State == raft.StateLeader && st.Term > old.Term:
		return "stepped down: saw a higher term"
	case old.State == raft.StateLeader && old.Transferring:
		return "stepped down: the handover found no successor within an election timeout"
	case old.State == raft.StateLeader && st.State == raft.StateLearner:
		return "stepped down: no longer a voter"
	case old.State == raft.StateLeader:
		return "stepped down: no majority acknowledged a heartbeat round for an election timeout (check-quorum)"
	case st.State == raft.StateCandidate && old.State == raft.StatePreCandidate:
		return "won the pre-vote: campaigning"
	case st.State == raft.StateCandidate && old.State == raft.StateCandidate:
		return "election timeout without a winner: campaigning again"
	case st.State == raft.StateCandidate && old.Leader != "":
		return "asked by the leader to take over (timeout-now)"
	case st.State == raft.StateCandidate:
		return "election timeout: campaigning"
	case st.State == raft.StatePreCandidate && wasCampaigning:
		return "election timeout without a winner: pre-vote again"
	case st.State == raft.StatePreCandidate && old.Leader != "":
		return "no heartbeat from the leader for an election timeout: pre-vote"
	case st.State == raft.StatePreCandidate:
		return "election timeout: pre-vote"
	case st.State == raft.StateLearner && old.State != raft.StateLearner:
		return "no longer a voter: now a learner"
	case old.State == raft.StateLearner && st.State != raft.StateLearner:
		return "promoted to voter"
	case st.Term > old.Term && st.Leader != "":
		return "heard from the leader of a newer term"
	case st.Term > old.Term:
		return "saw a higher term"
	case st.Leader != "" && st.Leader != old.Leader:
		return "heard from the leader"
	case old.State == raft.StatePreCandidate:
		return "pre-vote refused by a majority"
	case old.State == raft.StateCandidate:
		return "vote refused by a majority"
	case st.Leader == "" && old.Leader != "":
		return "no heartbeat from the leader for an election timeout"
	}
	return "role change"
}

// SetPods tells the member which pods discovery reports alive. The configuration follows them
// through the log, one change at a time, driven by whichever member leads: it adds new pods as
// learners, promotes learners up to MaxVoters, and removes members whose pods are gone. A
// member that is merely unreachable stays. If this member's own pod is no longer among them
// (it is being deleted) and it leads, it hands leadership over so that its successor can
// remove it. Static clusters never call it, and their configuration stays the --peers list.
//
// nil means the pods are not known right now (discovery's watch is failing, so its view may be
// stale): the configuration is then left alone until a fresh list comes.
func (n *Node) SetPods(ctx context.Context, pods []membership.Pod) error {
	req := podsReq{pods: slices.Clone(pods), done: make(chan struct{})}
	if req.pods == nil && pods != nil {
		req.pods = []membership.Pod{}
	}
	select {
	case n.podsc <- req:
	case <-n.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	<-req.done
	return nil
}

// caughtUp reports whether, as a leader sees it, member id acknowledged within window ticks
// and holds the whole log: a learner fit to be promoted, a voter fit to take over.
func caughtUp(rs raft.Status, id string, window uint64) bool {
	at, acked := rs.LastAck[id]
	return acked && rs.Now-at < window && rs.Match[id] == rs.LastIndex
}

// aliveTransferee picks the voter whose pod is alive, that holds the leader's whole log and
// acknowledged most recently; "" if there is none.
func (n *Node) aliveTransferee(rs raft.Status, window uint64) string {
	best, bestAt := "", uint64(0)
	for _, id := range rs.Config.Voters {
		if id == n.cfg.ID || !caughtUp(rs, id, window) {
			continue
		}
		at := rs.LastAck[id]
		if !slices.ContainsFunc(n.alive, func(p membership.Pod) bool { return p.ID == id }) {
			continue
		}
		if best == "" || at > bestAt {
			best, bestAt = id, at
		}
	}
	return best
}

// reconcile runs on the member's loop: a leader proposes the next change the planner asks
// for, retrying on later ticks what the core refuses for now.
func (n *Node) reconcile() {
	if n.alive == nil {
		return
	}
	rs := n.raft.Status()
	self := slices.ContainsFunc(n.alive, func(p membership.Pod) bool { return p.ID == n.cfg.ID })
	if n.leaving == self {
		n.leaving = !self
		if n.leaving {
			n.log.Info("this member's pod is no longer a member (it is being deleted); handing over if leading")
		} else {
			n.log.Info("this member's pod is a member again")
		}
	}
	if rs.State != raft.StateLeader || rs.Transferring {
		return
	}
	window := uint64(n.cfg.ElectionTimeout / n.tick)
	if n.leaving {
		// Hand over to a voter whose pod is alive; if there is none yet, keep shaping the
		// configuration (the planner removes the other gone voters and promotes live
		// learners, never this member) until there is. Handing over to another leaving
		// voter would only pass the leadership around among the leaving.
		if target := n.aliveTransferee(rs, window); target != "" {
			if err := n.raft.TransferLeadership(target); err == nil {
				n.log.Info("handing leadership over: this member's pod is leaving", "successor", target)
			}
			return
		}
	}
	if !rs.TermCommitted || rs.ConfigIndex > rs.Commit {
		return
	}
	cc, ok := membership.Next(membership.State{
		Voters:    rs.Config.Voters,
		Learners:  rs.Config.Learners,
		Self:      n.cfg.ID,
		Alive:     n.alive,
		MaxVoters: n.cfg.MaxVoters,
		CaughtUp:  func(id string) bool { return caughtUp(rs, id, window) },
	})
	if !ok {
		n.lastRefusal = ""
		return
	}
	change := raft.ConfChange{ID: cc.ID}
	switch cc.Type {
	case membership.AddLearner:
		change.Type = raft.ConfAddLearner
	case membership.Promote:
		change.Type = raft.ConfPromote
	case membership.Demote:
		change.Type = raft.ConfDemote
	case membership.Remove:
		change.Type = raft.ConfRemove
	}
	if err := n.raft.ProposeConfChange(change); err != nil {
		if msg := change.String() + ": " + err.Error(); msg != n.lastRefusal {
			n.lastRefusal = msg
			n.log.Debug("configuration change deferred", "change", change.String(), "why", err)
		}
		return
	}
	n.lastRefusal = ""
	n.log.Info("configuration change proposed", "change", change.String(), "term", rs.Term)
}

// TransferLeadership asks a leading member to hand over: it stops claiming the lease, waits
// until every lease it reported has expired, then tells the most up-to-date voter to campaign.
// It returns raft.ErrNotLeader if the member does not lead.
func (n *Node) TransferLeadership(ctx context.Context) error {
	errc := make(chan error, 1)
	select {
	case n.transferc <- errc:
	case <-n.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-errc
}

// Handover is the graceful-shutdown step: if the member leads, it transfers leadership and
// waits until another member is known to lead (or ctx ends). It returns the successor.
func (n *Node) Handover(ctx context.Context) (string, error) {
	start := n.Status()
	if start.State != raft.StateLeader {
		return "", nil
	}
	// A transfer may already be under way: this member saw its own pod leaving.
	if err := n.TransferLeadership(ctx); err != nil && !errors.Is(err, raft.ErrTransferring) {
		return "", err
	}
	for {
		ch := n.Changed()
		st := n.Status()
		if st.Leader != "" && st.Leader != n.cfg.ID && st.Term > start.Term {
			return st.Leader, nil
		}
		select {
		case <-ch:
		case <-n.done:
			return "", ErrStopped
		case <-ctx.Done():
			return "", fmt.Errorf("no successor seen: %w", ctx.Err())
		}
	}
}

// Done is closed when Run has returned.
func (n *Node) Done() <-chan struct{} { return n.done }

// Tick returns the member's tick length.
func (n *Node) Tick() time.Duration { return n.tick }
