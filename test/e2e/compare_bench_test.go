package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/raft-elector/raft-elector/test/kubeenv"
)

// The benchmark of issue 7: raft-elector against the elector users would otherwise deploy,
// client-go's tools/leaderelection with a Lease lock (test/leaseelector), both as real
// processes against the same real kube-apiserver and etcd, over the same schedule of events.
// `make bench` runs the full form and writes docs/benchmarks.md and the PNG plots;
// `make bench-quick` a short form that prints only. TestCompareBenchmarkSmoke runs the same
// code on a tiny schedule in `make test`, so the harness cannot rot between benchmark runs.

var (
	cmpRun    = flag.Bool("compare", false, "run TestCompareBenchmark (make bench: about an hour; make bench-quick: a few minutes)")
	cmpQuick  = flag.Bool("compare.quick", false, "TestCompareBenchmark: the quick form: 3 members only, 5 events, short windows, cluster sizes 3 and 5+20; writes nothing unless -compare.out is given")
	cmpEvents = flag.Int("compare.events", 0, "TestCompareBenchmark: SIGKILL and SIGTERM events per configuration (default 50; quick 5)")
	cmpWindow = flag.Duration("compare.window", 0, "TestCompareBenchmark: steady-state measurement window (default 30s; quick 8s)")
	cmpOut    = flag.String("compare.out", "", "TestCompareBenchmark: directory for benchmarks.md and the plots (default docs/ of the repository in the full form)")
	cmpOnly   = flag.String("compare.only", "", "TestCompareBenchmark: run only the configurations and cluster sizes whose names match this regexp")
)

// benchCommand is how `make bench` runs the benchmark; the report quotes it.
const benchCommand = "go test ./test/e2e -run '^TestCompareBenchmark$' -count=1 -timeout 120m -v -args -compare"

type electorKind string

const (
	kindRaft  electorKind = "raft-elector"
	kindLease electorKind = "client-go Lease"
)

// cmpConfig is one elector with one set of timings and one cluster size.
type cmpConfig struct {
	kind    electorKind
	timings string // default, fast (raft-elector); defaults, aggressive (client-go)
	voters  int    // members; for raft-elector the voters, the rest are learners
	members int    // all members (candidates of the baseline)
	// raft-elector
	heartbeat, election time.Duration
	// client-go
	lease, renew, retry time.Duration
	// qps and burst are the client-side rate limit of the baseline's API client; zero for
	// client-go's defaults (5 and 10).
	qps, burst int
}

var (
	raftDefault = cmpConfig{kind: kindRaft, timings: "default", heartbeat: 100 * time.Millisecond, election: time.Second}
	raftFast    = cmpConfig{kind: kindRaft, timings: "fast", heartbeat: 20 * time.Millisecond, election: 200 * time.Millisecond}
	// client-go's own defaults (leaderelection's doc and every controller built on it).
	leaseDefaults = cmpConfig{kind: kindLease, timings: "defaults", lease: 15 * time.Second, renew: 10 * time.Second, retry: 2 * time.Second}
	// As fast as the Lease API allows: spec.leaseDurationSeconds is a whole number of
	// seconds, so 1 s is the shortest lease; client-go requires renew > 1.2 × retry. A get
	// and an update every 200 ms exceed client-go's default client-side limit of 5 requests
	// per second, which then fails the renewals: the limit is raised, as such a user must.
	leaseAggressive = cmpConfig{kind: kindLease, timings: "aggressive", lease: time.Second, renew: 800 * time.Millisecond, retry: 200 * time.Millisecond, qps: 50, burst: 100}
)

func (c cmpConfig) with(voters, learners int) cmpConfig {
	c.voters, c.members = voters, voters+learners
	return c
}

func (c cmpConfig) timingDesc() string {
	if c.kind == kindRaft {
		return fmt.Sprintf("%v/%v", c.heartbeat, c.election)
	}
	return fmt.Sprintf("%v/%v/%v", c.lease, c.renew, c.retry)
}

func (c cmpConfig) name() string {
	s := fmt.Sprintf("%s %s %d", c.kind, c.timings, c.voters)
	if c.members > c.voters {
		s += fmt.Sprintf("+%d", c.members-c.voters)
	}
	return s
}

// slug is a Kubernetes name for the configuration's namespace.
func (c cmpConfig) slug(prefix string) string {
	k := "raft"
	if c.kind == kindLease {
		k = "lease"
	}
	return fmt.Sprintf("%s-%s-%s-%d-%d", prefix, k, c.timings, c.voters, c.members-c.voters)
}

