package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// TestShutdownWithdrawsBeforeCancelling checks the SIGTERM order: by the time the elector's
// context is cancelled (and client-go may release the Lease), the answer already says this
// process does not lead, and waiting long polls have been woken.
func TestShutdownWithdrawsBeforeCancelling(t *testing.T) {
	f := newViewFixture(t)
	f.lock.set(record{holder: "a", seconds: 15, transitions: 2, renew: f.clock.now()})
	f.get()
	f.view.startedLeading(context.Background())
	before, woken := f.view.answer()
	if !before.IsLeader {
		t.Fatalf("not leading before shutdown: %+v", before)
	}

	electorDone := make(chan struct{})
	cancelled := false
	cancel := func() {
		cancelled = true
		a, _ := f.view.answer()
		if a.IsLeader || a.Name != "" || a.State != "follower" || a.Index != before.Index+1 {
			t.Errorf("answer when the elector is cancelled: %+v; want the claim withdrawn at index %d", a, before.Index+1)
		}
		select {
		case <-woken:
		default:
			t.Error("long polls not woken when the elector is cancelled")
		}
		close(electorDone) // client-go's Run returns
	}
	if !shutdown(f.view, cancel, electorDone, 5*time.Second) {
		t.Error("shutdown reported a timeout though Run returned")
	}
	if !cancelled {
		t.Error("the elector's context was not cancelled")
	}
	if a, _ := f.view.answer(); a.IsLeader || a.Name != "" {
		t.Errorf("after shutdown: %+v", a)
	}
}

func TestShutdownGivesUpWaitingForTheElector(t *testing.T) {
	f := newViewFixture(t)
	start := time.Now()
	if shutdown(f.view, func() {}, make(chan struct{}), 50*time.Millisecond) {
		t.Error("shutdown reported that Run returned")
	}
	if elapsed := time.Since(start); elapsed < 50*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("shutdown waited %v for 50ms", elapsed)
	}
}

// memLease is one Lease in memory, with the API server's optimistic concurrency: an Update
// based on an older read conflicts. Candidates whose id is in down get errors, as if the
// API server were unreachable for them.
type memLease struct {
	mu      sync.Mutex
	rec     *resourcelock.LeaderElectionRecord
	version int
	down    map[string]bool
	onWrite func(by string, rec resourcelock.LeaderElectionRecord) // called with mu held
}

func (m *memLease) setDown(id string, down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down[id] = down
}

type memLock struct {
	lease *memLease
	id    string
	seen  int
}

var leases = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

func (l *memLock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	m := l.lease
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[l.id] {
		return nil, nil, errors.New("connection refused")
	}
	if m.rec == nil {
		return nil, nil, apierrors.NewNotFound(leases, "l")
	}
	l.seen = m.version
	rec := *m.rec
	raw, err := json.Marshal(rec)
	return &rec, raw, err
}

func (l *memLock) Create(_ context.Context, rec resourcelock.LeaderElectionRecord) error {
	m := l.lease
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[l.id] {
		return errors.New("connection refused")
	}
	if m.rec != nil {
		return apierrors.NewAlreadyExists(leases, "l")
	}
	return l.writeLocked(rec)
}

func (l *memLock) Update(_ context.Context, rec resourcelock.LeaderElectionRecord) error {
	m := l.lease
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[l.id] {
		return errors.New("connection refused")
	}
	if l.seen == 0 || l.seen != m.version {
		return apierrors.NewConflict(leases, "l", errors.New("the object has been modified"))
	}
	return l.writeLocked(rec)
}

func (l *memLock) writeLocked(rec resourcelock.LeaderElectionRecord) error {
	m := l.lease
	m.rec = &rec
	m.version++
	l.seen = m.version
	if m.onWrite != nil {
		m.onWrite(l.id, rec)
	}
	return nil
}

func (l *memLock) RecordEvent(string) {}
func (l *memLock) Identity() string   { return l.id }
func (l *memLock) Describe() string   { return "ns/l" }

// candidate is one process's elector, view and campaign, as run wires them.
type candidate struct {
	id     string
	view   *leaderView
	cancel context.CancelFunc
	done   chan struct{}
}

