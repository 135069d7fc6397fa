package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/raft-elector/raft-elector/test/benchplot"
)

// The report of TestCompareBenchmark: docs/benchmarks.md, its plots, and the ratios printed
// at the end of a run.

const (
	plotFailover = "bench-failover.png"
	plotCPU      = "bench-cpu.png"
	plotAPI      = "bench-api.png"
)

func (c cmpConfig) row() string {
	return fmt.Sprintf("%s | %s (%s) | %d", c.kind, c.timings, c.timingDesc(), c.voters)
}

func msf(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }

func secf(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func mib(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

func (r *cmpResult) perEvent(s apiSum) (requests, writes float64) {
	if len(r.failover) == 0 {
		return 0, 0
	}
	req, wr := s.rates()
	n := float64(len(r.failover))
	return req * s.window.Seconds() / n, wr * s.window.Seconds() / n
}

// leaderlessPerEvent spreads the leaderless time of the event phase over its events.
func (r *cmpResult) leaderlessPerEvent() time.Duration {
	n := len(r.failover) + len(r.handover)
	if n == 0 {
		return 0
	}
	return r.leaderless / time.Duration(n)
}

// machine describes where the run happened.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/1024/1024)
			}
		}
	}
	return fmt.Sprintf("%d CPUs (nproc), %s%s, %s/%s", runtime.NumCPU(), cpu, mem, runtime.GOOS, runtime.GOARCH)
}

func goVersion() string {
	if out, err := exec.Command("go", "version").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return runtime.Version()
}

// baselineFor is the client-go result with the given timings and member count.
func (rep *cmpReport) baselineFor(timings string, members int) *cmpResult {
	for _, r := range rep.results {
		if r.cfg.kind == kindLease && r.cfg.timings == timings && r.cfg.voters == members {
			return r
		}
	}
	return nil
}

// times formats how many times larger b is than a ("14.2×"), or how much smaller.
func times(ours, theirs float64) string {
	switch {
	case ours == 0 && theirs == 0:
		return "equal"
	case ours == 0:
		return "none vs some"
	case theirs == 0:
		return "some vs none"
	case theirs >= ours:
		return fmt.Sprintf("%.1f× less", theirs/ours)
	default:
		return fmt.Sprintf("%.1f× more", ours/theirs)
	}
}

