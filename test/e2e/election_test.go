package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timings of the tests about logic: short, but with the same ratios as the defaults.
var fast = Config{Heartbeat: 50 * time.Millisecond, Election: 500 * time.Millisecond}

func withMembers(cfg Config, n int) Config { cfg.Members = n; return cfg }

// leaderWithin is the bound for electing a leader once a majority can talk.
const leaderWithin = 5 * time.Second

// TestInitialElection: with the default timings, one leader within 5 s of the start that every
// member names, and the term stays put while nothing fails.
func TestInitialElection(t *testing.T) {
	c := NewCluster(t, Config{Members: 3})
	l, term, at := c.WaitAgreedLeader(c.All(), time.Until(c.start.Add(leaderWithin)))
	c.Logf("initial election took %v from the start", at.Sub(c.start).Round(time.Millisecond))
	if term < 1 {
		t.Fatalf("leader %s in term %d", c.Members[l].ID, term)
	}
	c.ExpectStableLeader(c.All(), l, term, 3*time.Second)
	l2, term2, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l2 != l || term2 != term {
		t.Fatalf("leader moved from %s/%d to %s/%d without a failure", c.Members[l].ID, term, c.Members[l2].ID, term2)
	}
}

// TestReElection follows the course's re-election test: the cut-off leader is replaced and stops
// claiming; when it returns it follows the new leader; with no majority nobody leads; with a
// majority again somebody does.
func TestReElection(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l1, term1, _ := c.WaitAgreedLeader(c.All(), leaderWithin)

	cut := time.Now()
	c.Disconnect(l1)
	l2, term2, at := c.WaitAgreedLeader(c.Except(l1), leaderWithin)
	c.Logf("re-election took %v after the cut", at.Sub(cut).Round(time.Millisecond))
	if l2 == l1 || term2 <= term1 {
		t.Fatalf("after cutting %s (term %d): leader %s term %d", c.Members[l1].ID, term1, c.Members[l2].ID, term2)
	}
	stopped := c.WaitNoClaims([]int{l1}, leaderWithin)
	c.Logf("the cut-off leader stopped claiming %v after the cut", stopped.Sub(cut).Round(time.Millisecond))

	// The old leader returns and follows; with PreVote it does not unseat the new one.
	c.Connect(l1)
	l3, term3, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l3 != l2 || term3 != term2 {
		t.Fatalf("old leader %s returned and leadership moved from %s/%d to %s/%d", c.Members[l1].ID, c.Members[l2].ID, term2, c.Members[l3].ID, term3)
	}

	// No majority: nobody claims the lease once the last one has run out.
	other := (l2 + 1) % c.N()
	c.Disconnect(l2)
	c.Disconnect(other)
	c.WaitNoClaims(c.All(), leaderWithin)
	c.ExpectNoClaims(c.All(), 2*fast.Election)

	// A majority again: a leader among the connected pair.
	c.Connect(other)
	pair := c.Except(l2)
	c.WaitAgreedLeader(pair, leaderWithin)

	// Everyone back: still one leader that all name.
	c.Connect(l2)
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestNoLeaderWithoutMajority cuts three members into singletons: once the lease runs out
// nobody claims it, the leader steps down, and with PreVote nobody's term climbs.
func TestNoLeaderWithoutMajority(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)

	cut := time.Now()
	c.Partition()
	gone := c.WaitNoClaims(c.All(), leaderWithin)
	c.Logf("the lease ran out %v after the split", gone.Sub(cut).Round(time.Millisecond))
	c.WaitUntil(leaderWithin, "the isolated leader steps down", func() bool {
		o, ok := c.Checker.Latest(l)
		return ok && o.Recv.After(cut) && o.Answer.State != "leader"
	})
	// Nobody names a leader any more: apps must not be sent to one that does not exist.
	c.WaitUntil(leaderWithin, "nobody names a leader", func() bool {
		obs, ok := c.fresh(c.All(), time.Now().Add(-50*time.Millisecond))
		if !ok {
			return false
		}
		for _, o := range obs {
			if o.Answer.Name != "" || o.Code != http.StatusServiceUnavailable {
				return false
			}
		}
		return true
	})
	for _, m := range c.Members {
		if code, body, err := c.get(m.OpsAddr(), "/readyz", time.Second); err != nil || code != http.StatusServiceUnavailable {
			t.Errorf("%s /readyz = %d %s %v without a leader; want 503", m.ID, code, body, err)
		}
	}
	c.ExpectNoClaims(c.All(), 3*fast.Election)
	for i := range c.Members {
		if o, ok := c.Checker.Latest(i); ok && o.Answer.Term > term {
			t.Errorf("%s climbed to term %d while alone (PreVote should keep it at %d)", c.Members[i].ID, o.Answer.Term, term)
		}
	}

	c.HealAll()
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestManyElections: seven members survive repeated loss of three random members; the other
// four elect a leader within 5 s each time.
func TestManyElections(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 7))
	c.WaitAgreedLeader(c.All(), leaderWithin)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	c.Logf("random seed %d", seed)
	for iter := range 8 {
		cut := rng.Perm(c.N())[:3]
		for _, i := range cut {
			c.Disconnect(i)
		}
		start := time.Now()
		l, term, at := c.WaitAgreedLeader(c.Except(cut...), leaderWithin)
		c.Logf("iteration %d: cut %s, %s leads in term %d after %v", iter, c.IDs(cut), c.Members[l].ID, term, at.Sub(start).Round(time.Millisecond))
		for _, i := range cut {
			c.Connect(i)
		}
	}
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestLeaderInMinority splits five members into the leader with one follower and the other
// three: the three elect a leader, the old one stops claiming, and after the heal all follow
// the new leader.
func TestLeaderInMinority(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 5))
	l1, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	minority := []int{l1, (l1 + 1) % c.N()}
	majority := c.Except(minority...)
	c.Partition(minority, majority)
	l2, term2, _ := c.WaitAgreedLeader(majority, leaderWithin)
	c.WaitNoClaims(minority, leaderWithin)
	c.HealAll()
	l3, term3, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l3 != l2 || term3 != term2 {
		t.Fatalf("after the heal leadership moved from %s/%d to %s/%d", c.Members[l2].ID, term2, c.Members[l3].ID, term3)
	}
}

