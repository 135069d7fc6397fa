package transport

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

const cluster = "c1"

// fakeHandler records what it is stepped with and answers through step (nil: no response).
type fakeHandler struct {
	step func(ctx context.Context, m raft.Message) (*raft.Message, error)

	mu  sync.Mutex
	got []raft.Message
}

func (h *fakeHandler) Step(ctx context.Context, m raft.Message) (*raft.Message, error) {
	h.mu.Lock()
	h.got = append(h.got, m)
	step := h.step
	h.mu.Unlock()
	if step == nil {
		return nil, nil
	}
	return step(ctx, m)
}

func (h *fakeHandler) messages() []raft.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]raft.Message(nil), h.got...)
}

func (h *fakeHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// answer is a member that grants every vote and acknowledges every heartbeat.
func answer(_ context.Context, m raft.Message) (*raft.Message, error) {
	return respond(m), nil
}

func respond(m raft.Message) *raft.Message {
	rt := m.Type.ResponseType()
	if rt == "" {
		return nil
	}
	return &raft.Message{Type: rt, Cluster: m.Cluster, From: m.To, To: m.From, Term: m.Term, PreVote: m.PreVote, Round: m.Round}
}

func vote(from, to string) raft.Message {
	return raft.Message{Type: raft.MsgVote, Cluster: cluster, From: from, To: to, Term: 3, PreVote: true}
}

func heartbeat(from, to string, round uint64) raft.Message {
	return raft.Message{Type: raft.MsgAppend, Cluster: cluster, From: from, To: to, Term: 2, Round: round}
}

func timeoutNow(from, to string) raft.Message {
	return raft.Message{Type: raft.MsgTimeoutNow, Cluster: cluster, From: from, To: to, Term: 2}
}

// waitFor waits until cond holds, failing the test after a generous deadline. The deadline is
// a bound on a hang, not a performance threshold.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !eventually(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// eventually reports whether cond holds within the deadline; any goroutine may call it.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// leakedGoroutines lists the goroutines that are still running code of this package's
// transports, or client connections they opened.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, marker := range []string{
			"transport.(*outbox).run",
			"transport.(*HTTP).rpc",
			"transport.(*memEndpoint)",
			"net/http.(*persistConn)",
		} {
			if strings.Contains(g, marker) {
				leaked = append(leaked, g)
				break
			}
		}
	}
	return leaked
}

func checkNoLeaks(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked := leakedGoroutines()
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left behind:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(time.Millisecond)
	}
}

// recordingObserver records observer events.
type recordingObserver struct {
	mu     sync.Mutex
	rpcs   []string // "rpc code"
	served []string
	drops  map[DropReason]int
}

func (o *recordingObserver) ObserveRPC(rpc string, code int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rpcs = append(o.rpcs, rpc+" "+strconv.Itoa(code))
}

func (o *recordingObserver) ObserveServed(rpc string, code int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.served = append(o.served, rpc+" "+strconv.Itoa(code))
}

func (o *recordingObserver) ObserveDrop(_ string, reason DropReason) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.drops == nil {
		o.drops = map[DropReason]int{}
	}
	o.drops[reason]++
}

func (o *recordingObserver) snapshot() (rpcs, served []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.rpcs...), append([]string(nil), o.served...)
}
