// Package bootstrap decides, through one create-once object in the Kubernetes API, which pod
// starts a new raft-elector cluster and under which cluster id, and lets the survivors of a
// cluster that lost a majority of its voters for good start a new one.
//
// The object is a ConfigMap in the pods' namespace. It holds the cluster id, a generation
// and the id of the member that bootstrapped that generation. Exactly one member creates it
// (or fills it, if the Helm chart created it empty): the API server's create, and its
// resourceVersion precondition on update, admit one writer. That member starts the cluster
// as its only voter; every other member reads the cluster id and waits, as a learner with no
// configuration, for the leader to add it.
//
// Recovery replaces the cluster id with a compare-and-swap on the same object: the
// generation goes up by one, so two survivors that try at once cannot both win, and a member
// that still holds state of an older generation discards it when it sees the new one.
//
// The object also records the voters of the cluster's newest committed configuration and the
// log index it was committed at: the leader writes them (RecordVoters) after a configuration
// change commits, so that pods that start without state after every pod of the application
// was replaced can tell that the cluster the object names is gone.
//
// The object is read at start, watched afterwards, and written only at bootstrap, recovery
// and when the voters change: never in the steady state.
package bootstrap

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// Keys of the object's data.
const (
	KeyCluster      = "cluster-id"
	KeyGeneration   = "generation"
	KeyBootstrapper = "bootstrapper"
	KeyCreated      = "bootstrapped-at"
	// KeyVoters holds the voters of the newest committed configuration the leader recorded:
	// member ids, sorted, comma-separated. KeyConfigIndex holds the log index that
	// configuration is in force at (decimal). Both are absent in an object written by an
	// older version, and both are present otherwise.
	KeyVoters      = "voters"
	KeyConfigIndex = "config-index"
)

// maxVotersLength bounds the value of KeyVoters: raft.MaxMembers ids and their commas.
const maxVotersLength = raft.MaxMembers * (raft.MaxIDLength + 1)

// MaxGeneration bounds the generation: a generation g starts its terms at TermBase(g), and
// terms stay below raft.MaxTerm.
const MaxGeneration = 1 << 20

// TermBase is the first term of generation g: every term of a later generation is above
// every term of an earlier one (a generation would need 2^32 elections to run into the
// next), so the term stays a fencing token across a recovery.
func TermBase(g int64) uint64 {
	if g < 1 {
		return 0
	}
	return uint64(g-1) << 32
}

// Record is the content of the bootstrap object.
type Record struct {
	// ClusterID is carried by every peer message of the cluster.
	ClusterID string
	// Generation counts bootstraps: 1 for the first, one more per recovery.
	Generation int64
	// Bootstrapper is the member id that started this generation as its only voter.
	Bootstrapper string
	// ResourceVersion is the object's version, the precondition of a recovery.
	ResourceVersion string
	// UID is the object's UID: a different UID is a re-created object (the application was
	// reinstalled), whatever its generation.
	UID string
	// ConfigIndex is the log index at which the recorded voters are the committed
	// configuration's (1 for the first configuration of a generation); 0 if the object records
	// no voters (it was written by an older version).
	ConfigIndex uint64
	// voters are the recorded voters, sorted and comma-separated (see Voters): a string keeps
	// Record comparable with ==.
	voters string
}

// Voters returns the recorded voters (sorted), or nil if the object records none.
func (r Record) Voters() []string {
	if r.voters == "" {
		return nil
	}
	return strings.Split(r.voters, ",")
}

// IsZero reports whether the record holds no cluster (an object the chart created empty).
func (r Record) IsZero() bool { return r.ClusterID == "" }

// DefaultName is the object's name for a selector: two applications in one namespace never
// share one.
func DefaultName(namespace, selector string) string {
	sum := sha256.Sum256([]byte(namespace + "\n" + selector))
	return "raft-elector-" + hex.EncodeToString(sum[:5])
}

// Config configures New.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	// Name is the ConfigMap's name (--bootstrap-object).
	Name string
	// Base prefixes every cluster id (it names the application: a hash of namespace and
	// selector).
	Base   string
	Logger hclog.Logger
	// BeforeClaim, if set, is called with the record this member is about to write (create,
	// fill or recover) that names it the bootstrapper; the write happens only if it returns
	// nil. The sidecar records the intent durably there, so that a crash right after the
	// write, before the member saved the cluster's first configuration, is told apart from a
	// member that lost its data dir (which must never bootstrap again).
	BeforeClaim func(Record) error
}

