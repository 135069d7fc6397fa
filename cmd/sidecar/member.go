package main

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/bootstrap"
	"github.com/raft-elector/raft-elector/pkg/discovery"
	"github.com/raft-elector/raft-elector/pkg/localapi"
	"github.com/raft-elector/raft-elector/pkg/metrics"
	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/pkg/transport"
)

// member is one running raft-elector member: its node, transport and three HTTP servers.
type member struct {
	cfg     *config
	log     hclog.Logger
	storage *node.Storage
	node    *node.Node
	store   *localapi.Store
	metrics *metrics.Metrics
	tr      *transport.HTTP
	servers []*http.Server
	cancel  context.CancelFunc
	runErr  chan error
	// replaced receives the reason once the member's cluster was replaced by a newer
	// generation (a recovery): the member must restart to join it.
	replaced chan bootstrap.Record
	// kubeDone is closed when the Kubernetes parts have stopped (nil in static mode).
	kubeDone chan struct{}
	// keysDone is closed when the key file's reload loop has stopped (nil without
	// --auth-secret-file).
	keysDone chan struct{}
}

// replace reports that the member's cluster was replaced; the caller restarts it.
func (m *member) replace(rec bootstrap.Record, why string) {
	m.log.Warn("this member's cluster was replaced; restarting to join the new one", "cluster", rec.ClusterID, "generation", rec.Generation, "reason", why)
	select {
	case m.replaced <- rec:
	default:
	}
}

