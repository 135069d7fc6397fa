package main

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Answer is the JSON body of GET /leader: raft-elector's shape (docs/api.md) without
// leaseExpiresAt, which client-go cannot give.
type Answer struct {
	// Name is the holder of the last observed Lease record while that record is valid by
	// this process's observation; empty otherwise, and never this process's own id unless
	// IsLeader.
	Name string `json:"name"`
	// Self is this candidate's --id.
	Self string `json:"self"`
	// IsLeader: client-go's callbacks say this process leads, and the record it last
	// observed names it and is still valid. IsLeader ⇒ Name == Self.
	IsLeader bool `json:"isLeader"`
	// Term is leaseTransitions of the last observed record.
	Term uint64 `json:"term"`
	// State is "leader" between OnStartedLeading and OnStoppedLeading, else "follower".
	State string `json:"state"`
	// Index changes exactly when name, isLeader, term or state changes.
	Index uint64 `json:"index"`
}

type answerKey struct {
	name     string
	isLeader bool
	term     uint64
	state    string
}

// leaderView is what this process knows of the election: the last Lease record it read or
// wrote and when, and client-go's callbacks. It turns them into the numbered Answer.
type leaderView struct {
	self string
	now  func() time.Time
	// onChange is called, with the view locked, once for every new answer.
	onChange func(Answer)

	mu         sync.Mutex
	record     *resourcelock.LeaderElectionRecord // nil until the first successful Get/Create
	observedAt time.Time
	leading    bool
	stopping   bool
	key        answerKey
	index      uint64
	changed    chan struct{} // closed and replaced when the answer changes
}

func newLeaderView(self string, now func() time.Time, onChange func(Answer)) *leaderView {
	if onChange == nil {
		onChange = func(Answer) {}
	}
	v := &leaderView{self: self, now: now, onChange: onChange, index: 1, changed: make(chan struct{})}
	v.key = v.keyAt(now())
	return v
}

// observe records a Lease record this process read (read) or wrote, at the time the request
// was sent. A read of the record already known keeps the earlier time: like client-go, only a
// change of the record shows that its holder renewed, so a candidate that keeps reading the
// record of a dead leader sees it lapse after leaseDurationSeconds.
func (v *leaderView) observe(rec resourcelock.LeaderElectionRecord, sent time.Time, read bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !read || v.record == nil || !sameRecord(*v.record, rec) {
		v.record, v.observedAt = &rec, sent
	}
	v.refreshLocked()
}

// sameRecord compares records at the Lease's microsecond precision, so the record this process
// wrote equals the one it reads back.
func sameRecord(a, b resourcelock.LeaderElectionRecord) bool {
	sameTime := func(x, y time.Time) bool { return x.Truncate(time.Microsecond).Equal(y.Truncate(time.Microsecond)) }
	return a.HolderIdentity == b.HolderIdentity && a.LeaseDurationSeconds == b.LeaseDurationSeconds &&
		a.LeaderTransitions == b.LeaderTransitions && a.PreferredHolder == b.PreferredHolder &&
		a.Strategy == b.Strategy && sameTime(a.AcquireTime.Time, b.AcquireTime.Time) &&
		sameTime(a.RenewTime.Time, b.RenewTime.Time)
}

// startedLeading is client-go's OnStartedLeading. client-go runs it on a goroutine of its
// own, so it may run after Run has already lost the lease (ctx is then cancelled, before
// OnStoppedLeading) or after shutdown began: then it must not claim leadership.
func (v *leaderView) startedLeading(ctx context.Context) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ctx.Err() != nil || v.stopping {
		return
	}
	v.leading = true
	v.refreshLocked()
}

// stoppedLeading is client-go's OnStoppedLeading; client-go calls it whenever Run returns.
func (v *leaderView) stoppedLeading() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.leading = false
	v.refreshLocked()
}

// withdraw publishes that this process no longer leads, for good: the first step of shutdown.
func (v *leaderView) withdraw() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.stopping, v.leading = true, false
	v.refreshLocked()
}

// ready reports whether a Lease record has been read or written.
func (v *leaderView) ready() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.record != nil
}

// answer returns the answer at this instant and a channel closed when it next changes.
func (v *leaderView) answer() (Answer, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.refreshLocked()
	return v.answerLocked(), v.changed
}

// refresh re-evaluates the answer, so that a lapsed record changes it without any request.
func (v *leaderView) refresh() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.refreshLocked()
}

// watchExpiry refreshes the answer every interval until ctx ends, waking long polls when the
// observed record lapses.
func (v *leaderView) watchExpiry(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			v.refresh()
		}
	}
}

func (v *leaderView) answerLocked() Answer {
	k := v.key
	return Answer{Name: k.name, Self: v.self, IsLeader: k.isLeader, Term: k.term, State: k.state, Index: v.index}
}

func (v *leaderView) keyAt(now time.Time) answerKey {
	k := answerKey{state: "follower"}
	if v.leading {
		k.state = "leader"
	}
	if v.record == nil {
		return k
	}
	rec := v.record
	k.term = uint64(max(rec.LeaderTransitions, 0))
	if rec.HolderIdentity == "" || !v.observedAt.Add(time.Duration(rec.LeaseDurationSeconds)*time.Second).After(now) {
		return k
	}
	k.name = rec.HolderIdentity
	// The callback alone is not enough: between a renewal that found another holder (this
	// process was paused past its lease) and the end of the renew deadline, client-go still
	// has this process "leading". And the record alone is not enough either: it names this
	// process from the acquiring write until OnStartedLeading runs, after a lost lease, and
	// after a restart. Both must agree; a name of self without both is withheld, so two
	// processes never both name themselves.
	k.isLeader = v.leading && k.name == v.self
	if k.name == v.self && !k.isLeader {
		k.name = ""
	}
	return k
}

func (v *leaderView) refreshLocked() {
	k := v.keyAt(v.now())
	if k == v.key {
		return
	}
	v.key = k
	v.index++
	close(v.changed)
	v.changed = make(chan struct{})
	v.onChange(v.answerLocked())
}

// observingLock is the Lease lock as client-go uses it, reporting to a leaderView every record
// it reads or writes successfully, with the time the request was sent. It adds no requests;
// Identity, Describe and RecordEvent are the embedded lock's.
type observingLock struct {
	resourcelock.Interface
	view *leaderView
}

func (l *observingLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	sent := l.view.now()
	rec, raw, err := l.Interface.Get(ctx)
	if err == nil && rec != nil {
		l.view.observe(*rec, sent, true)
	}
	return rec, raw, err
}

func (l *observingLock) Create(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	sent := l.view.now()
	err := l.Interface.Create(ctx, rec)
	if err == nil {
		l.view.observe(rec, sent, false)
	}
	return err
}

func (l *observingLock) Update(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	sent := l.view.now()
	err := l.Interface.Update(ctx, rec)
	if err == nil {
		l.view.observe(rec, sent, false)
	}
	return err
}
