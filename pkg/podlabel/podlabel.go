// Package podlabel keeps the role label on the member's own pod in line with its lease, so that
// a Service selecting raft-elector/role=leader routes to the member that leads.
//
// A Labeler is a node.Observer. Observe only records the member's latest status and wakes the
// labeler's own goroutine (Run), which makes every API call; a slow or unreachable API server
// therefore never delays the election.
//
// What it does:
//   - The member that holds the lease (node.Status.HoldsLease at the moment of the check) sets
//     Key=LeaderValue on its own pod; any other member sets Key=FollowerValue on its own pod. A
//     leader whose lease runs out without a new status (partitioned, handing over) relabels
//     itself as follower when the lease ends.
//   - Before a lease holder labels itself, it turns every other pod in the discovery cache
//     still labelled LeaderValue into FollowerValue: its predecessor may be dead or cut off and
//     unable to relabel itself. It checks the lease again right before each of these patches
//     and before its own, since a slow patch may outlast the lease.
//   - Every patch carries the resourceVersion the labeler last saw as a precondition, so the
//     API server rejects (409 Conflict) a patch that was decided on an outdated pod: a delayed
//     patch from a former leader cannot undo what its successor did. On a conflict the labeler
//     reads the pod again, re-evaluates what it wants now and, if still needed, patches again.
//   - No patch is sent when a label already has the wanted value: in the steady state the
//     labeler makes no API calls at all (it reads pods from the discovery informer's cache).
//   - Failed calls are retried with capped exponential backoff and jitter; a 403 is logged once
//     with the permission that is missing and retried slowly; a 404 (own pod gone) waits until
//     the wanted role changes. After an API server outage the labels catch up on their own.
//
// What it does not promise: the label lags the lease by at least one patch and one watch
// round trip (and a Service's endpoints lag further), and a new leader sees other pods through
// the informer cache, which may be slightly behind; a leader label that appears there late is
// removed at the next evaluation. The label is for routing. An application that must not act
// twice asks /leader and fences with the term.
package podlabel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/raft-elector/raft-elector/pkg/node"
)

// Defaults of the contract (DESIGN.md, --label-key, --leader-label-value,
// --follower-label-value) and of the retry policy.
const (
	DefaultKey           = "raft-elector/role"
	DefaultLeaderValue   = "leader"
	DefaultFollowerValue = "follower"

	DefaultCallTimeout    = 5 * time.Second
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultForbiddenRetry = 30 * time.Second
	DefaultResync         = 30 * time.Second

	// FieldManager names the labeler in the pods' managedFields.
	FieldManager = "raft-elector"

	// firstForbiddenRetry is the first wait after a 403 (capped at Config.ForbiddenRetry).
	firstForbiddenRetry = time.Second

	// maxConflictsInARow bounds the immediate retries after 409 Conflicts; past it the
	// labeler backs off like for any other error, so two writers cannot spin against each other.
	maxConflictsInARow = 5
)

// Config configures a Labeler.
type Config struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface
	// Namespace and PodName name the member's own pod. Required.
	Namespace string
	PodName   string
	// Key is the label key (--label-key); empty means DefaultKey.
	Key string
	// LeaderValue and FollowerValue are the label values (--leader-label-value,
	// --follower-label-value); empty means DefaultLeaderValue and DefaultFollowerValue. They
	// must differ.
	LeaderValue, FollowerValue string
	// Pods returns the discovery informer's cache: every pod of the cluster's selector. The
	// labeler reads pods from it and makes no list or watch of its own. Required. The labeler
	// does not modify the returned pods.
	Pods func() []*corev1.Pod
	// Logger; nil means no logs.
	Logger hclog.Logger
	// Now is the clock the lease is checked against; nil means time.Now. LeaseExpiresAt
	// carries a monotonic reading, so Now must return times from the same process clock.
	Now func() time.Time

	// CallTimeout bounds each API call; zero means DefaultCallTimeout.
	CallTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff after a failed call; zero means
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// ForbiddenRetry caps the backoff after 403 Forbidden answers, which starts at
	// min(1s, ForbiddenRetry) and doubles: a missing Role rarely appears quickly, but an API
	// server that has just started answers 403 for a moment until its RBAC cache is filled.
	// Zero means DefaultForbiddenRetry.
	ForbiddenRetry time.Duration
	// Resync is how often the labels are checked against the cache when nothing else wakes
	// the labeler (a follower's status may not change for hours); zero means DefaultResync.
	// The check reads the cache only; it calls the API only when a label is wrong.
	Resync time.Duration
}

