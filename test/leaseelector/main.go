// Command lease-elector is the baseline of raft-elector's benchmarks: the leader-election
// sidecar a user would otherwise deploy, built on client-go's tools/leaderelection with a
// coordination.k8s.io Lease, at client-go's semantics and default timings (lease 15s, renew
// deadline 10s, retry period 2s). It serves the same local API as raft-elector, so one
// harness can measure both: GET /leader (with the ?index=N&wait=D long poll) and GET /.
//
// The answer, and how it maps to raft-elector's contract (docs/api.md):
//
//   - name is the holder of the last Lease record this process read or wrote, while that
//     record is valid by this process's own observation: the local time the record was first
//     seen (for its own writes: the time the request was sent) plus the record's
//     leaseDurationSeconds is still ahead. This is client-go's own notion of validity; it
//     trusts no clock of another node. Past it, or when the holder is empty (a released
//     Lease), name is "".
//   - isLeader is true only when client-go's callbacks say this process leads (between
//     OnStartedLeading and OnStoppedLeading) and the valid record names it. The callback
//     alone is not enough: a leader whose renewals fail keeps "leading" for up to a retry
//     period plus the renew deadline after its last renewal, which client-go's rules let
//     exceed the lease (lease 11s, renew deadline 10s, retry period 8s), and a leader paused
//     past its lease still has it set when it wakes. A process names itself only while
//     isLeader, so isLeader ⇔ name == self. With clocks that run at the same rate (client-go's
//     assumption) two processes then never answer isLeader at the same time.
//   - term is leaseTransitions of the last observed record: client-go increments it on every
//     change of holder, under the Lease's optimistic concurrency. It resets if the Lease is
//     deleted and created again.
//   - state is "leader" between the two callbacks, else "follower"; so a leader whose record
//     lapsed says state "leader", isLeader false, name "", as raft-elector does.
//   - There is no leaseExpiresAt field: client-go gives the application no lease end, only the
//     callbacks. As client-go documents, there is no fencing, and safety tolerates clock skew
//     but not clock rate skew beyond lease duration / renew deadline.
//
// Every answer has an index that grows by one exactly when name, isLeader, term or state
// changes, including when a record lapses with no request (re-checked every 20ms).
//
// On SIGTERM or SIGINT the process first withdraws its claim (isLeader false, published to
// waiting long polls), then cancels the elector, so that client-go releases the Lease
// (--release-on-cancel) only after the application has been told. An application that
// long-polls hears it at once; one that polls hears it at its next poll, which client-go
// offers no way to wait for. The process exits 0 once client-go has returned (at most 5s) and
// its servers are shut down. Losing the Lease is not a reason to exit: it campaigns again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/raft-elector/raft-elector/internal/klogroute"
)

const (
	// expiryCheckInterval is how often the answer is re-evaluated without any event, so
	// that a lapsed record clears the name within this much of its end.
	expiryCheckInterval = 20 * time.Millisecond
	// electorStopWait bounds the wait for client-go's Run (and its release of the Lease)
	// on shutdown.
	electorStopWait = 5 * time.Second
	// serverStopWait bounds the graceful shutdown of the HTTP servers.
	serverStopWait = 2 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run is the one exit point: it returns the exit code (0 after a signal, 1 on a failure while
// running, 2 on a bad command line).
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	c, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "lease-elector: %v\n", err)
		return 2
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)

	log := hclog.New(&hclog.LoggerOptions{Name: "lease-elector", Level: hclog.LevelFromString(c.LogLevel),
		Output: stderr, TimeFormat: "2006-01-02T15:04:05.000Z07:00"})
	klogroute.Route(log.Named("client-go"))
	rc, err := restConfig(c)
	if err != nil {
		fmt.Fprintf(stderr, "lease-elector: %v\n", err)
		return 2
	}
	m := newMetrics()
	rc.Wrap(m.countRequests)
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		log.Error("cannot create the Kubernetes client", "error", err)
		return 1
	}
	view := newLeaderView(c.ID, time.Now, func(a Answer) {
		log.Info("answer changed", "name", a.Name, "isLeader", a.IsLeader, "term", a.Term, "state", a.State, "index", a.Index)
		m.answerChanged(a)
	})
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lease_elector_is_leader", Help: "1 while the answer says this process leads (isLeader), checked at scrape time.",
	}, func() float64 {
		if a, _ := view.answer(); a.IsLeader {
			return 1
		}
		return 0
	}))

	le, err := newElector(c, &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.Namespace, Name: c.LeaseName},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.ID},
	}, view)
	if err != nil { // parseFlags checked what client-go checks: a bug if reached
		log.Error("cannot create the leader elector", "error", err)
		return 1
	}

	errorLog := log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})
	closing := make(chan struct{})
	local := newServer(localHandler(view, closing), maxWait+10*time.Second, errorLog)
	local.RegisterOnShutdown(func() { close(closing) }) // answer waiting long polls at once
	ops := newServer(opsHandler(view, m.reg), 30*time.Second, errorLog)
	serveErr := make(chan error, 2)
	for _, s := range []struct {
		flag, addr string
		srv        *http.Server
	}{{"local-addr", c.LocalAddr, local}, {"ops-addr", c.OpsAddr, ops}} {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			log.Error("cannot listen", "flag", "--"+s.flag, "error", err)
			_ = local.Close()
			return 1
		}
		go func() { serveErr <- s.srv.Serve(ln) }()
	}

	expiryCtx, stopExpiry := context.WithCancel(context.Background())
	defer stopExpiry()
	go view.watchExpiry(expiryCtx, expiryCheckInterval)
	electorCtx, cancelElector := context.WithCancel(context.Background())
	electorDone := make(chan struct{})
	go func() {
		defer close(electorDone)
		campaign(electorCtx, le, log)
	}()
	log.Info("started", "id", c.ID, "lease", c.Namespace+"/"+c.LeaseName, "localAddr", c.LocalAddr, "opsAddr", c.OpsAddr,
		"leaseDuration", c.LeaseDuration, "renewDeadline", c.RenewDeadline, "retryPeriod", c.RetryPeriod, "releaseOnCancel", c.ReleaseOnCancel)

	code := 0
	select {
	case sig := <-sigc:
		log.Info("shutting down", "signal", sig.String(), "releaseOnCancel", c.ReleaseOnCancel)
	case err := <-serveErr:
		log.Error("server failed; shutting down", "error", err)
		code = 1
	}
	if !shutdown(view, cancelElector, electorDone, electorStopWait) {
		log.Warn("client-go did not return in time; the Lease may not be released", "waited", electorStopWait)
	}
	ctx, cancel := context.WithTimeout(context.Background(), serverStopWait)
	defer cancel()
	for _, s := range []*http.Server{local, ops} {
		if err := s.Shutdown(ctx); err != nil {
			_ = s.Close()
		}
	}
	log.Info("stopped")
	return code
}