// syncBuffer is a log destination safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestElectionWithClientGo runs candidates with client-go's real elector over an in-memory
// Lease and short timings: one leads and the others name it; on shutdown the leader
// withdraws its answer before client-go releases the Lease, and a survivor takes over at
// once; a leader cut off from the API loses the Lease, campaigns again and leads again later.
// Throughout, no two candidates answer isLeader at the same time.
func TestElectionWithClientGo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs client-go's elector for a few seconds")
	}
	lease := &memLease{down: map[string]bool{}}
	var (
		mu         sync.Mutex
		candidates = map[string]*candidate{}
		releases   []string
		logs       syncBuffer
	)
	lease.onWrite = func(by string, rec resourcelock.LeaderElectionRecord) {
		if rec.HolderIdentity != "" {
			return
		}
		mu.Lock()
		c := candidates[by]
		releases = append(releases, by)
		mu.Unlock()
		if a, _ := c.view.answer(); a.IsLeader || a.Name == by {
			t.Errorf("%s released the Lease while its answer still claimed it: %+v", by, a)
		}
	}
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	cfg := config{Namespace: "ns", LeaseName: "l", LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond,
		RetryPeriod: 100 * time.Millisecond, ReleaseOnCancel: true, LocalAddr: "127.0.0.1:0", OpsAddr: "127.0.0.1:0", LogLevel: "info",
		KubeAPIQPS: defaultKubeAPIQPS, KubeAPIBurst: defaultKubeAPIBurst}
	start := func(id string) *candidate {
		c := cfg
		c.ID = id
		if err := c.validate(); err != nil {
			t.Fatal(err)
		}
		cand := &candidate{id: id, view: newLeaderView(id, time.Now, nil), done: make(chan struct{})}
		le, err := newElector(&c, &memLock{lease: lease, id: id}, cand.view)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cand.cancel = cancel
		go func() {
			defer close(cand.done)
			campaign(ctx, le, log)
		}()
		mu.Lock()
		candidates[id] = cand
		mu.Unlock()
		return cand
	}
	stop := func(c *candidate) {
		if !shutdown(c.view, c.cancel, c.done, 5*time.Second) {
			t.Errorf("%s: client-go's Run did not return within 5s of the cancel", c.id)
		}
	}
	answers := func() map[string]Answer {
		mu.Lock()
		defer mu.Unlock()
		m := map[string]Answer{}
		for id, c := range candidates {
			m[id], _ = c.view.answer()
		}
		return m
	}
	// Sample every candidate's answer until the test ends: never two leaders at once.
	checkerDone := make(chan struct{})
	checkerStop := make(chan struct{})
	go func() {
		defer close(checkerDone)
		for {
			var leaders []string
			for id, a := range answers() {
				checkInvariant(t, id, a)
				if a.IsLeader {
					leaders = append(leaders, id)
				}
			}
			if len(leaders) > 1 {
				t.Errorf("two candidates answer isLeader at once: %v", leaders)
				return
			}
			select {
			case <-checkerStop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	defer func() {
		close(checkerStop)
		<-checkerDone
		mu.Lock()
		all := candidates
		mu.Unlock()
		for _, c := range all {
			stop(c)
		}
	}()
	waitFor := func(what string, cond func(map[string]Answer) bool) map[string]Answer {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			as := answers()
			if cond(as) {
				return as
			}
			if time.Now().After(deadline) {
				t.Fatalf("not within 10s: %s; answers %+v", what, as)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	leaderOf := func(as map[string]Answer) string {
		for id, a := range as {
			if a.IsLeader {
				return id
			}
		}
		return ""
	}
	allName := func(leader string) func(map[string]Answer) bool {
		return func(as map[string]Answer) bool {
			for _, a := range as {
				if a.Name != leader {
					return false
				}
			}
			return true
		}
	}

	a, b := start("a"), start("b")
	as := waitFor("a leader that both name", func(as map[string]Answer) bool { l := leaderOf(as); return l != "" && allName(l)(as) })
	first := candidates[leaderOf(as)]
	survivor := map[*candidate]*candidate{a: b, b: a}[first]

	stop(first)
	waitFor(survivor.id+" leads after "+first.id+" released the Lease", func(as map[string]Answer) bool { return as[survivor.id].IsLeader })
	mu.Lock()
	if len(releases) != 1 || releases[0] != first.id {
		t.Errorf("releases %v, want [%s]", releases, first.id)
	}
	delete(candidates, first.id)
	mu.Unlock()

	// Cut the leader off the API: it loses the Lease after its renew deadline and the newcomer
	// takes it once the record has lapsed; healed, the old leader names the new one.
	c := start("c")
	waitFor("c names "+survivor.id, allName(survivor.id))
	lease.setDown(survivor.id, true)
	waitFor("c leads", func(as map[string]Answer) bool { return as["c"].IsLeader })
	if a := answers()[survivor.id]; a.IsLeader || a.State != "follower" {
		t.Errorf("%s cut off from the API: %+v", survivor.id, a)
	}
	lease.setDown(survivor.id, false)
	waitFor("all name c", allName("c"))
	if !strings.Contains(logs.String(), "lost the Lease; campaigning again") {
		t.Errorf("no log line about the lost Lease:\n%s", logs.String())
	}

	// It campaigns again: when c leaves, it leads.
	stop(c)
	mu.Lock()
	delete(candidates, "c")
	mu.Unlock()
	waitFor(survivor.id+" leads again", func(as map[string]Answer) bool { return as[survivor.id].IsLeader })
}