// cmpPlan is what one benchmark run measures.
type cmpPlan struct {
	events int           // SIGKILL events, then as many SIGTERM events, per configuration
	window time.Duration // steady-state window (idle CPU and API load)
	// configs are measured over the events; sizes (default timings) only in the steady state.
	configs, sizes []cmpConfig
	only           *regexp.Regexp
}

func fullPlan() cmpPlan {
	p := cmpPlan{events: 50, window: 30 * time.Second}
	for _, base := range []cmpConfig{raftDefault, raftFast, leaseDefaults, leaseAggressive} {
		for _, n := range []int{3, 5} {
			p.configs = append(p.configs, base.with(n, 0))
		}
	}
	for _, base := range []cmpConfig{raftDefault, leaseDefaults} {
		for _, s := range [][2]int{{3, 0}, {5, 0}, {9, 0}, {5, 20}, {5, 50}, {5, 100}} {
			p.sizes = append(p.sizes, base.with(s[0], s[1]))
		}
	}
	return p
}

func quickPlan() cmpPlan {
	p := cmpPlan{events: 5, window: 8 * time.Second}
	for _, base := range []cmpConfig{raftDefault, raftFast, leaseDefaults, leaseAggressive} {
		p.configs = append(p.configs, base.with(3, 0))
	}
	for _, base := range []cmpConfig{raftDefault, leaseDefaults} {
		p.sizes = append(p.sizes, base.with(3, 0), base.with(5, 20))
	}
	return p
}

// apiSum accumulates the API server's counters over one or more windows.
type apiSum struct {
	window time.Duration
	// requests of service accounts outside kube-system (APF flow schema service-accounts):
	// every request of the electors, nothing of the API server's own or of the test's admin.
	requests float64
	// writes: the write verbs on pods, configmaps, events and leases (the test's admin writes
	// none inside a window), less the API server's own writes to leases and configmaps (its
	// identity lease renewals, in kube-system), which a watch counts (systemWrites).
	writes float64
}

func (s *apiSum) add(before, after apiCounts, sys *systemWrites) {
	d := diffAPICounts(before, after)
	s.window += d.window
	s.requests += d.saDispatched
	own := 0.0
	for _, res := range benchResources {
		own += d.writes(res)
	}
	s.writes += max(0, own-float64(sys.count(before.at, after.at)))
}

// rates are requests and writes per second.
func (s apiSum) rates() (requests, writes float64) {
	if s.window <= 0 {
		return 0, 0
	}
	sec := s.window.Seconds()
	return s.requests / sec, s.writes / sec
}

// systemWrites records when the API server wrote leases and configmaps outside the benchmark's
// namespaces (its own identity lease, renewed every 10 s), as a watch of each sees them.
type systemWrites struct {
	mu sync.Mutex
	at []time.Time
}

