package e2e

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Answer is the body of GET /leader, as the contract names it.
type Answer struct {
	Name           string `json:"name"`
	Self           string `json:"self"`
	IsLeader       bool   `json:"isLeader"`
	Term           uint64 `json:"term"`
	State          string `json:"state"`
	LeaseExpiresAt string `json:"leaseExpiresAt,omitempty"`
	Index          uint64 `json:"index"`
}

// Observation is one answer of one member, with the local times the request was sent and the
// answer received. Sent and Recv carry a monotonic reading, and their wall-clock part is
// comparable with the member's leaseExpiresAt: all processes share this machine's clock.
type Observation struct {
	Member      int    // index in the cluster
	ID          string // member id
	Incarnation int    // process start count of the member, from 1
	Source      string // "poll" for the checker's own sequential polls
	Sent, Recv  time.Time
	Code        int
	Answer      Answer
	Lease       time.Time // parsed LeaseExpiresAt; zero when absent
}

func (o Observation) key() string {
	return fmt.Sprintf("%d|%s|%v|%d|%s", o.Code, o.Answer.Name, o.Answer.IsLeader, o.Answer.Term, o.Answer.State)
}

// promise is a merged interval of time during which a member certainly promised leadership.
type promise struct {
	start, end time.Time   // [start, end)
	first, max Observation // the claim that opened it, the claim that pushed its end furthest
}

// termObs is an observed term with its receive time, for the causal monotonicity check.
type termObs struct {
	term uint64
	recv time.Time
	obs  Observation
}

// LeaseChecker records every observation of every member and checks, as each arrives:
//
//   - Lease safety: two different members' promise intervals never overlap. A member X that
//     answers isLeader=true with leaseExpiresAt E made that claim at some instant c between the
//     request being sent and the answer received, and promised to lead during [c, E). We only
//     know c ≤ Recv, so [Recv, E) is a part of the promise that is certain; overlap of those
//     certain parts is a certain violation (no false alarms from polling delay). A promise
//     stays on record after its member dies: an app may still act on it.
//   - A claim whose E lies before the request was even sent is a claim on an expired lease.
//   - At most one leader per term (a member in state leader, or claiming isLeader).
//   - A member's term never decreases, across restarts too. Only causally ordered answers are
//     compared: an answer whose request was sent after an earlier answer was received.
//   - The contract of the answer: isLeader implies name == self, state leader and a
//     leaseExpiresAt; the status is 200 exactly when a leader is named; self is the member's
//     id; index changes whenever name, isLeader, term or state does.
type LeaseChecker struct {
	start time.Time
	logf  func(format string, args ...any) // timeline log

	mu           sync.Mutex
	promises     map[string][]*promise
	leaderOfTerm map[uint64]Observation
	terms        map[string][]termObs
	settledTerm  map[string]termObs
	lastPoll     map[int]Observation
	latest       map[int]Observation
	changes      map[int][]Observation
	counts       map[int]int
	claims       []Observation
	compat       []*compatClaim
	violations   []string
	maxViol      int
	// noLeases: the members' answers carry no leaseExpiresAt by design (the client-go
	// baseline), so a claim without one is no contract violation, and there are no promises.
	noLeases bool
	// runs are the isLeader answers grouped by member, process and term, for the
	// leader-overlap and leaderless times of the benchmarks (claimIntervals).
	runs map[claimKey]*claimRun
}

type claimKey struct {
	id          string
	incarnation int
	term        uint64
}

// claimRun spans the isLeader answers of one member process in one term: it certainly led
// from the first answer's receipt to the last request's sending.
type claimRun struct {
	firstRecv, lastSent time.Time
}

// compatClaim is an answer of GET / (the leader-elector compatible form) in which a member
// named itself: an app written for leader-elector compares that name with its own and acts as
// the leader. The member said so at some instant in [sent, recv].
type compatClaim struct {
	id         string
	sent, recv time.Time
	desc       string
	reported   bool
}

