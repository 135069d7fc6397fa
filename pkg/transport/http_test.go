package transport

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// member is an HTTP transport serving its handler on a loopback port.
type member struct {
	tr   *HTTP
	h    *fakeHandler
	srv  *httptest.Server
	addr string
}

func newMember(t *testing.T, id string, h *fakeHandler, mutate ...func(*HTTPConfig)) *member {
	t.Helper()
	tr := newTestHTTP(t, id, h, mutate...)
	srv := httptest.NewServer(tr.Handler())
	t.Cleanup(srv.Close)
	return &member{tr: tr, h: h, srv: srv, addr: srv.Listener.Addr().String()}
}

func TestHTTPRoundTrip(t *testing.T) {
	obs := &recordingObserver{}
	a := newMember(t, "a", &fakeHandler{}, func(c *HTTPConfig) { c.Observer = obs })
	b := newMember(t, "b", &fakeHandler{step: answer})
	a.tr.SetPeers(map[string]string{"a": a.addr, "b": b.addr})

	sent := []raft.Message{vote("a", "b"), heartbeat("a", "b", 1), timeoutNow("a", "b")}
	a.tr.Send(sent...)

	waitFor(t, "b to receive three requests", func() bool { return b.h.count() == 3 })
	waitFor(t, "a to receive two responses", func() bool { return a.h.count() == 2 })
	waitFor(t, "three RPCs observed", func() bool { r, _ := obs.snapshot(); return len(r) == 3 })

	if got := b.h.messages(); !reflect.DeepEqual(got, sent) {
		t.Errorf("b received %+v, want %+v in order", got, sent)
	}
	if got, want := a.h.messages(), []raft.Message{*respond(sent[0]), *respond(sent[1])}; !reflect.DeepEqual(got, want) {
		t.Errorf("a was stepped with %+v, want %+v", got, want)
	}
	if rpcs, _ := obs.snapshot(); !slices.Equal(rpcs, []string{"request-vote 200", "append-entries 200", "timeout-now 204"}) {
		t.Errorf("observed RPCs %v", rpcs)
	}
	if s := a.tr.Stats(); s.Delivered != 3 || s.Failed != 0 || s.InvalidResponses != 0 || len(s.Dropped) != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestHTTPSendRefusesWhatItMustNotSend(t *testing.T) {
	obs := &recordingObserver{}
	a := newMember(t, "a", &fakeHandler{}, func(c *HTTPConfig) { c.Observer = obs })
	b := newMember(t, "b", &fakeHandler{step: answer})
	a.tr.SetPeers(map[string]string{"b": b.addr})

	notFromA := vote("x", "b")
	invalid := vote("a", "b")
	invalid.Term = 0
	a.tr.Send(
		*respond(vote("b", "a")),         // a response: travels in a reply body, never via Send
		*respond(heartbeat("b", "a", 1)), // likewise
		raft.Message{Type: "gossip", Cluster: cluster, From: "a", To: "b", Term: 1},
		notFromA,
		invalid,
		vote("a", "nobody"), // no address
	)
	want := map[DropReason]uint64{DropNotRequest: 3, DropInvalid: 2, DropNoAddress: 1}
	if s := a.tr.Stats(); !mapsEqual(s.Dropped, want) {
		t.Errorf("dropped %v, want %v", s.Dropped, want)
	}
	obs.mu.Lock()
	if obs.drops[DropNotRequest] != 3 || obs.drops[DropInvalid] != 2 || obs.drops[DropNoAddress] != 1 {
		t.Errorf("observed drops %v", obs.drops)
	}
	obs.mu.Unlock()

	// Only then a valid message, which b must receive as the first and only one.
	a.tr.Send(heartbeat("a", "b", 1))
	waitFor(t, "b to receive the heartbeat", func() bool { return b.h.count() == 1 })
	if got := b.h.messages()[0]; !reflect.DeepEqual(got, heartbeat("a", "b", 1)) {
		t.Errorf("b received %+v", got)
	}

	a.tr.Close()
	a.tr.Send(heartbeat("a", "b", 2))
	if got := a.tr.Stats().Dropped[DropClosed]; got != 1 {
		t.Errorf("dropped after Close: %d, want 1", got)
	}
}

func mapsEqual(a, b map[DropReason]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// hangingListener accepts connections and never answers: a peer whose process is stopped
// (SIGSTOP) or whose disk hangs looks like this.
func hangingListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// refusingAddr is a loopback address nobody listens on: a peer whose pod is gone.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestHTTPDeadPeerDoesNotDelayOthers(t *testing.T) {
	// The RPC timeout is an hour: if a hung RPC could hold back messages to anyone else, the
	// live peer would never receive them and the wait below would fail.
	a := newMember(t, "a", &fakeHandler{}, func(c *HTTPConfig) { c.RPCTimeout = time.Hour })
	live := newMember(t, "live", &fakeHandler{step: answer})
	a.tr.SetPeers(map[string]string{
		"hung":    hangingListener(t),
		"refused": refusingAddr(t),
		"live":    live.addr,
	})

	const rounds = 50
	for r := uint64(1); r <= rounds; r++ {
		// The dead peers come first in every batch, as they would in a broadcast.
		a.tr.Send(heartbeat("a", "hung", r), heartbeat("a", "refused", r), heartbeat("a", "live", r))
		waitFor(t, fmt.Sprintf("the live peer to acknowledge round %d", r), func() bool { return a.h.count() == int(r) })
	}
	for i, m := range live.h.messages() {
		if m.Round != uint64(i+1) {
			t.Fatalf("live peer's message %d is round %d: out of order", i, m.Round)
		}
	}
	s := a.tr.Stats()
	if s.Delivered != rounds {
		t.Errorf("delivered %d, want %d", s.Delivered, rounds)
	}
	if s.Failed == 0 {
		t.Errorf("no failure counted for the refusing peer: %+v", s)
	}

	// Close aborts the RPC hung on the silent peer and leaves nothing behind.
	if err := a.tr.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t)
}