// Status describes the labeler's progress, for tests, health reports and metrics.
type Status struct {
	// Want is the label value the member wants on its own pod, as of the last pass.
	Want string
	// Term is the term of the member status the last pass acted on.
	Term uint64
	// Synced is true when the last pass found or made every label right for Want.
	Synced bool
	// Passes counts evaluations; Patches the patches sent (including rejected ones);
	// Conflicts the 409 answers; Failures the failed passes in a row (0 once synced).
	Passes, Patches, Conflicts, Failures uint64
	// LastError is the error of the last pass, nil when it succeeded.
	LastError error
}

// Labeler keeps the role label of the member's own pod right. Create it with New, register it
// as a node.Observer, and call Run once. Until the first Observe the member counts as a
// follower: a member that has published nothing holds no lease.
type Labeler struct {
	cfg Config
	log hclog.Logger

	wake chan struct{} // size 1: Observe and PodsChanged never block

	mu     sync.Mutex
	status node.Status
	state  Status

	// Owned by Run's goroutine.
	known           map[string]knownPod
	warnedMissing   bool
	warnedForbid    map[string]bool
	forbiddenInARow int
	failureStarted  time.Time
	// newTimer is time.NewTimer; tests replace it to observe the waits Run chooses.
	newTimer func(time.Duration) (<-chan time.Time, func() bool)
}

// knownPod is a pod as returned by our own patch or get. It is newer than the cache while the
// cache still shows staleRV (the version it had when we learned this one), or no pod at all.
type knownPod struct {
	pod     *corev1.Pod
	staleRV string
}