func newLeaseChecker(start time.Time, logf func(string, ...any)) *LeaseChecker {
	return &LeaseChecker{
		start:        start,
		logf:         logf,
		promises:     map[string][]*promise{},
		leaderOfTerm: map[uint64]Observation{},
		terms:        map[string][]termObs{},
		settledTerm:  map[string]termObs{},
		lastPoll:     map[int]Observation{},
		latest:       map[int]Observation{},
		changes:      map[int][]Observation{},
		counts:       map[int]int{},
		runs:         map[claimKey]*claimRun{},
		maxViol:      50,
	}
}

// rel formats t as seconds since the cluster started, with the wall clock for cross-reference
// with the members' logs.
func (lc *LeaseChecker) rel(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("+%.3fs(%s)", t.Sub(lc.start).Seconds(), t.Format("15:04:05.000"))
}

func (lc *LeaseChecker) describe(o Observation) string {
	s := fmt.Sprintf("%s#%d sent %s recv %s code %d name=%q isLeader=%v term=%d state=%s index=%d",
		o.ID, o.Incarnation, lc.rel(o.Sent), lc.rel(o.Recv), o.Code, o.Answer.Name, o.Answer.IsLeader,
		o.Answer.Term, o.Answer.State, o.Answer.Index)
	if o.Answer.LeaseExpiresAt != "" {
		s += fmt.Sprintf(" leaseExpiresAt=%s (%s)", o.Answer.LeaseExpiresAt, lc.rel(o.Lease))
	}
	return s
}

func (lc *LeaseChecker) violateLocked(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if len(lc.violations) < lc.maxViol {
		lc.violations = append(lc.violations, msg)
	}
	lc.logf("VIOLATION %s", msg)
}

// Record checks one observation and stores it.
func (lc *LeaseChecker) Record(o Observation) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	a := o.Answer

	// The contract of one answer.
	if a.Self != o.ID {
		lc.violateLocked("contract: %s answered with self=%q: %s", o.ID, a.Self, lc.describe(o))
	}
	if (o.Code == 200) != (a.Name != "") {
		lc.violateLocked("contract: status %d with name %q (want 200 exactly when a leader is named): %s", o.Code, a.Name, lc.describe(o))
	}
	if a.IsLeader {
		if a.Name != a.Self || a.State != "leader" {
			lc.violateLocked("contract: isLeader with name %q, state %q: %s", a.Name, a.State, lc.describe(o))
		}
		if o.Lease.IsZero() && !lc.noLeases {
			lc.violateLocked("contract: isLeader without a valid leaseExpiresAt: %s", lc.describe(o))
		}
	} else if a.LeaseExpiresAt != "" {
		lc.violateLocked("contract: leaseExpiresAt without isLeader: %s", lc.describe(o))
	}
	if o.Source == "poll" {
		if prev, ok := lc.lastPoll[o.Member]; ok && prev.Incarnation == o.Incarnation &&
			prev.key() != o.key() && prev.Answer.Index == a.Index {
			lc.violateLocked("contract: answer changed but index stayed %d:\n  before %s\n  after  %s", a.Index, lc.describe(prev), lc.describe(o))
		}
		lc.lastPoll[o.Member] = o
	}

	// At most one leader per term.
	if a.IsLeader || a.State == "leader" {
		if prev, ok := lc.leaderOfTerm[a.Term]; ok && prev.ID != o.ID {
			lc.violateLocked("two leaders in term %d:\n  %s\n  %s", a.Term, lc.describe(prev), lc.describe(o))
		} else if !ok {
			lc.leaderOfTerm[a.Term] = o
		}
	}

	lc.checkTermLocked(o)
	if a.IsLeader && !o.Lease.IsZero() {
		lc.checkLeaseLocked(o)
	}

	if a.IsLeader {
		k := claimKey{o.ID, o.Incarnation, a.Term}
		if r, ok := lc.runs[k]; !ok {
			lc.runs[k] = &claimRun{firstRecv: o.Recv, lastSent: o.Sent}
		} else {
			if o.Recv.Before(r.firstRecv) {
				r.firstRecv = o.Recv
			}
			if o.Sent.After(r.lastSent) {
				r.lastSent = o.Sent
			}
		}
	}

	// Bookkeeping for the waits and the timeline.
	prev, seen := lc.latest[o.Member]
	if !seen || o.Recv.After(prev.Recv) {
		lc.latest[o.Member] = o
	}
	lc.counts[o.Member]++
	if !seen || prev.key() != o.key() || prev.Incarnation != o.Incarnation {
		lc.changes[o.Member] = append(lc.changes[o.Member], o)
		lc.logf("%s", lc.describe(o))
	}
}

