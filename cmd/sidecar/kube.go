package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/raft-elector/raft-elector/internal/klogroute"
	"github.com/raft-elector/raft-elector/pkg/bootstrap"
	"github.com/raft-elector/raft-elector/pkg/discovery"
	"github.com/raft-elector/raft-elector/pkg/membership"
	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/podlabel"
	"github.com/raft-elector/raft-elector/pkg/raft"
)

// kubeParts are the Kubernetes pieces of a member: discovery, the pod labeler and the
// bootstrap object.
type kubeParts struct {
	disc    *discovery.Kubernetes
	labeler *podlabel.Labeler
	boot    *bootstrap.Object
	// cluster is the bootstrap record this incarnation of the member runs under.
	cluster bootstrap.Record

	client    kubernetes.Interface
	namespace string
	selector  string
	labelKey  string
	leaderVal string

	// saidNoVoters is set once maybeRecover has logged that it cannot recover for want of
	// voters (a member that never joined, and an object without recorded voters).
	saidNoVoters bool
}

// restConfig loads --kubeconfig, or the in-cluster service account.
func restConfig(c *config) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if c.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load --kubeconfig %s: %w", c.Kubeconfig, err)
		}
	} else {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w (outside a cluster, pass --kubeconfig)", err)
		}
	}
	rc.UserAgent = "raft-elector/" + version
	// Client-side rate limits: discovery is one watch and labels change only with the leader.
	rc.QPS, rc.Burst = 5, 10
	// No rc.Timeout: client-go would put it on the pod watch too, ending it (and opening a
	// new one) every few seconds. The labeler bounds each of its calls itself.
	return rc, nil
}

func newKubeParts(c *config, log hclog.Logger) (*kubeParts, error) {
	// client-go logs through klog; send it to our logger so every line has one format and
	// is written once.
	klogroute.Route(log.Named("client-go"))
	rc, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	disc, err := discovery.NewKubernetes(discovery.KubernetesConfig{
		Client:    client,
		Namespace: c.Namespace,
		Selector:  c.Selector,
		PeerPort:  c.PeerPort,
		Logger:    log.Named("discovery"),
	})
	if err != nil {
		return nil, err
	}
	lab, err := podlabel.New(podlabel.Config{
		Client:        client,
		Namespace:     c.Namespace,
		PodName:       c.PodName,
		Key:           c.LabelKey,
		LeaderValue:   c.LeaderValue,
		FollowerValue: c.FollowerValue,
		Pods:          disc.Pods,
		Logger:        log.Named("labels"),
	})
	if err != nil {
		return nil, err
	}
	boot, err := bootstrap.New(bootstrap.Config{
		Client:    client,
		Namespace: c.Namespace,
		Name:      c.BootstrapObject,
		Base:      c.ClusterID,
		Logger:    log.Named("bootstrap"),
	})
	if err != nil {
		return nil, err
	}
	return &kubeParts{disc: disc, labeler: lab, boot: boot, client: client, namespace: c.Namespace,
		selector: c.Selector, labelKey: c.LabelKey, leaderVal: c.LeaderValue}, nil
}