// ratios compares every raft-elector configuration with the baseline at the same size.
func (rep *cmpReport) ratios() string {
	var sb strings.Builder
	sb.WriteString("Ratios against the client-go Lease baseline (raft-elector first; \"less\" is better for every figure):\n\n")
	for _, r := range rep.results {
		if r.cfg.kind != kindRaft {
			continue
		}
		for _, timings := range []string{leaseDefaults.timings, leaseAggressive.timings} {
			base := rep.baselineFor(timings, r.cfg.voters)
			if base == nil {
				continue
			}
			f50, b50 := percentile(r.failover, .5), percentile(base.failover, .5)
			f99, b99 := percentile(r.failover, .99), percentile(base.failover, .99)
			h50, bh50 := percentile(r.handover, .5), percentile(base.handover, .5)
			rq, rw := r.idle.api.rates()
			bq, bw := base.idle.api.rates()
			fmt.Fprintf(&sb, "- %s (%s), %d members vs client-go %s (%s):\n", r.cfg.timings, r.cfg.timingDesc(), r.cfg.voters, base.cfg.timings, base.cfg.timingDesc())
			fmt.Fprintf(&sb, "  - failover p50 %s ms vs %s ms (%s), p99 %s ms vs %s ms (%s)\n",
				msf(f50), msf(b50), times(f50.Seconds(), b50.Seconds()), msf(f99), msf(b99), times(f99.Seconds(), b99.Seconds()))
			fmt.Fprintf(&sb, "  - handover p50 %s ms vs %s ms (%s)\n", msf(h50), msf(bh50), times(h50.Seconds(), bh50.Seconds()))
			fmt.Fprintf(&sb, "  - leaderless per event %s ms vs %s ms (%s); overlapping leaders %v vs %v\n",
				msf(r.leaderlessPerEvent()), msf(base.leaderlessPerEvent()), times(r.leaderlessPerEvent().Seconds(), base.leaderlessPerEvent().Seconds()), r.overlap, base.overlap)
			fmt.Fprintf(&sb, "  - steady-state API requests %.2f/s vs %.2f/s (%s), writes %.3f/s vs %.3f/s (%s)\n",
				rq, bq, times(rq, bq), rw, bw, times(rw, bw))
			fmt.Fprintf(&sb, "  - idle leader CPU %.2f%% vs %.2f%% (%s), follower CPU %.2f%% vs %.2f%% (%s), leader RSS %s vs %s (%s)\n",
				r.idle.cpuLeader, base.idle.cpuLeader, times(r.idle.cpuLeader, base.idle.cpuLeader),
				r.idle.cpuFollower, base.idle.cpuFollower, times(r.idle.cpuFollower, base.idle.cpuFollower),
				mib(r.idle.rssLeader), mib(base.idle.rssLeader), times(float64(r.idle.rssLeader), float64(base.idle.rssLeader)))
		}
	}
	for _, s := range rep.scale {
		if s.cfg.kind != kindRaft {
			continue
		}
		for _, b := range rep.scale {
			if b.cfg.kind == kindLease && b.cfg.members == s.cfg.members {
				rq, _ := s.idle.api.rates()
				bq, _ := b.idle.api.rates()
				fmt.Fprintf(&sb, "- %d members (%d voters), default timings: leader CPU %.2f%% vs %.2f%% (%s), API requests %.2f/s vs %.2f/s (%s)\n",
					s.cfg.members, s.cfg.voters, s.idle.cpuLeader, b.idle.cpuLeader, times(s.idle.cpuLeader, b.idle.cpuLeader), rq, bq, times(rq, bq))
			}
		}
	}
	return sb.String()
}