func (lc *LeaseChecker) checkTermLocked(o Observation) {
	// A raft-elector member keeps its term on disk, so its terms never go back across
	// restarts. The client-go baseline keeps nothing: a new process reports term 0 until it
	// has read the Lease, so its terms are checked within one process.
	key := o.ID
	if lc.noLeases {
		key = fmt.Sprintf("%s#%d", o.ID, o.Incarnation)
	}
	hist := lc.terms[key]
	floor := lc.settledTerm[key]
	for _, h := range hist {
		if h.recv.Before(o.Sent) && h.term > floor.term {
			floor = h
		}
	}
	if o.Answer.Term < floor.term {
		lc.violateLocked("term of %s went back from %d to %d:\n  %s\n  %s", o.ID, floor.term, o.Answer.Term, lc.describe(floor.obs), lc.describe(o))
	}
	// Fold answers older than any request can take into the settled floor.
	const settle = 5 * time.Second
	kept := hist[:0]
	for _, h := range hist {
		if o.Recv.Sub(h.recv) > settle {
			if h.term > lc.settledTerm[key].term {
				lc.settledTerm[key] = h
			}
			continue
		}
		kept = append(kept, h)
	}
	lc.terms[key] = append(kept, termObs{term: o.Answer.Term, recv: o.Recv, obs: o})
}

func (lc *LeaseChecker) checkLeaseLocked(o Observation) {
	lc.claims = append(lc.claims, o)
	if o.Lease.Before(o.Sent) {
		lc.violateLocked("%s claimed isLeader on a lease that had expired before the request was sent: %s", o.ID, lc.describe(o))
		return
	}
	start, end := o.Recv, o.Lease
	if !end.After(start) {
		return // nothing certain: the lease may have ended while the answer travelled
	}
	for id, ps := range lc.promises {
		if id == o.ID {
			continue
		}
		for _, p := range ps {
			if p.start.Before(end) && start.Before(p.end) {
				lc.violateLocked("overlapping leases: %s promised [%s, %s) and %s promised [%s, %s):\n  %s opened by %s\n  %s extended by %s\n  %s claim %s",
					id, lc.rel(p.start), lc.rel(p.end), o.ID, lc.rel(start), lc.rel(end),
					id, lc.describe(p.first), id, lc.describe(p.max), o.ID, lc.describe(o))
			}
		}
	}
	ps := lc.promises[o.ID]
	if n := len(ps); n > 0 && !start.After(ps[n-1].end) && !end.Before(ps[n-1].start) {
		p := ps[n-1]
		if start.Before(p.start) {
			p.start = start
		}
		if end.After(p.end) {
			p.end, p.max = end, o
		}
		lc.checkCompatLocked(o.ID, p)
		return
	}
	p := &promise{start: start, end: end, first: o, max: o}
	lc.promises[o.ID] = append(ps, p)
	lc.checkCompatLocked(o.ID, p)
}

// checkCompatLocked fails compat claims of other members made entirely inside p: at that
// instant an app reading GET / on that member believed it led while p's holder held the lease.
func (lc *LeaseChecker) checkCompatLocked(holder string, p *promise) {
	for _, cc := range lc.compat {
		if cc.id == holder || cc.reported {
			continue
		}
		if !cc.sent.Before(p.start) && cc.recv.Before(p.end) {
			cc.reported = true
			lc.violateLocked("GET / on %s named %s itself (said in [%s, %s]) while %s held the lease [%s, %s); an app using the leader-elector compatible answer would act as a second leader:\n  %s\n  lease opened by %s",
				cc.id, cc.id, lc.rel(cc.sent), lc.rel(cc.recv), holder, lc.rel(p.start), lc.rel(p.end), cc.desc, lc.describe(p.first))
		}
	}
}