// TestCutOffFollowerDoesNotDisrupt cuts the leader's link to one follower only. That follower
// stops hearing heartbeats and asks for votes, but the others have heard from the leader
// (CheckQuorum) and PreVote keeps its term: the leader and the term stay put, and when the
// link heals the follower follows again.
func TestCutOffFollowerDoesNotDisrupt(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	f := c.Except(l)[0]
	c.BlockLink(l, f)
	c.ExpectStableLeader(c.Except(f), l, term, 4*fast.Election)
	if o, ok := c.Checker.Latest(f); ok && o.Answer.Term != term {
		t.Errorf("the cut-off follower %s moved to term %d (PreVote should keep it at %d)", c.Members[f].ID, o.Answer.Term, term)
	}
	c.HealAll()
	l2, term2, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l2 != l || term2 != term {
		t.Fatalf("after the heal leadership moved from %s/%d to %s/%d", c.Members[l].ID, term, c.Members[l2].ID, term2)
	}
}

// TestOneWayPartition blocks only the leader's outgoing links: it can answer requests but its
// heartbeats never arrive. The others elect a new leader; the old one stops claiming.
func TestOneWayPartition(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l1, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	for _, j := range c.Except(l1) {
		c.BlockLink(l1, j)
	}
	l2, _, _ := c.WaitAgreedLeader(c.Except(l1), leaderWithin)
	if l2 == l1 {
		t.Fatalf("%s still leads without reaching anyone", c.Members[l1].ID)
	}
	c.WaitNoClaims([]int{l1}, leaderWithin)
	c.HealAll()
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestElectionWithLatency adds 10–20 ms to every link: a leader is elected and kept, and the
// cut-off leader is replaced.
func TestElectionWithLatency(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	c.SetLatency(10*time.Millisecond, 10*time.Millisecond)
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	c.ExpectStableLeader(c.All(), l, term, 2*time.Second)
	c.Disconnect(l)
	c.WaitAgreedLeader(c.Except(l), leaderWithin)
	c.Connect(l)
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestLeaseSafetyUnderJitter makes every link slow and erratic (0–250 ms each way against a
// 500 ms election timeout): elections may churn, but no two leases may overlap. Safety only;
// once the links are healthy again a leader must follow.
func TestLeaseSafetyUnderJitter(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	c.WaitAgreedLeader(c.All(), leaderWithin)
	c.SetLatency(0, 250*time.Millisecond)
	c.observeWindow(c.All(), 5*time.Second)
	c.HealAll()
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestLeaderKilled: with the default timings, SIGKILL of the leader gives a new leader within
// 5 s; the killed member, restarted on its data directory, follows it.
func TestLeaderKilled(t *testing.T) {
	c := NewCluster(t, Config{Members: 3})
	l1, term1, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	killed := c.Kill(l1)
	l2, term2, at := c.WaitAgreedLeader(c.Except(l1), leaderWithin)
	c.Logf("failover took %v after SIGKILL", at.Sub(killed).Round(time.Millisecond))
	if term2 <= term1 {
		t.Fatalf("new leader %s in term %d, old one led term %d", c.Members[l2].ID, term2, term1)
	}
	c.Restart(l1)
	l3, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l3 != l2 {
		t.Fatalf("restarted %s disturbed the leader: %s then %s", c.Members[l1].ID, c.Members[l2].ID, c.Members[l3].ID)
	}
}

// TestLeaderPaused: SIGSTOP of the leader for more than two election timeouts, then SIGCONT.
// From the moment it wakes it must never say it leads (GET /leader, /leader/self, GET /),
// not even in answers to requests that queued up while it was stopped; then it follows.
func TestLeaderPaused(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l1, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	paused := c.Pause(l1)
	l2, term2, _ := c.WaitAgreedLeader(c.Except(l1), leaderWithin)
	c.WaitUntil(10*time.Second, "the pause lasts two election timeouts", func() bool {
		return time.Since(paused) > 2*fast.Election+2*fast.Heartbeat
	})

	// Requests that wait in the stopped member's accept queue: the first thing it does after
	// waking is answer them.
	type result struct {
		path string
		o    Observation
		body string
		err  error
	}
	results := make(chan result, 64)
	var wg sync.WaitGroup
	for k := range 6 {
		path := []string{"/leader", "/leader/self", "/"}[k%3]
		wg.Go(func() {
			o, err := c.Query(l1, path, "direct", 10*time.Second)
			results <- result{path: path, o: o, err: err}
		})
	}
	time.Sleep(50 * time.Millisecond) // let the queued requests reach the kernel (not a synchronisation)
	woke := c.Resume(l1)

	// Then poll it as fast as we can for a while.
	selfID := c.Members[l1].ID
	deadline := woke.Add(1500 * time.Millisecond)
	polls := 0
	for time.Now().Before(deadline) {
		o, err := c.Query(l1, "/leader", "direct", time.Second)
		if err == nil {
			c.Checker.Record(o)
			polls++
			if o.Answer.IsLeader {
				t.Errorf("%s claimed the lease %v after waking: %s", selfID, o.Recv.Sub(woke), c.Checker.describe(o))
			}
		}
		code, body, err := c.get(c.Members[l1].LocalAddr(), "/leader/self", time.Second)
		if err == nil && code == http.StatusOK {
			t.Errorf("%s: GET /leader/self = 200 after waking: %s", selfID, body)
		}
		if name, err := c.ObserveCompat(l1); err == nil && name == selfID {
			t.Errorf("%s: GET / names itself after waking, while %s leads", selfID, c.Members[l2].ID)
		}
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Logf("queued %s: %v", r.path, r.err)
			continue
		}
		if r.path == "/leader" {
			c.Checker.Record(r.o)
		}
		if r.o.Answer.IsLeader || (r.path == "/leader/self" && r.o.Code == http.StatusOK) {
			t.Errorf("a request queued during the pause got a leader answer after waking: %s %s", r.path, c.Checker.describe(r.o))
		}
		if r.path == "/" && r.o.Answer.Name == selfID {
			t.Errorf("a GET / queued during the pause named %s itself after waking (%s leads)", selfID, c.Members[l2].ID)
		}
	}
	c.Logf("%d polls of %s in the 1.5 s after SIGCONT", polls, selfID)
	l3, term3, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l3 != l2 || term3 != term2 {
		t.Fatalf("after the paused leader woke, leadership moved from %s/%d to %s/%d", c.Members[l2].ID, term2, c.Members[l3].ID, term3)
	}
}

// TestRandomPauses stops and resumes random members for random spans (up to three election
// timeouts) for several seconds, the way GC pauses or a throttled CPU would: leases must never
// overlap; afterwards a leader follows.
func TestRandomPauses(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	c.WaitAgreedLeader(c.All(), leaderWithin)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	c.Logf("random seed %d", seed)
	end := time.Now().Add(6 * time.Second)
	for time.Now().Before(end) {
		// Pause the member that claims the lease more often than the others: its pauses are
		// the ones that test the lease.
		i := rng.IntN(c.N())
		if rng.IntN(2) == 0 {
			for k := range c.Members {
				if o, ok := c.Checker.Latest(k); ok && o.Answer.IsLeader {
					i = k
				}
			}
		}
		c.Pause(i)
		time.Sleep(time.Duration(rng.Int64N(int64(3 * fast.Election)))) // the fault's length, not a synchronisation
		c.Resume(i)
		time.Sleep(time.Duration(rng.Int64N(int64(fast.Election))))
	}
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestLeaderTerminated: with the default timings, SIGTERM of the leader hands over: a
// successor claims the lease sooner than an election timeout (an election would need at least
// that), and the old process exits 0. A follower's SIGTERM disturbs nobody.
func TestLeaderTerminated(t *testing.T) {
	c := NewCluster(t, Config{Members: 3})
	l1, term1, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	sent := c.Terminate(l1)
	var successor Observation
	c.WaitUntil(leaderWithin, "a successor claims the lease", func() bool {
		for _, i := range c.Except(l1) {
			if o, ok := c.Checker.Latest(i); ok && o.Recv.After(sent) && o.Answer.IsLeader {
				successor = o
				return true
			}
		}
		return false
	})
	handover := successor.Recv.Sub(sent)
	c.Logf("handover to %s (term %d) took %v after SIGTERM", successor.ID, successor.Answer.Term, handover.Round(time.Millisecond))
	if successor.Answer.Term <= term1 {
		t.Errorf("successor in term %d, old leader in %d", successor.Answer.Term, term1)
	}
	if handover >= c.cfg.Election {
		t.Errorf("handover took %v, not less than the election timeout %v: leadership transfer (timeout-now) did not happen", handover, c.cfg.Election)
	}
	if code, _ := c.WaitExit(l1, 15*time.Second); code != 0 {
		t.Errorf("leader exited with %d after SIGTERM, want 0", code)
	}
	l2, _, _ := c.WaitAgreedLeader(c.Except(l1), leaderWithin)

	// A follower's SIGTERM: it exits 0 and the leader stays.
	f := c.Except(l1, l2)[0]
	c.Terminate(f)
	if code, _ := c.WaitExit(f, 10*time.Second); code != 0 {
		t.Errorf("follower exited with %d after SIGTERM, want 0", code)
	}
	c.Restart(l1)
	c.Restart(f)
	l3, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l3 != l2 {
		t.Errorf("leadership moved from %s to %s when followers restarted", c.Members[l2].ID, c.Members[l3].ID)
	}
}

// TestRestartKeepsTerm kills members and restarts them on their data directories while they
// are cut off, so the first term they report is the durable one: it must not be lower than
// before. Then the whole cluster is killed and restarted: the next leader's term is higher
// than every term before.
func TestRestartKeepsTerm(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	lastTerm := func(i int) uint64 {
		o, ok := c.Checker.Latest(i)
		if !ok {
			t.Fatalf("no answer from %s yet", c.Members[i].ID)
		}
		return o.Answer.Term
	}
	restartAlone := func(i int, before uint64) {
		t.Helper()
		c.Disconnect(i)
		c.Restart(i)
		o, err := c.Observe(i)
		if err != nil {
			t.Fatalf("%s after restart: %v", c.Members[i].ID, err)
		}
		c.Logf("%s restarted alone reports term %d (was %d)", c.Members[i].ID, o.Answer.Term, before)
		if o.Answer.Term < before {
			t.Fatalf("%s restarted on its data dir with term %d, had %d: %s", c.Members[i].ID, o.Answer.Term, before, c.Checker.describe(o))
		}
		if o.Answer.IsLeader {
			t.Fatalf("%s claims the lease alone right after a restart", c.Members[i].ID)
		}
		c.Connect(i)
	}
	for range 3 {
		before := lastTerm(l)
		c.Kill(l)
		l2, _, _ := c.WaitAgreedLeader(c.Except(l), leaderWithin)
		restartAlone(l, before)
		c.WaitAgreedLeader(c.All(), leaderWithin)
		l = l2
	}

	var max uint64
	before := map[int]uint64{}
	for i := range c.Members {
		before[i] = lastTerm(i)
		max = maxU(max, before[i])
	}
	for i := range c.Members {
		c.Kill(i)
	}
	for i := range c.Members {
		restartAlone(i, before[i])
		c.Disconnect(i)
	}
	for i := range c.Members {
		c.Connect(i)
	}
	_, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if term <= max {
		t.Fatalf("after a full restart the leader has term %d; terms before reached %d", term, max)
	}
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// TestLocalAPI checks the answers apps rely on: /leader/self, GET /, the long poll, a bad
// query, and /readyz.
func TestLocalAPI(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	leaderID := c.Members[l].ID
	for i, m := range c.Members {
		code, body, err := c.get(m.LocalAddr(), "/leader/self", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 200, false: 503}[i == l]; code != want {
			t.Errorf("%s /leader/self = %d %s, want %d", m.ID, code, body, want)
		}
		if name, err := c.ObserveCompat(i); err != nil || name != leaderID {
			t.Errorf("%s GET / = %q, %v; want %q", m.ID, name, err, leaderID)
		}
		if code, body, err := c.get(m.OpsAddr(), "/readyz", time.Second); err != nil || code != 200 {
			t.Errorf("%s /readyz = %d %s %v with a leader known", m.ID, code, body, err)
		}
		if code, body, err := c.get(m.LocalAddr(), "/leader?index=1&wait=banana", time.Second); err != nil || code != 400 {
			t.Errorf("%s bad wait: %d %s %v; want 400", m.ID, code, body, err)
		}
	}

	// A watch on a follower wakes when the leader is cut off.
	f := c.Except(l)[0]
	o, err := c.Observe(f)
	if err != nil {
		t.Fatal(err)
	}
	type watched struct {
		o   Observation
		err error
	}
	done := make(chan watched, 1)
	go func() {
		w, err := c.Query(f, fmt.Sprintf("/leader?index=%d&wait=20s", o.Answer.Index), "watch", 30*time.Second)
		done <- watched{w, err}
	}()
	select {
	case w := <-done:
		// The answer may legitimately have changed in between; it must then carry a new index.
		if w.err != nil || w.o.Answer.Index == o.Answer.Index {
			t.Fatalf("watch returned early without a change: %+v %v", w.o.Answer, w.err)
		}
		t.Skipf("the answer changed before the leader was cut; watch not exercised")
	case <-time.After(300 * time.Millisecond): // observing that the watch holds
	}
	cut := time.Now()
	c.Disconnect(l)
	select {
	case w := <-done:
		if w.err != nil {
			t.Fatalf("watch: %v", w.err)
		}
		if w.o.Answer.Index == o.Answer.Index {
			t.Fatalf("watch returned the same index %d", o.Answer.Index)
		}
		c.Logf("watch on %s woke %v after the cut: %s", c.Members[f].ID, w.o.Recv.Sub(cut).Round(time.Millisecond), c.Checker.describe(w.o))
	case <-time.After(10 * time.Second):
		t.Fatalf("watch on %s did not wake within 10s of cutting the leader", c.Members[f].ID)
	}
	c.Connect(l)
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestBadFlags: a bad flag or environment variable gives one line naming it and exit code 2.
func TestBadFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the binary")
	}
	bin := binary(t)
	dir := t.TempDir()
	addr := func() string {
		a, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	base := func() []string {
		p := addr()
		return []string{"--id=a", "--discovery=static", "--peers=a=" + p, "--peer-addr=" + p,
			"--local-addr=" + addr(), "--ops-addr=" + addr(), "--data-dir=" + dir}
	}
	cases := []struct {
		name  string
		args  []string
		env   []string
		names string // what the error must mention (any of, separated by |)
	}{
		{"unknown flag", []string{"--no-such-flag=1"}, nil, "no-such-flag"},
		{"bad duration", []string{"--heartbeat-interval=banana"}, nil, "heartbeat-interval"},
		{"bad discovery", []string{"--discovery=carrier-pigeon"}, nil, "discovery"},
		{"bad log format", []string{"--log-format=xml"}, nil, "log-format"},
		{"bad log level", []string{"--log-level=loud"}, nil, "log-level"},
		{"bad peers", []string{"--peers=a"}, nil, "peers"},
		{"heartbeat not below election timeout", []string{"--heartbeat-interval=2s", "--election-timeout=1s"}, nil, "heartbeat-interval|election-timeout"},
		{"bad env", nil, []string{"RAFT_ELECTOR_ELECTION_TIMEOUT=soon"}, "election-timeout|RAFT_ELECTOR_ELECTION_TIMEOUT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append(base(), tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = childEnv(tc.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if ctx.Err() != nil {
				t.Fatalf("%v %v: still running after 10s (killed); stderr:\n%s", tc.args, tc.env, stderr.String())
			}
			if code != 2 {
				t.Errorf("%v %v: exit code %d (%v), want 2; stderr:\n%s", tc.args, tc.env, code, err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || lines[0] == "" {
				t.Errorf("%v %v: want one line on stderr, got %d:\n%s", tc.args, tc.env, len(lines), stderr.String())
			}
			mentioned := false
			for _, n := range strings.Split(tc.names, "|") {
				mentioned = mentioned || strings.Contains(stderr.String(), n)
			}
			if !mentioned {
				t.Errorf("%v %v: error does not name %s:\n%s", tc.args, tc.env, tc.names, stderr.String())
			}
		})
	}
}

// TestTerminateIsolatedLeader: SIGTERM reaches a leader that has just been cut off, so no
// successor can be told: it must still exit 0 once its deadline passes, and the others elect
// a leader on their own.
func TestTerminateIsolatedLeader(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	c.Disconnect(l)
	sent := c.Terminate(l)
	c.WaitAgreedLeader(c.Except(l), leaderWithin)
	code, exited := c.WaitExit(l, 60*time.Second)
	c.Logf("the isolated leader exited %v after SIGTERM", exited.Sub(sent).Round(time.Millisecond))
	if code != 0 {
		t.Errorf("isolated leader exited with %d after SIGTERM, want 0", code)
	}
}

// TestConfigFromEnvironment configures one member only through RAFT_ELECTOR_* variables.
func TestConfigFromEnvironment(t *testing.T) {
	cfg := withMembers(fast, 3)
	cfg.EnvMembers = []int{0}
	c := NewCluster(t, cfg)
	c.WaitAgreedLeader(c.All(), leaderWithin)
	c.Disconnect(1)
	c.Disconnect(2)
	c.Connect(1)
	// a (configured by environment) and b form the majority now.
	c.WaitAgreedLeader([]int{0, 1}, leaderWithin)
	c.Connect(2)
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestPeerRequestsChangeNoState sends a member malformed and foreign peer requests: each gets
// a 4xx, and none moves any member's term or the leadership.
func TestPeerRequestsChangeNoState(t *testing.T) {
	cfg := withMembers(fast, 3)
	cfg.ExtraArgs = []string{"--cluster-id=e2e-peer-test"}
	c := NewCluster(t, cfg)
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	f := c.Except(l)[0]
	fid, lid := c.Members[f].ID, c.Members[l].ID
	big := term + 1000
	msg := func(typ, cluster, from, to string, term uint64) string {
		return fmt.Sprintf(`{"type":%q,"cluster":%q,"from":%q,"to":%q,"term":%d}`, typ, cluster, from, to, term)
	}
	cases := []struct {
		name, method, rpc, body string
		want4xx                 bool
	}{
		{"not JSON", "POST", "request-vote", "{{{", true},
		{"empty", "POST", "append-entries", "", true},
		{"unknown field", "POST", "request-vote", `{"type":"request-vote","cluster":"e2e-peer-test","from":"` + lid + `","to":"` + fid + `","term":` + fmt.Sprint(big) + `,"evil":1}`, true},
		{"case-folded field", "POST", "request-vote", `{"TYPE":"request-vote","cluster":"e2e-peer-test","from":"` + lid + `","to":"` + fid + `","term":` + fmt.Sprint(big) + `}`, true},
		{"other cluster", "POST", "request-vote", msg("request-vote", "another-cluster", lid, fid, big), true},
		{"other recipient", "POST", "append-entries", msg("append-entries", "e2e-peer-test", lid, "zz", big), true},
		{"type does not match path", "POST", "request-vote", msg("append-entries", "e2e-peer-test", lid, fid, big), true},
		{"stranger's vote request", "POST", "request-vote", msg("request-vote", "e2e-peer-test", "mallory", fid, big), true},
		{"stranger's heartbeat", "POST", "append-entries", msg("append-entries", "e2e-peer-test", "mallory", fid, big), true},
		{"stranger's timeout-now", "POST", "timeout-now", msg("timeout-now", "e2e-peer-test", "mallory", fid, big), true},
		{"term beyond the limit", "POST", "append-entries", msg("append-entries", "e2e-peer-test", lid, fid, 1<<60), true},
		{"oversized", "POST", "request-vote", `{"type":"request-vote","cluster":"` + strings.Repeat("x", 4<<20) + `"}`, true},
		{"GET", "GET", "request-vote", "", true},
		{"unknown rpc", "POST", "install-snapshot", msg("request-vote", "e2e-peer-test", lid, fid, big), true},
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range cases {
		req, err := http.NewRequest(tc.method, "http://"+c.Members[f].PeerAddr()+"/raft/v1/"+tc.rpc, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			// A server may cut an oversized body off; that is a refusal too.
			c.Logf("%s: %v", tc.name, err)
			continue
		}
		resp.Body.Close()
		c.Logf("%s: %d", tc.name, resp.StatusCode)
		if tc.want4xx && (resp.StatusCode < 400 || resp.StatusCode > 499) {
			t.Errorf("%s: status %d, want 4xx", tc.name, resp.StatusCode)
		}
	}
	c.ExpectStableLeader(c.All(), l, term, 2*fast.Election)
}

// TestMetrics checks that /metrics serves the contract's metric names.
func TestMetrics(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	for i, m := range c.Members {
		code, body, err := c.get(m.OpsAddr(), "/metrics", time.Second)
		if err != nil || code != 200 {
			t.Errorf("%s /metrics: %d %v", m.ID, code, err)
			continue
		}
		names := []string{"raft_elector_is_leader", "raft_elector_term", "raft_elector_state",
			"raft_elector_leader_changes_total", "raft_elector_elections_total", "raft_elector_peers",
			"raft_elector_heartbeat_rtt_seconds", "raft_elector_lease_remaining_seconds",
			"leader_election_master_status"}
		if i == l {
			// A labelled counter shows once it has counted something: the leader has sent
			// heartbeats; a follower in a quiet cluster may have sent nothing yet.
			names = append(names, "raft_elector_rpc_requests_total")
		}
		for _, name := range names {
			if !strings.Contains(string(body), name) {
				t.Errorf("%s /metrics has no %s", m.ID, name)
			}
		}
		if want := map[bool]string{true: "raft_elector_is_leader 1", false: "raft_elector_is_leader 0"}[i == l]; !strings.Contains(string(body), want) {
			t.Errorf("%s /metrics lacks %q", m.ID, want)
		}
	}
}

// TestRestartedVoterKeepsLeaderLease: the leader's lease rests on a follower's promise not to
// vote for a minimum election timeout after it last heard from the leader. A follower that
// crashes and restarts within that time has lost the memory of it; it must still not vote
// until the leader's lease can have run out (for example by treating its own start as having
// just heard from a leader). The schedule: cut the leader's heartbeats to follower f2, so f2
// campaigns; just before f2's first campaign, SIGKILL follower f1 (the one renewing the
// leader's lease), cut the leader's link to it, and restart it at once. If f1 votes for f2
// right away, f2 leads while the old leader's lease is still promised.
func TestRestartedVoterKeepsLeaderLease(t *testing.T) {
	cfg := Config{Members: 3, Heartbeat: 100 * time.Millisecond, Election: 400 * time.Millisecond}
	c := NewCluster(t, cfg)
	for iter := range 8 {
		l, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
		f := c.Except(l)
		f1, f2 := f[0], f[1]
		c.BlockLink(l, f2)
		blocked := time.Now()
		// f2 campaigns first at blocked + [t, 2t); be back up just before t.
		c.WaitUntil(5*time.Second, "the schedule's kill time", func() bool {
			return time.Since(blocked) >= cfg.Election-60*time.Millisecond
		})
		c.Kill(f1)
		c.BlockLink(l, f1)
		c.Restart(f1)
		c.observeWindow([]int{f1, f2}, 2*cfg.Election)
		if v := c.Checker.Violations(); len(v) > 0 {
			t.Fatalf("iteration %d: the lease checker found violations (details at the end)", iter)
		}
		c.HealAll()
	}
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestDemo runs `raft-elector demo --chaos` for a few seconds: it must elect leaders, report
// failovers, never print a safety violation, and exit 0, both when its --duration ends and on
// SIGTERM.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the binary")
	}
	bin := binary(t)
	run := func(args ...string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(bin, args...)
		cmd.Env = childEnv()
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		return cmd, out
	}
	wait := func(cmd *exec.Cmd, out *syncBuffer, timeout time.Duration) int {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(timeout):
			t.Fatalf("demo still running after %v; output:\n%s", timeout, out.String())
		}
		return cmd.ProcessState.ExitCode()
	}
	check := func(out string) {
		t.Helper()
		if !strings.Contains(out, "leader is") {
			t.Errorf("demo never reported a leader:\n%s", out)
		}
		for _, bad := range []string{"SAFETY VIOLATION", "no new leader", "failed"} {
			if strings.Contains(out, bad) {
				t.Errorf("demo printed %q:\n%s", bad, out)
			}
		}
	}

	cmd, out := run("demo", "--chaos", "--heartbeat-interval=50ms", "--election-timeout=500ms", "--duration=8s")
	if code := wait(cmd, out, 40*time.Second); code != 0 {
		t.Errorf("demo --duration exited %d; output:\n%s", code, out.String())
	}
	check(out.String())
	t.Logf("demo --chaos output:\n%s", out.String())

	cmd, out = run("demo")
	deadline := time.Now().Add(leaderWithin)
	for !strings.Contains(out.String(), "leader is") {
		if time.Now().After(deadline) {
			t.Fatalf("demo reported no leader within %v:\n%s", leaderWithin, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
	if code := wait(cmd, out, 20*time.Second); code != 0 {
		t.Errorf("demo exited %d on SIGTERM; output:\n%s", code, out.String())
	}
	check(out.String())
}

// TestDataDirSafety: the data directory holds the vote, so a member must never run on a
// directory another process uses, nor start from a torn or edited state file (it would vote
// again in a term it already voted in); it must refuse to start instead.
func TestDataDirSafety(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	f := c.Except(l)[0]

	code, out := c.RunOnce(f, 10*time.Second)
	c.Logf("second process on %s's data dir: exit %d: %s", c.Members[f].ID, code, strings.TrimSpace(out))
	if code == 0 || code == -1 {
		t.Errorf("a second process on %s's data dir ran (exit %d):\n%s", c.Members[f].ID, code, out)
	}
	c.ExpectStableLeader(c.All(), l, term, fast.Election)

	c.Kill(f)
	state := filepath.Join(c.Members[f].DataDir, "raft-state.json")
	orig, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("no state file to corrupt: %v", err)
	}
	for _, tc := range []struct {
		name    string
		corrupt func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"term edited", func(b []byte) []byte {
			// Change one digit of the durable state, leaving the JSON well-formed.
			out := append([]byte(nil), b...)
			k := bytes.Index(out, []byte(`"state"`))
			for j := k; k >= 0 && j < len(out); j++ {
				if out[j] >= '0' && out[j] <= '8' {
					out[j]++
					return out
				}
			}
			t.Fatalf("no digit in the state of %s", b)
			return nil
		}},
		{"empty", func([]byte) []byte { return nil }},
	} {
		if err := os.WriteFile(state, tc.corrupt(orig), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := c.RunOnce(f, 10*time.Second)
		c.Logf("start on a %s state file: exit %d: %s", tc.name, code, strings.TrimSpace(out))
		if code == 0 || code == -1 {
			t.Errorf("%s started on a %s state file (exit %d):\n%s", c.Members[f].ID, tc.name, code, out)
		}
	}
	if err := os.WriteFile(state, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	c.Restart(f)
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestChaos drives five members through a random mix of every fault the harness has —
// partitions, one-way cuts, jittery links, pauses, SIGKILL and restart, SIGTERM — for several
// seconds. Safety is checked throughout by the lease checker; once every fault is undone a
// leader must follow within 5 s. The seed is logged; RAFT_ELECTOR_E2E_SEED replays a schedule
// (as far as real time allows) and RAFT_ELECTOR_E2E_CHAOS sets the length (a soak: 10m).
func TestChaos(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 5))
	c.WaitAgreedLeader(c.All(), leaderWithin)
	seed := time.Now().UnixNano()
	if v, err := strconv.ParseInt(os.Getenv("RAFT_ELECTOR_E2E_SEED"), 10, 64); err == nil {
		seed = v
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 2))
	c.Logf("chaos seed %d", seed)

	paused := map[int]bool{}
	terminated := map[int]bool{}
	pick := func() int { return rng.IntN(c.N()) }
	length := 12 * time.Second
	if d, err := time.ParseDuration(os.Getenv("RAFT_ELECTOR_E2E_CHAOS")); err == nil {
		length = d
	}
	end := time.Now().Add(length)
	for step := 0; time.Now().Before(end); step++ {
		// Bring back members whose process has ended.
		for i, m := range c.Members {
			if !m.Running() && !paused[i] {
				if terminated[i] {
					if code, _ := c.WaitExit(i, time.Second); code != 0 {
						t.Errorf("%s exited %d after SIGTERM", m.ID, code)
					}
					delete(terminated, i)
				}
				if rng.IntN(2) == 0 {
					c.Restart(i)
				}
			}
		}
		i := pick()
		switch k := rng.IntN(10); {
		case k == 0:
			c.Disconnect(i)
		case k == 1:
			c.Connect(i)
		case k == 2:
			perm := rng.Perm(c.N())
			cut := 1 + rng.IntN(c.N()-1)
			c.Partition(perm[:cut], perm[cut:])
		case k == 3:
			if j := pick(); j != i {
				c.BlockLink(i, j)
			}
		case k == 4:
			c.HealAll()
		case k == 5:
			c.SetLatency(time.Duration(rng.IntN(30))*time.Millisecond, time.Duration(rng.IntN(150))*time.Millisecond)
		case k == 6:
			if c.Members[i].Running() && !terminated[i] {
				if paused[i] {
					c.Resume(i)
					delete(paused, i)
				} else if len(paused) < 2 {
					c.Pause(i)
					paused[i] = true
				}
			}
		case k == 7:
			if c.Members[i].Running() {
				c.Kill(i)
				delete(paused, i)
				delete(terminated, i)
			}
		case k == 8:
			if c.Members[i].Running() && !paused[i] && !terminated[i] {
				c.Terminate(i)
				terminated[i] = true
			}
		default:
			// Resume every paused member: pauses should end.
			for j := range paused {
				c.Resume(j)
				delete(paused, j)
			}
		}
		time.Sleep(time.Duration(50+rng.IntN(300)) * time.Millisecond) // the schedule's pace
	}

	c.Logf("chaos over: undoing every fault")
	for j := range paused {
		c.Resume(j)
	}
	c.HealAll()
	for i, m := range c.Members {
		if terminated[i] {
			if code, _ := c.WaitExit(i, 60*time.Second); code != 0 {
				t.Errorf("%s exited %d after SIGTERM", m.ID, code)
			}
		}
		if !m.Running() {
			c.Restart(i)
		}
	}
	c.WaitAgreedLeader(c.All(), leaderWithin)
}

// TestHandoverCompatAnswer watches SIGTERM handovers closely: every member's GET /leader and
// GET / are polled back to back, as fast as they answer, while the leader hands over. The
// leader-elector compatible GET / has no isLeader, so apps compare its name with their own:
// the old leader must stop naming itself there once it stops claiming the lease, or two pods
// believe they lead while the successor holds the lease. The old leader's links are slowed
// (100 ms each way), as when it is busy or its network is slow, while the followers talk
// fast: it learns of the successor's term late, which must not matter.
func TestHandoverCompatAnswer(t *testing.T) {
	c := NewCluster(t, withMembers(fast, 3))
	for round := range 5 {
		l, _, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
		for _, j := range c.Except(l) {
			c.SetLinkLatency(j, l, 100*time.Millisecond, 0)
			c.SetLinkLatency(l, j, 100*time.Millisecond, 0)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range c.Members {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if o, err := c.Query(i, "/leader", "direct", time.Second); err == nil {
						c.Checker.Record(o)
					}
					_, _ = c.ObserveCompat(i)
				}
			})
		}
		c.Terminate(l)
		code, _ := c.WaitExit(l, 15*time.Second)
		close(stop)
		wg.Wait()
		if code != 0 {
			t.Errorf("round %d: leader exited %d after SIGTERM", round, code)
		}
		if v := c.Checker.Violations(); len(v) > 0 {
			t.Fatalf("round %d: the lease checker found violations (listed at the end)", round)
		}
		c.HealAll()
		c.Restart(l)
	}
}
