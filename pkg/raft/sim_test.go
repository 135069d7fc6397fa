package raft

import (
	"cmp"
	"flag"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

var (
	simSeedFlag      = flag.Int64("sim.seed", 0, "replay only the simulator schedule with this seed (seeds are positive)")
	simSchedulesFlag = flag.Int("sim.schedules", 0, "number of simulator schedules to run (0: 3000, or 600 with -short)")
	simFirstFlag     = flag.Int64("sim.first", 1, "seed of the first simulator schedule")
	simTraceFlag     = flag.Int("sim.trace", 40, "number of trace events printed with a simulator failure (up to 256; a -sim.seed replay prints at least 200, and any number)")
)

const (
	simDefaultSchedules = 3000
	simShortSchedules   = 600
)

func simReplayCommand(seed int64) string {
	return fmt.Sprintf("go test ./pkg/raft -run TestSimulator -sim.seed=%d -v", seed)
}

// simResult is the outcome of one schedule.
type simResult struct {
	seed  int64
	p     simParams
	stats simStats
	err   *simFailure
	trace []simTraceRec
}

func runSimSchedule(seed int64, opt simOptions, traceEvents int, keepAll bool) simResult {
	s := newSim(seed, opt)
	s.trace.keepAll = keepAll
	err := s.run()
	res := simResult{seed: seed, p: s.p, stats: s.stats, err: err}
	if keepAll {
		res.trace = s.trace.all
	} else if err != nil {
		res.trace = s.trace.last(traceEvents)
	}
	return res
}

func (r simResult) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schedule seed=%d (%v) failed at %v: %s\n", r.seed, r.p, r.err.at, r.err.msg)
	fmt.Fprintf(&b, "replay: %s\n", simReplayCommand(r.seed))
	fmt.Fprintf(&b, "last %d events:\n%s", len(r.trace), simFormatTrace(r.trace))
	return b.String()
}

// runSimSchedules runs the schedules with seeds first, first+1, ... in parallel and returns
// their results in seed order.
func runSimSchedules(n int, first int64, opt simOptions) []simResult {
	results := make([]simResult, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				results[i] = runSimSchedule(first+int64(i), opt, min(*simTraceFlag, simTraceRing), false)
			}
		})
	}
	wg.Wait()
	return results
}

