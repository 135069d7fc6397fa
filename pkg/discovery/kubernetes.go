package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// PodFieldSelector narrows the pod watch on the server: pods that have finished (phase
// Succeeded or Failed) never count as members, so the API server does not send them, and a pod
// that finishes leaves the watch as a deletion.
const PodFieldSelector = "status.phase!=" + string(corev1.PodSucceeded) + ",status.phase!=" + string(corev1.PodFailed)

// KubernetesConfig configures NewKubernetes.
type KubernetesConfig struct {
	// Client reaches the API server. It needs list and watch on pods in Namespace, nothing else.
	Client kubernetes.Interface
	// Namespace is the namespace of the pods (--namespace, default $POD_NAMESPACE).
	Namespace string
	// Selector is the label selector of the pods that form one cluster (--selector), in the
	// syntax of kubectl -l. It is required: an empty selector would make every pod of the
	// namespace a member.
	Selector string
	// PeerPort is the port of the peer endpoint. Every member listens on the same port, so a
	// member is reached at status.podIP:PeerPort.
	PeerPort int
	// Logger receives one line per membership change and per watch outage. Default: none.
	Logger hclog.Logger
}

// Kubernetes discovers the members of a cluster from the pods of one namespace that match a
// label selector, through a single client-go informer (one list, then one watch, narrowed on
// the server by the label selector and by PodFieldSelector). It never polls, and nothing it
// offers blocks on the API server: if the API server goes away, Members keeps returning the
// last view while client-go's reflector retries with backoff.
//
// # Membership rule
//
// A pod is a member while all of these hold:
//
//   - it matches the selector and is in the namespace;
//   - it is scheduled: spec.nodeName is set;
//   - it has an address: status.podIP is set;
//   - it is not terminating: metadata.deletionTimestamp is not set. A pod that is being
//     deleted stops counting at once, so the old pod of a rolling update leaves the
//     membership as soon as its deletion starts, not when its containers have stopped;
//   - its phase is Pending, Running or Unknown. Succeeded and Failed pods are finished and never
//     come back (the API server does not even send them, see PodFieldSelector).
//
// Unknown counts because it says nothing about the member itself: it is what a pod's status
// was set to when its node could not be reached (current Kubernetes versions no longer set it
// and leave such a pod Running with Ready=Unknown, which counts too). The sidecar on that node
// may well be alive, still reachable by its peers, possibly the leader. Whether it answers is
// the Raft protocol's business: an unreachable voter is a crashed voter to Raft, and
// dropping it from the membership would buy nothing while costing a reconfiguration (and
// another when the node returns). The pod stops counting when it is evicted from the lost node,
// which sets its deletionTimestamp.
//
// Readiness does not matter. A member that is not ready yet must be reachable to join, and
// the readiness of the sidecar itself depends on knowing a leader: counting only ready pods
// would be a cycle.
//
// A pod that passes the rule but is malformed is ignored with one logged warning (never a
// crash): a status.podIP that is not an IP address (or is unspecified, or carries an IPv6
// zone), a phase Kubernetes does not define, a name that is not a DNS subdomain, an empty UID
// or one with characters other than letters, digits, '-' and '.', or a member id
// (PodID(name, uid)) longer than raft.MaxIDLength.
type Kubernetes struct {
	namespace string
	selector  labels.Selector
	port      string
	log       hclog.Logger

	informer     cache.SharedIndexInformer
	registration cache.ResourceEventHandlerRegistration
	health       watchHealth
	started      atomic.Bool

	mu      sync.Mutex
	counted map[string]Member // by pod key (namespace/name): the pods that count
	warned  map[string]string // by pod key: the malformed-object warning already logged
	members []Member          // sorted by ID; replaced, never changed in place
	changed chan struct{}     // closed at the next change of members
	changes uint64            // number of changes so far, for tests
}

