package e2e

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	benchFailover = flag.Bool("failover.bench", false, "run TestFailoverBenchmark (about 10–20 minutes; see `make bench`)")
	benchRounds   = flag.Int("failover.rounds", 50, "TestFailoverBenchmark: SIGKILL and SIGTERM rounds per configuration")
	benchQuick    = flag.Bool("failover.quick", false, "TestFailoverBenchmark: 5 rounds and a 3 s idle window; writes no report unless -failover.out is given")
	benchIdle     = flag.Duration("failover.idle", 10*time.Second, "TestFailoverBenchmark: idle CPU measurement window")
	benchOut      = flag.String("failover.out", "", "TestFailoverBenchmark: markdown report path (default docs/benchmarks.md in full mode)")
)

// benchCommand is how `make bench` runs the benchmark; the report quotes it.
const benchCommand = "go test ./test/e2e -run '^TestFailoverBenchmark$' -count=1 -timeout 60m -v -args -failover.bench"

type benchConfig struct {
	timings   string
	members   int
	heartbeat time.Duration
	election  time.Duration
}

type benchResult struct {
	cfg           benchConfig
	failover      []time.Duration // SIGKILL → every survivor names the same new leader
	handover      []time.Duration // SIGTERM → the successor claims the lease
	handoverAll   []time.Duration // SIGTERM → every survivor names the successor
	exit          []time.Duration // SIGTERM → the old process exited
	badExits      int
	cpuLeader     float64 // % of one core
	cpuFollower   float64
	rssLeader     int64 // kB
	rssFollower   int64
	checked       string
	violations    []string
	idleWindow    time.Duration
	pollDuringCPU time.Duration
}