func TestHTTPQueueOverflowDropsOldest(t *testing.T) {
	const size = 4
	release := make(chan struct{})
	first := make(chan struct{})
	var once sync.Once
	b := newMember(t, "b", &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		if m.Round == 1 {
			once.Do(func() { close(first) })
			select { // hold the worker busy with round 1
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return respond(m), nil
	}})
	obs := &recordingObserver{}
	a := newMember(t, "a", &fakeHandler{}, func(c *HTTPConfig) {
		c.QueueSize = size
		c.RPCTimeout = time.Hour
		c.Observer = obs
	})
	a.tr.SetPeers(map[string]string{"b": b.addr})

	a.tr.Send(heartbeat("a", "b", 1))
	<-first // round 1 is in flight; the queue is empty
	for r := uint64(2); r <= 1+size+3; r++ {
		a.tr.Send(heartbeat("a", "b", r))
	}
	if got := a.tr.Stats().Dropped[DropQueueFull]; got != 3 {
		t.Errorf("dropped %d for a full queue, want 3", got)
	}
	obs.mu.Lock()
	if obs.drops[DropQueueFull] != 3 {
		t.Errorf("observed %d queue-full drops, want 3", obs.drops[DropQueueFull])
	}
	obs.mu.Unlock()
	close(release)

	waitFor(t, "the queue to drain", func() bool { return b.h.count() == 1+size })
	var rounds []uint64
	for _, m := range b.h.messages() {
		rounds = append(rounds, m.Round)
	}
	// Rounds 2, 3 and 4 were the oldest when the queue overflowed.
	if want := []uint64{1, 5, 6, 7, 8}; !slices.Equal(rounds, want) {
		t.Errorf("b received rounds %v, want %v", rounds, want)
	}
}