// Object is the bootstrap object of one cluster.
type Object struct {
	cfg Config
	log hclog.Logger

	mu      sync.Mutex
	latest  Record
	changed chan struct{}
}

// New checks cfg.
func New(cfg Config) (*Object, error) {
	if cfg.Client == nil {
		return nil, errors.New("bootstrap: no API client")
	}
	if errs := validation.IsDNS1123Subdomain(cfg.Name); len(errs) > 0 {
		return nil, fmt.Errorf("--bootstrap-object %q is not a ConfigMap name: %s", cfg.Name, strings.Join(errs, "; "))
	}
	if err := CheckBase(cfg.Base); err != nil {
		return nil, fmt.Errorf("cluster id base (--cluster-id) %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Object{cfg: cfg, log: cfg.Logger, changed: make(chan struct{})}, nil
}

// SetBeforeClaim sets Config.BeforeClaim; call it before Resolve or Recover.
func (o *Object) SetBeforeClaim(f func(Record) error) { o.cfg.BeforeClaim = f }

// Name returns the object's name.
func (o *Object) Name() string { return o.cfg.Name }

func (o *Object) newClusterID(gen int64) (string, error) {
	var b [6]byte
	if _, err := crand.Read(b[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s-g%d-%s", o.cfg.Base, gen, hex.EncodeToString(b[:])), nil
}

// ErrMalformed is wrapped by the error for an object whose data is not a valid record.
var ErrMalformed = errors.New("malformed bootstrap object")

// CheckBase checks a cluster id base: the ids handed out must pass the check every member
// makes when it reads the object.
func CheckBase(base string) error {
	if base == "" || len(base) > 64 || !printable(base) {
		return fmt.Errorf("%.70q must be 1 to 64 printable ASCII characters without spaces", base)
	}
	return nil
}

func printable(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c > '~' })
}

func validID(id string) error {
	if id == "" || len(id) > raft.MaxIDLength {
		return fmt.Errorf("member id %.40q is empty or longer than %d bytes", id, raft.MaxIDLength)
	}
	return nil
}

// validVoter checks a member id the object may record as a voter: a valid id that is
// printable and holds no comma (the separator of KeyVoters).
func validVoter(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	if !printable(id) || strings.Contains(id, ",") {
		return fmt.Errorf("member id %.40q holds a comma, a space or a character that is not printable ASCII", id)
	}
	return nil
}

// encodeVoters checks voters and returns them as KeyVoters holds them: sorted, each once,
// comma-separated.
func encodeVoters(voters []string) (string, error) {
	if len(voters) == 0 || len(voters) > raft.MaxMembers {
		return "", fmt.Errorf("bootstrap: %d voters to record, want 1 to %d", len(voters), raft.MaxMembers)
	}
	sorted := slices.Clone(voters)
	slices.Sort(sorted)
	for i, id := range sorted {
		if err := validVoter(id); err != nil {
			return "", fmt.Errorf("bootstrap: %w", err)
		}
		if i > 0 && sorted[i-1] == id {
			return "", fmt.Errorf("bootstrap: voter %.40q listed twice", id)
		}
	}
	return strings.Join(sorted, ","), nil
}

// parseVoters checks the recorded voters and their config index. Both absent is an object
// written by an older version: no recorded voters.
func parseVoters(cm *corev1.ConfigMap) (string, uint64, error) {
	raw, rawIndex := cm.Data[KeyVoters], cm.Data[KeyConfigIndex]
	if raw == "" && rawIndex == "" {
		return "", 0, nil
	}
	index, err := strconv.ParseUint(rawIndex, 10, 64)
	if err != nil || index < 1 {
		return "", 0, fmt.Errorf("%w %s/%s: %s %.40q is not a positive integer", ErrMalformed, cm.Namespace, cm.Name, KeyConfigIndex, rawIndex)
	}
	if raw == "" || len(raw) > maxVotersLength {
		return "", 0, fmt.Errorf("%w %s/%s: %s is empty or longer than %d bytes", ErrMalformed, cm.Namespace, cm.Name, KeyVoters, maxVotersLength)
	}
	ids := strings.Split(raw, ",")
	if len(ids) > raft.MaxMembers {
		return "", 0, fmt.Errorf("%w %s/%s: %s names %d members, the limit is %d", ErrMalformed, cm.Namespace, cm.Name, KeyVoters, len(ids), raft.MaxMembers)
	}
	for i, id := range ids {
		if err := validVoter(id); err != nil {
			return "", 0, fmt.Errorf("%w %s/%s: %s: %v", ErrMalformed, cm.Namespace, cm.Name, KeyVoters, err)
		}
		if i > 0 && ids[i-1] >= id {
			return "", 0, fmt.Errorf("%w %s/%s: %s are not sorted, or name a member twice", ErrMalformed, cm.Namespace, cm.Name, KeyVoters)
		}
	}
	return raw, index, nil
}

// parse reads and checks a ConfigMap. An object someone else wrote badly is an error that
// changes nothing: the member keeps what it has and says why.
func (o *Object) parse(cm *corev1.ConfigMap) (Record, error) {
	r := Record{ResourceVersion: cm.ResourceVersion, UID: string(cm.UID)}
	if cm.Data[KeyCluster] == "" && cm.Data[KeyGeneration] == "" && cm.Data[KeyBootstrapper] == "" &&
		cm.Data[KeyVoters] == "" && cm.Data[KeyConfigIndex] == "" {
		return r, nil // created empty (by the chart): the first member fills it
	}
	r.ClusterID, r.Bootstrapper = cm.Data[KeyCluster], cm.Data[KeyBootstrapper]
	gen, err := strconv.ParseInt(cm.Data[KeyGeneration], 10, 64)
	switch {
	case err != nil || gen < 1 || gen > MaxGeneration:
		return Record{}, fmt.Errorf("%w %s/%s: %s %q is not a positive integer", ErrMalformed, cm.Namespace, cm.Name, KeyGeneration, cm.Data[KeyGeneration])
	case r.ClusterID == "" || len(r.ClusterID) > raft.MaxIDLength || !printable(r.ClusterID):
		return Record{}, fmt.Errorf("%w %s/%s: %s %.40q is empty, too long or not printable", ErrMalformed, cm.Namespace, cm.Name, KeyCluster, r.ClusterID)
	case r.Bootstrapper == "" || len(r.Bootstrapper) > raft.MaxIDLength:
		return Record{}, fmt.Errorf("%w %s/%s: %s is empty or too long", ErrMalformed, cm.Namespace, cm.Name, KeyBootstrapper)
	}
	r.Generation = gen
	if r.voters, r.ConfigIndex, err = parseVoters(cm); err != nil {
		return Record{}, err
	}
	return r, nil
}

func (o *Object) data(r Record) map[string]string {
	d := map[string]string{
		KeyCluster:      r.ClusterID,
		KeyGeneration:   strconv.FormatInt(r.Generation, 10),
		KeyBootstrapper: r.Bootstrapper,
		KeyCreated:      time.Now().UTC().Format(time.RFC3339),
	}
	if r.ConfigIndex > 0 {
		d[KeyVoters], d[KeyConfigIndex] = r.voters, strconv.FormatUint(r.ConfigIndex, 10)
	}
	return d
}

// Get reads the object. It returns an apierrors NotFound error if there is none.
func (o *Object) Get(ctx context.Context) (Record, error) {
	cm, err := o.cfg.Client.CoreV1().ConfigMaps(o.cfg.Namespace).Get(ctx, o.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return Record{}, err
	}
	r, err := o.parse(cm)
	if err == nil {
		o.observe(r)
	}
	return r, err
}

// Resolve returns the cluster this member belongs to. If no cluster exists yet it tries to
// start one as self; won reports whether it did (and so must bootstrap with itself as the
// only voter). Losing the race is not an error: the winner's record is returned.
func (o *Object) Resolve(ctx context.Context, self string) (rec Record, won bool, err error) {
	if err := validID(self); err != nil {
		return Record{}, false, err
	}
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return Record{}, false, fmt.Errorf("bootstrap object %s/%s keeps changing under us", o.cfg.Namespace, o.cfg.Name)
		}
		rec, err := o.Get(ctx)
		switch {
		case apierrors.IsNotFound(err):
			next, err := o.first(self)
			if err != nil {
				return Record{}, false, err
			}
			cm := &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: o.cfg.Name, Namespace: o.cfg.Namespace,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "raft-elector"}},
				Data: o.data(next),
			}
			created, err := o.cfg.Client.CoreV1().ConfigMaps(o.cfg.Namespace).Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue // someone else won: read theirs
			}
			if err != nil {
				return Record{}, false, fmt.Errorf("create bootstrap object %s/%s: %w", o.cfg.Namespace, o.cfg.Name, forbidden(err))
			}
			next.ResourceVersion, next.UID = created.ResourceVersion, string(created.UID)
			o.observe(next)
			o.log.Info("bootstrapped a new cluster", "cluster", next.ClusterID, "object", o.cfg.Name)
			return next, true, nil
		case errors.Is(err, ErrMalformed):
			return Record{}, false, err // parse names the object and the key
		case err != nil:
			return Record{}, false, fmt.Errorf("read bootstrap object %s/%s: %w", o.cfg.Namespace, o.cfg.Name, forbidden(err))
		case rec.IsZero():
			next, err := o.first(self)
			if err != nil {
				return Record{}, false, err
			}
			won, next, err := o.swap(ctx, rec.ResourceVersion, next)
			if err != nil {
				return Record{}, false, err
			}
			if !won {
				continue
			}
			o.log.Info("bootstrapped a new cluster", "cluster", next.ClusterID, "object", o.cfg.Name)
			return next, true, nil
		default:
			return rec, false, nil
		}
	}
}

