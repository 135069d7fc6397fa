package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The nemesis: a seeded, time-bounded random schedule of faults against real member
// processes, in the spirit of Jepsen. Each step opens a fault window in which one to three
// faults start (at random offsets) and end, then heals everything, requires a leader that every
// member names within a bound, and leaves the cluster alone for a while. The lease checker
// polls every member throughout; the run ends with a report (leaderless time, elections,
// faults by kind) and the safety checks. docs/reliability.md describes it.

var (
	nemesisSeed     = flag.Int64("nemesis.seed", 0, "TestNemesis*: the schedule's seed; 0 draws a new one (every run prints its seed: pass it here to replay)")
	nemesisDuration = flag.Duration("nemesis.duration", 40*time.Second, "TestNemesis*: how long the nemesis injects faults (`make nemesis` runs 10m per seed)")
	nemesisReport   = flag.String("nemesis.report", "", "TestNemesis*: append each run's figures as one JSON line to this file")
)

// faultKind names one kind of fault the nemesis injects.
type faultKind string

const (
	faultPartition faultKind = "partition"  // a majority/minority split
	faultBridge    faultKind = "bridge"     // two sides cut apart, one member sees both
	faultOneWay    faultKind = "one-way"    // directed links of one member blocked one way
	faultSlow      faultKind = "slow"       // latency + jitter on every link, or one member's
	faultKill      faultKind = "kill"       // SIGKILL, restart on the same data dir later
	faultPause     faultKind = "pause"      // SIGSTOP, SIGCONT later
	faultTerminate faultKind = "terminate"  // SIGTERM (graceful handover), restart after exit
	faultAPIOutage faultKind = "api-outage" // kube-apiserver stopped, started later
)

func (k faultKind) network() bool {
	return k == faultPartition || k == faultBridge || k == faultOneWay || k == faultSlow
}

func (k faultKind) process() bool { return k == faultKill || k == faultPause || k == faultTerminate }

type weightedKind struct {
	kind   faultKind
	weight int
}

// staticKinds are the faults of a cluster wired through fault proxies.
var staticKinds = []weightedKind{
	{faultPartition, 3}, {faultBridge, 1}, {faultOneWay, 2}, {faultSlow, 2},
	{faultKill, 2}, {faultPause, 3}, {faultTerminate, 1},
}

// plannedFault is one fault of a step, as drawn from the seed. Every kind draws the same
// values in the same order, so a seed gives the same kinds, shapes and durations on every run;
// only the roles (which member leads when the fault starts) are resolved at run time.
type plannedFault struct {
	kind          faultKind
	start, length time.Duration // offset in the step's window, and how long it lasts
	pick          int           // a member drawn at random
	// role: 0 aims the fault at the lease holder (it is isolated, in the minority, the
	// bridge, the target), 1 spares it, 2 keeps the random draw.
	role  int
	perm  []int // a random order of the members
	size  int   // partition: minority size; one-way: peers affected
	dir   int   // one-way: 0 the target's requests are lost, 1 requests to the target are
	all   bool  // slow: every link rather than one member's
	base  time.Duration
	jit   time.Duration
	class string // pause: how the pause compares with the lease and the election timeout

	desc string // what it did, once resolved
}

// aim resolves the member a link fault is about: the lease holder, anyone but it, or the
// random pick.
func (f *plannedFault) aim(leader, members int) int {
	switch {
	case f.role == 0 && leader >= 0:
		return leader
	case f.role == 1 && f.pick == leader:
		return (f.pick + 1) % members
	}
	return f.pick
}

// apiControl stops and starts the kube-apiserver (Kubernetes mode only).
type apiControl struct {
	stop  func() error
	start func() error
}

// stepSpan is one step from its first fault to the moment every member named the leader
// after its heal, for placing leaderless gaps.
type stepSpan struct {
	from, to time.Time
	step     int
}