// newElector returns client-go's elector over lock, observed by view, with the timings of c.
func newElector(c *config, lock resourcelock.Interface, view *leaderView) (*leaderelection.LeaderElector, error) {
	return leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            &observingLock{Interface: lock, view: view},
		LeaseDuration:   c.LeaseDuration,
		RenewDeadline:   c.RenewDeadline,
		RetryPeriod:     c.RetryPeriod,
		ReleaseOnCancel: c.ReleaseOnCancel,
		Name:            c.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: view.startedLeading,
			OnStoppedLeading: view.stoppedLeading,
		},
	})
}

// shutdown stops the elector in the order the application needs. It first withdraws this
// process's claim from the answer, waking every long poll, and only then cancels the
// elector's context, on which client-go releases the Lease (with --release-on-cancel) and a
// successor may take it at once: reversed, a successor could lead while this pod's
// application still reads that it leads. It then waits up to wait for Run to return; false if
// it did not.
func shutdown(v *leaderView, cancelElector context.CancelFunc, electorDone <-chan struct{}, wait time.Duration) bool {
	v.withdraw()
	cancelElector()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-electorDone:
		return true
	case <-t.C:
		return false
	}
}

// campaign runs client-go's elector until ctx ends. Run returns when ctx ends or when this
// process lost the Lease it held; a sidecar then campaigns again rather than exit.
func campaign(ctx context.Context, le *leaderelection.LeaderElector, log hclog.Logger) {
	for {
		le.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		log.Info("lost the Lease; campaigning again")
	}
}

// restConfig loads --kubeconfig, or the in-cluster service account. A failure is a usage
// error: it happens before any request.
func restConfig(c *config) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if c.Kubeconfig != "" {
		if rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
			return nil, usagef("--kubeconfig %s: %v", c.Kubeconfig, err)
		}
	} else if rc, err = rest.InClusterConfig(); err != nil {
		return nil, usagef("--kubeconfig is empty and there is no in-cluster config (%v); outside a cluster, pass --kubeconfig", err)
	}
	rc.UserAgent = "lease-elector"
	rc.QPS, rc.Burst = float32(c.KubeAPIQPS), c.KubeAPIBurst
	// As resourcelock.NewFromKubeconfig does: one hung request must not use up the renew
	// deadline and cost the leader its Lease.
	rc.Timeout = max(time.Second, c.RenewDeadline/2)
	return rc, nil
}

// metrics live on a private registry: the API load the benchmark compares, and leadership.
type metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	writes        prometheus.Counter
	leaderChanges prometheus.Counter
	// lastName and lastTerm are the last leader named; answerChanged runs with the view
	// locked, so one at a time.
	lastName string
	lastTerm uint64
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lease_elector_api_requests_total", Help: "Requests sent to the Kubernetes API server, by HTTP method.",
		}, []string{"verb"}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lease_elector_api_writes_total", Help: "Requests sent to the Kubernetes API server other than GET.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lease_elector_leader_changes_total", Help: "Leaderships this process learned of: a new holder named, or the same one in a newer term.",
		}),
	}
	m.reg.MustRegister(m.requests, m.writes, m.leaderChanges,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// countRequests is the rest.Config transport wrapper that counts every request sent.
func (m *metrics) countRequests(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		m.requests.WithLabelValues(r.Method).Inc()
		if r.Method != http.MethodGet {
			m.writes.Inc()
		}
		return rt.RoundTrip(r)
	})
}

func (m *metrics) answerChanged(a Answer) {
	if a.Name != "" && (a.Name != m.lastName || a.Term != m.lastTerm) {
		m.lastName, m.lastTerm = a.Name, a.Term
		m.leaderChanges.Inc()
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