func (o *Object) first(self string) (Record, error) {
	if err := validVoter(self); err != nil {
		return Record{}, err
	}
	id, err := o.newClusterID(1)
	if err != nil {
		return Record{}, err
	}
	// The bootstrapper starts the cluster as its only voter, committed at index 1.
	r := Record{ClusterID: id, Generation: 1, Bootstrapper: self, ConfigIndex: 1, voters: self}
	return r, o.beforeClaim(r)
}

func (o *Object) beforeClaim(r Record) error {
	if o.cfg.BeforeClaim == nil {
		return nil
	}
	if err := o.cfg.BeforeClaim(r); err != nil {
		return fmt.Errorf("bootstrap: record the claim of %s: %w", r.ClusterID, err)
	}
	return nil
}

// Recover replaces the cluster prev with a new generation bootstrapped by self, if the object
// still holds prev (compare-and-swap on its resourceVersion). won is false, with the current
// record, if another member recovered first or the object changed.
func (o *Object) Recover(ctx context.Context, prev Record, self string) (Record, bool, error) {
	if err := validVoter(self); err != nil {
		return Record{}, false, err
	}
	if prev.ResourceVersion == "" || prev.Generation < 1 {
		return Record{}, false, errors.New("bootstrap: recovery needs the record read from the object (generation and resourceVersion)")
	}
	id, err := o.newClusterID(prev.Generation + 1)
	if err != nil {
		return Record{}, false, err
	}
	next := Record{ClusterID: id, Generation: prev.Generation + 1, Bootstrapper: self, ConfigIndex: 1, voters: self}
	if err := o.beforeClaim(next); err != nil {
		return Record{}, false, err
	}
	won, rec, err := o.swap(ctx, prev.ResourceVersion, next)
	if err != nil || !won {
		if err == nil {
			rec, err = o.Get(ctx)
		}
		return rec, false, err
	}
	o.log.Warn("recovered: started a new cluster generation", "cluster", rec.ClusterID, "previous", prev.ClusterID, "generation", rec.Generation)
	return rec, true, nil
}

