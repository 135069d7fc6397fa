package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// runDemo starts a local cluster in this process over real HTTP on 127.0.0.1 and prints every
// change of leadership. With --chaos it keeps crashing or gracefully stopping the leader and
// prints each failover time.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("raft-elector demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 3, "number of members (1-9)")
	chaos := fs.Bool("chaos", false, "keep killing and restarting members, printing every failover time")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until interrupted)")
	heartbeat := fs.Duration("heartbeat-interval", DefaultHeartbeatInterval, "heartbeat interval")
	election := fs.Duration("election-timeout", DefaultElectionTimeout, "minimum election timeout")
	logLevel := fs.String("log-level", "warn", "log level of the members' logs (to stderr)")
	seed := fs.Int64("seed", 0, "seed of the chaos schedule (0: from the clock)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "raft-elector demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *nodes < 1 || *nodes > 9 {
		fmt.Fprintf(stderr, "raft-elector demo: --nodes must be 1 to 9, not %d\n", *nodes)
		return 2
	}
	if *chaos && *nodes < 3 {
		fmt.Fprintf(stderr, "raft-elector demo: --chaos needs --nodes 3 or more (a majority must survive)\n")
		return 2
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano()
	}
	dir, err := os.MkdirTemp("", "raft-elector-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "raft-elector demo: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	d := &demo{out: stdout, start: time.Now(), rng: rand.New(rand.NewSource(*seed))}
	var peers []string
	ports, err := freePorts(3 * *nodes)
	if err != nil {
		fmt.Fprintf(stderr, "raft-elector demo: %v\n", err)
		return 1
	}
	for i := 0; i < *nodes; i++ {
		peers = append(peers, fmt.Sprintf("m%d=127.0.0.1:%d", i+1, ports[3*i]))
	}
	log := newLogger(*logLevel, "text", stderr)
	d.log = log
	for i := 0; i < *nodes; i++ {
		c := &config{
			ID:                fmt.Sprintf("m%d", i+1),
			Discovery:         "static",
			PeerAddr:          fmt.Sprintf("127.0.0.1:%d", ports[3*i]),
			LocalAddr:         fmt.Sprintf("127.0.0.1:%d", ports[3*i+1]),
			OpsAddr:           fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]),
			DataDir:           filepath.Join(dir, fmt.Sprintf("m%d", i+1)),
			HeartbeatInterval: *heartbeat,
			ElectionTimeout:   *election,
			LabelKey:          DefaultLabelKey,
			LeaderValue:       DefaultLeaderValue,
			FollowerValue:     DefaultFollowerValue,
			LogLevel:          *logLevel,
			LogFormat:         "text",
		}
		if err := c.finish(strings.Join(peers, ",")); err != nil {
			fmt.Fprintf(stderr, "raft-elector demo: %v\n", err)
			return 2
		}
		d.configs = append(d.configs, c)
	}
	fmt.Fprintf(stdout, "raft-elector demo: %d members on 127.0.0.1, heartbeat %v, election timeout %v", *nodes, *heartbeat, *election)
	if *chaos {
		fmt.Fprintf(stdout, ", chaos seed %d", *seed)
	}
	fmt.Fprintln(stdout)
	for _, c := range d.configs {
		m, err := startMember(context.Background(), c, log.Named(c.ID))
		if err != nil {
			fmt.Fprintf(stderr, "raft-elector demo: start %s: %v\n", c.ID, err)
			d.stopAll()
			return 1
		}
		d.members = append(d.members, m)
		d.stopped = append(d.stopped, false)
		fmt.Fprintf(stdout, "  %s  peer %s  GET http://%s/leader\n", c.ID, c.PeerAddr, c.LocalAddr)
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	var deadline <-chan time.Time
	if *duration > 0 {
		deadline = time.After(*duration)
	}
	code := d.loop(*chaos, *election, sigc, deadline)
	d.stopAll()
	d.summary()
	return code
}

type demo struct {
	out     io.Writer
	start   time.Time
	rng     *rand.Rand
	configs []*config
	members []*member // the last incarnation of each member, running or not
	stopped []bool
	pending chan struct{} // closed when a graceful stop in progress has finished
	log     hclog.Logger

	leader    string
	term      uint64
	failovers []time.Duration
	handovers []time.Duration
}

type chaosEvent struct {
	victim   int
	graceful bool
	at       time.Time
	restart  time.Time
}

func (d *demo) stamp() string {
	return fmt.Sprintf("%8.3fs", time.Since(d.start).Seconds())
}