func TestHTTPResponseValidation(t *testing.T) {
	req := heartbeat("a", "b", 7)
	good := encode(t, *respond(req))
	mutated := func(f func(*raft.Message)) string {
		m := *respond(req)
		f(&m)
		return encode(t, m)
	}
	tests := []struct {
		name    string
		req     raft.Message
		code    int
		body    string
		stepped bool // whether a's handler must see the response
		result  string
	}{
		{name: "valid", req: req, code: 200, body: good, stepped: true, result: "delivered"},
		{name: "valid with newline", req: req, code: 200, body: good + "\n", stepped: true, result: "delivered"},
		{name: "no content", req: req, code: 204, result: "delivered"},
		{name: "from another member", req: req, code: 200, body: mutated(func(m *raft.Message) { m.From = "c" }), result: "invalid"},
		{name: "to another member", req: req, code: 200, body: mutated(func(m *raft.Message) { m.To = "c" }), result: "invalid"},
		{name: "other cluster", req: req, code: 200, body: mutated(func(m *raft.Message) { m.Cluster = "c2" }), result: "invalid"},
		{name: "wrong type", req: req, code: 200, body: mutated(func(m *raft.Message) { m.Type = raft.MsgVoteResp }), result: "invalid"},
		{name: "another round", req: req, code: 200, body: mutated(func(m *raft.Message) { m.Round = 6 }), result: "invalid"},
		{name: "term zero", req: req, code: 200, body: mutated(func(m *raft.Message) { m.Term = 0 }), result: "invalid"},
		{name: "unknown field", req: req, code: 200, body: strings.TrimSuffix(good, "}") + `,"leader":"b"}`, result: "invalid"},
		{name: "trailing data", req: req, code: 200, body: good + good, result: "invalid"},
		{name: "not json", req: req, code: 200, body: "<html>ok</html>", result: "invalid"},
		{name: "empty 200", req: req, code: 200, body: "", result: "invalid"},
		{name: "too large", req: req, code: 200, body: strings.Repeat(" ", MaxMessageBytes) + good, result: "invalid"},
		{name: "answer to timeout-now", req: timeoutNow("a", "b"), code: 200, body: good, result: "invalid"},
		{name: "error status", req: req, code: 503, body: `{"error":"busy"}`, result: "failed"},
		{name: "misdirected", req: req, code: 421, body: `{"error":"this is member c"}`, result: "failed"},
		{name: "redirect is not followed", req: req, code: 307, body: "", result: "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.code == 307 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.code)
				fmt.Fprint(w, tt.body)
			}))
			defer peer.Close()
			a := newMember(t, "a", &fakeHandler{})
			a.tr.SetPeers(map[string]string{"b": peer.Listener.Addr().String()})
			a.tr.Send(tt.req)

			waitFor(t, "the RPC to complete", func() bool {
				s := a.tr.Stats()
				return s.Delivered+s.Failed+s.InvalidResponses == 1
			})
			s := a.tr.Stats()
			var result string
			switch {
			case s.Delivered == 1:
				result = "delivered"
			case s.Failed == 1:
				result = "failed"
			case s.InvalidResponses == 1:
				result = "invalid"
			}
			if result != tt.result {
				t.Errorf("result %s, want %s (stats %+v)", result, tt.result, s)
			}
			// Stepping happens right after counting; Close waits for it.
			a.tr.Close()
			got := a.h.messages()
			if tt.stepped {
				if len(got) != 1 || !reflect.DeepEqual(got[0], *respond(req)) {
					t.Errorf("a was stepped with %+v, want the response", got)
				}
			} else if len(got) != 0 {
				t.Errorf("a was stepped with %+v, want nothing", got)
			}
		})
	}
}

func TestHTTPSetPeers(t *testing.T) {
	a := newMember(t, "a", &fakeHandler{})
	b1 := newMember(t, "b", &fakeHandler{step: answer})
	b2 := newMember(t, "b", &fakeHandler{step: answer})

	a.tr.SetPeers(map[string]string{
		"a":                                     "not even an address", // itself: ignored
		"b":                                     b1.addr,
		"c":                                     "no-port",
		"d":                                     "host:99999",
		"":                                      b1.addr,
		strings.Repeat("e", raft.MaxIDLength+1): b1.addr,
	})
	a.tr.mu.RLock()
	n := len(a.tr.peers)
	a.tr.mu.RUnlock()
	if n != 1 {
		t.Fatalf("%d peers in the address book, want only b", n)
	}

	a.tr.Send(heartbeat("a", "b", 1))
	waitFor(t, "b at its first address", func() bool { return b1.h.count() == 1 })

	// The pod moved: same member, new address.
	a.tr.SetPeers(map[string]string{"b": b2.addr})
	a.tr.Send(heartbeat("a", "b", 2))
	waitFor(t, "b at its new address", func() bool { return b2.h.count() == 1 })

	// The member left: messages to it are dropped and counted, its worker is gone.
	a.tr.SetPeers(map[string]string{})
	a.tr.Send(heartbeat("a", "b", 3))
	if got := a.tr.Stats().Dropped[DropNoAddress]; got != 1 {
		t.Errorf("dropped %d for no address, want 1", got)
	}
	waitFor(t, "the removed peer's worker to stop", func() bool {
		for _, g := range leakedGoroutines() {
			if strings.Contains(g, "(*outbox).run") {
				return false
			}
		}
		return true
	})
	if b1.h.count() != 1 || b2.h.count() != 1 {
		t.Errorf("b received %d and %d messages, want 1 and 1", b1.h.count(), b2.h.count())
	}
}