// startMember opens the data dir, loads the durable state, binds the three listeners and
// starts the member. Any failure is returned before anything runs.
func startMember(ctx context.Context, c *config, log hclog.Logger, observers ...node.Observer) (_ *member, err error) {
	var kube *kubeParts
	if c.Discovery == "kubernetes" {
		if kube, err = newKubeParts(c, log); err != nil {
			return nil, err
		}
		observers = append(observers, kube.labeler)
	}
	storage, err := node.OpenStorage(c.DataDir, c.ClusterID, c.ID)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			storage.Close()
		}
	}()
	m := &member{cfg: c, log: log, storage: storage, runErr: make(chan error, 1), replaced: make(chan bootstrap.Record, 1)}
	cluster, voters := c.ClusterID, discovery.IDs(c.Peers)
	prevStore := c.continueFrom
	var initialTerm uint64
	if kube != nil {
		// The cluster id comes from the bootstrap object; only its winner bootstraps. While
		// the member waits for it, /healthz says it is alive and /readyz that it is not ready.
		// The term it reports meanwhile is the one on disk: an application that read term
		// 55 before a restart must not read 0 after it.
		c.termFloor = max(c.termFloor, storage.StoredTerm())
		waiting, stopWaiting, err := serveWhileWaiting(c, log)
		if err != nil {
			return nil, err
		}
		won, err := kube.resolveCluster(ctx, storage, c.ID, c.replacedBy, log)
		stopWaiting()
		prevStore = waiting
		if err != nil {
			return nil, err
		}
		cluster, voters = kube.cluster.ClusterID, nil
		initialTerm = c.termFloor
		if won {
			voters = []string{c.ID}
			initialTerm = max(initialTerm, bootstrap.TermBase(kube.cluster.Generation))
		}
	}
	var store *localapi.Store
	mx := metrics.New(cluster)
	obs := append([]node.Observer{node.ObserverFunc(func(s node.Status) { store.Observe(s) }), mx}, observers...)
	n, err := node.New(node.Config{
		ID:                c.ID,
		Cluster:           cluster,
		Voters:            voters,
		MaxVoters:         c.MaxVoters,
		InitialTerm:       initialTerm,
		HeartbeatInterval: c.HeartbeatInterval,
		ElectionTimeout:   c.ElectionTimeout,
		ReportedLease:     c.ReportedLease,
		Storage:           storage,
		Logger:            log.Named("raft"),
		Observers:         obs,
	})
	if err != nil {
		return nil, err
	}
	if kube != nil {
		// node.New saved the first configuration of a cluster this member bootstraps.
		if err := storage.ClearIntent(); err != nil {
			return nil, err
		}
	}
	store = localapi.NewStore(n.Status())
	if kube != nil {
		store.WithNames(discovery.NameOf)
	}
	if prevStore != nil {
		store.ContinueFrom(prevStore)
	}
	m.node, m.store, m.metrics = n, store, mx
	mx.Observe(n.Status())
	var keys transport.KeySource // a nil *KeyFile must not become a non-nil interface
	if c.AuthKeys != nil {
		keys = c.AuthKeys
	}
	tr, err := transport.NewHTTP(transport.HTTPConfig{
		ID:             c.ID,
		Handler:        n,
		RPCTimeout:     rpcTimeout(c),
		Logger:         log.Named("transport"),
		Observer:       mx,
		Keys:           keys,
		MaxClockSkew:   c.AuthMaxSkew,
		AcceptUnsigned: c.AuthAcceptUnsigned,
	})
	if err != nil {
		return nil, err
	}
	m.tr = tr
	if kube == nil {
		tr.SetPeers(discovery.AddrBook(c.Peers, c.ID))
	}

	// Every server bounds its timeouts, header size and open connections (docs/security.md,
	// "Threats from the network"): the peer port's are the transport's, the others localapi's.
	handlers := []struct {
		name, addr string
		srv        *http.Server
		serve      func(*http.Server, net.Listener) error
	}{
		{"peer", c.PeerAddr, tr.NewServer(c.PeerAddr), tr.Serve},
		{"local", c.LocalAddr, localapi.NewLocalServer(localapi.Handler(store), transport.ServerErrorLog(log.Named("local-http"))),
			limitedServe(localapi.MaxLocalConns, log.Named("local-http"))},
		{"ops", c.OpsAddr, localapi.NewOpsServer(localapi.OpsHandler(n, mx.Handler()), transport.ServerErrorLog(log.Named("ops-http"))),
			limitedServe(localapi.MaxOpsConns, log.Named("ops-http"))},
	}
	var listeners []net.Listener
	defer func() {
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			tr.Close()
		}
	}()
	for _, h := range handlers {
		l, lerr := net.Listen("tcp", h.addr)
		if lerr != nil {
			return nil, fmt.Errorf("listen on --%s-addr %s: %w", h.name, h.addr, lerr)
		}
		listeners = append(listeners, l)
		m.servers = append(m.servers, h.srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for i, h := range handlers {
		go func(l net.Listener) {
			if err := h.serve(h.srv, l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				select {
				case m.runErr <- fmt.Errorf("%s server: %w", h.name, err):
				default:
				}
			}
		}(listeners[i])
	}
	if kube != nil {
		m.kubeDone = make(chan struct{})
		go kube.run(ctx, m, m.kubeDone)
	}
	if c.AuthKeys != nil {
		transport.LogKeys(log.Named("transport"), "peer authentication on", c.AuthKeys.Keys(),
			"file", c.AuthKeys.Path(), "max_skew", c.AuthMaxSkew, "accept_unsigned", c.AuthAcceptUnsigned)
		if c.AuthAcceptUnsigned {
			log.Warn("--auth-accept-unsigned is set: peer messages are signed but unsigned ones are accepted too, which protects nothing; remove the flag once every member has --auth-secret-file")
		}
		m.keysDone = make(chan struct{})
		go func() {
			defer close(m.keysDone)
			c.AuthKeys.Run(ctx, transport.DefaultKeyReloadInterval, log.Named("transport"))
		}()
	}
	go func() {
		if err := n.Run(ctx, tr); err != nil {
			select {
			case m.runErr <- err:
			default:
			}
		}
	}()
	log.Info("member started", "id", c.ID, "cluster", cluster, "bootstrapped", len(voters) > 0, "peers", len(c.Peers),
		"peer_addr", c.PeerAddr, "local_addr", c.LocalAddr, "ops_addr", c.OpsAddr, "peer_auth", c.AuthKeys != nil)
	return m, nil
}

// limitedServe serves a server on a listener that holds at most max connections at once.
func limitedServe(max int, log hclog.Logger) func(*http.Server, net.Listener) error {
	return func(srv *http.Server, l net.Listener) error {
		return srv.Serve(transport.LimitConns(srv, l, max, log))
	}
}

// rpcTimeout bounds one peer RPC: a reply later than a heartbeat interval is of no use to the
// lease, and waiting longer only piles up requests to a dead peer.
func rpcTimeout(c *config) time.Duration {
	t := c.HeartbeatInterval
	if t < 50*time.Millisecond {
		t = 50 * time.Millisecond
	}
	return t
}

// shutdown stops the member. With graceful set, a leader first hands leadership over, waiting
// up to the shutdown timeout for a successor.
func (m *member) shutdown(graceful bool) {
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ShutdownTimeout)
		start := time.Now()
		succ, err := m.node.Handover(ctx)
		cancel()
		switch {
		case err != nil:
			m.log.Warn("leadership handover did not complete", "error", err, "after", time.Since(start).Round(time.Millisecond))
		case succ != "":
			m.log.Info("leadership handed over", "successor", succ, "after", time.Since(start).Round(time.Millisecond))
		}
	}
	m.cancel()
	if m.kubeDone != nil {
		<-m.kubeDone
	}
	if m.keysDone != nil {
		<-m.keysDone
	}
	<-m.node.Done()
	m.tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, s := range m.servers {
		if !graceful || s.Shutdown(ctx) != nil {
			_ = s.Close() // long polls still waiting are cut
		}
	}
	m.storage.Close()
}

