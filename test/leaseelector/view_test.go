package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeLock is a resourcelock.Interface that holds one record in memory. Each call advances
// clock by latency (when clock is set), so "sent" and "returned" differ. Get returns the
// record as the API server would: times at microsecond precision, in the local zone.
type fakeLock struct {
	id      string
	clock   *fakeClock
	latency time.Duration
	err     error // returned by every call while set
	record  *resourcelock.LeaderElectionRecord
}

func (l *fakeLock) call() error {
	if l.clock != nil {
		l.clock.advance(l.latency)
	}
	return l.err
}

func (l *fakeLock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	if err := l.call(); err != nil {
		return nil, nil, err
	}
	if l.record == nil {
		return nil, nil, apierrors.NewNotFound(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "l")
	}
	rec := *l.record
	roundTrip := func(t metav1.Time) metav1.Time { return metav1.NewTime(t.Truncate(time.Microsecond).Local()) }
	rec.AcquireTime, rec.RenewTime = roundTrip(rec.AcquireTime), roundTrip(rec.RenewTime)
	raw, err := json.Marshal(rec)
	return &rec, raw, err
}

func (l *fakeLock) Create(_ context.Context, rec resourcelock.LeaderElectionRecord) error {
	if err := l.call(); err != nil {
		return err
	}
	l.record = &rec
	return nil
}

func (l *fakeLock) Update(_ context.Context, rec resourcelock.LeaderElectionRecord) error {
	if err := l.call(); err != nil {
		return err
	}
	l.record = &rec
	return nil
}

func (l *fakeLock) RecordEvent(string) {}
func (l *fakeLock) Identity() string   { return l.id }
func (l *fakeLock) Describe() string   { return "ns/l" }
func (l *fakeLock) set(r record)       { rec := r.ler(); l.record = &rec }
func (l *fakeLock) fail(err error)     { l.err = err }
func (l *fakeLock) heal()              { l.err = nil }

// record is a Lease record in a test's words.
type record struct {
	holder      string
	seconds     int
	transitions int
	renew       time.Time
}

func (r record) ler() resourcelock.LeaderElectionRecord {
	return resourcelock.LeaderElectionRecord{HolderIdentity: r.holder, LeaseDurationSeconds: r.seconds,
		LeaderTransitions: r.transitions, AcquireTime: metav1.NewTime(r.renew), RenewTime: metav1.NewTime(r.renew)}
}

// viewFixture is a view of candidate "a" on a fake clock, with its observing lock and every
// answer passed to onChange.
type viewFixture struct {
	t       *testing.T
	clock   *fakeClock
	lock    *fakeLock
	view    *leaderView
	obs     *observingLock
	changes []Answer
	last    Answer
}

func newViewFixture(t *testing.T) *viewFixture {
	f := &viewFixture{t: t, clock: newFakeClock()}
	f.lock = &fakeLock{id: "a", clock: f.clock}
	f.view = newLeaderView("a", f.clock.now, func(a Answer) { f.changes = append(f.changes, a) })
	f.obs = &observingLock{Interface: f.lock, view: f.view}
	f.last, _ = f.view.answer()
	return f
}

// expect checks the answer now against want (its Index is ignored), that the index grew by
// one exactly if the answer changed, that onChange saw every change, and the invariant.
func (f *viewFixture) expect(step string, want Answer) {
	f.t.Helper()
	a, _ := f.view.answer()
	checkInvariant(f.t, step, a)
	changed := a.Name != f.last.Name || a.IsLeader != f.last.IsLeader || a.Term != f.last.Term || a.State != f.last.State
	switch {
	case changed && a.Index != f.last.Index+1:
		f.t.Errorf("%s: answer changed, index %d → %d, want +1", step, f.last.Index, a.Index)
	case !changed && a.Index != f.last.Index:
		f.t.Errorf("%s: answer unchanged, index %d → %d", step, f.last.Index, a.Index)
	}
	if n := len(f.changes); uint64(n) != a.Index-1 || (n > 0 && f.changes[n-1] != a) {
		f.t.Errorf("%s: onChange saw %d changes, last %+v; answer %+v", step, n, f.changes, a)
	}
	want.Self, want.Index = "a", a.Index
	if a != want {
		f.t.Errorf("%s:\n got %+v\nwant %+v", step, a, want)
	}
	f.last = a
}

