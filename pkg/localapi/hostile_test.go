package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/pkg/transport"
)

// The hostile-input tests serve the local API and the operations endpoints as the member does
// (NewLocalServer, NewOpsServer, a connection limit, a real loopback listener) and send them
// what a buggy application or a scanner might. Every request gets a clear 4xx (or 503 beyond
// the long-poll limit), the member's answer does not change, and the endpoints keep answering
// and waking watchers.

// hostileAPI is a local API (or ops server) on a real listener.
type hostileAPI struct {
	store *Store
	api   *apiHandler
	srv   *http.Server
	addr  string
}

// leaderStatus is the member's status in these tests: it follows "b" in term 7.
func leaderStatus() node.Status {
	return node.Status{ID: "a", State: raft.StateFollower, Leader: "b", Term: 7}
}

// serveHostile serves srv on a loopback listener limited to maxConns connections, as the
// member does.
func serveHostile(t *testing.T, srv *http.Server, maxConns int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(transport.LimitConns(srv, ln, maxConns, nil))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

func newHostileAPI(t *testing.T, maxPolls, maxConns int, mutate func(*http.Server)) *hostileAPI {
	t.Helper()
	s := NewStore(leaderStatus())
	api := newHandler(s, maxPolls)
	srv := NewLocalServer(api, nil)
	if mutate != nil {
		mutate(srv)
	}
	return &hostileAPI{store: s, api: api, srv: srv, addr: serveHostile(t, srv, maxConns)}
}

// request writes raw on a new connection and reads one reply.
func request(addr string, raw []byte) (*http.Response, []byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go conn.Write(raw)
	method, _, _ := bytes.Cut(raw, []byte(" "))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: string(method)})
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func raw(method, target string, extra ...string) []byte {
	return []byte(method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n" + strings.Join(extra, "") + "\r\n")
}

// mustAnswer checks that the API still gives the member's unchanged answer.
func (h *hostileAPI) mustAnswer(t *testing.T, after string, want Answer) {
	t.Helper()
	resp, body, err := request(h.addr, raw("GET", "/leader"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after %s: GET /leader: %v %v %s", after, resp, err, body)
	}
	var a Answer
	if err := json.Unmarshal(body, &a); err != nil || a != want {
		t.Fatalf("after %s: answer %+v (%v), want the unchanged %+v", after, a, err, want)
	}
}

func TestHostileLocalRequests(t *testing.T) {
	h := newHostileAPI(t, MaxLongPolls, MaxLocalConns, nil)
	want, _ := h.store.Answer()
	h.mustAnswer(t, "the start", want)
	tests := []struct {
		name  string
		raw   []byte
		code  int
		close bool // the connection must end: a body was sent
	}{
		{"index not a number", raw("GET", "/leader?index=abc"), 400, false},
		{"index negative", raw("GET", "/leader?index=-1"), 400, false},
		{"index 2^64", raw("GET", "/leader?index=18446744073709551616"), 400, false},
		{"index in exponent form", raw("GET", "/leader?index=1e3"), 400, false},
		{"index empty", raw("GET", "/leader?index="), 400, false},
		{"wait not a duration", raw("GET", "/leader?index=1&wait=forever"), 400, false},
		{"wait negative", raw("GET", "/leader?index=1&wait=-5s"), 400, false},
		{"wait over the limit", raw("GET", "/leader?index=1&wait=10m1s"), 400, false},
		{"wait that overflows", raw("GET", "/leader?index=1&wait=1e400s"), 400, false},
		{"wait of 2^40 seconds", raw("GET", "/leader?index=1&wait=1099511627776"), 400, false},
		{"wait of 2^70 ns", raw("GET", "/leader?index=1&wait=1180591620717411303424ns"), 400, false},
		{"wait without index", raw("GET", "/leader?wait=5s"), 400, false},
		{"index twice", raw("GET", "/leader?index=1&index=2"), 400, false},
		{"unknown parameter", raw("GET", "/leader?indx=1"), 400, false},
		{"bad escape", raw("GET", "/leader?index=%zz"), 400, false},
		{"semicolon", raw("GET", "/leader?index=1;wait=2s"), 400, false},
		{"query of 2000 bytes", raw("GET", "/leader?"+strings.Repeat("a", 2000)), 400, false},
		{"1000 parameters", raw("GET", "/leader?"+strings.Repeat("a=1&", 1000)), 400, false},
		{"URL of 32 KiB", raw("GET", "/leader?"+strings.Repeat("a", 32<<10)), 431, true},
		{"headers of 32 KiB", raw("GET", "/leader", "X-Junk: "+strings.Repeat("j", 32<<10)+"\r\n"), 431, true},
		{"query on /leader/self", raw("GET", "/leader/self?x=1"), 400, false},
		{"query on /", raw("GET", "/?index=1"), 400, false},
		{"POST", raw("POST", "/leader", "Content-Length: 0\r\n"), 405, true},
		{"PUT", raw("PUT", "/", "Content-Length: 0\r\n"), 405, true},
		{"DELETE", raw("DELETE", "/leader/self"), 405, true},
		{"OPTIONS", raw("OPTIONS", "/leader"), 405, true},
		{"TRACE", raw("TRACE", "/leader"), 405, true},
		{"GET with a body", append(raw("GET", "/leader", "Content-Length: 5\r\n"), "hello"...), 400, true},
		{"GET with a chunked body", append(raw("GET", "/leader", "Transfer-Encoding: chunked\r\n"), "5\r\nhello\r\n0\r\n\r\n"...), 400, true},
		{"GET declaring 1 GiB", raw("GET", "/leader", "Content-Length: 1073741824\r\n"), 400, true},
		{"unknown path", raw("GET", "/leaders"), 404, false},
		{"long unknown path", raw("GET", "/"+strings.Repeat("x", 8000)), 404, false},
		{"not HTTP", []byte("GARBAGE\r\n\r\n"), 400, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := request(h.addr, tt.raw)
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			if resp.StatusCode != tt.code {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.code, body)
			}
			if tt.close && !resp.Close {
				t.Errorf("the connection stays open")
			}
			if tt.code != 431 && tt.name != "not HTTP" {
				var e struct{ Error string }
				if json.Unmarshal(body, &e); e.Error == "" || len(body) > 1000 {
					t.Errorf("error body %q: want {\"error\": ...}, short", body)
				}
			}
			h.mustAnswer(t, tt.name, want)
		})
	}
}

