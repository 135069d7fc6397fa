package raft

import (
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
//  4. liveness: once the faults stop, the members agree on a leader holding the lease within
//     simLivenessBound.
//
// Every schedule is reproducible from its seed: a failure prints the seed, the command that
// replays it, and the last events of the schedule.
//
//	go test ./pkg/raft -run TestSimulator -sim.seed=N -v   # replay one schedule
//	go test ./pkg/raft -run TestSimulator -sim.schedules=100000 -sim.first=1000000
//
// Known core bug (open; the default seeds pass, about 6 in 100000 schedules hit it): a
// member that adopts a higher term from a message that does not come from a leader of that
// term becomes a follower without a leader (Step: becomeFollower(m.Term, None)). That ends
// its lease binding, since inLease asks lead != None, and in the new term handleVote grants
// a vote without asking inLease at all. So:
//   - a leader deposed by a rejected append-entries response (or a late vote response) from
//     a stale candidate votes for that candidate at once, while the lease it holds, and the
//     one it reported to the application, still run (it counted itself in the majority
//     that acknowledged its round); the candidate wins and claims a lease. Seeds 1144946
//     (fails 21ms after the old lease began), 13703, 25461, 2061259 (vote response),
//     2199974 (5 members);
//   - a follower that acknowledged the leader's round and then gets a late rejected
//     pre-vote response with a higher term (to its own earlier pre-vote) is released the
//     same way. Seeds 3323099 (7 members, fails at 299ms), 3082207, 3257901 (5 members).
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
	}
	sums := map[int]*summary{}
	var failures []simResult
	for _, r := range results {
		sum := sums[r.p.size]
		if sum == nil {
			sum = &summary{}
			sums[r.p.size] = sum
		}
		sum.schedules++
		sum.events += r.stats.events
		sum.leaders += r.stats.leaders
		sum.leases += r.stats.leases
		sum.transfers += r.stats.transfers
		sum.crashes += r.stats.crashes
		if r.err != nil {
			sum.failed++
			failures = append(failures, r)
			continue
		}
		if c := float64(r.stats.converged) / float64(simTime(r.p.electionTicks)*simNominalTick); c > sum.maxConverged {
			sum.maxConverged, sum.maxConvergedSeed = c, r.seed
		}
	}
	for _, size := range slices.Sorted(maps.Keys(sums)) {
		sum := sums[size]
		t.Logf("%d members: %d schedules (%d failed), %d events, %d leaders, %d leases, %d transfers, %d crashes; slowest convergence %.1f election timeouts (seed %d)",
			size, sum.schedules, sum.failed, sum.events, sum.leaders, sum.leases, sum.transfers, sum.crashes,
			sum.maxConverged, sum.maxConvergedSeed)
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
// each cluster size.
func TestSimDeterministicReplay(t *testing.T) {
	var seeds []int64
	perSize := map[int]int{}
	for seed := int64(1); len(seeds) < 6; seed++ {
		if size := newSim(seed, simOptions{}).p.size; perSize[size] < 2 {
			perSize[size]++
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
// for, must be caught.
func TestSimCatchesBrokenRuntime(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  simMutation
		want string
	}{
		{"forgotten HardState", simMutationForgetHardState, "term goes back"},
		{"clock drift beyond the bound", simMutationFastClocks, "lease overlap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caught := 0
			results := runSimSchedules(200, 1, simOptions{mut: tc.mut})
			for _, r := range results {
				if r.err != nil && strings.Contains(r.err.msg, tc.want) {
					caught++
				}
			}
			t.Logf("%d of %d schedules caught it", caught, len(results))
			if caught == 0 {
				t.Errorf("no schedule reported %q", tc.want)
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