func checkInvariant(t *testing.T, step string, a Answer) {
	t.Helper()
	if a.IsLeader != (a.Name == a.Self) {
		t.Errorf("%s: isLeader=%v with name %q, self %q: want isLeader ⇔ name == self", step, a.IsLeader, a.Name, a.Self)
	}
	if a.IsLeader && a.State != "leader" {
		t.Errorf("%s: isLeader in state %q", step, a.State)
	}
}

func (f *viewFixture) get() {
	f.t.Helper()
	_, _, _ = f.obs.Get(context.Background())
}

func TestFollowerSeesHolderUntilRecordLapses(t *testing.T) {
	f := newViewFixture(t)
	follower := Answer{State: "follower"}
	f.expect("start", follower)
	if f.view.ready() {
		t.Error("ready before any Lease was read")
	}

	f.lock.fail(errors.New("connection refused"))
	f.get()
	f.expect("failed get", follower)
	f.lock.heal()
	f.get()
	f.expect("no Lease yet", follower)
	if f.view.ready() {
		t.Error("ready after a failed Get and a NotFound")
	}

	t0 := f.clock.now()
	f.lock.set(record{holder: "b", seconds: 15, transitions: 3, renew: t0})
	f.get()
	f.expect("holder b", Answer{Name: "b", Term: 3, State: "follower"})
	if !f.view.ready() {
		t.Error("not ready after reading the Lease")
	}

	// Reading the same record again does not renew it: b may be dead.
	f.clock.advance(10 * time.Second)
	f.get()
	f.expect("same record read again", Answer{Name: "b", Term: 3, State: "follower"})
	f.clock.advance(5*time.Second - time.Millisecond)
	f.view.refresh()
	f.expect("just before the lapse", Answer{Name: "b", Term: 3, State: "follower"})
	f.clock.advance(time.Millisecond)
	f.view.refresh()
	f.expect("lapsed", Answer{Term: 3, State: "follower"})
	f.get()
	f.expect("lapsed record read again", Answer{Term: 3, State: "follower"})

	// A changed record (b renewed) is a new observation.
	f.lock.set(record{holder: "b", seconds: 15, transitions: 3, renew: f.clock.now()})
	f.get()
	f.expect("b renewed", Answer{Name: "b", Term: 3, State: "follower"})
	f.lock.set(record{holder: "", seconds: 1, transitions: 3, renew: f.clock.now()})
	f.get()
	f.expect("b released", Answer{Term: 3, State: "follower"})
	f.lock.set(record{holder: "c", seconds: 15, transitions: 4, renew: f.clock.now()})
	f.get()
	f.expect("c acquired", Answer{Name: "c", Term: 4, State: "follower"})
	f.lock.set(record{holder: "c", seconds: 15, transitions: -1, renew: f.clock.now()})
	f.get()
	f.expect("negative transitions", Answer{Name: "c", Term: 0, State: "follower"})
}

