package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/test/faultproxy"
)

// Config describes a cluster of real members.
type Config struct {
	Members   int
	Heartbeat time.Duration // --heartbeat-interval; default 100ms
	Election  time.Duration // --election-timeout; default 1s
	// PollInterval is the lease checker's pause between two polls of one member; default 15ms.
	PollInterval time.Duration
	// ExtraArgs are appended to every member's command line.
	ExtraArgs []string
	// EnvMembers are configured through RAFT_ELECTOR_* environment variables instead of flags.
	EnvMembers []int

	// Names, when set, are the member ids (one per member; default a, b, c, ...). In
	// Kubernetes mode they are the pod names, which is what GET /leader reports.
	Names []string
	// Addrs, when set, gives member i's --peer-addr, --local-addr and --ops-addr instead of
	// free ports on 127.0.0.1. Such a cluster has no fault proxies: the members find each
	// other through their own discovery (DiscoveryArgs), the link controls (Disconnect,
	// Partition, latencies) are unavailable, and a port taken at start fails the start.
	Addrs func(i int) (peer, local, ops string)
	// DiscoveryArgs, when set, replaces the static discovery flags (--id, --discovery,
	// --peers) of member m's command line.
	DiscoveryArgs func(m *Member) []string
	// MemberEnv, when set, adds environment variables to member m's process.
	MemberEnv func(m *Member) []string
	// CommandLine, when set, is member m's whole command line (without the binary): nothing
	// else is added, so a test can run a member exactly as a manifest configures it. It must
	// listen on the addresses Addrs gives.
	CommandLine func(m *Member) []string
	// Binary, when set, is the program the members run instead of raft-elector (the client-go
	// baseline of the benchmarks), with CommandLine and Addrs. A member whose peer address is
	// empty is ready once its local and ops addresses answer.
	Binary string
	// NoLeases is for electors whose answers carry no leaseExpiresAt (the client-go baseline):
	// the lease checker then checks everything but the lease promises.
	NoLeases bool
}

// Member is one raft-elector process slot: an id, a data directory and a log file that survive
// restarts, and the current process.
type Member struct {
	Index   int
	ID      string
	DataDir string
	LogPath string

	c *Cluster

	mu          sync.Mutex
	peerAddr    string
	localAddr   string
	opsAddr     string
	proc        *process
	incarnation int
}

type process struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	done    chan struct{}
	state   *os.ProcessState // set before done is closed
	exited  time.Time
}

// Cluster is a set of members wired through one fault proxy per directed link, watched by a
// lease checker. Everything it starts is stopped by the test's cleanup.
type Cluster struct {
	t       testing.TB
	cfg     Config
	bin     string
	Dir     string
	Members []*Member
	Checker *LeaseChecker
	start   time.Time

	// links[i][j] carries member i's requests to member j (and j's replies).
	links [][]*faultproxy.Proxy

	linkMu    sync.Mutex
	connected []bool
	group     []int
	blocked   [][]bool

	client       *http.Client
	pollInterval atomic.Int64
	stopPoll     chan struct{}
	pollWG       sync.WaitGroup

	timelineMu sync.Mutex
	timeline   *os.File
}

func memberID(i int) string { return string(rune('a' + i)) }