// swap writes next if the object is still at resourceVersion rv. It keeps the object's
// metadata (a chart's labels, annotations and owner), replacing only the data.
func (o *Object) swap(ctx context.Context, rv string, next Record) (bool, Record, error) {
	if rv == "" {
		return false, Record{}, errors.New("bootstrap: compare-and-swap without a resourceVersion")
	}
	cur, err := o.cfg.Client.CoreV1().ConfigMaps(o.cfg.Namespace).Get(ctx, o.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, Record{}, nil
	}
	if err != nil {
		return false, Record{}, fmt.Errorf("read bootstrap object %s/%s: %w", o.cfg.Namespace, o.cfg.Name, forbidden(err))
	}
	if cur.ResourceVersion != rv {
		return false, Record{}, nil
	}
	cm := cur.DeepCopy()
	cm.Data = o.data(next)
	updated, err := o.cfg.Client.CoreV1().ConfigMaps(o.cfg.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return false, Record{}, nil
	}
	if err != nil {
		return false, Record{}, fmt.Errorf("update bootstrap object %s/%s: %w", o.cfg.Namespace, o.cfg.Name, forbidden(err))
	}
	next.ResourceVersion, next.UID = updated.ResourceVersion, string(updated.UID)
	o.observe(next)
	return true, next, nil
}