// New checks cfg and returns a Labeler. Errors name the flag to fix.
func New(cfg Config) (*Labeler, error) {
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.LeaderValue == "" {
		cfg.LeaderValue = DefaultLeaderValue
	}
	if cfg.FollowerValue == "" {
		cfg.FollowerValue = DefaultFollowerValue
	}
	if errs := validation.IsQualifiedName(cfg.Key); len(errs) > 0 {
		return nil, fmt.Errorf("--label-key %q is not a valid label key: %s", cfg.Key, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(cfg.LeaderValue); len(errs) > 0 {
		return nil, fmt.Errorf("--leader-label-value %q is not a valid label value: %s", cfg.LeaderValue, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(cfg.FollowerValue); len(errs) > 0 {
		return nil, fmt.Errorf("--follower-label-value %q is not a valid label value: %s", cfg.FollowerValue, strings.Join(errs, "; "))
	}
	if cfg.LeaderValue == cfg.FollowerValue {
		return nil, fmt.Errorf("--leader-label-value and --follower-label-value are both %q; they must differ", cfg.LeaderValue)
	}
	if cfg.Client == nil {
		return nil, errors.New("podlabel: no Kubernetes client")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("--namespace is empty: the namespace of the member's pod is needed to label it (set POD_NAMESPACE from the downward API)")
	}
	if cfg.PodName == "" {
		return nil, errors.New("the member's pod name is empty: set POD_NAME from the downward API")
	}
	if cfg.Pods == nil {
		return nil, errors.New("podlabel: Config.Pods is required (the discovery informer's cache)")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.ForbiddenRetry <= 0 {
		cfg.ForbiddenRetry = DefaultForbiddenRetry
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	return &Labeler{
		cfg:          cfg,
		log:          cfg.Logger,
		wake:         make(chan struct{}, 1),
		known:        map[string]knownPod{},
		warnedForbid: map[string]bool{},
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
	}, nil
}

// Observe records the member's status and wakes Run. It never blocks: it takes a mutex held
// only for copies and sends on a buffered channel without waiting.
func (l *Labeler) Observe(st node.Status) {
	l.mu.Lock()
	l.status = st
	l.mu.Unlock()
	l.signal()
}

// PodsChanged wakes Run to check the labels against the cache again. Call it from the
// discovery informer's event handlers so that a label changed by someone else is corrected
// at once rather than at the next Resync. It never blocks.
func (l *Labeler) PodsChanged() { l.signal() }

func (l *Labeler) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Status returns the labeler's progress.
func (l *Labeler) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Synced reports whether the last pass made every label right and the role wanted now is
// still the one that pass worked for.
func (l *Labeler) Synced() bool {
	want, _, _ := l.desired()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.Synced && l.state.Want == want
}

// desired returns the label value wanted on the own pod now, the status it derives from, and
// the instant it was decided at.
func (l *Labeler) desired() (string, node.Status, time.Time) {
	l.mu.Lock()
	st := l.status
	l.mu.Unlock()
	now := l.cfg.Now()
	if st.HoldsLease(now) {
		return l.cfg.LeaderValue, st, now
	}
	return l.cfg.FollowerValue, st, now
}

func (l *Labeler) holdsLease() bool {
	want, _, _ := l.desired()
	return want == l.cfg.LeaderValue
}

// Outcomes of a pass other than success or an API error.
var (
	// errWantChanged: the wanted role changed during the pass; evaluate again at once.
	errWantChanged = errors.New("wanted role changed")
	// errOwnPodGone: the own pod does not exist; wait until the wanted role changes.
	errOwnPodGone = errors.New("own pod not found")
)

// Run evaluates the labels whenever the status or the pods change, and at least every
// Resync, until ctx ends. It returns nil when ctx ends; it never gives up on API errors.
func (l *Labeler) Run(ctx context.Context) error {
	var (
		backoff, forbiddenBackoff time.Duration
		conflicts                 int
	)
	for {
		want, st, now := l.desired()
		err := l.pass(ctx, want, st)
		if ctx.Err() != nil {
			return nil
		}
		retryNow := errors.Is(err, errWantChanged) || apierrors.IsConflict(err) && conflicts < maxConflictsInARow
		// Log before publishing the outcome in Status, so a reader of Status sees its log.
		switch {
		case err == nil:
			l.recovered()
		case retryNow:
		case errors.Is(err, errOwnPodGone):
			l.log.Warn("own pod not found; its label is left alone until the member's role changes",
				"pod", l.cfg.Namespace+"/"+l.cfg.PodName, "error", err)
		default:
			l.failed(err)
		}
		l.record(want, st, err)

		var wait time.Duration
		anyWake := false // whether any wake ends the wait, or only a change of the wanted role
		switch {
		case err == nil:
			backoff, forbiddenBackoff, conflicts = 0, 0, 0
			wait, anyWake = l.cfg.Resync, true
		case errors.Is(err, errWantChanged):
			continue
		case retryNow:
			// The pod was read again after the 409; decide again on the fresh copy.
			conflicts++
			continue
		case errors.Is(err, errOwnPodGone):
			wait = -1
		case apierrors.IsForbidden(err):
			forbiddenBackoff = nextBackoff(forbiddenBackoff, min(firstForbiddenRetry, l.cfg.ForbiddenRetry), l.cfg.ForbiddenRetry)
			wait = forbiddenBackoff
		default:
			backoff = nextBackoff(backoff, l.cfg.MinBackoff, l.cfg.MaxBackoff)
			wait = jitter(backoff)
		}
		if err != nil {
			conflicts = 0 // after a wait, a conflict gets its immediate retries again
		}
		if !l.wait(ctx, want, st, now, wait, anyWake) {
			return nil
		}
	}
}

// wait blocks until ctx ends (false), d passes (d < 0: never), the lease of a leading member
// ends, or a wake: any wake if anyWake, else only one that changes the wanted role.
func (l *Labeler) wait(ctx context.Context, want string, st node.Status, now time.Time, d time.Duration, anyWake bool) bool {
	var timeout <-chan time.Time
	if d >= 0 {
		c, stop := l.newTimer(d)
		defer stop()
		timeout = c
	}
	var leaseEnd <-chan time.Time
	if want == l.cfg.LeaderValue {
		// The node publishes no status when a lease merely runs out; the labeler must notice.
		c, stop := l.newTimer(st.LeaseExpiresAt.Sub(now))
		defer stop()
		leaseEnd = c
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timeout:
			return true
		case <-leaseEnd:
			return true
		case <-l.wake:
			if anyWake {
				return true
			}
			if w, _, _ := l.desired(); w != want {
				return true
			}
		}
	}
}

// pass makes one attempt to bring the labels to want. Conflicts and errors end it early.
func (l *Labeler) pass(ctx context.Context, want string, st node.Status) error {
	cached := l.cfg.Pods()
	if want == l.cfg.LeaderValue {
		// Demote every other pod still labelled leader first: its member may be dead or cut
		// off and never do it itself, and a Service must route to one pod only.
		for _, p := range l.others(cached) {
			if p.Labels[l.cfg.Key] != l.cfg.LeaderValue {
				continue
			}
			if !l.holdsLease() {
				return errWantChanged
			}
			err := l.setLabel(ctx, p, l.cfg.FollowerValue, st.Term)
			if apierrors.IsNotFound(err) {
				continue // gone: routes nowhere
			}
			if err != nil {
				return err
			}
		}
	}
	own, err := l.ownPod(ctx, cached)
	if err != nil {
		return err
	}
	if own.Labels[l.cfg.Key] == want {
		return nil
	}
	// Check the lease at this instant: demoting the others may have taken longer than it.
	if want == l.cfg.LeaderValue && !l.holdsLease() {
		return errWantChanged
	}
	err = l.setLabel(ctx, own, want, st.Term)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %w", errOwnPodGone, err)
	}
	return err
}

// others returns the other pods of the cluster, each in the newest version the labeler knows.
func (l *Labeler) others(cached []*corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(cached))
	seen := make(map[string]bool, len(cached))
	for _, p := range cached {
		if p == nil || p.Name == l.cfg.PodName || (p.Namespace != "" && p.Namespace != l.cfg.Namespace) {
			continue
		}
		seen[p.Name] = true
		out = append(out, l.newest(p.Name, p))
	}
	for name := range l.known {
		if name != l.cfg.PodName && !seen[name] {
			delete(l.known, name)
		}
	}
	return out
}

// newest returns the newer of the cached pod and the one the labeler learned from its own
// calls (see knownPod).
func (l *Labeler) newest(name string, cached *corev1.Pod) *corev1.Pod {
	k, ok := l.known[name]
	if !ok {
		return cached
	}
	if cached == nil || cached.ResourceVersion == k.staleRV {
		return k.pod
	}
	delete(l.known, name) // the cache has caught up or moved past it
	return cached
}

// ownPod returns the member's own pod: from the cache, else from the API (a cache that has
// not synced yet, or a pod that does not match the selector).
func (l *Labeler) ownPod(ctx context.Context, cached []*corev1.Pod) (*corev1.Pod, error) {
	var fromCache *corev1.Pod
	for _, p := range cached {
		if p != nil && p.Name == l.cfg.PodName && (p.Namespace == "" || p.Namespace == l.cfg.Namespace) {
			fromCache = p
			break
		}
	}
	if p := l.newest(l.cfg.PodName, fromCache); p != nil {
		return p, nil
	}
	if !l.warnedMissing {
		l.warnedMissing = true
		l.log.Warn("own pod is not in the discovery cache (not synced yet, or it does not match the selector); reading it from the API",
			"pod", l.cfg.Namespace+"/"+l.cfg.PodName)
	}
	p, err := l.get(ctx, l.cfg.PodName, "")
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %w", errOwnPodGone, err)
	}
	return p, err
}

func (l *Labeler) get(ctx context.Context, name, staleRV string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	p, err := l.cfg.Client.CoreV1().Pods(l.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", l.cfg.Namespace, name, err)
	}
	l.remember(p, staleRV)
	return p, nil
}

// remember records a pod the API returned. If the labeler already knew a version newer than
// the cache, the cache is still at that entry's staleRV: keep it as the mark.
func (l *Labeler) remember(p *corev1.Pod, staleRV string) {
	if k, ok := l.known[p.Name]; ok {
		staleRV = k.staleRV
	}
	l.known[p.Name] = knownPod{pod: p, staleRV: staleRV}
}

// patchBody is a JSON merge patch of one label, conditional on the pod's resourceVersion.
type patchBody struct {
	Metadata patchMeta `json:"metadata"`
}

type patchMeta struct {
	ResourceVersion string            `json:"resourceVersion"`
	Labels          map[string]string `json:"labels"`
}

// setLabel patches pod's label to value, on the condition that the pod is still at the
// version the labeler saw. On a conflict it reads the pod again (so the next pass decides on
// the fresh copy) and returns the conflict.
func (l *Labeler) setLabel(ctx context.Context, pod *corev1.Pod, value string, term uint64) error {
	if pod.ResourceVersion == "" {
		// Never send an unconditional patch.
		fresh, err := l.get(ctx, pod.Name, "")
		if err != nil {
			return err
		}
		pod = fresh
		if pod.Labels[l.cfg.Key] == value {
			return nil
		}
	}
	body, err := json.Marshal(patchBody{Metadata: patchMeta{
		ResourceVersion: pod.ResourceVersion,
		Labels:          map[string]string{l.cfg.Key: value},
	}})
	if err != nil {
		return err
	}
	l.count(func(s *Status) { s.Patches++ })
	pctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	got, err := l.cfg.Client.CoreV1().Pods(l.cfg.Namespace).Patch(pctx, pod.Name, types.MergePatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager})
	cancel()
	switch {
	case err == nil:
		l.remember(got, pod.ResourceVersion)
		old, had := pod.Labels[l.cfg.Key]
		if !had {
			old = "(none)"
		}
		l.log.Info("pod label changed", "pod", l.cfg.Namespace+"/"+pod.Name, "key", l.cfg.Key,
			"old", old, "new", value, "term", term)
		return nil
	case apierrors.IsConflict(err):
		l.count(func(s *Status) { s.Conflicts++ })
		l.log.Debug("pod changed since it was read; reading it again", "pod", l.cfg.Namespace+"/"+pod.Name,
			"resource_version", pod.ResourceVersion)
		if _, gerr := l.get(ctx, pod.Name, pod.ResourceVersion); gerr != nil {
			return gerr
		}
		return fmt.Errorf("patch pod %s/%s: %w", l.cfg.Namespace, pod.Name, err)
	default:
		return fmt.Errorf("patch pod %s/%s: %w", l.cfg.Namespace, pod.Name, err)
	}
}

func (l *Labeler) count(f func(*Status)) {
	l.mu.Lock()
	f(&l.state)
	l.mu.Unlock()
}

func (l *Labeler) record(want string, st node.Status, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state.Passes++
	l.state.Want = want
	l.state.Term = st.Term
	l.state.Synced = err == nil
	l.state.LastError = err
	switch {
	case err == nil:
		l.state.Failures = 0
	case !errors.Is(err, errWantChanged) && !apierrors.IsConflict(err):
		l.state.Failures++
	}
}

// failed logs the first failure of a streak, and a 403 that happens twice in a row once per
// refused verb with the permission that is missing (a single 403 is often an API server that
// has just started and not yet loaded its RBAC rules). Other retries are logged at debug
// level only.
func (l *Labeler) failed(err error) {
	forbidden := apierrors.IsForbidden(err)
	if forbidden {
		l.forbiddenInARow++
	} else {
		l.forbiddenInARow = 0
	}
	if l.failureStarted.IsZero() {
		l.failureStarted = time.Now()
		l.log.Warn("cannot update pod labels; retrying with backoff", "pod", l.cfg.Namespace+"/"+l.cfg.PodName, "error", err)
		return
	}
	if verb := forbiddenVerb(err); forbidden && l.forbiddenInARow >= 2 && !l.warnedForbid[verb] {
		l.warnedForbid[verb] = true
		l.log.Error(fmt.Sprintf("not allowed to %s pods in namespace %s: the member's service account needs a Role "+
			"granting get and patch on pods in that namespace (see deploy/); retrying with backoff up to %s",
			verb, l.cfg.Namespace, l.cfg.ForbiddenRetry),
			"pod", l.cfg.Namespace+"/"+l.cfg.PodName, "error", err)
		return
	}
	l.log.Debug("pod label update failed again", "error", err)
}

func (l *Labeler) recovered() {
	if l.failureStarted.IsZero() {
		return
	}
	l.log.Info("pod labels are up to date again", "pod", l.cfg.Namespace+"/"+l.cfg.PodName,
		"after", time.Since(l.failureStarted).Round(time.Millisecond))
	l.failureStarted = time.Time{}
	l.forbiddenInARow = 0
	clear(l.warnedForbid)
}

// forbiddenVerb says which call was refused: the error wraps the call it came from.
func forbiddenVerb(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "patch "):
		return "patch"
	case strings.HasPrefix(msg, "get "):
		return "get"
	}
	return "access"
}

// nextBackoff doubles prev within [lo, hi].
func nextBackoff(prev, lo, hi time.Duration) time.Duration {
	if prev < lo {
		return lo
	}
	if prev >= hi/2 {
		return hi
	}
	return 2 * prev
}

// jitter spreads d over [d/2, d], so members that failed together do not retry together.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}