// nemesis drives one cluster through a seeded schedule.
type nemesis struct {
	t        *testing.T
	c        *Cluster
	seed     int64
	rng      *rand.Rand
	kinds    []weightedKind
	api      *apiControl
	election time.Duration
	// moreChecks, when set, returns further safety violations for the report (Kubernetes
	// mode: pods labelled leader at once).
	moreChecks func() []string

	// Faults in force.
	paused   map[int]bool
	down     map[int]faultKind // killed or terminated, not restarted yet
	apiDown  bool
	netFault bool

	// What happened.
	steps        int
	faults       map[string]int
	recoveries   []time.Duration // full heal → a leader every member names
	restarts     int
	restartTerms []string // restarted members reporting a term below a reported one
	begin, end   time.Time
	schedule     []string
	spans        []stepSpan
}

func newNemesis(t *testing.T, c *Cluster, kinds []weightedKind, api *apiControl) *nemesis {
	seed := *nemesisSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	// Printed outside the test log too, so a run killed by the test timeout still shows it.
	fmt.Fprintf(os.Stderr, "%s: nemesis seed %d (replay: go test ./test/e2e -run '^%s$' -args -nemesis.seed=%d -nemesis.duration=%v)\n",
		t.Name(), seed, t.Name(), seed, *nemesisDuration)
	c.Logf("nemesis seed %d, duration %v, election timeout %v, %d members", seed, *nemesisDuration, c.cfg.Election, c.N())
	return &nemesis{
		t: t, c: c, seed: seed, rng: rand.New(rand.NewPCG(uint64(seed), 0x6e656d65)),
		kinds: kinds, api: api, election: c.cfg.Election,
		paused: map[int]bool{}, down: map[int]faultKind{},
		faults: map[string]int{},
	}
}

// between draws a duration in [lo, hi).
func (n *nemesis) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)))
}

func (n *nemesis) drawKind() faultKind {
	total := 0
	for _, k := range n.kinds {
		total += k.weight
	}
	x := n.rng.IntN(total)
	for _, k := range n.kinds {
		if x < k.weight {
			return k.kind
		}
		x -= k.weight
	}
	panic("unreachable")
}

// plan draws one step: its window and its faults.
func (n *nemesis) plan() (time.Duration, []*plannedFault) {
	e, members := n.election, n.c.N()
	window := n.between(2*e, 8*e)
	count := 1
	if n.rng.IntN(10) >= 6 {
		count++
	}
	if n.rng.IntN(10) >= 8 {
		count++
	}
	var faults []*plannedFault
	network, api, process := false, false, 0
	for range count {
		kind := n.drawKind()
		f := &plannedFault{kind: kind, start: n.between(0, window/3), pick: n.rng.IntN(members), role: n.rng.IntN(3), perm: n.rng.Perm(members)}
		f.size, f.dir, f.all = n.rng.IntN(members), n.rng.IntN(2), n.rng.IntN(2) == 0
		f.base, f.jit = n.between(0, e/10), n.between(e/20, e/2)
		class := n.rng.IntN(3)
		long := n.between(0, 1<<20) // a fraction, scaled per kind below
		frac := func(lo, hi time.Duration) time.Duration { return lo + (hi-lo)*long/(1<<20) }
		switch kind {
		case faultPartition:
			f.size = 1 + f.size%(members/2) // a minority: 1 .. ⌊n/2⌋
		case faultOneWay:
			f.size = 1 + f.size%(members-1) // peers affected: 1 .. n-1
		case faultKill, faultTerminate:
			f.length = frac(e/2, 4*e) // downtime
		case faultPause:
			switch class {
			case 0:
				f.class, f.length = "shorter than the lease", frac(e/5, 4*e/5)
			case 1:
				f.class, f.length = "longer than the lease and the election timeout", frac(e, 2*e)
			default:
				f.class, f.length = "longer than the longest randomized election timeout", frac(2*e, 5*e)
			}
		case faultAPIOutage:
			f.length = frac(2*e, 8*e)
		}
		switch {
		case kind.network():
			if network {
				continue
			}
			network = true
			f.length = window - f.start // until the heal
		case kind == faultAPIOutage:
			if api {
				continue
			}
			api = true
		case kind.process():
			// At most a minority of the members under a process fault at once.
			if process >= (members-1)/2 {
				continue
			}
			process++
		}
		window = max(window, f.start+f.length)
		faults = append(faults, f)
	}
	return window, faults
}