// view returns the members that claim the lease right now, and the highest term seen. A
// stopped member's last answer stays in the view: its promise lasts until its lease expires,
// as it would for an application that read it just before the crash.
func (d *demo) view() (holders []string, term uint64) {
	for _, m := range d.members {
		a, _ := m.store.Answer()
		if a.IsLeader {
			holders = append(holders, a.Self)
		}
		term = max(term, a.Term)
	}
	return holders, term
}

func (d *demo) loop(chaos bool, election time.Duration, sigc <-chan os.Signal, deadline <-chan time.Time) int {
	ticker := time.NewTicker(2 * time.Millisecond)
	defer ticker.Stop()
	var ev *chaosEvent
	stableSince := time.Now()
	for {
		select {
		case <-sigc:
			return 0
		case <-deadline:
			return 0
		case <-ticker.C:
		}
		holders, term := d.view()
		if len(holders) > 1 {
			fmt.Fprintf(d.out, "%s  SAFETY VIOLATION: %v all claim the lease at once\n", d.stamp(), holders)
			return 1
		}
		cur := ""
		if len(holders) == 1 {
			cur = holders[0]
		}
		if cur != d.leader {
			switch {
			case cur == "":
				fmt.Fprintf(d.out, "%s  no leader (%s gave up its lease)\n", d.stamp(), d.leader)
			default:
				fmt.Fprintf(d.out, "%s  leader is %s (term %d)\n", d.stamp(), cur, term)
			}
			d.leader, d.term = cur, term
			stableSince = time.Now()
			if ev != nil && cur != "" && cur != d.configs[ev.victim].ID {
				took := time.Since(ev.at)
				kind := "failover after crash"
				if ev.graceful {
					kind = "handover after graceful stop"
					d.handovers = append(d.handovers, took)
				} else {
					d.failovers = append(d.failovers, took)
				}
				fmt.Fprintf(d.out, "%s  %s of %s: %v\n", d.stamp(), kind, d.configs[ev.victim].ID, took.Round(time.Millisecond))
				ev.at = time.Time{}
			}
			if ev != nil && !ev.at.IsZero() && time.Since(ev.at) > 10*election {
				fmt.Fprintf(d.out, "%s  no new leader %v after stopping %s\n", d.stamp(), time.Since(ev.at).Round(time.Millisecond), d.configs[ev.victim].ID)
				return 1
			}
		}
		if !chaos {
			continue
		}
		now := time.Now()
		if ev != nil && ev.at.IsZero() && now.After(ev.restart) {
			if d.pending != nil {
				<-d.pending
				d.pending = nil
			}
			c := d.configs[ev.victim]
			m, err := startMember(context.Background(), c, d.log.Named(c.ID))
			if err != nil {
				fmt.Fprintf(d.out, "%s  restart %s failed: %v\n", d.stamp(), c.ID, err)
				return 1
			}
			d.members[ev.victim] = m
			d.stopped[ev.victim] = false
			fmt.Fprintf(d.out, "%s  %s restarted\n", d.stamp(), c.ID)
			ev = nil
			stableSince = now
			continue
		}
		if ev == nil && cur != "" && now.Sub(stableSince) > 2*election {
			victim := slices.IndexFunc(d.configs, func(c *config) bool { return c.ID == cur })
			ev = &chaosEvent{victim: victim, graceful: d.rng.Intn(2) == 0}
			ev.restart = now.Add(3 * election)
			d.stopped[victim] = true
			m := d.members[victim]
			if ev.graceful {
				fmt.Fprintf(d.out, "%s  stopping leader %s gracefully (handover)\n", d.stamp(), cur)
				ev.at = time.Now()
				done := make(chan struct{})
				d.pending = done
				go func() {
					defer close(done)
					m.shutdown(true)
				}()
			} else {
				fmt.Fprintf(d.out, "%s  crashing leader %s\n", d.stamp(), cur)
				ev.at = time.Now()
				m.shutdown(false)
			}
		}
	}
}

func (d *demo) stopAll() {
	if d.pending != nil {
		<-d.pending
		d.pending = nil
	}
	for i, m := range d.members {
		if !d.stopped[i] {
			m.shutdown(false)
			d.stopped[i] = true
		}
	}
}

func (d *demo) summary() {
	for _, s := range []struct {
		name string
		v    []time.Duration
	}{{"failovers after crash", d.failovers}, {"handovers after graceful stop", d.handovers}} {
		if len(s.v) == 0 {
			continue
		}
		v := slices.Clone(s.v)
		slices.Sort(v)
		fmt.Fprintf(d.out, "%d %s: min %v, median %v, max %v\n", len(v), s.name,
			v[0].Round(time.Millisecond), v[len(v)/2].Round(time.Millisecond), v[len(v)-1].Round(time.Millisecond))
	}
}

// freePorts finds n free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