// NewKubernetes checks cfg and prepares the informer; Run starts it.
func NewKubernetes(cfg KubernetesConfig) (*Kubernetes, error) {
	if cfg.Client == nil {
		return nil, errors.New("kubernetes discovery: no API client")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("--namespace is empty: give the namespace of the pods (it defaults to $POD_NAMESPACE)")
	}
	if errs := validation.IsDNS1123Label(cfg.Namespace); len(errs) > 0 {
		return nil, fmt.Errorf("--namespace %q is not a namespace name: %s", cfg.Namespace, strings.Join(errs, "; "))
	}
	if strings.TrimSpace(cfg.Selector) == "" {
		return nil, errors.New("--selector is empty: give the label selector of the pods that form this cluster, for example app=myapp")
	}
	selector, err := labels.Parse(cfg.Selector)
	if err != nil {
		return nil, fmt.Errorf("--selector %q is not a label selector: %v", cfg.Selector, err)
	}
	if selector.Empty() {
		return nil, fmt.Errorf("--selector %q selects every pod of the namespace: give the labels of the pods that form this cluster", cfg.Selector)
	}
	if cfg.PeerPort < 1 || cfg.PeerPort > 65535 {
		return nil, fmt.Errorf("peer port %d is not in 1..65535", cfg.PeerPort)
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	k := &Kubernetes{
		namespace: cfg.Namespace,
		selector:  selector,
		port:      strconv.Itoa(cfg.PeerPort),
		log:       log,
		counted:   map[string]Member{},
		warned:    map[string]string{},
		changed:   make(chan struct{}),
	}
	k.health.log = log.With("namespace", cfg.Namespace, "selector", selector.String())

	client, namespace, labelSelector := cfg.Client, cfg.Namespace, selector.String()
	narrow := func(opts *metav1.ListOptions) {
		opts.LabelSelector = labelSelector
		opts.FieldSelector = PodFieldSelector
	}
	// The list and watch calls are wrapped to tell the watch health which requests succeed:
	// the reflector's error handler only hears about some failures and never about recovery.
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			narrow(&opts)
			list, err := client.CoreV1().Pods(namespace).List(ctx, opts)
			k.health.result(ctx, err)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			narrow(&opts)
			w, err := client.CoreV1().Pods(namespace).Watch(ctx, opts)
			k.health.result(ctx, err)
			return w, err
		},
	}
	// The wrapper keeps client-go's streaming initial list (WatchList) where the client
	// supports it, as the generated pod informer does.
	k.informer = cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(lw, client),
		&corev1.Pod{},
		cache.SharedIndexInformerOptions{ObjectDescription: "pods " + namespace + " " + labelSelector},
	)
	if err := k.informer.SetTransform(dropManagedFields); err != nil {
		return nil, fmt.Errorf("kubernetes discovery: %w", err)
	}
	if err := k.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		k.health.result(ctx, err)
	}); err != nil {
		return nil, fmt.Errorf("kubernetes discovery: %w", err)
	}
	k.registration, err = k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.observe(obj, false) },
		UpdateFunc: func(_, obj any) { k.observe(obj, false) },
		DeleteFunc: func(obj any) { k.observe(obj, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes discovery: %w", err)
	}
	return k, nil
}

// dropManagedFields removes metadata.managedFields before a pod is cached: nothing here reads
// them, and they are often the largest part of a pod object.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run runs the informer until ctx ends, then returns nil. It may be called once.
func (k *Kubernetes) Run(ctx context.Context) error {
	if !k.started.CompareAndSwap(false, true) {
		return errors.New("kubernetes discovery: Run called twice")
	}
	k.log.Debug("watching pods", "namespace", k.namespace, "selector", k.selector.String(), "fields", PodFieldSelector)
	k.informer.RunWithContext(ctx)
	return nil
}

// WaitForSync waits until the first complete view of the pods has been turned into members,
// or ctx ends. It does not start anything: Run must be running.
func (k *Kubernetes) WaitForSync(ctx context.Context) error {
	select {
	case <-k.registration.HasSyncedChecker().Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the pods of %s matching %q: %w", k.namespace, k.selector.String(), ctx.Err())
	}
}

// Members returns the current members, sorted by ID. The slice is the caller's.
func (k *Kubernetes) Members() []Member {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.members)
}

// Changed returns a channel that is closed at the next change of Members (a member joined or
// left, or one's address, node or zone changed). Each change closes the channel and replaces
// it, so call Changed again, then Members, to wait for the change after that.
func (k *Kubernetes) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