// resolveCluster finds the cluster this member belongs to, and whether it must bootstrap it.
// A member whose data dir holds state carries on in its stored cluster at once, without the
// API server (leadership survives an API-server outage, restarts included); the watch of the
// bootstrap object restarts it if the object names another cluster. A member without state
// asks the bootstrap object, waiting for the API server if need be.
//
// Before it claims the object (creating it, filling it, or winning a recovery) a member records
// that intent in its data dir; a member that finds the object naming it the bootstrapper, no
// state, and that intent, crashed between the claim and saving the first configuration, and
// bootstraps. A member that lost its data dir (no intent either) never bootstraps again, even if
// the object names it: its cluster may live on without it.
func (k *kubeParts) resolveCluster(ctx context.Context, storage *node.Storage, self, replacedBy string, log hclog.Logger) (won bool, err error) {
	stored, err := storage.StoredCluster()
	if err != nil {
		return false, err
	}
	k.boot.SetBeforeClaim(func(r bootstrap.Record) error { return storage.SetIntent(r.ClusterID) })
	if stored != "" && replacedBy == "" {
		k.cluster = bootstrap.Record{ClusterID: stored}
		storage.SetCluster(stored)
		return false, nil
	}
	backoff := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		rec, won, err := k.boot.Resolve(ctx, self)
		if err == nil {
			if stored != "" && stored != rec.ClusterID {
				log.Warn("discarding the state of a cluster the bootstrap object no longer names", "stored_cluster", stored, "cluster", rec.ClusterID)
				if err := storage.Discard(stored); err != nil {
					return false, err
				}
				stored = ""
			}
			intent, err := storage.Intent()
			if err != nil {
				return false, err
			}
			if !won && rec.Bootstrapper == self && stored == "" && intent == rec.ClusterID {
				log.Warn("this member claimed the bootstrap object but stopped before saving the cluster's first configuration; bootstrapping it now", "cluster", rec.ClusterID)
				won = true
			}
			if !won && intent != "" {
				if err := storage.ClearIntent(); err != nil { // a claim that lost
					return false, err
				}
			}
			k.cluster = rec
			storage.SetCluster(rec.ClusterID)
			return won, nil
		}
		if stored != "" {
			log.Warn("cannot read the bootstrap object; carrying on in the stored cluster", "cluster", stored, "error", err)
			k.cluster = bootstrap.Record{ClusterID: stored}
			storage.SetCluster(stored)
			return false, nil
		}
		if attempt == 0 {
			log.Warn("cannot read the bootstrap object; waiting for the API server to join a cluster", "error", err)
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("waiting for the bootstrap object: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// run runs discovery and the labeler, and feeds every change of the pods into the member's
// configuration and the transport's address book. It returns when ctx ends.
//
// done is closed once run and everything it started have returned (after ctx ends), so that a
// member restarting in-process never overlaps the old incarnation's watches and label patches.
func (k *kubeParts) run(ctx context.Context, m *member, done chan<- struct{}) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		close(done)
	}()
	for _, part := range []struct {
		what string
		run  func(context.Context) error
	}{{"kubernetes discovery", k.disc.Run}, {"pod labeler", k.labeler.Run}, {"bootstrap object watch", k.boot.Run},
		{"voter recording", func(ctx context.Context) error { k.recordVoters(ctx, m); return nil }}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := part.run(ctx); err != nil && ctx.Err() == nil {
				m.log.Error(part.what+" stopped", "error", err)
			}
		}()
	}
	if err := k.disc.WaitForSync(ctx); err != nil {
		return
	}
	check := time.NewTicker(m.cfg.ElectionTimeout / 2)
	defer check.Stop()
	lastLeader := time.Now()
	for {
		changed, bootChanged := k.disc.Changed(), k.boot.Changed()
		members := k.disc.Members()
		k.labeler.PodsChanged()
		// Terminating pods keep their addresses: they may still be voters until removed.
		m.tr.SetPeers(discovery.AddrBook(k.disc.Addressable(), m.cfg.ID))
		if rec := k.boot.Latest(); rec.ClusterID != "" && rec.ClusterID != k.cluster.ClusterID {
			// Seen before this loop started waiting on the channel.
			m.replace(rec, "the bootstrap object names another cluster")
			return
		}
		pods := make([]membership.Pod, len(members))
		for i, mb := range members {
			pods[i] = membership.Pod{ID: mb.ID, Node: mb.Node, Zone: mb.Zone}
		}
		if !k.disc.Healthy() {
			pods = nil // a stale view: leave the configuration alone until the watch works
		}
		if err := m.node.SetPods(ctx, pods); err != nil {
			return
		}
		select {
		case <-changed:
		case <-bootChanged:
			if rec := k.boot.Latest(); rec.ClusterID != k.cluster.ClusterID {
				// Recovered, or the application was reinstalled: this cluster is no more.
				m.replace(rec, "the bootstrap object names another cluster")
				return
			}
		case <-check.C:
			if k.maybeRecover(ctx, m, &lastLeader) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// voterRecordingBackoff bounds the wait before the leader tries again to record its voters
// after a failed write.
const voterRecordingBackoff = 30 * time.Second

// recordVoters keeps the bootstrap object's record of the voters up to date while this member
// leads: when its configuration, committed, names other voters than the object records, at a
// higher index, it writes them (RecordVoters: a compare-and-swap that never overwrites a
// newer record). That is one write per configuration change, never one in the steady state
// nor per leader change. It runs beside the loop of run, so a slow API never delays it, and
// makes one write at a time, backing off after a failure. It looks once per election timeout
// rather than on every status change (a leader's status changes every heartbeat round): the
// record only matters after --recover-after (10 election timeouts) without a leader. It
// returns when ctx ends.
func (k *kubeParts) recordVoters(ctx context.Context, m *member) {
	tick := time.NewTicker(m.cfg.ElectionTimeout)
	defer tick.Stop()
	var (
		// tried is the config index and the object's resourceVersion of the last attempt that
		// wrote nothing: nothing to do again until one of them moves.
		tried struct {
			index uint64
			rv    string
		}
		backoff time.Duration
		retryAt time.Time
	)
	for {
		st, latest := m.node.Status(), k.boot.Latest()
		if time.Now().After(retryAt) && votersToRecord(st, latest, k.cluster.ClusterID) &&
			(tried.index != st.ConfigIndex || tried.rv != latest.ResourceVersion) {
			names := podNames(st.Config.Voters)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			wrote, err := k.boot.RecordVoters(cctx, k.cluster.ClusterID, st.ConfigIndex, st.Config.Voters)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				backoff = min(max(2*backoff, m.cfg.ElectionTimeout), voterRecordingBackoff)
				retryAt = time.Now().Add(backoff)
				m.log.Warn("cannot record the voters in the bootstrap object; will retry", "voters", names,
					"index", st.ConfigIndex, "retry_in", backoff, "error", err)
			case wrote:
				backoff, retryAt = 0, time.Time{}
				m.log.Info("recorded the voters in the bootstrap object", "voters", names, "index", st.ConfigIndex)
			default:
				backoff, retryAt = 0, time.Time{}
				tried.index, tried.rv = st.ConfigIndex, k.boot.Latest().ResourceVersion
				m.log.Debug("the bootstrap object needs no new record of the voters", "voters", names, "index", st.ConfigIndex)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// podNames returns the pod names of member ids, for the log.
func podNames(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = discovery.NameOf(id)
	}
	return out
}

// votersToRecord reports whether a member with status st should record its voters in the
// bootstrap object, whose newest known record is latest: it leads cluster, its configuration
// is committed, and the object records other voters at a lower index.
func votersToRecord(st node.Status, latest bootstrap.Record, cluster string) bool {
	return st.State == raft.StateLeader && len(st.Config.Voters) > 0 && st.ConfigIndex <= st.Commit &&
		latest.ClusterID == cluster && latest.ConfigIndex < st.ConfigIndex && !slices.Equal(latest.Voters(), st.Config.Voters)
}

// maybeRecover starts a new cluster generation when the member's configuration can no longer
// elect a leader because a majority of its voters' pods are gone from the API (deleted or
// re-created under a new UID: a terminating pod still counts, its sidecar may be running), and
// no leader was seen for --recover-after. A member that never joined (no configuration) goes by
// the voters the leader recorded in the bootstrap object instead: that is how pods that all
// started without state, after every pod of the application was replaced, find that the cluster
// the object names is gone. It decides on a fresh, consistent list of the pods, never on the
// watch cache, and not at all while the watch fails; and it backs off if any live pod this
// member's configuration does not know carries the leader label: then a newer configuration,
// which this member missed, has a leader (for a member without a configuration, any live pod
// labelled leader). See docs/membership.md for why this cannot produce two leaders.
func (k *kubeParts) maybeRecover(ctx context.Context, m *member, lastLeader *time.Time) bool {
	st := m.node.Status()
	now := time.Now()
	if st.Leader != "" {
		*lastLeader = now
		return false
	}
	if now.Sub(*lastLeader) < m.cfg.RecoverAfter || !k.disc.Healthy() {
		return false
	}
	prev := k.boot.Latest()
	if prev.ClusterID != k.cluster.ClusterID || prev.ResourceVersion == "" {
		return false // not read yet, or already replaced (the watch restarts this member)
	}
	voters, from := st.Config.Voters, "configuration"
	if len(voters) == 0 {
		voters, from = prev.Voters(), "bootstrap object"
	}
	if len(voters) == 0 {
		if !k.saidNoVoters {
			k.saidNoVoters = true
			m.log.Warn("no leader seen, and this member never joined its cluster; the bootstrap object records no voters "+
				"(an older version wrote it), so this member cannot tell whether that cluster is gone and keeps waiting. "+
				"If every pod of the application was replaced, scale it to zero, delete the bootstrap ConfigMap, and scale it up again",
				"object", k.namespace+"/"+k.boot.Name(), "cluster", prev.ClusterID, "without_leader_for", now.Sub(*lastLeader).Round(time.Millisecond))
		}
		return false
	}
	// The watch cache first: while it holds a majority of the voters' pods, wait without asking
	// the API server (a member that is not added, say, would otherwise list the pods twice per
	// election timeout). A stale cache can only make the member wait longer.
	cached := map[string]bool{}
	for _, pod := range k.disc.Pods() {
		cached[discovery.PodID(pod.Name, string(pod.UID))] = true
	}
	if majorityExists(voters, cached) {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := k.client.CoreV1().Pods(k.namespace).List(lctx, metav1.ListOptions{LabelSelector: k.selector})
	if err != nil {
		m.log.Warn("recovery: cannot list the pods; will retry", "error", err)
		return false
	}
	known := map[string]bool{}
	for _, id := range st.Config.Voters {
		known[id] = true
	}
	for _, id := range st.Config.Learners {
		known[id] = true
	}
	exists := map[string]bool{}
	for i := range list.Items {
		pod := &list.Items[i]
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		id := discovery.PodID(pod.Name, string(pod.UID))
		exists[id] = true
		if !known[id] && pod.DeletionTimestamp == nil && pod.Labels[k.labelKey] == k.leaderVal {
			m.log.Info("recovery: a pod this member's configuration does not know is labelled leader; waiting", "pod", pod.Name)
			return false
		}
	}
	if !exists[m.cfg.ID] {
		return false // this member is leaving itself
	}
	if majorityExists(voters, exists) {
		return false // a majority can still elect a leader: wait for it
	}
	n := 0
	for _, v := range voters {
		if exists[v] {
			n++
		}
	}
	m.log.Warn("a majority of the voters' pods are gone and no leader was seen; starting a new cluster generation",
		"voters", voters, "voters_from", from, "voters_with_pods", n, "without_leader_for", now.Sub(*lastLeader).Round(time.Millisecond))
	rec, won, err := k.boot.Recover(lctx, prev, m.cfg.ID)
	switch {
	case err != nil:
		m.log.Error("recovery failed; will retry", "error", err)
		return false
	case !won:
		m.log.Info("another member recovered first", "cluster", rec.ClusterID)
	}
	if rec.ClusterID != "" && rec.ClusterID != k.cluster.ClusterID {
		m.replace(rec, "recovery")
		return true
	}
	return false
}

// majorityExists reports whether a majority of voters have a pod in exists.
func majorityExists(voters []string, exists map[string]bool) bool {
	n := 0
	for _, v := range voters {
		if exists[v] {
			n++
		}
	}
	return n >= len(voters)/2+1
}

var _ node.Observer = (*podlabel.Labeler)(nil)