// TestFailoverBenchmark measures, for 3 and 5 members with the default (100ms/1s) and fast
// (20ms/200ms) timings: failover after SIGKILL of the leader (from the kill until every
// survivor names the same new leader that claims the lease), handover after SIGTERM (from the
// signal until the successor claims the lease), the idle CPU and RSS of a leader and a
// follower. The lease checker runs throughout. Gated behind -failover.bench.
func TestFailoverBenchmark(t *testing.T) {
	if !*benchFailover {
		t.Skip("a benchmark: run with -failover.bench (make bench)")
	}
	rounds, idle := *benchRounds, *benchIdle
	if *benchQuick {
		rounds, idle = 5, 3*time.Second
	}
	configs := []benchConfig{
		{"default", 3, 100 * time.Millisecond, time.Second},
		{"default", 5, 100 * time.Millisecond, time.Second},
		{"fast", 3, 20 * time.Millisecond, 200 * time.Millisecond},
		{"fast", 5, 20 * time.Millisecond, 200 * time.Millisecond},
	}
	started := time.Now()
	var results []*benchResult
	for _, cfg := range configs {
		name := fmt.Sprintf("%s-%dmembers", cfg.timings, cfg.members)
		t.Run(name, func(t *testing.T) {
			r := runFailoverBench(t, cfg, rounds, idle)
			results = append(results, r)
			t.Logf("\n%s", markdownTables([]*benchResult{r}))
		})
	}
	report := markdownTables(results)
	fmt.Printf("\n%s\n", report)
	out := *benchOut
	if out == "" && !*benchQuick {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		out = filepath.Join(root, "docs", "benchmarks.md")
	}
	if out == "" {
		return
	}
	doc := benchDoc(results, rounds, idle, time.Since(started))
	// Sections measured by other runs (the API-server load of the Kubernetes suite) follow a
	// marker and are kept.
	if old, err := os.ReadFile(out); err == nil {
		if i := strings.Index(string(old), keptMarker); i >= 0 {
			doc += "\n" + string(old[i:])
		}
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

func runFailoverBench(t *testing.T, cfg benchConfig, rounds int, idle time.Duration) *benchResult {
	r := &benchResult{cfg: cfg, idleWindow: idle}
	c := NewCluster(t, Config{Members: cfg.members, Heartbeat: cfg.heartbeat, Election: cfg.election})
	const settle = 15 * time.Second
	l, _, _ := c.WaitAgreedLeader(c.All(), settle)

	// Idle resources first, on a cluster that has just settled. The checker slows to one poll
	// per member per second so that it does not dominate what it measures.
	r.pollDuringCPU = time.Second
	c.SetPollInterval(r.pollDuringCPU)
	f := c.Except(l)[0]
	lPid, fPid := c.Members[l].Pid(), c.Members[f].Pid()
	l0, err1 := procCPUTicks(lPid)
	f0, err2 := procCPUTicks(fPid)
	from := time.Now()
	time.Sleep(idle) // the measurement window
	l1, err3 := procCPUTicks(lPid)
	f1, err4 := procCPUTicks(fPid)
	window := time.Since(from)
	if err := firstErr(err1, err2, err3, err4); err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	r.cpuLeader = cpuPercent(l1-l0, window)
	r.cpuFollower = cpuPercent(f1-f0, window)
	r.rssLeader, _ = procRSS(lPid)
	r.rssFollower, _ = procRSS(fPid)
	c.SetPollInterval(c.cfg.PollInterval)
	c.Logf("idle over %v: leader %.2f%% CPU, %d kB RSS; follower %.2f%% CPU, %d kB RSS", window.Round(time.Millisecond), r.cpuLeader, r.rssLeader, r.cpuFollower, r.rssFollower)
	if l2, _, _ := c.WaitAgreedLeader(c.All(), settle); l2 != l {
		c.Logf("leadership moved from %s to %s while idle", c.Members[l].ID, c.Members[l2].ID)
	}

	// Failover after SIGKILL.
	for round := range rounds {
		l, oldTerm, _ := c.WaitAgreedLeader(c.All(), settle)
		survivors := c.Except(l)
		ws := c.watch(t, survivors)
		killed := c.Kill(l)
		var latest = map[int]Observation{}
		var done time.Duration
		deadline := time.After(20 * time.Second)
		for done == 0 {
			select {
			case o := <-ws.events:
				if prev, ok := latest[o.Member]; !ok || o.Recv.After(prev.Recv) {
					latest[o.Member] = o
				}
				if len(latest) == len(survivors) {
					if nl, term, ok := c.agreed(latest, survivors); ok && term > oldTerm {
						_ = nl
						done = o.Recv.Sub(killed)
					}
				}
			case <-deadline:
				ws.stop()
				t.Fatalf("round %d: no new leader named by all of %s within 20s of SIGKILL of %s; latest:%s", round, c.IDs(survivors), c.Members[l].ID, c.DescribeLatest())
			}
		}
		ws.stop()
		r.failover = append(r.failover, done)
		c.Logf("kill round %d: failover %v", round, done.Round(time.Millisecond))
		c.Restart(l)
	}

	// Handover after SIGTERM.
	for round := range rounds {
		l, oldTerm, _ := c.WaitAgreedLeader(c.All(), settle)
		survivors := c.Except(l)
		ws := c.watch(t, survivors)
		sent := c.Terminate(l)
		var latest = map[int]Observation{}
		var first, all time.Duration
		deadline := time.After(20 * time.Second)
		for all == 0 {
			select {
			case o := <-ws.events:
				if prev, ok := latest[o.Member]; !ok || o.Recv.After(prev.Recv) {
					latest[o.Member] = o
				}
				if first == 0 && o.Answer.IsLeader && o.Answer.Term > oldTerm {
					first = o.Recv.Sub(sent)
				}
				if len(latest) == len(survivors) {
					if _, term, ok := c.agreed(latest, survivors); ok && term > oldTerm {
						all = o.Recv.Sub(sent)
					}
				}
			case <-deadline:
				ws.stop()
				t.Fatalf("round %d: no successor named by all of %s within 20s of SIGTERM of %s; latest:%s", round, c.IDs(survivors), c.Members[l].ID, c.DescribeLatest())
			}
		}
		ws.stop()
		code, exited := c.WaitExit(l, 20*time.Second)
		if code != 0 {
			r.badExits++
			t.Errorf("round %d: %s exited with %d after SIGTERM", round, c.Members[l].ID, code)
		}
		r.handover = append(r.handover, first)
		r.handoverAll = append(r.handoverAll, all)
		r.exit = append(r.exit, exited.Sub(sent))
		c.Logf("term round %d: successor leads after %v, all agree after %v, old process exited after %v", round, first.Round(time.Millisecond), all.Round(time.Millisecond), exited.Sub(sent).Round(time.Millisecond))
		c.Restart(l)
	}
	c.WaitAgreedLeader(c.All(), settle)
	r.violations = c.Checker.Violations()
	r.checked = c.Checker.Summary()
	return r
}

// watchSet long-polls GET /leader on a set of members and delivers every answer.
type watchSet struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	events chan Observation
}

// watch starts a long-poll loop on every member of set and returns once each has answered
// once, so that the watches are in place before the fault.
func (c *Cluster) watch(t testing.TB, set []int) *watchSet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ws := &watchSet{cancel: cancel, events: make(chan Observation, 4096)}
	ready := make(chan int, len(set))
	for _, i := range set {
		ws.wg.Go(func() {
			path := "/leader"
			for first := true; ctx.Err() == nil; {
				o, err := c.QueryCtx(ctx, i, path, "watch")
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				c.Checker.Record(o)
				select {
				case ws.events <- o:
				case <-ctx.Done():
					return
				}
				if first {
					first = false
					ready <- i
				}
				path = fmt.Sprintf("/leader?index=%d&wait=30s", o.Answer.Index)
			}
		})
	}
	timeout := time.After(10 * time.Second)
	for range set {
		select {
		case <-ready:
		case <-timeout:
			ws.stop()
			t.Fatalf("watches on %s not answering", c.IDs(set))
		}
	}
	return ws
}