// RecordCompat checks one answer of GET / by member i.
func (lc *LeaseChecker) RecordCompat(o Observation, name string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if name != o.ID {
		return
	}
	cc := &compatClaim{id: o.ID, sent: o.Sent, recv: o.Recv,
		desc: fmt.Sprintf("%s#%d GET / sent %s recv %s name=%q", o.ID, o.Incarnation, lc.rel(o.Sent), lc.rel(o.Recv), name)}
	// Keep the recent claims only: a promise starts when its claim is received, so a claim
	// older than any request can take cannot fall inside a promise recorded from now on.
	kept := lc.compat[:0]
	for _, old := range lc.compat {
		if o.Recv.Sub(old.recv) < 5*time.Second {
			kept = append(kept, old)
		}
	}
	lc.compat = append(kept, cc)
	for id, ps := range lc.promises {
		if id == o.ID {
			continue
		}
		for _, p := range ps {
			lc.checkCompatLocked(id, p)
		}
	}
}

// Violations returns what the checker found so far.
func (lc *LeaseChecker) Violations() []string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return append([]string(nil), lc.violations...)
}

// Latest returns the most recently received observation of member i.
func (lc *LeaseChecker) Latest(i int) (Observation, bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	o, ok := lc.latest[i]
	return o, ok
}

// Count returns how many observations of member i were recorded.
func (lc *LeaseChecker) Count(i int) int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.counts[i]
}

// Changes returns member i's observations received in [from, to] whose answer differed from
// the one before.
func (lc *LeaseChecker) Changes(i int, from, to time.Time) []Observation {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	var out []Observation
	for _, o := range lc.changes[i] {
		if !o.Recv.Before(from) && !o.Recv.After(to) {
			out = append(out, o)
		}
	}
	return out
}

// ClaimIntervals returns, by member id, the intervals in which that member certainly led: from
// the receipt of its first isLeader answer in a term (of one process) to the sending of the
// last request it answered with isLeader in that term. Only runs of at least two answers
// give an interval; a leader watched or polled every few milliseconds gives hundreds.
func (lc *LeaseChecker) ClaimIntervals() map[string][][2]time.Time {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	out := map[string][][2]time.Time{}
	for k, r := range lc.runs {
		if r.lastSent.After(r.firstRecv) {
			out[k.id] = append(out[k.id], [2]time.Time{r.firstRecv, r.lastSent})
		}
	}
	return out
}

// Claims returns the isLeader answers received in [from, to].
func (lc *LeaseChecker) Claims(from, to time.Time) []Observation {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	var out []Observation
	for _, o := range lc.claims {
		if !o.Recv.Before(from) && !o.Recv.After(to) {
			out = append(out, o)
		}
	}
	return out
}

// Summary describes what the checker saw, for the end of a test.
func (lc *LeaseChecker) Summary() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	var members []int
	total := 0
	for i, n := range lc.counts {
		members = append(members, i)
		total += n
	}
	sort.Ints(members)
	var terms []uint64
	for t := range lc.leaderOfTerm {
		terms = append(terms, t)
	}
	sort.Slice(terms, func(a, b int) bool { return terms[a] < terms[b] })
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d answers checked, %d lease claims, leaders in %d terms:", total, len(lc.claims), len(terms))
	const show = 12
	for k, t := range terms {
		if k == show && len(terms) > show+1 {
			fmt.Fprintf(&sb, " ... (%d more)", len(terms)-show-1)
			t = terms[len(terms)-1]
			fmt.Fprintf(&sb, " %d:%s", t, lc.leaderOfTerm[t].ID)
			break
		}
		fmt.Fprintf(&sb, " %d:%s", t, lc.leaderOfTerm[t].ID)
	}
	return sb.String()
}