// TestSimulator drives clusters of 3, 5 and 7 members through random schedules of faults and
// checks the invariants after every event:
//
//  1. at most one leader per term (every (term, leader) ever seen, crashed members included);
//  2. no two members hold the lease at one instant, nor the lease reported to the
//     application (intervals of global time, see simLease), and AppLeaseUntil <= LeaseUntil;
//  3. a member's term never goes back over its lifetime, restarts included; it never votes
//     for two candidates in one term; it persists a vote before it grants it;
//  4. liveness: once the faults stop, the members of the leader's configuration agree on a
//     leader holding the lease within simLivenessBound, and within simConfigBound of that
//     agreement they all hold its configuration and know it committed.
//
// Half the schedules, chosen by the seed, also change the membership (sim_membership_test.go):
// a random subset of the members bootstraps, the others join with no configuration, and the
// leader is asked for random single-member changes; removed members are crashed for good or
// left running. Every schedule persists the log with the HardState and restarts members from
// both. On top of 1 to 4 (checked in sim_check_test.go):
//
//  5. committed configurations agree: every member that committed an index (the snapshot of
//     the log it persists) agrees on the term there and the configuration in force;
//  6. each committed configuration differs from the one before by one member added as a
//     learner, promoted, demoted or removed; entries with the same index and term are the
//     same entry on every member (log matching);
//  7. a member's commit index never goes back, restarts included; its log in memory is the
//     one it persisted; it uses the newest configuration of its log (never one older than
//     its committed one) and counts that configuration's voters;
//  8. only a voter of its own configuration is follower, pre-candidate, candidate or leader,
//     and only such a voter sends request-vote: a member with no configuration never does;
//     a leader refuses a change while one is pending or before its term's no-op committed,
//     and a refusal changes nothing.
//
// Every schedule is reproducible from its seed: a failure prints the seed, the command that
// replays it, and the last events of the schedule.
//
//	go test ./pkg/raft -run TestSimulator -sim.seed=N -v   # replay one schedule
//	go test ./pkg/raft -run TestSimulator -sim.schedules=100000 -sim.first=1000000
//
// Core bugs the membership schedules found, now fixed (regression tests in
// sim_regress_test.go): a leader that removed the other voter of two never committed the
// change (seed 19); and members refused vote requests from candidates their possibly stale
// configuration did not make voters, which deadlocked clusters where a voter had missed
// entries (seeds 1076, 1655, 11918, 35555). A member now refuses such a candidate only when
// the candidate's log is not strictly newer than its own.
//
// The lease bug this comment used to describe (a member released from its lease binding by
// adopting a higher term from a stale message; seeds 1144946, 13703, 25461, 2061259, 2199974,
// 3323099, 3082207, 3257901) is fixed: those seeds pass, the binding (boundUntil) now
// outlives a change of term.
func TestSimulator(t *testing.T) {
	if seed := *simSeedFlag; seed != 0 {
		// A replay shows more of the trace, and shows it even when the schedule passes.
		events := max(*simTraceFlag, 200)
		res := runSimSchedule(seed, simOptions{}, events, true)
		t.Logf("schedule seed=%d: %v", seed, res.p)
		t.Logf("%v", res.stats)
		if len(res.trace) > events {
			res.trace = res.trace[len(res.trace)-events:]
		}
		if res.err != nil {
			t.Fatal(res.report())
		}
		t.Logf("passed; last %d events:\n%s", len(res.trace), simFormatTrace(res.trace))
		return
	}

	n := *simSchedulesFlag
	if n <= 0 {
		n = simDefaultSchedules
		if testing.Short() {
			n = simShortSchedules
		}
	}
	results := runSimSchedules(n, *simFirstFlag, simOptions{})

	type summary struct {
		schedules, failed                  int
		events, leaders, leases, transfers int
		crashes                            int
		maxConverged                       float64 // in election timeouts
		maxConvergedSeed                   int64
		// Membership schedules.
		proposed, accepted int
		committed          [4]int
		gone, zombies      int
		maxConfigKnown     float64 // in heartbeat intervals
		maxConfigKnownSeed int64
	}
	// Keyed by cluster size, negative for membership schedules.
	sums := map[int]*summary{}
	var failures []simResult
	for _, r := range results {
		key := r.p.size
		if r.p.membership {
			key = -key
		}
		sum := sums[key]
		if sum == nil {
			sum = &summary{}
			sums[key] = sum
		}
		sum.schedules++
		sum.events += r.stats.events
		sum.leaders += r.stats.leaders
		sum.leases += r.stats.leases
		sum.transfers += r.stats.transfers
		sum.crashes += r.stats.crashes
		sum.proposed += r.stats.confProposed
		sum.accepted += r.stats.confAccepted
		for i, n := range r.stats.confCommitted {
			sum.committed[i] += n
		}
		sum.gone += r.stats.gone
		sum.zombies += r.stats.zombies
		if r.err != nil {
			sum.failed++
			failures = append(failures, r)
			continue
		}
		if c := float64(r.stats.converged) / float64(simTime(r.p.electionTicks)*simNominalTick); c > sum.maxConverged {
			sum.maxConverged, sum.maxConvergedSeed = c, r.seed
		}
		if c := float64(r.stats.configConverged) / float64(simTime(r.p.heartbeatTicks)*simNominalTick); c > sum.maxConfigKnown {
			sum.maxConfigKnown, sum.maxConfigKnownSeed = c, r.seed
		}
	}
	// Fault-only schedules first, then membership ones; by size within each.
	keys := slices.Collect(maps.Keys(sums))
	slices.SortFunc(keys, func(a, b int) int {
		if (a < 0) != (b < 0) {
			return cmp.Compare(b, a) // the negative membership key after
		}
		return cmp.Compare(max(a, -a), max(b, -b))
	})
	for _, key := range keys {
		sum := sums[key]
		kind := "fault-only"
		if key < 0 {
			kind = "membership"
		}
		t.Logf("%d members, %s: %d schedules (%d failed), %d events, %d leaders, %d leases, %d transfers, %d crashes; slowest convergence %.1f election timeouts (seed %d)",
			max(key, -key), kind, sum.schedules, sum.failed, sum.events, sum.leaders, sum.leases, sum.transfers, sum.crashes,
			sum.maxConverged, sum.maxConvergedSeed)
		if key < 0 {
			t.Logf("%d members, %s: %d changes asked, %d accepted; committed %d add-learner, %d promote, %d demote, %d remove; %d pods gone, %d zombies; slowest until the configuration is known committed %.1f heartbeat intervals (seed %d)",
				-key, kind, sum.proposed, sum.accepted, sum.committed[0], sum.committed[1], sum.committed[2], sum.committed[3],
				sum.gone, sum.zombies, sum.maxConfigKnown, sum.maxConfigKnownSeed)
		}
	}

	const detailed = 3
	for i, r := range failures {
		if i == detailed {
			var seeds []string
			for _, r := range failures[detailed:] {
				seeds = append(seeds, fmt.Sprint(r.seed))
			}
			t.Errorf("%d more schedules failed, seeds: %s", len(failures)-detailed, strings.Join(seeds, " "))
			break
		}
		t.Error(r.report())
	}
}