func TestHostileOpsRequests(t *testing.T) {
	m := &fakeMember{st: leaderStatus()}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "raft_elector_term 7") })
	addr := serveHostile(t, NewOpsServer(OpsHandler(m, metrics), nil), MaxOpsConns)
	for _, tt := range []struct {
		name string
		raw  []byte
		code int
	}{
		{"POST /metrics", raw("POST", "/metrics", "Content-Length: 0\r\n"), 405},
		{"GET /metrics with a body", append(raw("GET", "/metrics", "Content-Length: 3\r\n"), "abc"...), 400},
		{"PUT /healthz", raw("PUT", "/healthz", "Content-Length: 0\r\n"), 405},
		{"GET /readyz with a chunked body", append(raw("GET", "/readyz", "Transfer-Encoding: chunked\r\n"), "1\r\nx\r\n0\r\n\r\n"...), 400},
		{"query on /healthz", raw("GET", "/healthz?verbose=1"), 400},
		{"unknown path", raw("GET", "/debug/pprof/"), 404},
		{"headers of 32 KiB", raw("GET", "/metrics", "X-Junk: "+strings.Repeat("j", 32<<10)+"\r\n"), 431},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := request(addr, tt.raw)
			if err != nil || resp.StatusCode != tt.code {
				t.Fatalf("reply %v %v %s; want %d", resp, err, body, tt.code)
			}
			for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
				if resp, body, err := request(addr, raw("GET", path)); err != nil || resp.StatusCode != 200 {
					t.Fatalf("after %s: GET %s: %v %v %s", tt.name, path, resp, err, body)
				}
			}
		})
	}
}