// RecordVoters records voters as the committed configuration of cluster clusterID at log
// index index; the leader calls it after a configuration change commits. It writes (an update
// conditional on the resourceVersion it read, retried on a conflict) only if the object still
// names that cluster, records an older index, and other voters: a stale leader never
// overwrites a newer record, and another cluster's object is left alone. wrote reports whether
// it wrote.
func (o *Object) RecordVoters(ctx context.Context, clusterID string, index uint64, voters []string) (wrote bool, err error) {
	enc, err := encodeVoters(voters)
	if err != nil {
		return false, err
	}
	if index < 1 || clusterID == "" {
		return false, errors.New("bootstrap: record voters without a cluster id or config index")
	}
	cms := o.cfg.Client.CoreV1().ConfigMaps(o.cfg.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := cms.Get(ctx, o.cfg.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil // deleted: a member will create the next one
		}
		if err != nil {
			return false, fmt.Errorf("read bootstrap object %s/%s: %w", o.cfg.Namespace, o.cfg.Name, forbidden(err))
		}
		rec, err := o.parse(cur)
		if err != nil {
			return false, err
		}
		o.observe(rec)
		if rec.ClusterID != clusterID || rec.ConfigIndex >= index || rec.voters == enc {
			return false, nil
		}
		cm := cur.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[KeyVoters], cm.Data[KeyConfigIndex] = enc, strconv.FormatUint(index, 10)
		updated, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue // written in between: read it again
		}
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("update bootstrap object %s/%s: %w", o.cfg.Namespace, o.cfg.Name, forbidden(err))
		}
		if rec, err := o.parse(updated); err == nil {
			o.observe(rec)
		}
		return true, nil
	}
	return false, fmt.Errorf("bootstrap object %s/%s keeps changing under us", o.cfg.Namespace, o.cfg.Name)
}

func forbidden(err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w (the service account needs get, list, watch, create and update on configmaps: see deploy/rbac.yaml)", err)
	}
	return err
}

// Latest returns the newest valid record seen (by Get, Resolve, Recover, RecordVoters or Run).
// Within one cluster its recorded voters only move to a higher config index.
func (o *Object) Latest() Record {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest
}

// Changed returns a channel closed when Latest names another cluster (a refresh of the same
// cluster's record, its resourceVersion or recorded voters, updates Latest without closing it).
func (o *Object) Changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

func (o *Object) observe(r Record) {
	o.mu.Lock()
	defer o.mu.Unlock()
	recreated := r.UID != "" && o.latest.UID != "" && r.UID != o.latest.UID
	if r.IsZero() || r == o.latest || r.Generation < o.latest.Generation && !recreated {
		// An older generation of the same object is a stale read; of a re-created object
		// (the application was reinstalled) it is the new truth.
		return
	}
	if r.Generation == o.latest.Generation && r.ClusterID == o.latest.ClusterID {
		o.latest.ResourceVersion = r.ResourceVersion
		if r.ConfigIndex > o.latest.ConfigIndex { // never back to an older record (a stale read)
			o.latest.ConfigIndex, o.latest.voters = r.ConfigIndex, r.voters
		}
		return
	}
	o.latest = r
	close(o.changed)
	o.changed = make(chan struct{})
}

// Run watches the object (one watch on one name) until ctx ends, so that a member learns of
// a recovery without polling.
func (o *Object) Run(ctx context.Context) error {
	cms := o.cfg.Client.CoreV1().ConfigMaps(o.cfg.Namespace)
	byName := fields.OneTermEqualSelector("metadata.name", o.cfg.Name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = byName
			return cms.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = byName
			return cms.Watch(ctx, opts)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(lw, o.cfg.Client),
		&corev1.ConfigMap{},
		cache.SharedIndexInformerOptions{ObjectDescription: "configmap " + o.cfg.Namespace + "/" + o.cfg.Name},
	)
	handle := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Name != o.cfg.Name {
			return
		}
		r, err := o.parse(cm)
		if err != nil {
			o.log.Warn("ignoring a malformed bootstrap object", "error", err)
			return
		}
		o.observe(r)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	}); err != nil {
		return err
	}
	inf.Run(ctx.Done())
	return nil
}