// NewCluster starts cfg.Members members and the lease checker, and returns once every member
// process is up (listening on its three addresses); it does not wait for a leader.
func NewCluster(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("real-process cluster tests are skipped in -short mode")
	}
	if cfg.Members < 1 || (cfg.Names == nil && cfg.Members > 26) {
		t.Fatalf("cluster of %d members", cfg.Members)
	}
	if cfg.Names != nil && len(cfg.Names) != cfg.Members {
		t.Fatalf("%d names for %d members", len(cfg.Names), cfg.Members)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 100 * time.Millisecond
	}
	if cfg.Election == 0 {
		cfg.Election = time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 15 * time.Millisecond
	}
	bin := cfg.Binary
	if bin == "" {
		bin = binary(t)
	}
	dir := t.TempDir()
	c := &Cluster{
		t:         t,
		cfg:       cfg,
		bin:       bin,
		Dir:       dir,
		start:     time.Now(),
		connected: make([]bool, cfg.Members),
		group:     make([]int, cfg.Members),
		stopPoll:  make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 8,
			DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		}},
	}
	c.pollInterval.Store(int64(cfg.PollInterval))
	var err error
	c.timeline, err = os.Create(filepath.Join(dir, "timeline.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.Checker = newLeaseChecker(c.start, c.timelinef)
	c.Checker.noLeases = cfg.NoLeases
	t.Cleanup(c.cleanup)

	for i := range cfg.Members {
		m := &Member{Index: i, ID: memberID(i), c: c}
		if cfg.Names != nil {
			m.ID = cfg.Names[i]
		}
		m.DataDir = filepath.Join(dir, m.ID, "data")
		m.LogPath = filepath.Join(dir, m.ID+".log")
		if err := os.MkdirAll(m.DataDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if cfg.Addrs != nil {
			m.peerAddr, m.localAddr, m.opsAddr = cfg.Addrs(i)
		} else if err := m.pickAddrs(); err != nil {
			t.Fatal(err)
		}
		c.Members = append(c.Members, m)
		c.connected[i] = true
	}
	c.blocked = make([][]bool, cfg.Members)
	for i := range cfg.Members {
		c.blocked[i] = make([]bool, cfg.Members)
	}
	if cfg.Addrs == nil {
		c.links = make([][]*faultproxy.Proxy, cfg.Members)
	}
	for i := range c.links {
		c.links[i] = make([]*faultproxy.Proxy, cfg.Members)
		for j := range cfg.Members {
			if i == j {
				continue
			}
			p, err := faultproxy.Listen(c.Members[j].PeerAddr())
			if err != nil {
				t.Fatal(err)
			}
			c.links[i][j] = p
		}
	}

	c.Logf("starting %d members %s (heartbeat %v, election timeout %v) in %s", cfg.Members, c.IDs(c.All()), cfg.Heartbeat, cfg.Election, dir)
	errs := make([]error, cfg.Members)
	var wg sync.WaitGroup
	for i, m := range c.Members {
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	for _, m := range c.Members {
		c.pollWG.Go(func() { c.pollLoop(m) })
	}
	return c
}

// Logf logs an event of the test to the test log and the timeline.
func (c *Cluster) Logf(format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	c.t.Logf("+%.3fs %s", time.Since(c.start).Seconds(), msg)
	c.timelinef("EVENT %s", msg)
}

func (c *Cluster) timelinef(format string, args ...any) {
	c.timelineMu.Lock()
	defer c.timelineMu.Unlock()
	if c.timeline == nil {
		return
	}
	now := time.Now()
	fmt.Fprintf(c.timeline, "+%.3fs %s %s\n", now.Sub(c.start).Seconds(), now.Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// N is the number of members.
func (c *Cluster) N() int { return len(c.Members) }

// All returns every member index.
func (c *Cluster) All() []int { return c.Except() }

// Except returns every member index not in skip.
func (c *Cluster) Except(skip ...int) []int {
	var out []int
	for i := range c.Members {
		found := false
		for _, s := range skip {
			found = found || s == i
		}
		if !found {
			out = append(out, i)
		}
	}
	return out
}

// IDs names a set of members.
func (c *Cluster) IDs(set []int) string {
	var ids []string
	for _, i := range set {
		ids = append(ids, c.Members[i].ID)
	}
	return "[" + strings.Join(ids, " ") + "]"
}

// Index returns the index of the member with the given id, or -1.
func (c *Cluster) Index(id string) int {
	for _, m := range c.Members {
		if m.ID == id {
			return m.Index
		}
	}
	return -1
}

// --- Member processes ---

func (m *Member) pickAddrs() error {
	var addrs [3]string
	for k := range addrs {
		a, err := freeAddr()
		if err != nil {
			return fmt.Errorf("pick a port for %s: %w", m.ID, err)
		}
		addrs[k] = a
	}
	m.mu.Lock()
	m.peerAddr, m.localAddr, m.opsAddr = addrs[0], addrs[1], addrs[2]
	m.mu.Unlock()
	return nil
}

// PeerAddr is the member's --peer-addr.
func (m *Member) PeerAddr() string { m.mu.Lock(); defer m.mu.Unlock(); return m.peerAddr }

// LocalAddr is the member's --local-addr.
func (m *Member) LocalAddr() string { m.mu.Lock(); defer m.mu.Unlock(); return m.localAddr }

// OpsAddr is the member's --ops-addr.
func (m *Member) OpsAddr() string { m.mu.Lock(); defer m.mu.Unlock(); return m.opsAddr }

// Incarnation counts the member's process starts.
func (m *Member) Incarnation() int { m.mu.Lock(); defer m.mu.Unlock(); return m.incarnation }

// Pid is the current process id, or 0.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.pid
}

func (m *Member) current() *process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// Running reports whether the member's current process has not exited.
func (m *Member) Running() bool {
	p := m.current()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Args is the member's command line (without the binary).
func (m *Member) Args() []string {
	c := m.c
	if c.cfg.CommandLine != nil {
		return c.cfg.CommandLine(m)
	}
	var args []string
	if c.cfg.DiscoveryArgs != nil {
		args = c.cfg.DiscoveryArgs(m)
	} else {
		var peers []string
		for j, o := range c.Members {
			addr := o.PeerAddr()
			if j != m.Index {
				addr = c.links[m.Index][j].Addr()
			}
			peers = append(peers, o.ID+"="+addr)
		}
		args = []string{
			"--id=" + m.ID,
			"--discovery=static",
			"--peers=" + strings.Join(peers, ","),
		}
	}
	args = append(args,
		"--peer-addr="+m.PeerAddr(),
		"--local-addr="+m.LocalAddr(),
		"--ops-addr="+m.OpsAddr(),
		"--data-dir="+m.DataDir,
		"--heartbeat-interval="+c.cfg.Heartbeat.String(),
		"--election-timeout="+c.cfg.Election.String(),
		"--log-level=debug",
		"--log-format=text",
	)
	return append(args, c.cfg.ExtraArgs...)
}

func (m *Member) spawn() (*process, int64, error) {
	f, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	args := m.Args()
	m.mu.Lock()
	inc := m.incarnation + 1
	m.mu.Unlock()
	fmt.Fprintf(f, "=== e2e: start #%d of %s at %s: %s %s\n", inc, m.ID, time.Now().Format("15:04:05.000"), m.c.bin, strings.Join(args, " "))
	offset, _ := f.Seek(0, io.SeekEnd)
	cmd := exec.Command(m.c.bin, args...)
	cmd.Env = childEnv()
	if slices.Contains(m.c.cfg.EnvMembers, m.Index) {
		// Every flag also reads RAFT_ELECTOR_<FLAG>.
		cmd.Args = cmd.Args[:1]
		for _, a := range args {
			name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			cmd.Env = append(cmd.Env, "RAFT_ELECTOR_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+"="+value)
		}
	}
	if m.c.cfg.MemberEnv != nil {
		cmd.Env = append(cmd.Env, m.c.cfg.MemberEnv(m)...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group, so cleanup can kill everything the member might start; and SIGKILL
	// when the test process dies (a test timeout), so no member outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", m.ID, err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		p.exited = time.Now()
		close(p.done)
	}()
	m.mu.Lock()
	m.proc, m.incarnation = p, inc
	m.mu.Unlock()
	return p, offset, nil
}

// start runs a new process and waits until it listens on all three addresses. A port taken by
// someone else between the pick and the bind is retried on new ports (the proxies that lead to
// the member are re-targeted; the others reach it only through them).
func (m *Member) start() error {
	const attempts = 5
	for attempt := 1; ; attempt++ {
		p, offset, err := m.spawn()
		if err != nil {
			return err
		}
		err = m.waitReady(p, time.Now().Add(15*time.Second))
		if err == nil {
			m.c.timelinef("EVENT %s started, pid %d, incarnation %d", m.ID, p.pid, m.Incarnation())
			return nil
		}
		select {
		case <-p.done:
			out := m.logFrom(offset)
			// Addresses chosen by Config.Addrs are not the harness's to change.
			if attempt < attempts && m.c.links != nil && strings.Contains(out, "address already in use") {
				m.c.timelinef("EVENT %s: a port was taken; retrying on new ports", m.ID)
				if err := m.pickAddrs(); err != nil {
					return err
				}
				for j := range m.c.Members {
					if j != m.Index {
						m.c.links[j][m.Index].SetTarget(m.PeerAddr())
					}
				}
				continue
			}
			return fmt.Errorf("%s exited while starting (%v): %v\n%s", m.ID, p.state, err, out)
		default:
			m.signal(p, syscall.SIGKILL)
			<-p.done
			return fmt.Errorf("%s: %v\n%s", m.ID, err, m.logFrom(offset))
		}
	}
}

func (m *Member) waitReady(p *process, deadline time.Time) error {
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.state)
		default:
		}
		if last = m.ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within 15s: %v", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *Member) ready() error {
	if peer := m.PeerAddr(); peer != "" {
		conn, err := net.DialTimeout("tcp", peer, 200*time.Millisecond)
		if err != nil {
			return fmt.Errorf("peer address: %w", err)
		}
		conn.Close()
	}
	code, _, err := m.c.get(m.OpsAddr(), "/healthz", time.Second)
	if err != nil {
		return fmt.Errorf("ops /healthz: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("ops /healthz: status %d", code)
	}
	code, body, err := m.c.get(m.LocalAddr(), "/leader", time.Second)
	if err != nil {
		return fmt.Errorf("local /leader: %w", err)
	}
	if code != http.StatusOK && code != http.StatusServiceUnavailable {
		return fmt.Errorf("local /leader: status %d: %s", code, body)
	}
	return nil
}

func (m *Member) logFrom(offset int64) string {
	f, err := os.Open(m.LogPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err.Error()
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	return string(b)
}

// signal signals the member's process group.
func (m *Member) signal(p *process, sig syscall.Signal) error {
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, m.ID, p.pid, err)
	}
	return nil
}

// --- Process control for tests ---

func (c *Cluster) proc(i int) *process {
	c.t.Helper()
	p := c.Members[i].current()
	if p == nil {
		c.t.Fatalf("%s has no process", c.Members[i].ID)
	}
	return p
}

// Kill sends SIGKILL to member i and waits for it to die.
func (c *Cluster) Kill(i int) time.Time {
	c.t.Helper()
	m, p := c.Members[i], c.proc(i)
	at := time.Now()
	if err := m.signal(p, syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	c.Logf("SIGKILL %s (pid %d)", m.ID, p.pid)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s (pid %d) still running 10s after SIGKILL", m.ID, p.pid)
	}
	return at
}

// Pause sends SIGSTOP to member i.
func (c *Cluster) Pause(i int) time.Time {
	c.t.Helper()
	m, p := c.Members[i], c.proc(i)
	at := time.Now()
	if err := m.signal(p, syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	c.Logf("SIGSTOP %s (pid %d)", m.ID, p.pid)
	return at
}

// Resume sends SIGCONT to member i.
func (c *Cluster) Resume(i int) time.Time {
	c.t.Helper()
	m, p := c.Members[i], c.proc(i)
	at := time.Now()
	if err := m.signal(p, syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
	c.Logf("SIGCONT %s (pid %d)", m.ID, p.pid)
	return at
}

// Terminate sends SIGTERM to member i and returns when it was sent.
func (c *Cluster) Terminate(i int) time.Time {
	c.t.Helper()
	m, p := c.Members[i], c.proc(i)
	at := time.Now()
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil {
		c.t.Fatalf("SIGTERM %s: %v", m.ID, err)
	}
	c.Logf("SIGTERM %s (pid %d)", m.ID, p.pid)
	return at
}

// WaitExit waits for member i's process to exit and returns its exit code (-1 when a signal
// ended it) and when the harness noticed the exit.
func (c *Cluster) WaitExit(i int, timeout time.Duration) (int, time.Time) {
	c.t.Helper()
	m, p := c.Members[i], c.proc(i)
	select {
	case <-p.done:
	case <-time.After(timeout):
		c.t.Fatalf("%s (pid %d) did not exit within %v", m.ID, p.pid, timeout)
	}
	c.Logf("%s exited: %v", m.ID, p.state)
	return p.state.ExitCode(), p.exited
}

// Restart starts member i again with the same id, data directory and addresses.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.Members[i]
	if m.Running() {
		c.t.Fatalf("restart %s: still running", m.ID)
	}
	if err := m.start(); err != nil {
		c.t.Fatalf("restart %s: %v", m.ID, err)
	}
	c.Logf("restarted %s (pid %d, incarnation %d)", m.ID, m.Pid(), m.Incarnation())
}

// --- Links ---

// requireLinks fails the test when the cluster runs without fault proxies (Config.Addrs).
func (c *Cluster) requireLinks() {
	c.t.Helper()
	if c.links == nil {
		c.t.Fatalf("this cluster has no fault proxies (Config.Addrs is set): use signals instead of link faults")
	}
}

// applyLinks sets every proxy from the model: link i→j passes when both ends are connected,
// in the same partition group, and the link is not blocked on its own.
func (c *Cluster) applyLinks() {
	for i := range c.Members {
		for j := range c.Members {
			if i == j {
				continue
			}
			pass := c.connected[i] && c.connected[j] && c.group[i] == c.group[j] && !c.blocked[i][j]
			if pass {
				c.links[i][j].Heal()
			} else {
				c.links[i][j].Cut()
			}
		}
	}
}

// Disconnect cuts every link to and from member i (the course's disconnect).
func (c *Cluster) Disconnect(i int) {
	c.t.Helper()
	c.requireLinks()
	c.linkMu.Lock()
	c.connected[i] = false
	c.applyLinks()
	c.linkMu.Unlock()
	c.Logf("disconnected %s", c.Members[i].ID)
}

// Connect restores member i's links to every connected member.
func (c *Cluster) Connect(i int) {
	c.t.Helper()
	c.requireLinks()
	c.linkMu.Lock()
	c.connected[i] = true
	c.applyLinks()
	c.linkMu.Unlock()
	c.Logf("connected %s", c.Members[i].ID)
}

// Partition splits the cluster into groups; members in no group are each alone.
func (c *Cluster) Partition(groups ...[]int) {
	c.t.Helper()
	c.requireLinks()
	c.linkMu.Lock()
	for i := range c.group {
		c.group[i] = -1 - i
	}
	var desc []string
	for g, set := range groups {
		for _, i := range set {
			c.group[i] = g
		}
		desc = append(desc, c.IDs(set))
	}
	c.applyLinks()
	c.linkMu.Unlock()
	c.Logf("partitioned into %s (others alone)", strings.Join(desc, " "))
}

// BlockLink cuts the directed link from→to only.
func (c *Cluster) BlockLink(from, to int) {
	c.t.Helper()
	c.requireLinks()
	c.linkMu.Lock()
	c.blocked[from][to] = true
	c.applyLinks()
	c.linkMu.Unlock()
	c.Logf("blocked link %s→%s", c.Members[from].ID, c.Members[to].ID)
}

// HealAll connects everyone, removes partitions and blocked links, and removes latency.
func (c *Cluster) HealAll() {
	c.t.Helper()
	c.requireLinks()
	c.linkMu.Lock()
	for i := range c.Members {
		c.connected[i] = true
		c.group[i] = 0
		for j := range c.Members {
			c.blocked[i][j] = false
			if i != j {
				c.links[i][j].SetLatency(0, 0)
			}
		}
	}
	c.applyLinks()
	c.linkMu.Unlock()
	c.Logf("healed all links")
}

// SetLinkLatency delays the directed link from→to by base plus a random jitter in [0, jitter).
func (c *Cluster) SetLinkLatency(from, to int, base, jitter time.Duration) {
	c.t.Helper()
	c.requireLinks()
	c.links[from][to].SetLatency(base, jitter)
	c.Logf("latency %v + up to %v on link %s→%s", base, jitter, c.Members[from].ID, c.Members[to].ID)
}

// SetLatency delays every link by base plus a random jitter in [0, jitter).
func (c *Cluster) SetLatency(base, jitter time.Duration) {
	c.t.Helper()
	c.requireLinks()
	for i := range c.Members {
		for j := range c.Members {
			if i != j {
				c.links[i][j].SetLatency(base, jitter)
			}
		}
	}
	c.Logf("latency %v + up to %v on every link", base, jitter)
}

// --- Observing ---

func (c *Cluster) get(addr, path string, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.getCtx(ctx, addr, path)
}

func (c *Cluster) getCtx(ctx context.Context, addr, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// Query asks member i's local API path (a GET /leader form) and returns the observation. The
// observation is not recorded; see Observe.
func (c *Cluster) Query(i int, path, source string, timeout time.Duration) (Observation, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.QueryCtx(ctx, i, path, source)
}

// QueryCtx is Query bounded by a context.
func (c *Cluster) QueryCtx(ctx context.Context, i int, path, source string) (Observation, error) {
	m := c.Members[i]
	addr, inc := m.LocalAddr(), m.Incarnation()
	o := Observation{Member: i, ID: m.ID, Incarnation: inc, Source: source, Sent: time.Now()}
	code, body, err := c.getCtx(ctx, addr, path)
	o.Recv = time.Now()
	if err != nil {
		return o, err
	}
	o.Code = code
	if err := json.Unmarshal(body, &o.Answer); err != nil {
		return o, fmt.Errorf("%s %s: status %d, body %q: %w", m.ID, path, code, body, err)
	}
	if o.Answer.LeaseExpiresAt != "" {
		if at, err := time.Parse(time.RFC3339Nano, o.Answer.LeaseExpiresAt); err == nil {
			o.Lease = at
		}
	}
	return o, nil
}

// Observe queries member i's GET /leader once and records the answer with the checker.
func (c *Cluster) Observe(i int) (Observation, error) {
	o, err := c.Query(i, "/leader", "direct", time.Second)
	if err == nil {
		c.Checker.Record(o)
	}
	return o, err
}

// SetPollInterval changes the checker's polling pace (the benchmark slows it while it measures
// idle CPU).
func (c *Cluster) SetPollInterval(d time.Duration) { c.pollInterval.Store(int64(d)) }

func (c *Cluster) pollLoop(m *Member) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for n := 0; ; n++ {
		select {
		case <-c.stopPoll:
			return
		case <-timer.C:
		}
		// Every fourth poll asks GET /, the leader-elector compatible answer.
		if n%4 == 3 {
			c.ObserveCompat(m.Index)
		} else if o, err := c.Query(m.Index, "/leader", "poll", time.Second); err == nil {
			c.Checker.Record(o)
		}
		timer.Reset(time.Duration(c.pollInterval.Load()))
	}
}

// ObserveCompat queries member i's GET / and records the answer with the checker.
func (c *Cluster) ObserveCompat(i int) (string, error) {
	m := c.Members[i]
	addr, inc := m.LocalAddr(), m.Incarnation()
	o := Observation{Member: i, ID: m.ID, Incarnation: inc, Source: "compat", Sent: time.Now()}
	code, body, err := c.get(addr, "/", time.Second)
	o.Recv = time.Now()
	if err != nil {
		return "", err
	}
	var a struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return "", fmt.Errorf("%s GET /: status %d, body %q: %w", m.ID, code, body, err)
	}
	c.Checker.RecordCompat(o, a.Name)
	return a.Name, nil
}

// fresh returns the latest observation of every member of set, each received after since.
func (c *Cluster) fresh(set []int, since time.Time) (map[int]Observation, bool) {
	out := map[int]Observation{}
	for _, i := range set {
		o, ok := c.Checker.Latest(i)
		if !ok || o.Recv.Before(since) {
			return nil, false
		}
		out[i] = o
	}
	return out, true
}

// agreed reports the member of set that claims the lease while every member of set names it.
func (c *Cluster) agreed(obs map[int]Observation, set []int) (int, uint64, bool) {
	leader := -1
	for _, i := range set {
		if obs[i].Answer.IsLeader {
			if leader >= 0 {
				return -1, 0, false
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1, 0, false
	}
	id := c.Members[leader].ID
	for _, i := range set {
		if obs[i].Answer.Name != id {
			return -1, 0, false
		}
	}
	return leader, obs[leader].Answer.Term, true
}

// DescribeLatest lists the latest answer of every member, for failure messages.
func (c *Cluster) DescribeLatest() string {
	var sb strings.Builder
	for i, m := range c.Members {
		o, ok := c.Checker.Latest(i)
		switch {
		case !ok:
			fmt.Fprintf(&sb, "\n  %s: no answer yet", m.ID)
		default:
			fmt.Fprintf(&sb, "\n  %s", c.Checker.describe(o))
		}
		if !m.Running() {
			sb.WriteString(" [process exited]")
		}
	}
	return sb.String()
}

// WaitAgreedLeader waits until one member of set claims the lease and every member of set
// names it, judged on answers received after the call; it returns the leader, its term and
// when the agreement was seen.
func (c *Cluster) WaitAgreedLeader(set []int, timeout time.Duration) (int, uint64, time.Time) {
	c.t.Helper()
	l, term, at, ok := c.tryAgreedLeader(set, timeout)
	if !ok {
		c.t.Fatalf("no leader agreed by all of %s within %v; latest answers:%s", c.IDs(set), timeout, c.DescribeLatest())
	}
	c.Logf("%s lead %s in term %d", c.Members[l].ID, c.IDs(set), term)
	return l, term, at
}

// tryAgreedLeader is WaitAgreedLeader without the failure: ok is false when no leader was
// agreed within timeout.
func (c *Cluster) tryAgreedLeader(set []int, timeout time.Duration) (leader int, term uint64, at time.Time, ok bool) {
	since := time.Now()
	deadline := since.Add(timeout)
	for {
		if obs, fresh := c.fresh(set, since); fresh {
			if l, term, agreed := c.agreed(obs, set); agreed {
				at := since
				for _, o := range obs {
					if o.Recv.After(at) {
						at = o.Recv
					}
				}
				return l, term, at, true
			}
		}
		if time.Now().After(deadline) {
			return -1, 0, time.Time{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitNoClaims waits until no member of set claims the lease, judged on answers received
// after the call, and returns when that was seen.
func (c *Cluster) WaitNoClaims(set []int, timeout time.Duration) time.Time {
	c.t.Helper()
	since := time.Now()
	deadline := since.Add(timeout)
	for {
		if obs, ok := c.fresh(set, since); ok {
			none := true
			for _, o := range obs {
				none = none && !o.Answer.IsLeader
			}
			if none {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("members of %s still claim the lease after %v; latest answers:%s", c.IDs(set), timeout, c.DescribeLatest())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitUntil polls cond until it holds or the timeout passes.
func (c *Cluster) WaitUntil(timeout time.Duration, what string, cond func() bool) time.Time {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %v; latest answers:%s", what, timeout, c.DescribeLatest())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Now()
}

// observeWindow watches for the window (a bounded observation, not a synchronisation) and
// checks that every member of set was answering throughout.
func (c *Cluster) observeWindow(set []int, window time.Duration) (from, to time.Time) {
	c.t.Helper()
	counts := map[int]int{}
	for _, i := range set {
		counts[i] = c.Checker.Count(i)
	}
	from = time.Now()
	time.Sleep(window)
	to = time.Now()
	for _, i := range set {
		if got := c.Checker.Count(i) - counts[i]; got < 3 {
			c.t.Fatalf("%s answered only %d times in %v", c.Members[i].ID, got, window)
		}
	}
	return from, to
}

// ExpectNoClaims watches set for the window and fails if any of them claims the lease.
func (c *Cluster) ExpectNoClaims(set []int, window time.Duration) {
	c.t.Helper()
	from, to := c.observeWindow(set, window)
	in := map[int]bool{}
	for _, i := range set {
		in[i] = true
	}
	for _, o := range c.Checker.Claims(from, to) {
		if in[o.Member] {
			c.t.Fatalf("%s claimed the lease without a majority: %s", o.ID, c.Checker.describe(o))
		}
	}
}

// ExpectStableLeader watches set for the window and fails if any member names another leader
// or reports another term.
func (c *Cluster) ExpectStableLeader(set []int, leader int, term uint64, window time.Duration) {
	c.t.Helper()
	from, to := c.observeWindow(set, window)
	id := c.Members[leader].ID
	for _, i := range set {
		for _, o := range c.Checker.Changes(i, from, to) {
			if o.Answer.Name != id || o.Answer.Term != term {
				c.t.Fatalf("leadership changed while nothing failed (want %s in term %d): %s", id, term, c.Checker.describe(o))
			}
		}
	}
}

// --- Cleanup and failure reports ---

func (c *Cluster) cleanup() {
	close(c.stopPoll)
	c.pollWG.Wait()
	for _, m := range c.Members {
		p := m.current()
		if p == nil {
			continue
		}
		_ = m.signal(p, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			c.t.Errorf("%s (pid %d) survived SIGKILL for 10s", m.ID, p.pid)
		}
	}
	for _, v := range c.Checker.Violations() {
		c.t.Errorf("lease checker: %s", v)
	}
	c.t.Logf("lease checker: %s", c.Checker.Summary())
	c.timelineMu.Lock()
	c.timeline.Close()
	c.timeline = nil
	c.timelineMu.Unlock()
	if c.t.Failed() {
		c.reportFailure()
	}
	for i := range c.links {
		for _, p := range c.links[i] {
			if p != nil {
				p.Close()
			}
		}
	}
	c.client.CloseIdleConnections()
}

func tailLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *Cluster) reportFailure() {
	n := 40
	if v, err := strconv.Atoi(os.Getenv("RAFT_ELECTOR_E2E_TAIL")); err == nil && v > 0 {
		n = v
	}
	var names []string
	for _, m := range c.Members {
		names = append(names, m.LogPath)
	}
	sort.Strings(names)
	for _, p := range names {
		c.t.Logf("---- last %d lines of %s ----\n%s", n, filepath.Base(p), tailLines(p, n))
	}
	c.t.Logf("---- last %d lines of the checker timeline ----\n%s", 2*n, tailLines(filepath.Join(c.Dir, "timeline.log"), 2*n))
	keep, err := os.MkdirTemp("", "raft-elector-e2e-"+strings.ReplaceAll(c.t.Name(), "/", "_")+"-")
	if err != nil {
		return
	}
	for _, p := range append(names, filepath.Join(c.Dir, "timeline.log")) {
		if b, err := os.ReadFile(p); err == nil {
			_ = os.WriteFile(filepath.Join(keep, filepath.Base(p)), b, 0o644)
		}
	}
	c.t.Logf("full logs kept in %s", keep)
}

// RunOnce runs member i's binary once more with its own data directory but fresh addresses
// (or the given args instead), outside the cluster, and returns its exit code and output.
// The run is killed after the timeout.
func (c *Cluster) RunOnce(i int, timeout time.Duration, extraEnv ...string) (int, string) {
	c.t.Helper()
	m := c.Members[i]
	var args []string
	for _, a := range m.Args() {
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "--peer-addr", "--local-addr", "--ops-addr":
			addr, err := freeAddr()
			if err != nil {
				c.t.Fatal(err)
			}
			a = name + "=" + addr
		}
		args = append(args, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = childEnv(extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return -1, string(out) + "\n[killed by the test after " + timeout.String() + "]"
	}
	return cmd.ProcessState.ExitCode(), string(out)
}