// Self returns the member for the pod called name, if that pod is a member.
func (k *Kubernetes) Self(name string) (Member, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, m := range k.members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// Pods returns every pod the informer holds, members or not (pending without an IP,
// terminating, ...), sorted by name: for the pod labeler, which must find every pod still
// labelled leader. Finished pods (Succeeded, Failed) are not among them. The pods are copies
// and the caller's; their metadata.managedFields are empty.
func (k *Kubernetes) Pods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, obj := range k.informer.GetStore().List() {
		pod, ok := obj.(*corev1.Pod)
		if !ok || !k.watched(pod) {
			continue
		}
		out = append(out, pod.DeepCopy())
	}
	slices.SortFunc(out, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Addressable returns the members plus the pods that are terminating but still have an
// address, sorted by ID. A terminating pod is no longer a member (the leader removes it from
// the configuration), but until it is removed it may still be a voter whose vote, or whose
// handover, the others need: so its peers keep its address. The slice is the caller's.
func (k *Kubernetes) Addressable() []Member {
	var out []Member
	for _, obj := range k.informer.GetStore().List() {
		pod, ok := obj.(*corev1.Pod)
		if !ok || !k.watched(pod) {
			continue
		}
		if pod.DeletionTimestamp != nil {
			p := *pod
			p.DeletionTimestamp = nil
			pod = &p
		}
		if m, why, _ := memberOf(pod, k.port); why == "" {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Healthy reports whether the pod watch works: its last list or watch request succeeded. While
// it fails, Members is the last view, which may be stale.
func (k *Kubernetes) Healthy() bool {
	k.health.mu.Lock()
	defer k.health.mu.Unlock()
	return !k.health.failing
}

// watched re-checks on the client what the API server already filters: a fake or a
// misbehaving server must not make a stranger a member.
func (k *Kubernetes) watched(pod *corev1.Pod) bool {
	return pod.Namespace == k.namespace && k.selector.Matches(labels.Set(pod.Labels)) &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// observe applies one informer event. Events come from one goroutine, in order.
func (k *Kubernetes) observe(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = tomb.Obj, true
		if _, isPod := obj.(*corev1.Pod); !isPod {
			k.forget(tomb.Key)
			return
		}
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		k.log.Warn("ignoring an object that is not a pod", "type", fmt.Sprintf("%T", obj))
		return
	}
	key := pod.Namespace + "/" + pod.Name
	if deleted || !k.watched(pod) {
		k.forget(key)
		return
	}
	m, why, malformed := memberOf(pod, k.port)
	k.mu.Lock()
	if !malformed {
		delete(k.warned, key)
	}
	warn := malformed && k.warned[key] != why
	if warn {
		k.warned[key] = why
	}
	if why == "" {
		k.counted[key] = m
	} else {
		delete(k.counted, key)
	}
	k.mu.Unlock()
	if warn {
		k.log.Warn("ignoring a malformed pod", "pod", key, "uid", string(pod.UID), "problem", why)
	}
	k.publish()
}

func (k *Kubernetes) forget(key string) {
	k.mu.Lock()
	delete(k.counted, key)
	delete(k.warned, key)
	k.mu.Unlock()
	k.publish()
}

// publish recomputes the member list and, if it differs, replaces it and signals the change.
func (k *Kubernetes) publish() {
	k.mu.Lock()
	next := make([]Member, 0, len(k.counted))
	for _, m := range k.counted {
		next = append(next, m)
	}
	slices.SortFunc(next, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	prev := k.members
	if slices.Equal(prev, next) {
		k.mu.Unlock()
		return
	}
	k.members = next
	k.changes++
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
	logChanges(k.log, prev, next)
}

// logChanges logs one line per member that joined, left or moved.
func logChanges(log hclog.Logger, prev, next []Member) {
	old := make(map[string]Member, len(prev))
	for _, m := range prev {
		old[m.ID] = m
	}
	for _, m := range next {
		p, ok := old[m.ID]
		delete(old, m.ID)
		switch {
		case !ok:
			log.Info("member joined", "member", m.ID, "addr", m.Addr, "node", m.Node, "zone", m.Zone, "members", len(next))
		case p != m:
			log.Info("member changed", "member", m.ID, "addr", m.Addr, "previous_addr", p.Addr, "node", m.Node, "zone", m.Zone)
		}
	}
	for _, m := range prev {
		if _, gone := old[m.ID]; gone {
			log.Info("member left", "member", m.ID, "addr", m.Addr, "members", len(next))
		}
	}
}

// memberOf applies the membership rule (see Kubernetes) to a pod of the selector. It returns
// the member and an empty reason when the pod counts; otherwise why it does not, and whether
// that is because the object is malformed (worth a warning) rather than an ordinary state.
func memberOf(pod *corev1.Pod, port string) (m Member, why string, malformed bool) {
	switch {
	case pod.DeletionTimestamp != nil:
		return Member{}, "terminating", false
	case pod.Spec.NodeName == "":
		return Member{}, "not scheduled", false
	}
	switch pod.Status.Phase {
	case corev1.PodPending, corev1.PodRunning, corev1.PodUnknown:
	case corev1.PodSucceeded, corev1.PodFailed:
		return Member{}, "finished (" + string(pod.Status.Phase) + ")", false
	default:
		return Member{}, fmt.Sprintf("undefined phase %q", pod.Status.Phase), true
	}
	if pod.Status.PodIP == "" {
		return Member{}, "no pod IP", false
	}
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	switch {
	case err != nil:
		return Member{}, fmt.Sprintf("status.podIP %q is not an IP address", pod.Status.PodIP), true
	case ip.Zone() != "":
		return Member{}, fmt.Sprintf("status.podIP %q has an IPv6 zone", pod.Status.PodIP), true
	case ip.IsUnspecified():
		return Member{}, fmt.Sprintf("status.podIP %q is unspecified", pod.Status.PodIP), true
	}
	if errs := validation.IsDNS1123Subdomain(pod.Name); len(errs) > 0 {
		return Member{}, fmt.Sprintf("name %.40q is not a DNS subdomain", pod.Name), true
	}
	uid := string(pod.UID)
	if uid == "" {
		return Member{}, "no UID", true
	}
	if strings.IndexFunc(uid, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.')
	}) >= 0 {
		return Member{}, fmt.Sprintf("UID %.40q has characters other than letters, digits, '-' and '.'", uid), true
	}
	id := PodID(pod.Name, uid)
	if len(id) > raft.MaxIDLength {
		return Member{}, fmt.Sprintf("member id is %d bytes, longer than %d", len(id), raft.MaxIDLength), true
	}
	return Member{
		ID:   id,
		Addr: net.JoinHostPort(ip.String(), port),
		Name: pod.Name,
		Node: pod.Spec.NodeName,
		Zone: pod.Labels[corev1.LabelTopologyZone],
	}, "", false
}

// watchHealth turns the results of list and watch requests into one log line when the pod
// watch starts failing and one when it works again, however many retries lie between.
type watchHealth struct {
	log hclog.Logger

	mu       sync.Mutex
	failing  bool
	since    time.Time
	failures int
}

// result records the outcome of a list or watch request, or an error the reflector reported.
func (h *watchHealth) result(ctx context.Context, err error) {
	if err != nil && (ctx.Err() != nil || errors.Is(err, io.EOF) ||
		apierrors.IsResourceExpired(err) || apierrors.IsGone(err)) {
		// Shutting down, or the ordinary end of a watch: not an outage.
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		if h.failing {
			h.failing = false
			h.log.Info("pod watch recovered", "down_for", time.Since(h.since).Round(time.Millisecond), "failed_requests", h.failures)
		}
		return
	}
	h.failures++
	if h.failing {
		h.log.Trace("pod watch still failing", "error", err)
		return
	}
	h.failing, h.since, h.failures = true, time.Now(), 1
	msg := "pod watch failed; keeping the last known members and retrying with backoff"
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		msg = "pod watch failed; the service account needs list and watch on pods in this namespace (see the Role in deploy/); retrying with backoff"
	}
	h.log.Warn(msg, "error", err)
}