func TestLeaderNamesItselfOnlyWithCallbackAndValidRecord(t *testing.T) {
	f := newViewFixture(t)
	f.lock.latency = 100 * time.Millisecond
	ctx := context.Background()

	// Acquire as client-go does: Get (not found), Create.
	f.get()
	rec := record{holder: "a", seconds: 15, transitions: 0, renew: f.clock.now()}.ler()
	if err := f.obs.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	f.expect("created, callback not yet run", Answer{State: "follower"})
	f.view.startedLeading(ctx)
	f.expect("leading", Answer{Name: "a", IsLeader: true, State: "leader"})

	// Renewals change nothing. The observation is the time the Update was sent.
	var sent time.Time
	for range 3 {
		f.clock.advance(2 * time.Second)
		sent = f.clock.now()
		rec.RenewTime = metav1.NewTime(sent)
		if err := f.obs.Update(ctx, rec); err != nil {
			t.Fatal(err)
		}
		f.expect("renewed", Answer{Name: "a", IsLeader: true, State: "leader"})
	}
	// Reading back its own record (microseconds, another zone) is not a new observation.
	f.clock.advance(5 * time.Second)
	f.get()
	f.expect("own record read back", Answer{Name: "a", IsLeader: true, State: "leader"})
	f.clock.advance(sent.Add(15*time.Second - time.Millisecond).Sub(f.clock.now()))
	f.expect("1ms before sent + 15s", Answer{Name: "a", IsLeader: true, State: "leader"})
	f.clock.advance(time.Millisecond)
	f.expect("sent + 15s: lapsed while client-go still leads", Answer{State: "leader"})

	// Renewed again, then another holder shows up while the callback still says leading
	// (this process was paused past its lease).
	rec.RenewTime = metav1.NewTime(f.clock.now())
	if err := f.obs.Update(ctx, rec); err != nil {
		t.Fatal(err)
	}
	f.expect("renewed after the lapse", Answer{Name: "a", IsLeader: true, State: "leader"})
	f.lock.set(record{holder: "b", seconds: 15, transitions: 1, renew: f.clock.now()})
	f.get()
	f.expect("b took over, callback still on", Answer{Name: "b", Term: 1, State: "leader"})
	f.view.stoppedLeading()
	f.expect("stopped leading", Answer{Name: "b", Term: 1, State: "follower"})

	// The record names a but client-go does not lead (after a restart, before the callback).
	f.lock.set(record{holder: "a", seconds: 15, transitions: 2, renew: f.clock.now()})
	f.get()
	f.expect("record names a, callback off", Answer{Term: 2, State: "follower"})
}

func TestLateCallbacksDoNotClaimLeadership(t *testing.T) {
	f := newViewFixture(t)
	f.lock.set(record{holder: "a", seconds: 15, transitions: 1, renew: f.clock.now()})
	f.get()
	f.expect("record names a", Answer{Term: 1, State: "follower"})

	// client-go cancels OnStartedLeading's context before OnStoppedLeading; a callback
	// goroutine that runs after that must not set the flag.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.view.startedLeading(ctx)
	f.expect("started with a cancelled context", Answer{Term: 1, State: "follower"})

	f.view.startedLeading(context.Background())
	f.expect("leading", Answer{Name: "a", IsLeader: true, Term: 1, State: "leader"})
	f.view.withdraw()
	f.expect("withdrawn", Answer{Term: 1, State: "follower"})
	f.view.startedLeading(context.Background())
	f.expect("started after withdraw", Answer{Term: 1, State: "follower"})
}

var scheduleSeed = flag.Uint64("schedule.seed", 0, "seed of TestRandomScheduleKeepsInvariants (0: from the clock)")

// TestRandomScheduleKeepsInvariants drives the view through random events and checks after
// each one the invariant and that the index moves exactly with the answer.
func TestRandomScheduleKeepsInvariants(t *testing.T) {
	seed := *scheduleSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -schedule.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	f := newViewFixture(t)
	var leadCtx context.Context
	var stopLead context.CancelFunc = func() {}
	for i := range 2000 {
		switch rng.IntN(7) {
		case 0:
			f.lock.set(record{holder: []string{"", "a", "b", "c"}[rng.IntN(4)], seconds: 1 + rng.IntN(15),
				transitions: rng.IntN(4), renew: f.clock.now().Add(-time.Duration(rng.IntN(3)) * time.Second)})
		case 1:
			f.get()
		case 2:
			if f.lock.record != nil {
				_ = f.obs.Update(context.Background(), *f.lock.record)
			}
		case 3:
			f.clock.advance(time.Duration(rng.IntN(4000)) * time.Millisecond)
		case 4:
			stopLead()
			leadCtx, stopLead = context.WithCancel(context.Background())
			f.view.startedLeading(leadCtx)
		case 5:
			stopLead()
			f.view.stoppedLeading()
		case 6:
			f.view.refresh()
		}
		a, _ := f.view.answer()
		f.expect("step", Answer{Name: a.Name, IsLeader: a.IsLeader, Term: a.Term, State: a.State}) // index and onChange checks
		if t.Failed() {
			t.Fatalf("failed at step %d (seed %d)", i, seed)
		}
	}
	stopLead()
}