// markdown is docs/benchmarks.md.
func (rep *cmpReport) markdown(withPlots bool) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("# Benchmarks: raft-elector and client-go's Lease election, side by side\n\n")
	w("Written by `TestCompareBenchmark` in `test/e2e`; `make bench` regenerates this page and its plots\n")
	w("(about an hour), `make bench-quick` prints a short form. The command:\n\n```\n%s\n```\n\n", benchCommand)
	w("- Date: %s\n", rep.started.UTC().Format("2006-01-02 15:04 MST"))
	w("- Machine: %s\n", machine())
	w("- Go: %s\n", goVersion())
	w("- Kubernetes: a real kube-apiserver and etcd (test/kubeenv, built from the Go module proxy by hack/kube/build.sh), on the same machine\n")
	w("- Schedule: %d SIGKILL events, then %d SIGTERM events, per configuration; steady-state window %v; whole run %v\n\n",
		rep.plan.events, rep.plan.events, rep.plan.window, rep.took.Round(time.Second))
	w("Both electors run as real processes on this machine against the same API server, one\n")
	w("configuration at a time: raft-elector in Kubernetes mode (pod discovery, role labels), and\n")
	w("the baseline `test/leaseelector`, a small program on client-go's `tools/leaderelection` with a\n")
	w("`LeaseLock` that answers the same `GET /leader`. client-go's defaults are 15s/10s/2s (lease\n")
	w("duration, renew deadline, retry period); the aggressive timings are as fast as the Lease API\n")
	w("allows (its `leaseDurationSeconds` is a whole number of seconds, and client-go needs the renew\n")
	w("deadline above 1.2 × the retry period). raft-elector's timings are heartbeat/election timeout.\n\n")

	w("## Ratios\n\n%s\n", rep.ratios())

	w("## Failover after SIGKILL of the leader\n\n")
	w("Milliseconds from the SIGKILL until every survivor's `GET /leader` names the same new leader\n")
	w("(of a higher term), which claims `isLeader`; *first claim* is until the first survivor claims,\n")
	w("the time the application had no leader.\n\n")
	w("| elector | timings | members | events | p50 | p90 | p99 | max | first claim p50 | first claim p99 |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.results {
		w("| %s | %d | %s | %s | %s | %s | %s | %s |\n", r.cfg.row(), len(r.failover),
			msf(percentile(r.failover, .5)), msf(percentile(r.failover, .9)), msf(percentile(r.failover, .99)), msf(percentile(r.failover, 1)),
			msf(percentile(r.failoverFirst, .5)), msf(percentile(r.failoverFirst, .99)))
	}
	if withPlots {
		w("\n![Failover time distribution](%s)\n", plotFailover)
	}

	w("\n## Handover on SIGTERM of the leader\n\n")
	w("Milliseconds from the SIGTERM until the successor claims `isLeader`; also until every survivor\n")
	w("names it, and until the old process exited (it must exit 0). raft-elector hands over with\n")
	w("timeout-now once the lease it reported has run out; the baseline releases the Lease\n")
	w("(`ReleaseOnCancel`) after it stopped claiming, and a candidate takes it at its next retry.\n\n")
	w("| elector | timings | members | events | p50 | p90 | p99 | max | all agree p50 | old process exit p50 | non-zero exits |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.results {
		w("| %s | %d | %s | %s | %s | %s | %s | %s | %d |\n", r.cfg.row(), len(r.handover),
			msf(percentile(r.handover, .5)), msf(percentile(r.handover, .9)), msf(percentile(r.handover, .99)), msf(percentile(r.handover, 1)),
			msf(percentile(r.handoverAll, .5)), msf(percentile(r.exit, .5)), r.badExits)
	}

	w("\n## Leaderless and overlapping-leader time\n\n")
	w("Over the whole event phase (every kill, handover, restart and settle). A member *certainly\n")
	w("led* from the receipt of its first `isLeader` answer in a term to the sending of its last\n")
	w("request answered `isLeader` in that term (the lease checker polls every member every 15 ms and\n")
	w("long-polls the survivors). *Overlap* is the time two members certainly led at once; the lease\n")
	w("checker also fails the run if two raft-elector leases (`leaseExpiresAt`, which the baseline\n")
	w("does not have) overlap or two members lead one term.\n\n")
	w("| elector | timings | members | phase | events | leaderless | leaderless per event | overlap | checker violations |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.results {
		n := len(r.failover) + len(r.handover)
		per := "-"
		if n > 0 {
			per = msf(r.leaderless/time.Duration(n)) + " ms"
		}
		w("| %s | %s | %d | %s | %s | %v | %d |\n", r.cfg.row(), secf(r.phase), n, secf(r.leaderless), per, r.overlap, len(r.violations))
	}

	w("\n## API-server load\n\n")
	w("From the API server's own counters: requests are `apiserver_flowcontrol_dispatched_requests_total`\n")
	w("of the flow schema `service-accounts` (every request of both electors, none of the test's admin\n")
	w("or the API server's), writes are the write verbs of `apiserver_request_total` on pods,\n")
	w("configmaps, events and leases, less the API server's own writes (its identity lease, %.3f/s),\n", rep.sysWrites)
	w("which a watch outside the electors' namespaces counts. Steady state: a settled cluster over the window. Failover:\n")
	w("from just before each SIGKILL until every survivor names the new leader (and, for\n")
	w("raft-elector, the role labels are patched), summed over the events.\n\n")
	w("| elector | timings | members | steady requests/s | steady writes/s | requests/member/min | failover requests/s | failover writes/s | requests per failover | writes per failover |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.results {
		rq, rw := r.idle.api.rates()
		fq, fw := r.failoverAPI.rates()
		eq, ew := r.perEvent(r.failoverAPI)
		w("| %s | %.2f | %.3f | %.1f | %.2f | %.3f | %.1f | %.1f |\n", r.cfg.row(), rq, rw, rq*60/float64(r.cfg.members), fq, fw, eq, ew)
	}
	for _, r := range rep.results {
		if r.idle.why != "" {
			w("\n%s %s, %d members, wrote %.0f times in the steady state; in that window its members logged: %s.\n",
				r.cfg.kind, r.cfg.timings, r.cfg.voters, r.idle.api.writes, r.idle.why)
		}
	}

	w("\n## Idle resources of one member\n\n")
	w("utime+stime from `/proc/<pid>/stat` over the steady-state window, as %% of one core, and `VmRSS`,\n")
	w("of the leader and of one follower, while the checker polls each member once a second.\n\n")
	w("| elector | timings | members | window | leader CPU | follower CPU | leader RSS | follower RSS |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.results {
		w("| %s | %s | %.2f%% | %.2f%% | %s | %s |\n", r.cfg.row(), secf(r.idle.window), r.idle.cpuLeader, r.idle.cpuFollower, mib(r.idle.rssLeader), mib(r.idle.rssFollower))
	}

	w("\n## Growth with cluster size\n\n")
	w("Default timings of both (raft-elector 100ms/1s, client-go 15s/10s/2s), steady state. raft-elector\n")
	w("keeps at most `--max-voters` voters (5 by default; 9 for the 9-voter row) and the other members\n")
	w("are learners: they follow the leader's heartbeats but never vote. For the baseline every member\n")
	w("is a candidate polling the Lease. *Settle* is from the start of the processes until every member\n")
	w("names the leader (and raft-elector's labels and voters are in place).\n\n")
	w("| elector | voters | learners | settle | leader CPU | follower CPU | learner CPU | leader RSS | follower RSS | learner RSS | API requests/s | API writes/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range rep.scale {
		rq, rw := s.idle.api.rates()
		lcpu, lrss := "-", "-"
		if s.idle.cpuLrn >= 0 {
			lcpu, lrss = fmt.Sprintf("%.2f%%", s.idle.cpuLrn), mib(s.idle.rssLrn)
		}
		learners := s.cfg.members - s.cfg.voters
		voters := s.cfg.voters
		if s.cfg.kind == kindLease {
			voters, learners = s.cfg.members, 0
		}
		w("| %s | %d | %d | %s | %.2f%% | %.2f%% | %s | %s | %s | %s | %.2f | %.3f |\n", s.cfg.kind, voters, learners, secf(s.settle),
			s.idle.cpuLeader, s.idle.cpuFollower, lcpu, mib(s.idle.rssLeader), mib(s.idle.rssFollower), lrss, rq, rw)
	}
	if withPlots {
		w("\n![CPU against members](%s)\n\n![API requests against members](%s)\n", plotCPU, plotAPI)
	}

	w("\n## How to read this\n\n")
	w("- Everything runs on one machine: the members, the API server, etcd and the checker share its\n")
	w("  cores, so the tails include scheduling noise, and the figures are for comparison within\n")
	w("  this page rather than absolute.\n")
	w("- A raft-elector failover is bounded below by the election timeout (a follower waits a\n")
	w("  randomized [t, 2t) after the last heartbeat); a client-go failover by the lease duration\n")
	w("  counted from the last renewal the candidates observed, plus up to 1.2 retry periods before a\n")
	w("  candidate tries, plus up to 1.2 retry periods before the others read the new holder.\n")
	w("- The killed member is restarted on its data directory (a container restart in the same pod)\n")
	w("  after each event, and the next event waits until every member agrees again.\n")

	w("\n## Lease checker\n\n")
	for _, r := range rep.results {
		w("- %s %s, %d members: violations: %d; %s\n", r.cfg.kind, r.cfg.timings, r.cfg.voters, len(r.violations), r.checked)
		for k, v := range r.violations {
			if k == 3 {
				w("  - ... and %d more\n", len(r.violations)-k)
				break
			}
			first, _, _ := strings.Cut(v, "\n")
			w("  - %s\n", first)
		}
	}
	return sb.String()
}