// TestHostileLongPolls: long polls beyond the limit get 503 at once (with Retry-After),
// plain requests are still answered, the waiting polls still wake on a change, and their
// slots are given back.
func TestHostileLongPolls(t *testing.T) {
	const maxPolls = 32
	h := newHostileAPI(t, maxPolls, maxPolls+16, nil)
	a, _ := h.store.Answer()
	poll := "/leader?index=" + strconv.FormatUint(a.Index, 10) + "&wait=5m"

	type result struct {
		code  int
		index uint64
		err   error
	}
	results := make(chan result, maxPolls)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: maxPolls}}
	defer client.CloseIdleConnections()
	for range maxPolls {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.addr+poll, nil)
			resp, err := client.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			var b Answer
			err = json.NewDecoder(resp.Body).Decode(&b)
			results <- result{resp.StatusCode, b.Index, err}
		}()
	}
	waitUntil(t, "every long poll to wait", func() bool { return h.api.polls.waiting.Load() == maxPolls })

	for range 3 {
		resp, body, err := request(h.addr, raw("GET", poll))
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
			!strings.Contains(string(body), "long polls are already waiting") {
			t.Fatalf("a long poll beyond the limit: %v %v %s; want 503 with Retry-After at once", resp, err, body)
		}
	}
	// A stale index or no index at all does not wait, so it is served.
	h.mustAnswer(t, "the long polls filled up", a)
	if resp, _, err := request(h.addr, raw("GET", "/leader?index=0&wait=1m")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("long poll with a stale index: %v %v", resp, err)
	}
	if n := h.api.polls.waiting.Load(); n != maxPolls {
		t.Fatalf("%d long polls waiting, want %d", n, maxPolls)
	}

	// A change wakes every waiting poll.
	h.store.Observe(node.Status{ID: "a", State: raft.StateFollower, Leader: "c", Term: 8})
	for range maxPolls {
		select {
		case r := <-results:
			if r.err != nil || r.code != 200 || r.index == a.Index {
				t.Fatalf("woken long poll: %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a long poll did not return after the change")
		}
	}
	waitUntil(t, "the long-poll slots to be given back", func() bool { return h.api.polls.waiting.Load() == 0 })
}

// TestHostileLocalConnections: idle connections, connections that trickle their headers, and
// requests that trickle a body cannot lock the local API.
func TestHostileLocalConnections(t *testing.T) {
	const maxConns = 16
	h := newHostileAPI(t, MaxLongPolls, maxConns, func(srv *http.Server) {
		srv.ReadHeaderTimeout = 300 * time.Millisecond
	})
	want, _ := h.store.Answer()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		return c
	}
	// Ten times the limit of silent connections and of connections trickling their headers.
	var trickling sync.WaitGroup
	for i := range 10 * maxConns {
		c := dial()
		if i%2 == 0 {
			trickling.Go(func() {
				for _, b := range []byte("GET /leader HTTP/1.1\r\nHost: x\r\n") {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
	}
	h.mustAnswer(t, "silent and trickling connections", want)
	// Every one of them is closed, by eviction or by the header timeout (after a 400 for
	// those that sent part of a request).
	start := time.Now()
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Fatalf("connection %d still open: %v", i, err)
		}
	}
	t.Logf("%d silent or trickling connections all closed %v after the answer", len(conns), time.Since(start).Round(time.Millisecond))
	trickling.Wait()

	// A body trickled after its headers is refused once the headers are in, and the
	// connection ends at once (the server's read timeout is 10 s).
	c := dial()
	if _, err := c.Write(raw("GET", "/leader", "Content-Length: 1000\r\n")); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 1000 {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("trickled body: %v %v, want 400", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
		t.Fatal("connection still open 5 s after its request was refused")
	}
	h.mustAnswer(t, "a trickled body", want)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
