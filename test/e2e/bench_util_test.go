package e2e

// Helpers of the benchmarks (compare_bench_test.go): long-poll watches on a set of members,
// /proc readings and percentiles.

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

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