func (ws *watchSet) stop() {
	ws.cancel()
	ws.wg.Wait()
}

// procCPUTicks is utime+stime of a process in clock ticks (USER_HZ, 100 on Linux).
func procCPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// Fields after the command name, which is in parentheses and may contain spaces.
	k := strings.LastIndexByte(s, ')')
	if k < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[k+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := firstErr(err1, err2); err != nil {
		return 0, err
	}
	return u + st, nil
}

const userHZ = 100

func cpuPercent(ticks int64, window time.Duration) float64 {
	return 100 * float64(ticks) / userHZ / window.Seconds()
}

// procRSS is VmRSS of a process in kB.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// percentile is the nearest-rank percentile of ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(q*float64(len(s)))) - 1
	k = max(0, min(k, len(s)-1))
	return s[k]
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

func markdownTables(results []*benchResult) string {
	var sb strings.Builder
	sb.WriteString("### Failover after SIGKILL of the leader (ms, until every survivor names the new leader)\n\n")
	sb.WriteString("| timings (heartbeat/election) | members | rounds | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&sb, "| %s (%v/%v) | %d | %d | %s | %s | %s | %s |\n", r.cfg.timings, r.cfg.heartbeat, r.cfg.election, r.cfg.members,
			len(r.failover), ms(percentile(r.failover, .5)), ms(percentile(r.failover, .9)), ms(percentile(r.failover, .99)), ms(percentile(r.failover, 1)))
	}
	sb.WriteString("\n### Handover after SIGTERM of the leader (ms, until the successor claims the lease)\n\n")
	sb.WriteString("| timings (heartbeat/election) | members | rounds | p50 | p90 | p99 | max | all agree p50 | old process exit p50 | non-zero exits |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&sb, "| %s (%v/%v) | %d | %d | %s | %s | %s | %s | %s | %s | %d |\n", r.cfg.timings, r.cfg.heartbeat, r.cfg.election, r.cfg.members,
			len(r.handover), ms(percentile(r.handover, .5)), ms(percentile(r.handover, .9)), ms(percentile(r.handover, .99)), ms(percentile(r.handover, 1)),
			ms(percentile(r.handoverAll, .5)), ms(percentile(r.exit, .5)), r.badExits)
	}
	sb.WriteString("\n### Idle resources of one member\n\n")
	sb.WriteString("| timings (heartbeat/election) | members | window | leader CPU | follower CPU | leader RSS | follower RSS |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&sb, "| %s (%v/%v) | %d | %v | %.2f%% | %.2f%% | %.1f MiB | %.1f MiB |\n", r.cfg.timings, r.cfg.heartbeat, r.cfg.election, r.cfg.members,
			r.idleWindow, r.cpuLeader, r.cpuFollower, float64(r.rssLeader)/1024, float64(r.rssFollower)/1024)
	}
	sb.WriteString("\n### Lease checker\n\n")
	for _, r := range results {
		fmt.Fprintf(&sb, "- %s, %d members: violations: %d; %s\n", r.cfg.timings, r.cfg.members, len(r.violations), r.checked)
		for k, v := range r.violations {
			if k == 3 {
				fmt.Fprintf(&sb, "  - ... and %d more\n", len(r.violations)-k)
				break
			}
			first, _, _ := strings.Cut(v, "\n")
			fmt.Fprintf(&sb, "  - %s\n", first)
		}
	}
	return sb.String()
}