// TestSimDeterministicReplay runs schedules twice and compares their full traces: a seed
// must replay exactly, or a failure's seed is worthless. It takes the first two seeds of
// each cluster size, with and without membership changes.
func TestSimDeterministicReplay(t *testing.T) {
	var seeds []int64
	type kind struct {
		size       int
		membership bool
	}
	perKind := map[kind]int{}
	for seed := int64(1); len(seeds) < 12; seed++ {
		p := newSim(seed, simOptions{}).p
		if k := (kind{p.size, p.membership}); perKind[k] < 2 {
			perKind[k]++
			seeds = append(seeds, seed)
		}
	}
	for _, seed := range seeds {
		a := runSimSchedule(seed, simOptions{}, 0, true)
		b := runSimSchedule(seed, simOptions{}, 0, true)
		if len(a.trace) < 100 {
			t.Fatalf("seed %d: only %d trace records", seed, len(a.trace))
		}
		if a.stats != b.stats {
			t.Errorf("seed %d: stats differ between runs: %+v and %+v", seed, a.stats, b.stats)
		}
		if len(a.trace) != len(b.trace) {
			t.Errorf("seed %d: %d trace records, then %d", seed, len(a.trace), len(b.trace))
		}
		for i := range min(len(a.trace), len(b.trace)) {
			if x, y := a.trace[i].String(), b.trace[i].String(); x != y {
				t.Errorf("seed %d: traces differ at record %d:\n  %s\n  %s", seed, i, x, y)
				break
			}
		}
	}
}

// TestSimCatchesBrokenRuntime shows the invariant checks are not vacuous: a runtime that
// loses its durable state, or clocks that drift far beyond the bound the lease is computed
// for, must be caught; and so must a leader that changes the configuration while a change is
// pending (the mutation reaches into the core's unexported state to skip its check).
//
// A leader that changes the configuration before it committed its no-op is not here: the
// random schedules accept hundreds of such changes per thousand schedules under that
// mutation, yet none of 20000 reached the interleaving that breaks safety (two leaders of
// consecutive terms each adding to the same base, with disjoint majorities, which needs an
// even number of voters, a learner, and about five partitions in the right order).
func TestSimCatchesBrokenRuntime(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mut       simMutation
		schedules int
		want      []string // any of them
	}{
		{"forgotten HardState", simMutationForgetHardState, 200, []string{"term goes back"}},
		{"clock drift beyond the bound", simMutationFastClocks, 200, []string{"lease overlap"}},
		{"forgotten log", simMutationForgetLog, 200, []string{"commit index goes back"}},
		{"concurrent configuration changes", simMutationConcurrentConfChanges, 200,
			[]string{"committed configurations disagree", "differ by more than one single-member change"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caught := map[string]int{}
			var first int64
			results := runSimSchedules(tc.schedules, 1, simOptions{mut: tc.mut})
			for _, r := range results {
				for _, want := range tc.want {
					if r.err != nil && strings.Contains(r.err.msg, want) {
						caught[want]++
						if first == 0 {
							first = r.seed
						}
						break
					}
				}
			}
			t.Logf("of %d schedules, caught by %v (first seed %d)", len(results), caught, first)
			if len(caught) == 0 {
				t.Errorf("no schedule reported any of %q", tc.want)
			}
		})
	}
}

// TestSimLeaseIntervals checks the interval bookkeeping the lease invariant rests on.
func TestSimLeaseIntervals(t *testing.T) {
	ls := newSimLeases("lease", 3)
	if _, bad := ls.hold(0, 1, 1, 100, 200, 20); bad {
		t.Fatal("first interval conflicts")
	}
	// Renewal in the same term extends the open interval.
	if _, bad := ls.hold(0, 1, 1, 150, 260, 26); bad || len(ls.all) != 1 || ls.all[0].until != 260 {
		t.Fatalf("renewal: %v", ls.all)
	}
	// Another member's lease that starts exactly where the first ends is fine.
	if _, bad := ls.hold(1, 1, 2, 260, 400, 30); bad {
		t.Fatal("adjacent intervals conflict")
	}
	// One that starts before is not.
	if o, bad := ls.hold(2, 1, 3, 259, 300, 30); !bad || o.member != 0 {
		t.Fatalf("overlap not found: %v %v", o, bad)
	}
	// A crash keeps the promised end; a handover ends the interval at once.
	ls = newSimLeases("lease", 2)
	ls.hold(0, 1, 1, 100, 200, 20)
	ls.close(0, simForever)
	if _, bad := ls.hold(1, 1, 2, 199, 300, 20); !bad {
		t.Fatal("a crashed member's promise was dropped")
	}
	ls = newSimLeases("lease", 2)
	ls.hold(0, 1, 1, 100, 200, 20)
	ls.close(0, 150)
	if _, bad := ls.hold(1, 1, 2, 150, 300, 20); bad {
		t.Fatal("a handed-over lease still counts")
	}
	// A lease that lapsed and is renewed later in the same term is a new interval: the gap
	// is not claimed.
	ls = newSimLeases("lease", 2)
	ls.hold(0, 1, 1, 100, 200, 20)
	ls.hold(0, 1, 1, 300, 400, 40)
	if len(ls.all) != 2 {
		t.Fatalf("lapsed lease merged: %v", ls.all)
	}
	if _, bad := ls.hold(1, 1, 2, 200, 300, 30); bad {
		t.Fatal("the gap between two leases was claimed")
	}
}
