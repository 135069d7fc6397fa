// Package metrics exposes a member's state and its peer traffic to Prometheus under the
// raft_elector_ prefix, on a private registry with the Go and process collectors. It also keeps
// client-go's leader_election_master_status{name} so dashboards and alerts built for Lease-based
// electors keep working.
//
// It is a node.Observer and a transport.Observer: both interfaces are called from hot paths and
// never block here (counters and gauges only).
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/pkg/transport"
)

const namespace = "raft_elector"

// Metrics holds a member's collectors.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	isLeader      prometheus.GaugeFunc
	term          prometheus.Gauge
	state         *prometheus.GaugeVec
	leaderChanges prometheus.Counter
	elections     *prometheus.CounterVec
	peers         *prometheus.GaugeVec
	rtt           prometheus.Histogram
	rpcs          *prometheus.CounterVec
	served        *prometheus.CounterVec
	drops         *prometheus.CounterVec

	mu   sync.Mutex
	last node.Status
	seen bool
	name string
	// leader and leaderTerm are the last leadership this member knew (a leader and its term):
	// leader_changes_total counts new ones, not the gaps in between.
	leader     string
	leaderTerm uint64
}

// New registers a member's metrics. name is the election's name for
// leader_election_master_status (the cluster id).
func New(name string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), now: time.Now, name: name}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.isLeader = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "is_leader",
		Help: "1 while this member holds the leader lease it reports to the application, else 0."},
		func() float64 { return b2f(m.snapshot().HoldsLease(m.now())) })
	m.term = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "term",
		Help: "Current Raft term: the fencing token. Never decreases."})
	m.state = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "state",
		Help: "1 for the member's current role, 0 for the others."}, []string{"state"})
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "leader_changes_total",
		Help: "Leaderships this member learned of: a leader it did not know before, or the same member leading in a newer term. A failover counts once on every member that sees it."})
	m.elections = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "elections_total",
		Help: "Elections this member ran, by result: won, lost (stepped down without winning), prevote_failed."}, []string{"result"})
	m.peers = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "peers",
		Help: "Members of the configuration by role (voter, learner); for a leader also reachable voters (reachable)."}, []string{"role"})
	m.rtt = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "heartbeat_rtt_seconds",
		Help:    "Round-trip time of heartbeats (append-entries) this member sent and had answered.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}})
	m.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rpc_requests_total",
		Help: "Peer RPCs this member sent, by rpc and HTTP status code of the reply (code 0: no reply arrived)."}, []string{"rpc", "code"})
	m.served = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rpc_served_total",
		Help: "Peer RPCs this member answered, by rpc and HTTP status code."}, []string{"rpc", "code"})
	m.drops = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "messages_dropped_total",
		Help: "Peer messages not sent, by reason (queue-full, no-address, ...)."}, []string{"reason"})
	leaseRemaining := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "lease_remaining_seconds",
		Help: "Time left on the lease this member reports to the application; 0 when it holds none."},
		func() float64 {
			st := m.snapshot()
			if now := m.now(); st.HoldsLease(now) {
				return st.LeaseExpiresAt.Sub(now).Seconds()
			}
			return 0
		})
	m.reg.MustRegister(m.isLeader, m.term, m.state, m.leaderChanges, m.elections, m.peers, m.rtt, m.rpcs,
		m.served, m.drops, leaseRemaining, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "leader_election_master_status", Help: "client-go compatible: 1 while this member leads the named election, else 0.",
			ConstLabels: prometheus.Labels{"name": name}}, func() float64 { return b2f(m.snapshot().HoldsLease(m.now())) }))
	for _, s := range []string{"leader", "follower", "candidate", "learner"} {
		m.state.WithLabelValues(s)
	}
	for _, r := range []string{"won", "lost", "prevote_failed"} {
		m.elections.WithLabelValues(r)
	}
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *Metrics) snapshot() node.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Registry returns the private registry (for tests and extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Observe implements node.Observer.
func (m *Metrics) Observe(st node.Status) {
	m.mu.Lock()
	old, seen := m.last, m.seen
	m.last, m.seen = st, true
	// A leadership is a leader and its term. Losing sight of the leader for a while (an
	// election timeout, a pre-vote) and hearing from it again in the same term is no change;
	// so a failover counts once, not once for the loss and once for the successor.
	newLeadership := st.Leader != "" && (st.Leader != m.leader || st.Term != m.leaderTerm)
	if st.Leader != "" {
		m.leader, m.leaderTerm = st.Leader, st.Term
	}
	m.mu.Unlock()

	m.term.Set(float64(st.Term))
	for _, s := range []string{"leader", "follower", "candidate", "learner"} {
		m.state.WithLabelValues(s).Set(b2f(s == st.State.Role()))
	}
	m.peers.WithLabelValues("voter").Set(float64(st.Voters))
	m.peers.WithLabelValues("learner").Set(float64(len(st.Config.Learners)))
	if st.State == raft.StateLeader {
		m.peers.WithLabelValues("reachable").Set(float64(len(st.Reachable) + 1))
	} else {
		m.peers.WithLabelValues("reachable").Set(0)
	}
	if !seen {
		return
	}
	if newLeadership {
		m.leaderChanges.Inc()
	}
	switch {
	case st.State == raft.StateLeader && old.State != raft.StateLeader:
		// Several steps may pass between two observations (a single member goes from
		// follower to leader in one tick), so judge by the outcome.
		m.elections.WithLabelValues("won").Inc()
	case old.State == raft.StateCandidate && (st.State != raft.StateCandidate || st.Term > old.Term):
		m.elections.WithLabelValues("lost").Inc()
	case old.State == raft.StatePreCandidate && st.State == raft.StateFollower:
		m.elections.WithLabelValues("prevote_failed").Inc()
	}
}

// ObserveRPC implements transport.Observer.
func (m *Metrics) ObserveRPC(rpc string, code int, rtt time.Duration) {
	m.rpcs.WithLabelValues(rpc, strconv.Itoa(code)).Inc()
	if rpc == string(raft.MsgAppend) && code == http.StatusOK {
		m.rtt.Observe(rtt.Seconds())
	}
}

// ObserveServed implements transport.Observer.
func (m *Metrics) ObserveServed(rpc string, code int) {
	m.served.WithLabelValues(rpc, strconv.Itoa(code)).Inc()
}

// ObserveDrop implements transport.Observer.
func (m *Metrics) ObserveDrop(_ string, reason transport.DropReason) {
	m.drops.WithLabelValues(string(reason)).Inc()
}

var (
	_ node.Observer      = (*Metrics)(nil)
	_ transport.Observer = (*Metrics)(nil)
)