func benchDoc(results []*benchResult, rounds int, idle, took time.Duration) string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	gover := runtime.Version()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		gover = strings.TrimSpace(string(out))
	}
	var sb strings.Builder
	sb.WriteString("# Benchmarks\n\n")
	sb.WriteString("Failover and handover of real `raft-elector` processes on one machine, over HTTP on loopback\n")
	sb.WriteString("through the fault proxies of the end-to-end tests (all links passing). Written by\n")
	sb.WriteString("`TestFailoverBenchmark` in `test/e2e`; regenerate with `make bench`, which runs:\n\n")
	fmt.Fprintf(&sb, "```\n%s\n```\n\n", benchCommand)
	fmt.Fprintf(&sb, "- Date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&sb, "- Machine: %d CPUs (nproc), %s, %s/%s\n", runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&sb, "- Go: %s\n", gover)
	fmt.Fprintf(&sb, "- Rounds: %d SIGKILL and %d SIGTERM rounds per configuration; idle window %v; whole run %v\n\n", rounds, rounds, idle, took.Round(time.Second))
	sb.WriteString("How it measures:\n\n")
	sb.WriteString("- **Failover**: SIGKILL of the leader; the time until every survivor's `GET /leader` names the same\n")
	sb.WriteString("  new leader (of a higher term) and that leader reports `isLeader`. Survivors are watched with the\n")
	sb.WriteString("  long poll (`?index=N&wait=30s`), so a change is seen within about a millisecond. The killed member\n")
	sb.WriteString("  is restarted on its data directory between rounds, and the next round waits until all members\n")
	sb.WriteString("  agree again.\n")
	sb.WriteString("- **Handover**: SIGTERM of the leader; the time until a successor reports `isLeader`. Also shown:\n")
	sb.WriteString("  until every survivor names it, and until the old process exited (exit code must be 0).\n")
	sb.WriteString("- **Idle**: utime+stime from `/proc/<pid>/stat` over the window, as % of one core, and `VmRSS`\n")
	sb.WriteString("  from `/proc/<pid>/status`, of the leader and of one follower of a settled cluster, while the\n")
	sb.WriteString("  lease checker polls each member only once a second.\n")
	sb.WriteString("- The lease checker polls every member's `GET /leader` every 15 ms (and `GET /`) throughout and\n")
	sb.WriteString("  would fail the run on overlapping leases, two leaders in a term or a term going back.\n\n")
	sb.WriteString("The members run on the same 2-core machine as the test and the checker, so the tails include\n")
	sb.WriteString("scheduling noise. A failover is bounded below by the election timeout: a follower waits a\n")
	sb.WriteString("randomized [t, 2t) after the last heartbeat before it asks for votes.\n\n")
	sb.WriteString(markdownTables(results))
	return sb.String()
}

// keptMarker starts the part of docs/benchmarks.md that TestFailoverBenchmark does not write.
const keptMarker = "<!-- kept by make bench: measured by other runs -->"