// write puts benchmarks.md and the plots into dir.
func (rep *cmpReport) write(dir, text string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var failover []benchplot.Series
	for _, r := range rep.results {
		var xs []float64
		for _, d := range r.failover {
			xs = append(xs, float64(d)/float64(time.Millisecond))
		}
		if len(xs) > 0 {
			kind := "raft-elector"
			if r.cfg.kind == kindLease {
				kind = "client-go"
			}
			failover = append(failover, benchplot.CDF(fmt.Sprintf("%s %s %s, %d", kind, r.cfg.timings, r.cfg.timingDesc(), r.cfg.voters), xs))
		}
	}
	charts := map[string]*benchplot.Chart{}
	if len(failover) > 0 {
		charts[plotFailover] = &benchplot.Chart{
			Title:  "Failover after SIGKILL of the leader: until every survivor names the new leader",
			XLabel: "milliseconds (log scale)", YLabel: "fraction of events",
			LogX: true, YMin: benchplot.Bound(0), YMax: benchplot.Bound(1), Series: failover,
		}
	}
	type line struct {
		kind  electorKind
		role  string
		value func(idleFigures) (float64, bool)
	}
	cpuLines := []line{
		{kindRaft, "leader", func(f idleFigures) (float64, bool) { return f.cpuLeader, true }},
		{kindRaft, "follower (voter)", func(f idleFigures) (float64, bool) { return f.cpuFollower, true }},
		{kindRaft, "learner", func(f idleFigures) (float64, bool) { return f.cpuLrn, f.cpuLrn >= 0 }},
		{kindLease, "leader", func(f idleFigures) (float64, bool) { return f.cpuLeader, true }},
		{kindLease, "follower", func(f idleFigures) (float64, bool) { return f.cpuFollower, true }},
	}
	series := func(l line) benchplot.Series {
		s := benchplot.Series{Name: fmt.Sprintf("%s %s", l.kind, l.role), Style: benchplot.LinePoints}
		for _, r := range rep.scale {
			if r.cfg.kind != l.kind {
				continue
			}
			if v, ok := l.value(r.idle); ok {
				s.X = append(s.X, float64(r.cfg.members))
				s.Y = append(s.Y, v)
			}
		}
		return s
	}
	var cpu []benchplot.Series
	for _, l := range cpuLines {
		if s := series(l); len(s.X) > 0 {
			cpu = append(cpu, s)
		}
	}
	if len(cpu) > 0 {
		charts[plotCPU] = &benchplot.Chart{
			Title:  "Idle CPU of one member against cluster size (default timings)",
			XLabel: "members (log scale)", YLabel: "% of one core",
			LogX: true, Series: cpu,
		}
	}
	var api []benchplot.Series
	for _, kind := range []electorKind{kindRaft, kindLease} {
		for _, what := range []string{"requests", "writes"} {
			s := series(line{kind, what + "/s", func(f idleFigures) (float64, bool) {
				q, w := f.api.rates()
				if what == "writes" {
					return w, true
				}
				return q, true
			}})
			if len(s.X) > 0 {
				api = append(api, s)
			}
		}
	}
	if len(api) > 0 {
		charts[plotAPI] = &benchplot.Chart{
			Title:  "API-server requests of the whole cluster in the steady state (default timings)",
			XLabel: "members (log scale)", YLabel: "per second",
			LogX: true, Series: api,
		}
	}
	for name, ch := range charts {
		if err := ch.WriteFile(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("plot %s: %w", name, err)
		}
	}
	return os.WriteFile(filepath.Join(dir, "benchmarks.md"), []byte(text), 0o644)
}