func TestHTTPCloseLeavesNothing(t *testing.T) {
	live := newMember(t, "live", &fakeHandler{step: answer})
	tr, err := NewHTTP(HTTPConfig{ID: "a", Handler: &fakeHandler{}, RPCTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tr.SetPeers(map[string]string{"live": live.addr, "hung": hangingListener(t), "refused": refusingAddr(t)})
	for r := uint64(1); r <= 5; r++ {
		tr.Send(heartbeat("a", "live", r), heartbeat("a", "hung", r), heartbeat("a", "refused", r))
	}
	waitFor(t, "the live peer to receive everything", func() bool { return live.h.count() == 5 })

	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	tr.SetPeers(map[string]string{"live": live.addr}) // must not start a worker
	tr.Send(heartbeat("a", "live", 6))
	checkNoLeaks(t)
	if live.h.count() != 5 {
		t.Errorf("a message was sent after Close")
	}
}

func TestHTTPTwoMembersTalkBothWays(t *testing.T) {
	// Both sides send and serve at once, under the race detector.
	a := newMember(t, "a", &fakeHandler{step: answer})
	b := newMember(t, "b", &fakeHandler{step: answer})
	a.tr.SetPeers(map[string]string{"b": b.addr})
	b.tr.SetPeers(map[string]string{"a": a.addr})
	const n = 100
	var wg sync.WaitGroup
	for _, s := range []struct {
		tr       *HTTP
		from, to string
	}{{a.tr, "a", "b"}, {b.tr, "b", "a"}} {
		wg.Go(func() {
			for r := uint64(1); r <= n; r++ {
				s.tr.Send(heartbeat(s.from, s.to, r))
				// Pace below the queue size so nothing is dropped. (t.Fatal may not be
				// called from this goroutine, hence no waitFor.)
				if !eventually(func() bool { return s.tr.Stats().Delivered == r }) {
					t.Errorf("%s: heartbeat %d not acknowledged", s.from, r)
					return
				}
			}
		})
	}
	wg.Wait()
	// Each side received n requests and n responses.
	waitFor(t, "all responses to be stepped", func() bool { return a.h.count() == 2*n && b.h.count() == 2*n })
}

// syncBuffer is a log destination the test can read while the transport writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestHTTPLogsReachabilityChangesOnly(t *testing.T) {
	var healthy atomic.Bool
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"error":"member cannot process the message now"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer peer.Close()
	logs := &syncBuffer{}
	a := newMember(t, "a", &fakeHandler{}, func(c *HTTPConfig) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	})
	a.tr.SetPeers(map[string]string{"b": peer.Listener.Addr().String()})

	for r := uint64(1); r <= 10; r++ {
		a.tr.Send(heartbeat("a", "b", r))
		waitFor(t, "the failure", func() bool { return a.tr.Stats().Failed == r })
	}
	healthy.Store(true)
	for r := uint64(11); r <= 20; r++ {
		a.tr.Send(heartbeat("a", "b", r))
		waitFor(t, "the delivery", func() bool { return a.tr.Stats().Delivered == r-10 })
	}
	out := logs.String()
	if n := strings.Count(out, "peer unreachable"); n != 1 {
		t.Errorf("%d 'peer unreachable' lines for 10 failures, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "peer reachable again"); n != 1 {
		t.Errorf("%d 'peer reachable again' lines, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "status 503: member cannot process the message now") {
		t.Errorf("the failure's reason is not logged:\n%s", out)
	}
}

func TestHTTPNewServer(t *testing.T) {
	// The configured server, as the runtime will run it, over a real listener.
	b, err := NewHTTP(HTTPConfig{ID: "b", Handler: &fakeHandler{step: answer}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := b.NewServer(ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	ha := &fakeHandler{}
	a := newTestHTTP(t, "a", ha)
	a.SetPeers(map[string]string{"b": ln.Addr().String()})
	a.Send(vote("a", "b"))
	waitFor(t, "the vote response", func() bool { return ha.count() == 1 })

	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	b.Close()
}