// serveWhileWaiting serves the three addresses while the member waits for the API server to
// tell it its cluster: /healthz says it is alive (so a liveness probe does not restart a
// member that is only waiting), /readyz and /leader that it is not ready and knows no leader,
// /metrics the member's metrics at their starting values, and peers get 503. The returned function stops them and frees the addresses.
func serveWhileWaiting(c *config, log hclog.Logger) (store *localapi.Store, stop func(), err error) {
	store = localapi.NewStore(node.Status{ID: c.ID, State: raft.StateLearner, Term: c.termFloor}).WithNames(discovery.NameOf)
	if c.continueFrom != nil {
		store.ContinueFrom(c.continueFrom)
	}
	ops := http.NewServeMux()
	ops.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok: waiting for the bootstrap object")
	})
	// Metrics too, so a member stuck waiting is visible to the alerts (is_leader 0, state
	// learner) rather than a failed scrape.
	mx := metrics.New("")
	mx.Observe(node.Status{ID: c.ID, State: raft.StateLearner, Term: c.termFloor})
	ops.Handle("GET /metrics", mx.Handler())
	ops.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: waiting for the API server to name this member's cluster", http.StatusServiceUnavailable)
	})
	peer := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "this member has not joined a cluster yet", http.StatusServiceUnavailable)
	})
	var servers []*http.Server
	var wg sync.WaitGroup
	stop = func() {
		for _, srv := range servers {
			_ = srv.Close()
		}
		wg.Wait()
	}
	// The same limits as the member's servers; the peer port, which only refuses, those of
	// the operations endpoints.
	for _, h := range []struct {
		name, addr string
		srv        func(http.Handler, *stdlog.Logger) *http.Server
		h          http.Handler
		maxConns   int
	}{
		{"peer", c.PeerAddr, localapi.NewOpsServer, peer, transport.DefaultMaxConns},
		{"local", c.LocalAddr, localapi.NewLocalServer, localapi.Handler(store), localapi.MaxLocalConns},
		{"ops", c.OpsAddr, localapi.NewOpsServer, ops, localapi.MaxOpsConns},
	} {
		l, err := net.Listen("tcp", h.addr)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("listen on --%s-addr %s: %w", h.name, h.addr, err)
		}
		hlog := log.Named(h.name + "-http")
		srv := h.srv(h.h, transport.ServerErrorLog(hlog))
		servers = append(servers, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = srv.Serve(transport.LimitConns(srv, l, h.maxConns, hlog))
		}()
	}
	return store, stop, nil
}