func watchSystemWrites(t *testing.T, env *kubeenv.Env) *systemWrites {
	t.Helper()
	sw := &systemWrites{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	cs := env.AdminClient
	// follow lists, then watches from the list's resourceVersion, and starts over when the
	// watch ends (a "too old" resourceVersion included). It returns once the first watch runs.
	follow := func(list func(context.Context) (string, error), watchFrom func(context.Context, string) (watch.Interface, error)) {
		started := make(chan struct{})
		wg.Go(func() {
			for first := true; ctx.Err() == nil; {
				rv, err := list(ctx)
				var w watch.Interface
				if err == nil {
					w, err = watchFrom(ctx, rv)
				}
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if first {
					first = false
					close(started)
				}
				for ev := range w.ResultChan() {
					if obj, ok := ev.Object.(metav1.Object); ok && !strings.HasPrefix(obj.GetNamespace(), benchNSPrefix) {
						sw.mu.Lock()
						sw.at = append(sw.at, time.Now())
						sw.mu.Unlock()
					}
				}
				w.Stop()
			}
		})
		select {
		case <-started:
		case <-time.After(kubeSettle):
			t.Fatalf("cannot watch the API server's own writes within %v", kubeSettle)
		}
	}
	follow(func(ctx context.Context) (string, error) {
		l, err := cs.CoordinationV1().Leases("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		return l.ResourceVersion, nil
	}, func(ctx context.Context, rv string) (watch.Interface, error) {
		return cs.CoordinationV1().Leases("").Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	})
	follow(func(ctx context.Context) (string, error) {
		l, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		return l.ResourceVersion, nil
	}, func(ctx context.Context, rv string) (watch.Interface, error) {
		return cs.CoreV1().ConfigMaps("").Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	})
	return sw
}

// count is the number of writes seen in (from, to].
func (sw *systemWrites) count(from, to time.Time) int {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	n := 0
	for _, at := range sw.at {
		if at.After(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// benchNSPrefix starts the namespaces of the electors under test.
const benchNSPrefix = "bench-"

var benchResources = []string{"pods", "leases", "configmaps", "events"}

// idleFigures is the steady state of a settled cluster.
type idleFigures struct {
	window                         time.Duration
	cpuLeader, cpuFollower, cpuLrn float64 // % of one core; cpuLrn < 0: no learner
	rssLeader, rssFollower, rssLrn int64   // kB
	api                            apiSum
	// why says, when raft-elector wrote in the window, what its members logged meanwhile.
	why string
}

// cmpResult is what one configuration measured over the events.
type cmpResult struct {
	cfg  cmpConfig
	idle idleFigures

	failover      []time.Duration // SIGKILL → every survivor names the same new leader
	failoverFirst []time.Duration // SIGKILL → the first survivor claims (the leaderless time of the event)
	handover      []time.Duration // SIGTERM → the successor claims
	handoverAll   []time.Duration // SIGTERM → every survivor names it
	exit          []time.Duration // SIGTERM → the old process exited
	badExits      int
	failoverAPI   apiSum // over the failovers: from just before the kill until settled
	handoverAPI   apiSum

	phase      time.Duration // from the first event to the last settle
	leaderless time.Duration // of phase: no member certainly led
	overlap    time.Duration // of phase: two members certainly led at once
	violations []string
	checked    string
}

// scaleResult is the steady state of one cluster size.
type scaleResult struct {
	cfg    cmpConfig
	idle   idleFigures
	settle time.Duration // from the start of the members until settled
}

// TestCompareBenchmark is `make bench` (and `make bench-quick`). Gated behind -compare.
func TestCompareBenchmark(t *testing.T) {
	if !*cmpRun {
		t.Skip("a benchmark: run with -compare (make bench, make bench-quick)")
	}
	plan := fullPlan()
	if *cmpQuick {
		plan = quickPlan()
	}
	if *cmpEvents > 0 {
		plan.events = *cmpEvents
	}
	if *cmpWindow > 0 {
		plan.window = *cmpWindow
	}
	if *cmpOnly != "" {
		re, err := regexp.Compile(*cmpOnly)
		if err != nil {
			t.Fatalf("-compare.only: %v", err)
		}
		plan.only = re
	}
	out := *cmpOut
	if out == "" && !*cmpQuick {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		out = filepath.Join(root, "docs")
	}
	rep := runCompare(t, plan)
	text := rep.markdown(out != "")
	fmt.Printf("\n%s\n", text)
	fmt.Printf("\n%s\n", rep.ratios())
	if out == "" {
		return
	}
	if err := rep.write(out, text); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s/benchmarks.md and the plots", out)
}

// TestCompareBenchmarkSmoke runs the benchmark's code on a tiny schedule: both electors, two
// events of each kind, one cluster size, and writes the report and the plots to a temporary
// directory. It checks what must hold of any run, not figures. raft-elector runs at its
// default timings here: at the fast ones its reported lease is 60 ms, which a loaded CI
// machine can let lapse, and the label writes that follow would fail the zero-write check.
func TestCompareBenchmarkSmoke(t *testing.T) {
	plan := cmpPlan{events: 2, window: 3 * time.Second,
		configs: []cmpConfig{raftDefault.with(3, 0), leaseAggressive.with(3, 0)},
		sizes:   []cmpConfig{raftDefault.with(3, 2), leaseDefaults.with(3, 2)},
	}
	rep := runCompare(t, plan)
	if t.Failed() {
		return
	}
	if len(rep.results) != 2 || len(rep.scale) != 2 {
		t.Fatalf("%d results and %d cluster sizes, want 2 and 2", len(rep.results), len(rep.scale))
	}
	for _, r := range rep.results {
		name := r.cfg.name()
		if len(r.failover) != plan.events || len(r.handover) != plan.events {
			t.Errorf("%s: %d failovers and %d handovers, want %d each", name, len(r.failover), len(r.handover), plan.events)
		}
		for k, d := range r.failover {
			if d <= 0 || r.failoverFirst[k] <= 0 || r.failoverFirst[k] > d {
				t.Errorf("%s: failover %d: first claim after %v, all agree after %v", name, k, r.failoverFirst[k], d)
			}
		}
		if r.badExits != 0 {
			t.Errorf("%s: %d non-zero exits after SIGTERM", name, r.badExits)
		}
		if r.phase <= 0 || r.leaderless <= 0 || r.leaderless >= r.phase {
			t.Errorf("%s: leaderless %v of a %v phase with %d kills", name, r.leaderless, r.phase, plan.events)
		}
		if r.overlap != 0 {
			t.Errorf("%s: two members led at once for %v", name, r.overlap)
		}
		if r.idle.cpuLeader <= 0 || r.idle.rssLeader <= 0 || r.idle.rssFollower <= 0 {
			t.Errorf("%s: idle figures %+v", name, r.idle)
		}
		req, wr := r.idle.api.rates()
		if len(r.violations) > 0 {
			t.Errorf("%s: lease checker: %d violations", name, len(r.violations))
		}
		switch r.cfg.kind {
		case kindRaft:
			if wr != 0 {
				t.Errorf("%s: %.3f writes/s in the steady state, want 0", name, wr)
			}
			if _, fw := r.failoverAPI.rates(); fw <= 0 {
				t.Errorf("%s: no writes during failovers: the label patches are not counted", name)
			}
		case kindLease:
			// 3 candidates each read the Lease every 200 ms (jittered up to 1.2×); the leader
			// writes it every 200 ms.
			if req < 3*1/(1.2*0.2)*0.6 || wr < 1/0.2*0.6 {
				t.Errorf("%s: %.2f requests/s and %.2f writes/s in the steady state: the API server's counters missed the renewals", name, req, wr)
			}
		}
	}
	for _, s := range rep.scale {
		if s.idle.cpuLrn < 0 && s.cfg.kind == kindRaft {
			t.Errorf("%s: no learner measured", s.cfg.name())
		}
	}
	dir := t.TempDir()
	if err := rep.write(dir, rep.markdown(true)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"benchmarks.md", plotFailover, plotCPU, plotAPI} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	t.Logf("\n%s", rep.ratios())
}

// cmpReport is the outcome of a run.
type cmpReport struct {
	plan    cmpPlan
	started time.Time
	took    time.Duration
	// sysWrites is the API server's own writes per second over the first window, before any
	// elector ran (taken out of every window; reported for reference).
	sysWrites float64
	sys       *systemWrites
	results   []*cmpResult
	scale     []*scaleResult
}

// runCompare measures every configuration of the plan in one kube-apiserver and etcd.
func runCompare(t *testing.T, plan cmpPlan) *cmpReport {
	env := startKubeEnv(t)
	rep := &cmpReport{plan: plan, started: time.Now()}
	leaseElectorBinary(t)
	binary(t)

	// The API server writes its own identity lease every 10 s: a watch counts those writes,
	// and every window takes them out. A first window, before any elector runs, checks that
	// this accounts for every write.
	sys := watchSystemWrites(t, env)
	bgWindow := max(plan.window, 10*time.Second)
	before := readAPICounts(t, env, benchResources...)
	time.Sleep(bgWindow) // the measurement window
	after := readAPICounts(t, env, benchResources...)
	var bg apiSum
	bg.add(before, after, &systemWrites{})
	var rest apiSum
	rest.add(before, after, sys)
	rep.sysWrites = bg.writes / bg.window.Seconds()
	t.Logf("before any elector: the API server's own writes %.3f/s over %v; left after the watch's count: %v writes; service-account requests: %v",
		rep.sysWrites, bg.window.Round(time.Millisecond), rest.writes, bg.requests)
	if rest.writes != 0 {
		t.Errorf("%v writes before any elector ran were not the API server's own lease and configmap writes: every window would count them", rest.writes)
	}
	rep.sys = sys

	subnet := 140
	for _, cfg := range plan.configs {
		subnet++
		if plan.only != nil && !plan.only.MatchString(cfg.name()) {
			continue
		}
		t.Run(strings.ReplaceAll(cfg.name(), " ", "_"), func(t *testing.T) {
			r := runEvents(t, env, cfg, subnet, plan, rep.sys)
			rep.results = append(rep.results, r)
		})
	}
	for _, cfg := range plan.sizes {
		subnet++
		if plan.only != nil && !plan.only.MatchString(cfg.name()) {
			continue
		}
		t.Run("size_"+strings.ReplaceAll(cfg.name(), " ", "_"), func(t *testing.T) {
			s := runScale(t, env, cfg, subnet, plan, rep.sys)
			rep.scale = append(rep.scale, s)
		})
	}
	rep.took = time.Since(rep.started)
	return rep
}

// benchCluster is a running elector of either kind.
type benchCluster struct {
	cfg cmpConfig
	c   *Cluster
	app *kubeApp // raft-elector only
}

// startElector starts cfg's members in namespace ns (which starts with benchNSPrefix) and waits until they settled.
func startElector(t *testing.T, env *kubeenv.Env, ns string, cfg cmpConfig, subnet int, poll time.Duration) *benchCluster {
	t.Helper()
	createNamespace(t, env, ns)
	b := &benchCluster{cfg: cfg}
	switch cfg.kind {
	case kindRaft:
		kubeconfig := installSidecarRBAC(t, env, ns)
		var pods []kubePod
		var ips []string
		for i := range cfg.members {
			ip := kubeIP(subnet, i+1)
			pods = append(pods, kubePod{Name: fmt.Sprintf("web-%d", i), IP: ip, Run: true})
			ips = append(ips, ip)
		}
		b.app = startKubeApp(t, env, kubeAppConfig{
			Namespace: ns, App: "web", Kubeconfig: kubeconfig, PeerPort: pickPeerPort(t, ips), Pods: pods,
			Heartbeat: cfg.heartbeat, Election: cfg.election, PollInterval: poll,
			// Info, as in production: the suite's default is debug.
			ExtraArgs: []string{"--log-level=info", "--max-voters=" + strconv.Itoa(cfg.voters)},
		})
		b.c = b.app.Cluster
		b.app.WaitVoters(b.c.All(), cfg.voters, 60*time.Second)
	case kindLease:
		kubeconfig := installLeaseRBAC(t, env, ns)
		var names []string
		for i := range cfg.members {
			names = append(names, fmt.Sprintf("web-%d", i))
		}
		addrs := make([][2]string, cfg.members)
		for i := range addrs {
			for k := range addrs[i] {
				a, err := freeAddr()
				if err != nil {
					t.Fatal(err)
				}
				addrs[i][k] = a
			}
		}
		b.c = NewCluster(t, Config{
			Members: cfg.members, Names: names, Binary: leaseElectorBinary(t), NoLeases: true, PollInterval: poll,
			Addrs: func(i int) (string, string, string) { return "", addrs[i][0], addrs[i][1] },
			CommandLine: func(m *Member) []string {
				args := []string{
					"--id=" + m.ID, "--namespace=" + ns, "--lease-name=bench", "--kubeconfig=" + kubeconfig,
					"--lease-duration=" + cfg.lease.String(), "--renew-deadline=" + cfg.renew.String(), "--retry-period=" + cfg.retry.String(),
					"--local-addr=" + m.LocalAddr(), "--ops-addr=" + m.OpsAddr(), "--log-level=info",
				}
				if cfg.qps > 0 {
					args = append(args, fmt.Sprintf("--kube-api-qps=%d", cfg.qps), fmt.Sprintf("--kube-api-burst=%d", cfg.burst))
				}
				return args
			},
		})
	}
	b.settled(60 * time.Second)
	return b
}

// settled waits until every running member names the same leader, and for raft-elector until
// the pods' labels say so too; it returns the leader.
func (b *benchCluster) settled(timeout time.Duration) (int, uint64) {
	var set []int
	for i, m := range b.c.Members {
		if m.Running() {
			set = append(set, i)
		}
	}
	l, term, _ := b.c.WaitAgreedLeader(set, timeout)
	if b.app != nil {
		b.app.WaitLabels(b.app.LabelsFor(l, nil), timeout)
	}
	return l, term
}

// measureIdle measures a settled cluster over the window: CPU and RSS of the leader, a
// follower (a voter) and, if any, a learner; the API server's counters. The lease checker
// polls each member once a second meanwhile, so that it does not dominate what it measures.
func (b *benchCluster) measureIdle(t *testing.T, env *kubeenv.Env, sys *systemWrites, leader int, window time.Duration) idleFigures {
	t.Helper()
	c := b.c
	prev := time.Duration(c.pollInterval.Load())
	c.SetPollInterval(time.Second)
	defer c.SetPollInterval(prev)
	follower, learner := -1, -1
	if b.app != nil {
		vs, ls := roles(c, c.All())
		for _, v := range vs {
			if v != leader {
				follower = v
				break
			}
		}
		if len(ls) > 0 {
			learner = ls[0]
		}
	} else {
		follower = c.Except(leader)[0]
	}
	if follower < 0 {
		t.Fatalf("no follower among the voters")
	}
	// Quiet first: the requests that settling caused (label patches, a restarted member's
	// list and watch) are behind us when the service accounts' count stops moving for 2 s,
	// or, for the baseline, whose candidates poll forever, after two retry periods.
	if b.cfg.kind == kindRaft {
		last := readAPICounts(t, env, benchResources...)
		quiet := time.Now()
		for deadline := time.Now().Add(kubeSettle); time.Since(quiet) < 2*time.Second; {
			time.Sleep(250 * time.Millisecond)
			now := readAPICounts(t, env, benchResources...)
			if now.saDispatched != last.saDispatched {
				last, quiet = now, time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("raft-elector members still send requests %v after they settled", kubeSettle)
			}
		}
	} else {
		time.Sleep(2 * b.cfg.retry) // see above
	}
	pids := []int{c.Members[leader].Pid(), c.Members[follower].Pid()}
	if learner >= 0 {
		pids = append(pids, c.Members[learner].Pid())
	}
	ticks0 := make([]int64, len(pids))
	for k, pid := range pids {
		var err error
		if ticks0[k], err = procCPUTicks(pid); err != nil {
			t.Fatal(err)
		}
	}
	logAt := make([]int64, len(c.Members))
	for i, m := range c.Members {
		if st, err := os.Stat(m.LogPath); err == nil {
			logAt[i] = st.Size()
		}
	}
	before := readAPICounts(t, env, benchResources...)
	from := time.Now()
	time.Sleep(window) // the measurement window
	elapsed := time.Since(from)
	after := readAPICounts(t, env, benchResources...)
	f := idleFigures{window: elapsed, cpuLrn: -1}
	f.api.add(before, after, sys)
	cpu := make([]float64, len(pids))
	rss := make([]int64, len(pids))
	for k, pid := range pids {
		t1, err1 := procCPUTicks(pid)
		r, err2 := procRSS(pid)
		if err := firstErr(err1, err2); err != nil {
			t.Fatal(err)
		}
		cpu[k], rss[k] = cpuPercent(t1-ticks0[k], elapsed), r
	}
	f.cpuLeader, f.cpuFollower, f.rssLeader, f.rssFollower = cpu[0], cpu[1], rss[0], rss[1]
	if learner >= 0 {
		f.cpuLrn, f.rssLrn = cpu[2], rss[2]
	}
	if b.cfg.kind == kindRaft && f.api.writes > 0 {
		// raft-elector writes only when the leader or its lease changes: say which.
		var parts []string
		for i, m := range c.Members {
			for _, what := range []string{"state changed", "lease lost", "lease regained", "pod label changed", "recorded the voters"} {
				if n := strings.Count(m.logFrom(logAt[i]), what); n > 0 {
					parts = append(parts, fmt.Sprintf("%s %q ×%d", m.ID, what, n))
				}
			}
		}
		f.why = strings.Join(parts, ", ")
		c.Logf("%v writes in the steady state; the members logged: %s", f.api.writes, f.why)
	}
	if l, _, _ := c.WaitAgreedLeader(c.All(), 30*time.Second); l != leader {
		c.Logf("leadership moved from %s to %s in the steady state", c.Members[leader].ID, c.Members[l].ID)
	}
	return f
}

// runEvents measures one configuration: the steady state, then plan.events failovers after
// SIGKILL of the leader, then as many handovers after SIGTERM; the killed or stopped member
// is restarted (a container restart: same pod, same data) and the cluster settles between
// two events.
func runEvents(t *testing.T, env *kubeenv.Env, cfg cmpConfig, subnet int, plan cmpPlan, sys *systemWrites) *cmpResult {
	r := &cmpResult{cfg: cfg}
	b := startElector(t, env, cfg.slug(benchNSPrefix+"events"), cfg, subnet, 0)
	c := b.c
	l, _ := b.settled(30 * time.Second)
	r.idle = b.measureIdle(t, env, sys, l, plan.window)
	req, wr := r.idle.api.rates()
	c.Logf("%s steady state: leader %.2f%% CPU %d kB, follower %.2f%% CPU %d kB; API %.3f requests/s, %.3f writes/s",
		cfg.name(), r.idle.cpuLeader, r.idle.rssLeader, r.idle.cpuFollower, r.idle.rssFollower, req, wr)

	// How long to wait for the cluster to agree after a fault: several terms' worth.
	agree := 20 * time.Second
	if cfg.kind == kindLease {
		agree = 3*cfg.lease + 10*cfg.retry + 10*time.Second
	}
	phaseStart := time.Now()
	for round := range plan.events {
		l, oldTerm := b.settled(agree)
		survivors := c.Except(l)
		ws := c.watch(t, survivors)
		before := readAPICounts(t, env, benchResources...)
		killed := c.Kill(l)
		first, all := awaitSuccessor(t, c, ws, survivors, oldTerm, killed, agree)
		if b.app != nil {
			b.app.WaitLabels(b.app.LabelsFor(c.Index(c.Checker.mustLatest(t, survivors[0]).Answer.Name), nil), agree)
		}
		r.failoverAPI.add(before, readAPICounts(t, env, benchResources...), sys)
		r.failover = append(r.failover, all)
		r.failoverFirst = append(r.failoverFirst, first)
		c.Logf("kill %d: first claim after %v, all agree after %v", round, first.Round(time.Millisecond), all.Round(time.Millisecond))
		c.Restart(l)
	}
	for round := range plan.events {
		l, oldTerm := b.settled(agree)
		survivors := c.Except(l)
		ws := c.watch(t, survivors)
		before := readAPICounts(t, env, benchResources...)
		sent := c.Terminate(l)
		first, all := awaitSuccessor(t, c, ws, survivors, oldTerm, sent, agree)
		code, exited := c.WaitExit(l, 30*time.Second)
		if code != 0 {
			r.badExits++
			t.Errorf("SIGTERM %d: %s exited with %d", round, c.Members[l].ID, code)
		}
		if b.app != nil {
			b.app.WaitLabels(b.app.LabelsFor(c.Index(c.Checker.mustLatest(t, survivors[0]).Answer.Name), nil), agree)
		}
		r.handoverAPI.add(before, readAPICounts(t, env, benchResources...), sys)
		r.handover = append(r.handover, first)
		r.handoverAll = append(r.handoverAll, all)
		r.exit = append(r.exit, exited.Sub(sent))
		c.Logf("term %d: successor leads after %v, all agree after %v, old process exited after %v",
			round, first.Round(time.Millisecond), all.Round(time.Millisecond), exited.Sub(sent).Round(time.Millisecond))
		c.Restart(l)
	}
	b.settled(agree)
	phaseEnd := time.Now()
	r.phase = phaseEnd.Sub(phaseStart)
	r.leaderless, r.overlap = leadershipCover(c.Checker.ClaimIntervals(), phaseStart, phaseEnd)
	r.violations = c.Checker.Violations()
	r.checked = c.Checker.Summary()
	return r
}

// mustLatest is the latest observation of member i.
func (lc *LeaseChecker) mustLatest(t *testing.T, i int) Observation {
	t.Helper()
	o, ok := lc.Latest(i)
	if !ok {
		t.Fatalf("no answer of member %d yet", i)
	}
	return o
}

// awaitSuccessor follows the watches on the survivors after a fault at `at` and returns when
// the first of them claimed leadership in a term above oldTerm, and when all of them named
// that one, which claims.
func awaitSuccessor(t *testing.T, c *Cluster, ws *watchSet, survivors []int, oldTerm uint64, at time.Time, timeout time.Duration) (first, all time.Duration) {
	t.Helper()
	defer ws.stop()
	latest := map[int]Observation{}
	deadline := time.After(timeout)
	for all == 0 {
		select {
		case o := <-ws.events:
			if prev, ok := latest[o.Member]; !ok || o.Recv.After(prev.Recv) {
				latest[o.Member] = o
			}
			if first == 0 && o.Answer.IsLeader && o.Answer.Term > oldTerm {
				first = o.Recv.Sub(at)
			}
			if len(latest) == len(survivors) {
				if _, term, ok := c.agreed(latest, survivors); ok && term > oldTerm {
					all = o.Recv.Sub(at)
				}
			}
		case <-deadline:
			t.Fatalf("no successor named by all of %s within %v; latest:%s", c.IDs(survivors), timeout, c.DescribeLatest())
		}
	}
	return first, all
}

// leadershipCover measures, within [from, to), the time no member certainly led (leaderless)
// and the time two or more members certainly led at once (overlap), from the intervals in
// which each member certainly led.
func leadershipCover(byMember map[string][][2]time.Time, from, to time.Time) (leaderless, overlap time.Duration) {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, ivs := range byMember {
		// One member's intervals (of different processes or terms) are merged first, so that
		// only different members count as two leaders.
		ivs = slices.Clone(ivs)
		slices.SortFunc(ivs, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
		var merged [][2]time.Time
		for _, iv := range ivs {
			if iv[0].Before(from) {
				iv[0] = from
			}
			if iv[1].After(to) {
				iv[1] = to
			}
			if !iv[1].After(iv[0]) {
				continue
			}
			if n := len(merged); n > 0 && !iv[0].After(merged[n-1][1]) {
				if iv[1].After(merged[n-1][1]) {
					merged[n-1][1] = iv[1]
				}
				continue
			}
			merged = append(merged, iv)
		}
		for _, iv := range merged {
			edges = append(edges, edge{iv[0], +1}, edge{iv[1], -1})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // ends before starts at the same instant
	})
	cur, depth := from, 0
	for _, e := range edges {
		span := e.at.Sub(cur)
		switch {
		case depth == 0:
			leaderless += span
		case depth >= 2:
			overlap += span
		}
		cur, depth = e.at, depth+e.delta
	}
	if depth == 0 && to.After(cur) {
		leaderless += to.Sub(cur)
	}
	return leaderless, overlap
}

// runScale measures the steady state of one cluster size at default timings.
func runScale(t *testing.T, env *kubeenv.Env, cfg cmpConfig, subnet int, plan cmpPlan, sys *systemWrites) *scaleResult {
	begin := time.Now()
	// Many members polled every 15 ms would keep this machine's two cores busy with polls.
	b := startElector(t, env, cfg.slug(benchNSPrefix+"size"), cfg, subnet, 500*time.Millisecond)
	s := &scaleResult{cfg: cfg, settle: time.Since(begin)}
	l, _ := b.settled(60 * time.Second)
	s.idle = b.measureIdle(t, env, sys, l, plan.window)
	req, wr := s.idle.api.rates()
	b.c.Logf("%s steady state: leader %.2f%% CPU %d kB, follower %.2f%% CPU %d kB, learner %.2f%% CPU %d kB; API %.3f requests/s, %.3f writes/s",
		cfg.name(), s.idle.cpuLeader, s.idle.rssLeader, s.idle.cpuFollower, s.idle.rssFollower, s.idle.cpuLrn, s.idle.rssLrn, req, wr)
	return s
}

// leaseSA is the service account of the client-go electors.
const leaseSA = "lease-elector"

// installLeaseRBAC gives the service account leaseSA what client-go's Lease lock needs in ns
// (get, create and update leases) and returns a kubeconfig for it.
func installLeaseRBAC(t *testing.T, env *kubeenv.Env, ns string) string {
	t.Helper()
	const sa = leaseSA
	ctx, cancel := context.WithTimeout(t.Context(), apiCallBudget)
	defer cancel()
	admin := env.AdminClient
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}}},
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, kubeconfig, err := env.ServiceAccountConfig(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

var (
	leaseBuildOnce sync.Once
	leaseBinPath   string
	leaseBuildErr  error
)

// leaseElectorBinary builds test/leaseelector, the client-go baseline, once per test binary
// (next to raft-elector's, and removed with it).
func leaseElectorBinary(t testing.TB) string {
	t.Helper()
	binary(t) // creates buildDir
	leaseBuildOnce.Do(func() {
		dir := buildDir
		if dir == "" { // raft-elector came from RAFT_ELECTOR_E2E_BIN
			var err error
			if dir, err = os.MkdirTemp("", "raft-elector-e2e-bin-"); err != nil {
				leaseBuildErr = err
				return
			}
			buildDir = dir
		}
		out := filepath.Join(dir, "lease-elector")
		if leaseBuildErr = goBuild("./test/leaseelector", out); leaseBuildErr != nil {
			return
		}
		leaseBinPath = out
	})
	if leaseBuildErr != nil {
		t.Fatalf("build the client-go baseline: %v", leaseBuildErr)
	}
	return leaseBinPath
}