// leaseHolder is the member whose latest answer claimed the lease, or -1.
func (n *nemesis) leaseHolder() int {
	for i := range n.c.Members {
		if o, ok := n.c.Checker.Latest(i); ok && o.Answer.IsLeader && time.Since(o.Recv) < n.election {
			return i
		}
	}
	return -1
}

// target resolves a fault's member: the lease holder, anyone but it, or the random pick, and
// never a member already under a process fault.
func (n *nemesis) target(f *plannedFault) (int, string) {
	members, leader := n.c.N(), n.leaseHolder()
	i := f.pick
	switch {
	case f.role == 0 && leader >= 0:
		i = leader
	case f.role == 1 && i == leader:
		i = (i + 1) % members
	}
	for k := 0; k < members && (n.paused[i] || n.down[i] != ""); k++ {
		i = (i + 1) % members
	}
	if n.paused[i] || n.down[i] != "" {
		return -1, ""
	}
	role := "follower"
	if i == leader {
		role = "leader"
	}
	return i, n.c.Members[i].ID + " (" + role + ")"
}

// run injects faults until the duration has passed, heals, and checks liveness at the end.
func (n *nemesis) run() {
	c := n.c
	_, _, agreed, ok := n.waitAgreed(10 * n.election)
	if !ok {
		n.t.Fatalf("no initial leader within %v; latest answers:%s", 10*n.election, c.DescribeLatest())
	}
	n.begin = agreed
	deadline := time.Now().Add(*nemesisDuration)
	for time.Now().Before(deadline) {
		n.steps++
		window, faults := n.plan()
		quiet := n.between(n.election, 3*n.election)
		n.step(window, faults, quiet)
	}
	c.Logf("nemesis: %d steps done; final heal", n.steps)
	n.heal("final")
	n.end = time.Now()
}

// step runs one fault window, heals, waits for a leader and stays quiet.
func (n *nemesis) step(window time.Duration, faults []*plannedFault, quiet time.Duration) {
	c := n.c
	type event struct {
		at  time.Duration
		run func()
	}
	var events []event
	var kinds []string
	for _, f := range faults {
		events = append(events, event{f.start, func() { n.startFault(f) }})
		if !f.kind.network() {
			events = append(events, event{f.start + f.length, func() { n.endFault(f) }})
		}
		kinds = append(kinds, string(f.kind))
	}
	sort.SliceStable(events, func(a, b int) bool { return events[a].at < events[b].at })
	c.Logf("nemesis step %d: window %v: %s", n.steps, window.Round(time.Millisecond), strings.Join(kinds, " + "))
	begin := time.Now()
	for _, ev := range events {
		time.Sleep(time.Until(begin.Add(ev.at))) // the schedule's own timing: faults last this long
		ev.run()
	}
	time.Sleep(time.Until(begin.Add(window)))
	var descs []string
	for _, f := range faults {
		if f.desc != "" {
			descs = append(descs, fmt.Sprintf("%s at +%v", f.desc, f.start.Round(time.Millisecond)))
		}
	}
	n.schedule = append(n.schedule, fmt.Sprintf("step %d (+%.1fs, window %v): %s", n.steps,
		begin.Sub(c.start).Seconds(), window.Round(time.Millisecond), strings.Join(descs, "; ")))
	n.heal(fmt.Sprintf("step %d", n.steps))
	n.spans = append(n.spans, stepSpan{from: begin, to: time.Now(), step: n.steps})
	time.Sleep(quiet) // fault-free time before the next step: part of the schedule
}

func (n *nemesis) count(kind faultKind, detail string) {
	n.faults[string(kind)]++
	if detail != "" {
		n.faults[string(kind)+": "+detail]++
	}
}

func (n *nemesis) startFault(f *plannedFault) {
	c, members := n.c, n.c.N()
	leader := n.leaseHolder()
	switch f.kind {
	case faultPartition:
		perm := slices.Clone(f.perm)
		if leader >= 0 && f.role != 2 {
			at := slices.Index(perm, leader)
			inMinority := at < f.size
			if (f.role == 0) != inMinority {
				swap := 0
				if f.role == 1 {
					swap = f.size
				}
				perm[at], perm[swap] = perm[swap], perm[at]
			}
		}
		minority, majority := perm[:f.size], perm[f.size:]
		c.Partition(minority, majority)
		n.netFault = true
		where := "leader in the majority"
		if slices.Contains(minority, leader) {
			where = "leader in the minority"
		}
		f.desc = fmt.Sprintf("partition %s | %s (%s)", c.IDs(minority), c.IDs(majority), where)
		n.count(f.kind, where)
	case faultBridge:
		perm := slices.Clone(f.perm)
		if leader >= 0 && f.role != 2 {
			at := slices.Index(perm, leader)
			if (f.role == 0) != (at == 0) {
				swap := 0
				if f.role == 1 {
					swap = 1
				}
				perm[at], perm[swap] = perm[swap], perm[at]
			}
		}
		bridge, rest := perm[0], perm[1:]
		a, b := rest[:len(rest)/2], rest[len(rest)/2:]
		c.cutBetween(a, b)
		n.netFault = true
		where := "leader on a side"
		if bridge == leader {
			where = "leader is the bridge"
		}
		f.desc = fmt.Sprintf("bridge %s ~ %s ~ %s (%s)", c.IDs(a), c.Members[bridge].ID, c.IDs(b), where)
		n.count(f.kind, where)
	case faultOneWay:
		i := f.aim(leader, members)
		var peers []int
		for _, j := range f.perm {
			if j != i && len(peers) < f.size {
				peers = append(peers, j)
			}
		}
		var links [][2]int
		what := "requests from"
		for _, j := range peers {
			if f.dir == 0 {
				links = append(links, [2]int{i, j})
			} else {
				links = append(links, [2]int{j, i})
			}
		}
		if f.dir == 1 {
			what = "requests to"
		}
		c.blockLinks(links)
		n.netFault = true
		role := "follower"
		if i == leader {
			role = "leader"
		}
		f.desc = fmt.Sprintf("one-way: %s %s (%s) lost on %d of %d links", what, c.Members[i].ID, role, len(peers), members-1)
		n.count(f.kind, what+" the "+role)
	case faultSlow:
		if f.all {
			c.SetLatency(f.base, f.jit)
			f.desc = fmt.Sprintf("slow: every link +%v + jitter up to %v", f.base.Round(time.Millisecond), f.jit.Round(time.Millisecond))
			n.count(f.kind, "every link")
		} else {
			i := f.aim(leader, members)
			for j := range c.Members {
				if j != i {
					c.SetLinkLatency(i, j, f.base, f.jit)
					c.SetLinkLatency(j, i, f.base, f.jit)
				}
			}
			f.desc = fmt.Sprintf("slow: links of %s +%v + jitter up to %v", c.Members[i].ID, f.base.Round(time.Millisecond), f.jit.Round(time.Millisecond))
			n.count(f.kind, "one member's links")
		}
		n.netFault = true
	case faultKill, faultTerminate, faultPause:
		i, who := n.target(f)
		if i < 0 {
			return
		}
		f.pick = i // the end of the fault acts on the same member
		switch f.kind {
		case faultKill:
			c.Kill(i)
			n.down[i] = faultKill
			f.desc = fmt.Sprintf("SIGKILL %s, restart after %v", who, f.length.Round(time.Millisecond))
			n.count(f.kind, "")
		case faultTerminate:
			c.Terminate(i)
			n.down[i] = faultTerminate
			f.desc = fmt.Sprintf("SIGTERM %s, restart %v later", who, f.length.Round(time.Millisecond))
			n.count(f.kind, "")
		case faultPause:
			c.Pause(i)
			n.paused[i] = true
			f.desc = fmt.Sprintf("SIGSTOP %s for %v (%s)", who, f.length.Round(time.Millisecond), f.class)
			n.count(f.kind, f.class)
		}
	case faultAPIOutage:
		if err := n.api.stop(); err != nil {
			n.t.Fatalf("stop the kube-apiserver: %v", err)
		}
		n.apiDown = true
		c.Logf("kube-apiserver stopped")
		f.desc = fmt.Sprintf("kube-apiserver down for %v", f.length.Round(time.Millisecond))
		n.count(f.kind, "")
	}
	if f.desc != "" {
		c.Logf("nemesis: %s", f.desc)
	}
}

func (n *nemesis) endFault(f *plannedFault) {
	switch f.kind {
	case faultKill, faultTerminate:
		if f.desc != "" && n.down[f.pick] != "" {
			n.restart(f.pick)
		}
	case faultPause:
		if f.desc != "" && n.paused[f.pick] {
			n.c.Resume(f.pick)
			delete(n.paused, f.pick)
		}
	case faultAPIOutage:
		n.startAPI()
	}
}

func (n *nemesis) startAPI() {
	if !n.apiDown {
		return
	}
	at := time.Now()
	if err := n.api.start(); err != nil {
		n.t.Fatalf("start the kube-apiserver again: %v", err)
	}
	n.apiDown = false
	n.c.Logf("kube-apiserver ready again after %v", time.Since(at).Round(time.Millisecond))
}

// restart brings a killed or terminated member back on its data directory, and checks that
// its first answer does not report a term below one it reported before: the term is durable
// (written before anything that depends on it is sent or published).
func (n *nemesis) restart(i int) {
	c, m := n.c, n.c.Members[i]
	if n.down[i] == faultTerminate {
		if code, _ := c.WaitExit(i, 30*time.Second); code != 0 {
			n.t.Errorf("%s exited with %d after SIGTERM, want 0", m.ID, code)
		}
	}
	delete(n.down, i)
	// The old process is gone: every answer it gave is in.
	before := c.Checker.maxTerm(i)
	c.Restart(i)
	n.restarts++
	var o Observation
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if o, err = c.Observe(i); err == nil {
			break
		}
		if time.Now().After(deadline) {
			n.t.Errorf("%s does not answer GET /leader after its restart: %v", m.ID, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o.Answer.Term < before {
		msg := fmt.Sprintf("%s restarted on its data dir reports term %d, below the term %d it reported before: %s",
			m.ID, o.Answer.Term, before, c.Checker.describe(o))
		n.restartTerms = append(n.restartTerms, msg)
		n.t.Error(msg)
	}
}

// heal undoes every fault in force, then requires a leader that every member names within
// ten election timeouts.
func (n *nemesis) heal(what string) {
	c := n.c
	if n.netFault {
		c.HealAll()
		n.netFault = false
	}
	for i := range n.paused {
		c.Resume(i)
		delete(n.paused, i)
	}
	n.startAPI()
	for _, i := range slices.Sorted(maps.Keys(n.down)) {
		n.restart(i)
	}
	healed := time.Now()
	bound := 10 * n.election
	l, term, at, ok := n.waitAgreed(bound)
	if !ok {
		n.end = time.Now()
		n.logReport()
		n.t.Fatalf("liveness: no leader named by every member within %v (ten election timeouts) after the %s heal; seed %d; latest answers:%s",
			bound, what, n.seed, c.DescribeLatest())
	}
	took := at.Sub(healed)
	n.recoveries = append(n.recoveries, took)
	c.Logf("nemesis: healed (%s): %s leads in term %d, named by all %v after the heal", what, c.Members[l].ID, term, took.Round(time.Millisecond))
}

// waitAgreed is WaitAgreedLeader without the failure, so the nemesis can report first.
func (n *nemesis) waitAgreed(timeout time.Duration) (int, uint64, time.Time, bool) {
	return n.c.tryAgreedLeader(n.c.All(), timeout)
}

// --- Link helpers for the nemesis (on the harness's link model) ---

// cutBetween cuts every link between sides a and b, both ways; links within a side and to
// members on neither side stay as they are (a bridge member sees both sides).
func (c *Cluster) cutBetween(a, b []int) {
	c.t.Helper()
	c.requireLinks()
	c.linkMu.Lock()
	for _, i := range a {
		for _, j := range b {
			c.blocked[i][j], c.blocked[j][i] = true, true
		}
	}
	c.applyLinks()
	c.linkMu.Unlock()
	c.Logf("cut every link between %s and %s", c.IDs(a), c.IDs(b))
}

// blockLinks cuts the given directed links (from, to) at once.
func (c *Cluster) blockLinks(links [][2]int) {
	c.t.Helper()
	c.requireLinks()
	c.linkMu.Lock()
	var desc []string
	for _, l := range links {
		c.blocked[l[0]][l[1]] = true
		desc = append(desc, c.Members[l[0]].ID+"→"+c.Members[l[1]].ID)
	}
	c.applyLinks()
	c.linkMu.Unlock()
	c.Logf("blocked links %s", strings.Join(desc, " "))
}

// --- What the checker saw, for the report ---

// maxTerm is the highest term member i reported in any answer so far, in any incarnation.
func (lc *LeaseChecker) maxTerm(i int) uint64 {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	var top uint64
	for _, o := range lc.changes[i] {
		top = max(top, o.Answer.Term)
	}
	return top
}

// leaseIntervals returns the merged intervals of [from, to] during which some member certainly
// promised leadership (the checker's promises: from an isLeader answer's receipt to its
// leaseExpiresAt).
func (lc *LeaseChecker) leaseIntervals(from, to time.Time) [][2]time.Time {
	lc.mu.Lock()
	var spans [][2]time.Time
	for _, ps := range lc.promises {
		for _, p := range ps {
			s, e := p.start, p.end
			if s.Before(from) {
				s = from
			}
			if e.After(to) {
				e = to
			}
			if s.Before(e) {
				spans = append(spans, [2]time.Time{s, e})
			}
		}
	}
	lc.mu.Unlock()
	sort.Slice(spans, func(a, b int) bool { return spans[a][0].Before(spans[b][0]) })
	var merged [][2]time.Time
	for _, s := range spans {
		if k := len(merged) - 1; k >= 0 && !s[0].After(merged[k][1]) {
			if s[1].After(merged[k][1]) {
				merged[k][1] = s[1]
			}
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// termLeaders checks, over every answer that changed something (which includes every
// distinct (term, name) a member reported), that no term had two different leaders named:
// a member learns the leader of term T only from that leader's messages of term T. It returns
// the violations, the number of terms with a named leader in [from, to], and the lowest and
// highest term reported in [from, to].
func (lc *LeaseChecker) termLeaders(from, to time.Time) (violations []string, terms int, lo, hi uint64) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	named := map[uint64]Observation{}
	reported := map[uint64]bool{}
	for _, obs := range lc.changes {
		for _, o := range obs {
			if o.Recv.Before(from) || o.Recv.After(to) {
				continue
			}
			t := o.Answer.Term
			if lo == 0 || t < lo {
				lo = t
			}
			hi = max(hi, t)
			if o.Answer.Name == "" {
				continue
			}
			reported[t] = true
			if prev, ok := named[t]; !ok {
				named[t] = o
			} else if prev.Answer.Name != o.Answer.Name {
				violations = append(violations, fmt.Sprintf("term %d has two leaders named:\n  %s\n  %s", t, lc.describe(prev), lc.describe(o)))
			}
		}
	}
	return violations, len(reported), lo, hi
}

// --- The report ---

type nemesisFigures struct {
	Test            string         `json:"test"`
	Seed            int64          `json:"seed"`
	Members         int            `json:"members"`
	ElectionTimeout float64        `json:"electionTimeoutSeconds"`
	Duration        float64        `json:"durationSeconds"` // first agreed leader → final agreement
	Steps           int            `json:"steps"`
	Faults          map[string]int `json:"faults"`
	Restarts        int            `json:"restarts"`
	Leaderless      float64        `json:"leaderlessSeconds"`
	Gaps            []float64      `json:"leaderlessGapsSeconds"`
	LongestGaps     []string       `json:"longestGaps"`     // where the longest gaps were
	Recoveries      []float64      `json:"recoverySeconds"` // full heal → a leader named by all
	TermsWithLeader int            `json:"termsWithLeader"`
	FirstTerm       uint64         `json:"firstTerm"`
	LastTerm        uint64         `json:"lastTerm"`
	Answers         string         `json:"answers"`
	Violations      []string       `json:"violations"`
}

func (n *nemesis) figures() nemesisFigures {
	c := n.c
	end := n.end
	if end.IsZero() {
		end = time.Now()
	}
	f := nemesisFigures{
		Test: n.t.Name(), Seed: n.seed, Members: c.N(), ElectionTimeout: n.election.Seconds(),
		Duration: end.Sub(n.begin).Seconds(), Steps: n.steps, Faults: n.faults, Restarts: n.restarts,
		Answers: c.Checker.Summary(),
	}
	var gaps [][2]time.Time
	held := n.begin
	for _, span := range c.Checker.leaseIntervals(n.begin, end) {
		if span[0].After(held) {
			gaps = append(gaps, [2]time.Time{held, span[0]})
		}
		held = span[1]
	}
	if end.After(held) {
		gaps = append(gaps, [2]time.Time{held, end})
	}
	for _, g := range gaps {
		f.Gaps = append(f.Gaps, g[1].Sub(g[0]).Seconds())
	}
	sort.SliceStable(gaps, func(a, b int) bool { return gaps[a][1].Sub(gaps[a][0]) > gaps[b][1].Sub(gaps[b][0]) })
	for _, g := range gaps[:min(3, len(gaps))] {
		where := "outside every step (no fault in force)"
		for _, sp := range n.spans {
			if g[0].Before(sp.to) && sp.from.Before(g[1]) {
				where = fmt.Sprintf("in step %d", sp.step)
				break
			}
		}
		f.LongestGaps = append(f.LongestGaps, fmt.Sprintf("%s from +%.3fs, %s", secs(g[1].Sub(g[0]).Seconds()), g[0].Sub(c.start).Seconds(), where))
	}
	for _, g := range f.Gaps {
		f.Leaderless += g
	}
	for _, r := range n.recoveries {
		f.Recoveries = append(f.Recoveries, r.Seconds())
	}
	var termViolations []string
	termViolations, f.TermsWithLeader, f.FirstTerm, f.LastTerm = c.Checker.termLeaders(n.begin, end)
	f.Violations = append(f.Violations, c.Checker.Violations()...)
	f.Violations = append(f.Violations, termViolations...)
	f.Violations = append(f.Violations, n.restartTerms...)
	if n.moreChecks != nil {
		f.Violations = append(f.Violations, n.moreChecks()...)
	}
	return f
}

// quantiles formats p50/p90/max of xs (seconds).
func quantiles(xs []float64) string {
	if len(xs) == 0 {
		return "none"
	}
	s := slices.Sorted(slices.Values(xs))
	q := func(p float64) float64 {
		k := int(p*float64(len(s))+0.999999) - 1 // nearest rank
		return s[min(max(k, 0), len(s)-1)]
	}
	return fmt.Sprintf("p50 %s, p90 %s, max %s", secs(q(0.5)), secs(q(0.9)), secs(s[len(s)-1]))
}

func secs(x float64) string {
	return time.Duration(x * float64(time.Second)).Round(time.Millisecond).String()
}

func (f nemesisFigures) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "nemesis report for %s, seed %d (replay with -nemesis.seed=%d)\n", f.Test, f.Seed, f.Seed)
	fmt.Fprintf(&sb, "  %d members, election timeout %s; %d steps over %s; %d restarts\n",
		f.Members, secs(f.ElectionTimeout), f.Steps, secs(f.Duration), f.Restarts)
	var kinds []string
	for k := range f.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	sb.WriteString("  faults injected:\n")
	for _, k := range kinds {
		indent := "    "
		if strings.Contains(k, ": ") {
			indent = "      "
		}
		fmt.Fprintf(&sb, "%s%-70s %d\n", indent, k, f.Faults[k])
	}
	share := 0.0
	if f.Duration > 0 {
		share = 100 * f.Leaderless / f.Duration
	}
	fmt.Fprintf(&sb, "  leaderless (no member certainly holding a lease): %s in total (%.1f%%), %d gaps: %s\n",
		secs(f.Leaderless), share, len(f.Gaps), quantiles(f.Gaps))
	if len(f.LongestGaps) > 0 {
		fmt.Fprintf(&sb, "  longest leaderless gaps: %s\n", strings.Join(f.LongestGaps, "; "))
	}
	fmt.Fprintf(&sb, "  recovery after a full heal (a leader named by every member): %d heals: %s\n", len(f.Recoveries), quantiles(f.Recoveries))
	fmt.Fprintf(&sb, "  terms %d → %d (%d terms begun), %d with a leader named\n", f.FirstTerm, f.LastTerm, f.LastTerm-f.FirstTerm, f.TermsWithLeader)
	fmt.Fprintf(&sb, "  lease checker: %s\n", f.Answers)
	fmt.Fprintf(&sb, "  safety violations: %d", len(f.Violations))
	for _, v := range f.Violations {
		fmt.Fprintf(&sb, "\n    %s", v)
	}
	return sb.String()
}

// logReport logs the report, prints the schedule, and appends the figures to -nemesis.report.
func (n *nemesis) logReport() nemesisFigures {
	f := n.figures()
	n.t.Logf("nemesis schedule (seed %d):\n  %s", n.seed, strings.Join(n.schedule, "\n  "))
	n.t.Logf("%s", f)
	if *nemesisReport != "" {
		b, err := json.Marshal(f)
		if err == nil {
			var fh *os.File
			fh, err = os.OpenFile(*nemesisReport, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err == nil {
				_, err = fh.Write(append(b, '\n'))
				fh.Close()
			}
		}
		if err != nil {
			n.t.Errorf("write -nemesis.report %s: %v", *nemesisReport, err)
		}
	}
	return f
}

// finish logs the report and fails the test on any safety violation the report found beyond
// what the cluster's cleanup reports itself (the lease checker's own violations).
func (n *nemesis) finish() nemesisFigures {
	f := n.logReport()
	viol, _, _, _ := n.c.Checker.termLeaders(n.begin, n.end)
	for _, v := range viol {
		n.t.Errorf("per-term leaders: %s", v)
	}
	return f
}

// TestNemesis runs the nemesis against five members wired through fault proxies, with the
// fast timings (50 ms heartbeats, 500 ms election timeout): partitions (majority/minority,
// bridge), one-way link loss, slow links, SIGKILL and restart, SIGSTOP pauses on both sides of
// the lease and the election timeout, and SIGTERM handovers, with a heal and a liveness check
// after every step. -nemesis.duration sets the length, -nemesis.seed replays a schedule.
func TestNemesis(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 5))
	n := newNemesis(t, c, staticKinds, nil)
	n.run()
	n.finish()
}

// TestNemesisPlan: a seed gives the same schedule on every run (what -nemesis.seed replays),
// and every step keeps the nemesis's own rules: at most one network fault and one API outage,
// at most a minority of the members under process faults, minorities that are minorities,
// every fault inside its window.
func TestNemesisPlan(t *testing.T) {
	for _, members := range []int{3, 5} {
		c := &Cluster{cfg: Config{Election: 500 * time.Millisecond}, Members: make([]*Member, members)}
		draw := func(seed int64) []string {
			n := &nemesis{c: c, rng: rand.New(rand.NewPCG(uint64(seed), 0x6e656d65)), election: c.cfg.Election,
				kinds: append(slices.Clone(staticKinds), weightedKind{faultAPIOutage, 2})}
			var out []string
			for range 200 {
				window, faults := n.plan()
				network, api, process := 0, 0, 0
				for _, f := range faults {
					switch {
					case f.kind.network():
						network++
					case f.kind == faultAPIOutage:
						api++
					case f.kind.process():
						process++
					}
					if f.kind == faultPartition && (f.size < 1 || 2*f.size >= members) {
						t.Errorf("%d members: a partition's minority of %d", members, f.size)
					}
					if f.start < 0 || f.length <= 0 || f.start+f.length > window {
						t.Errorf("%d members: %s at +%v for %v in a window of %v", members, f.kind, f.start, f.length, window)
					}
					out = append(out, fmt.Sprintf("%v %s %v %v %d %d %d %v", window, f.kind, f.start, f.length, f.pick, f.role, f.size, f.perm))
				}
				if len(faults) == 0 || network > 1 || api > 1 || process > (members-1)/2 {
					t.Errorf("%d members: a step with %d faults: %d network, %d API outages, %d process", members, len(faults), network, api, process)
				}
			}
			return out
		}
		if a, b := draw(42), draw(42); !slices.Equal(a, b) {
			t.Errorf("%d members: seed 42 drew two different schedules", members)
		}
		if a, b := draw(42), draw(43); slices.Equal(a, b) {
			t.Errorf("%d members: seeds 42 and 43 drew the same schedule", members)
		}
	}
}
