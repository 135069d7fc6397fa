package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// The hostile-input tests run the peer server as the runtime runs it (NewServer, a connection
// limit, a real loopback listener) and throw at it what a broken or hostile client might send.
// Every request must get a clear 4xx (or, under overload, 503) or be dropped, must not reach
// the member (the fake handler counts Step calls), and must not stop the member from serving
// its leader's heartbeats, which a legitimate client sends between and during the attacks.

// hostileServer is member "b" served over a real listener.
type hostileServer struct {
	tr   *HTTP
	h    *fakeHandler
	srv  *http.Server
	lim  *connLimiter
	addr string
	// leader is the client of the legitimate leader "a": one persistent connection.
	leader *http.Client
	round  atomic.Uint64
}

func newHostileServer(t *testing.T, maxConns int, mutate func(*http.Server)) *hostileServer {
	t.Helper()
	h := &fakeHandler{step: answer}
	tr := newTestHTTP(t, "b", h)
	srv := tr.NewServer("")
	if mutate != nil {
		mutate(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll := LimitConns(srv, ln, maxConns, nil)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ll)
	}()
	s := &hostileServer{tr: tr, h: h, srv: srv, lim: ll.(*limitListener).lim, addr: ln.Addr().String(),
		leader: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}}
	t.Cleanup(func() {
		srv.Close()
		<-served
		s.leader.CloseIdleConnections()
	})
	return s
}

// heartbeat sends one heartbeat of the leader and reports whether it was answered with the
// acknowledgement of its round, and whether it reused a connection.
func (s *hostileServer) heartbeat() (reused bool, err error) {
	round := s.round.Add(1)
	body, _ := encodeMessage(heartbeat("a", "b", round))
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
		http.MethodPost, "http://"+s.addr+"/raft/v1/append-entries", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.leader.Do(req)
	if err != nil {
		return reused, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reused, err
	}
	if resp.StatusCode != http.StatusOK {
		return reused, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	m, err := decodeMessage(b)
	if err != nil || m.Type != raft.MsgAppendResp || m.Round != round {
		return reused, fmt.Errorf("reply %s: %v", b, err)
	}
	return reused, nil
}

// mustHeartbeat checks that the member still serves its leader: the heartbeat is answered and
// reaches the member exactly once.
func (s *hostileServer) mustHeartbeat(t *testing.T, after string) {
	t.Helper()
	before := s.h.count()
	if _, err := s.heartbeat(); err != nil {
		t.Fatalf("after %s: the leader's heartbeat failed: %v", after, err)
	}
	if n := s.h.count() - before; n != 1 {
		t.Fatalf("after %s: the heartbeat reached the member %d times, want 1", after, n)
	}
}

// wireRequest is an HTTP/1.1 request written byte for byte, so that it can be anything.
type wireRequest struct {
	method, path string
	contentType  string // "" means application/json; "-" none
	body         string
	chunked      bool
	header       []string // extra "Name: value" lines
	// contentLength, when non-zero, is declared instead of len(body).
	contentLength int
}

func (r wireRequest) bytes() []byte {
	method, path := r.method, r.path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/raft/v1/append-entries"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: b\r\n", method, path)
	switch r.contentType {
	case "":
		b.WriteString("Content-Type: application/json\r\n")
	case "-":
	default:
		fmt.Fprintf(&b, "Content-Type: %s\r\n", r.contentType)
	}
	for _, h := range r.header {
		b.WriteString(h + "\r\n")
	}
	if r.chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for rest := r.body; len(rest) > 0; {
			n := min(len(rest), 8<<10)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n\r\n")
		return b.Bytes()
	}
	cl := len(r.body)
	if r.contentLength != 0 {
		cl = r.contentLength
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", cl, r.body)
	return b.Bytes()
}

// send writes raw to addr on a new connection and reads one response. The write runs
// alongside the read: a server may answer (and close) before a large body is written.
func send(addr string, raw []byte) (*http.Response, []byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go conn.Write(raw)
	// The request's method tells how to read the reply (a reply to HEAD has no body).
	method, _, _ := bytes.Cut(raw, []byte(" "))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: string(method)})
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// msgBody is a message body with the given JSON fields after type, cluster, from and to.
func msgBody(typ, fields string) string {
	return fmt.Sprintf(`{"type":%q,"cluster":"c1","from":"a","to":"b",%s}`, typ, fields)
}

func entries(n int, first uint64) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`{"index":%d,"term":2,"type":"noop"}`, first+uint64(i)))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func members(n, idLen int) string {
	var ids []string
	for i := range n {
		id := fmt.Sprintf("m%05d", i)
		ids = append(ids, `"`+id+strings.Repeat("x", max(0, idLen-len(id)))+`"`)
	}
	sort.Strings(ids)
	return "[" + strings.Join(ids, ",") + "]"
}

func TestHostileRequests(t *testing.T) {
	s := newHostileServer(t, 0, nil)
	s.mustHeartbeat(t, "the start")

	mib := strings.Repeat("x", 1<<20)
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	tests := []struct {
		name string
		req  wireRequest
		code int
	}{
		// Bodies over the limit, declared or not.
		{"body over the limit", wireRequest{body: msgBody("append-entries", `"term":2,"x":"`+strings.Repeat("y", MaxMessageBytes)+`"`)}, 413},
		{"chunked body over the limit", wireRequest{chunked: true, body: msgBody("append-entries", `"term":2,"x":"`+strings.Repeat("y", MaxMessageBytes)+`"`)}, 413},
		{"declared 1 GiB, nothing sent", wireRequest{contentLength: 1 << 30}, 413},
		{"declared 10 MiB with Expect: 100-continue", wireRequest{contentLength: 10 << 20, header: []string{"Expect: 100-continue"}}, 413},
		{"id of a megabyte", wireRequest{body: `{"type":"append-entries","cluster":"c1","from":"` + mib + `","to":"b","term":2}`}, 413},

		// Malformed JSON, unknown fields, trailing data.
		{"empty body", wireRequest{}, 400},
		{"not JSON", wireRequest{body: "hello"}, 400},
		{"truncated", wireRequest{body: `{"type":"append-entries","cluster":"c1"`}, 400},
		{"null", wireRequest{body: "null"}, 400},
		{"array", wireRequest{body: "[" + msgBody("append-entries", `"term":2`) + "]"}, 400},
		{"nested 100000 deep", wireRequest{body: `{"type":` + deep + `}`}, 400},
		{"NUL bytes", wireRequest{body: "\x00\x00\x00\x00"}, 400},
		{"unknown field", wireRequest{body: msgBody("append-entries", `"term":2,"leader":"a"`)}, 400},
		{"field in other case", wireRequest{body: `{"TYPE":"append-entries","cluster":"c1","from":"a","to":"b","term":2}`}, 400},
		{"duplicate field", wireRequest{body: msgBody("append-entries", `"term":2,"term":3`)}, 400},
		{"trailing object", wireRequest{body: msgBody("append-entries", `"term":2`) + "{}"}, 400},
		{"trailing junk", wireRequest{body: msgBody("append-entries", `"term":2`) + " x"}, 400},
		{"two messages", wireRequest{body: msgBody("append-entries", `"term":2`) + msgBody("append-entries", `"term":2`)}, 400},

		// Absurd values.
		{"term 2^53+1", wireRequest{body: msgBody("append-entries", `"term":9007199254740993`)}, 400},
		{"term 2^64-1", wireRequest{body: msgBody("append-entries", `"term":18446744073709551615`)}, 400},
		{"term 2^64", wireRequest{body: msgBody("append-entries", `"term":18446744073709551616`)}, 400},
		{"term 1e300", wireRequest{body: msgBody("append-entries", `"term":1e300`)}, 400},
		{"term -1", wireRequest{body: msgBody("append-entries", `"term":-1`)}, 400},
		{"term 1.5", wireRequest{body: msgBody("append-entries", `"term":1.5`)}, 400},
		{"term as a string", wireRequest{body: msgBody("append-entries", `"term":"2"`)}, 400},
		{"term 0", wireRequest{body: msgBody("append-entries", `"term":0`)}, 400},
		{"round -1", wireRequest{body: msgBody("append-entries", `"term":2,"round":-1`)}, 400},
		{"round 2^64", wireRequest{body: msgBody("append-entries", `"term":2,"round":18446744073709551616`)}, 400},
		{"round 2^53+1", wireRequest{body: msgBody("append-entries", `"term":2,"round":9007199254740993`)}, 400},
		{"commit 2^63", wireRequest{body: msgBody("append-entries", `"term":2,"commit":9223372036854775808`)}, 400},
		{"prevLogIndex -5", wireRequest{body: msgBody("append-entries", `"term":2,"prevLogIndex":-5`)}, 400},
		{"lastLogIndex 2^60", wireRequest{path: "/raft/v1/request-vote", body: msgBody("request-vote", `"term":2,"lastLogIndex":1152921504606846976`)}, 400},
		{"index on a request", wireRequest{body: msgBody("append-entries", `"term":2,"index":7`)}, 400},
		{"id over MaxIDLength", wireRequest{body: `{"type":"append-entries","cluster":"c1","from":"` + strings.Repeat("a", raft.MaxIDLength+1) + `","to":"b","term":2}`}, 400},
		{"cluster id of 200 KiB", wireRequest{body: `{"type":"append-entries","cluster":"` + strings.Repeat("c", 200<<10) + `","from":"a","to":"b","term":2}`}, 400},
		{"from itself", wireRequest{body: `{"type":"append-entries","cluster":"c1","from":"b","to":"b","term":2}`}, 400},
		{"entries over the limit", wireRequest{body: msgBody("append-entries", `"term":2,"entries":`+entries(raft.MaxLogEntries+1, 1))}, 400},
		{"entries not contiguous", wireRequest{body: msgBody("append-entries", `"term":2,"entries":[{"index":1,"term":2,"type":"noop"},{"index":9,"term":2,"type":"noop"}]`)}, 400},
		{"entry of an unknown type", wireRequest{body: msgBody("append-entries", `"term":2,"entries":[{"index":1,"term":2,"type":"exec"}]`)}, 400},
		{"config with too many members", wireRequest{body: msgBody("append-entries", `"term":2,"config":{"voters":`+members(raft.MaxMembers+1, 8)+`}`)}, 400},
		{"snapshot with too many members", wireRequest{body: msgBody("append-entries", `"term":2,"prevLogIndex":1,"prevLogTerm":1,"snapshot":{"index":1,"term":1,"config":{"voters":`+members(raft.MaxMembers+1, 8)+`}}`)}, 400},
		{"config listing a member twice", wireRequest{body: msgBody("append-entries", `"term":2,"config":{"voters":["a","a"]}`)}, 400},
		{"entries naming too many members", wireRequest{body: msgBody("append-entries", `"term":2,"entries":[`+configEntries(4, raft.MaxMembers)+`]`)}, 400},

		// Wrong message type for the path.
		{"vote sent to append-entries", wireRequest{body: msgBody("request-vote", `"term":2`)}, 400},
		{"heartbeat sent to request-vote", wireRequest{path: "/raft/v1/request-vote", body: msgBody("append-entries", `"term":2`)}, 400},
		{"response posted as a request", wireRequest{body: msgBody("append-entries-response", `"term":2`)}, 400},
		{"unknown type", wireRequest{body: msgBody("install-snapshot", `"term":2`)}, 400},
		{"addressed to another member", wireRequest{body: `{"type":"append-entries","cluster":"c1","from":"a","to":"c","term":2}`}, 421},

		// Wrong content type, method, path, headers.
		{"no content type", wireRequest{contentType: "-", body: msgBody("append-entries", `"term":2`)}, 415},
		{"text/plain", wireRequest{contentType: "text/plain", body: msgBody("append-entries", `"term":2`)}, 415},
		{"form", wireRequest{contentType: "application/x-www-form-urlencoded", body: msgBody("append-entries", `"term":2`)}, 415},
		{"malformed content type", wireRequest{contentType: "application/json; charset", body: msgBody("append-entries", `"term":2`)}, 415},
		{"GET", wireRequest{method: "GET"}, 405},
		{"HEAD", wireRequest{method: "HEAD"}, 405},
		{"PUT", wireRequest{method: "PUT", body: msgBody("append-entries", `"term":2`)}, 405},
		{"DELETE", wireRequest{method: "DELETE"}, 405},
		{"OPTIONS", wireRequest{method: "OPTIONS"}, 405},
		{"root", wireRequest{path: "/"}, 404},
		{"rpc prefix only", wireRequest{path: "/raft/v1/"}, 404},
		{"unknown rpc", wireRequest{path: "/raft/v1/install-snapshot"}, 404},
		{"rpc in upper case", wireRequest{path: "/raft/v1/APPEND-ENTRIES"}, 404},
		{"dot segments", wireRequest{path: "/raft/v1/../v1/append-entries"}, 404},
		{"extra segment", wireRequest{path: "/raft/v1/append-entries/x"}, 404},
		{"response type as a path", wireRequest{path: "/raft/v1/append-entries-response"}, 404},
		{"headers over 16 KiB", wireRequest{header: []string{"X-Junk: " + strings.Repeat("j", 32<<10)}, body: msgBody("append-entries", `"term":2`)}, 431},
		{"path over 16 KiB", wireRequest{path: "/raft/v1/" + strings.Repeat("p", 32<<10)}, 431},
		{"bad chunked encoding", wireRequest{header: []string{"Transfer-Encoding: chunked"}, contentType: "application/json", body: "zz\r\nnot hex\r\n"}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.h.count()
			resp, body, err := send(s.addr, tt.req.bytes())
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			if resp.StatusCode != tt.code {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.code, body)
			}
			if !resp.Close {
				t.Errorf("a refused request's connection stays open")
			}
			if n := s.h.count() - before; n != 0 {
				t.Errorf("the member was stepped %d times", n)
			}
			s.mustHeartbeat(t, tt.name)
		})
	}
}

// configEntries is n configuration entries of m voters each, from index 1.
func configEntries(n, m int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`{"index":%d,"term":2,"type":"config","config":{"voters":%s}}`, i+1, members(m, 8)))
	}
	return strings.Join(parts, ",")
}

// TestHostileTermAtTheLimit documents where the transport's checks end: a well-formed message
// whose term is exactly raft.MaxTerm is valid, so it reaches the member, whose own checks
// decide (docs/security.md, "The term wedge": only authentication keeps such a message from
// a stranger out).
func TestHostileTermAtTheLimit(t *testing.T) {
	s := newHostileServer(t, 0, nil)
	before := s.h.count()
	resp, body, err := send(s.addr, wireRequest{body: msgBody("append-entries", `"term":9007199254740992`)}.bytes())
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("term 2^53: %v %v %s", resp, err, body)
	}
	if got := s.h.messages()[before:]; len(got) != 1 || got[0].Term != raft.MaxTerm {
		t.Fatalf("stepped with %+v", got)
	}
}

// serverConnGoroutines counts the goroutines serving a connection of an http.Server.
func serverConnGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "net/http.(*conn).serve(")
}

// TestHostileFlood sends thousands of garbage requests on hundreds of concurrent
// connections to a server limited to 32 connections, while the leader sends its heartbeats.
// The server never holds more than its limit, its goroutines stay bounded, garbage gets a 4xx
// or is refused, the member is never stepped with it, and the leader's heartbeats keep being
// answered.
func TestHostileFlood(t *testing.T) {
	const maxConns, clients, requests = 32, 400, 8000
	s := newHostileServer(t, maxConns, nil)
	s.mustHeartbeat(t, "the start")
	baseGoroutines := serverConnGoroutines()

	garbage := [][]byte{
		wireRequest{body: "{{{"}.bytes(),
		wireRequest{body: msgBody("append-entries", `"term":18446744073709551616`)}.bytes(),
		wireRequest{method: "GET"}.bytes(),
		wireRequest{path: "/raft/v1/nope"}.bytes(),
		wireRequest{contentType: "text/plain", body: "x"}.bytes(),
		wireRequest{body: msgBody("append-entries", `"term":2,"evil":1`)}.bytes(),
		[]byte("GARBAGE\r\n\r\n"),
		[]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), // a TLS client hello
	}
	var (
		next                     atomic.Int64
		codes                    sync.Map // status -> *atomic.Int64
		dropped, heartbeats, hbF atomic.Int64
		maxOpen, maxGoroutines   atomic.Int64
	)
	count := func(code int) {
		v, _ := codes.LoadOrStore(code, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	done := make(chan struct{})
	var watchers sync.WaitGroup
	watchers.Go(func() { // the leader
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := s.heartbeat(); err != nil {
				hbF.Add(1)
			} else {
				heartbeats.Add(1)
			}
		}
	})
	watchers.Go(func() { // the bounds
		for {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			open, _, _ := s.lim.counts()
			if int64(open) > maxOpen.Load() {
				maxOpen.Store(int64(open))
			}
			if g := int64(serverConnGoroutines()); g > maxGoroutines.Load() {
				maxGoroutines.Store(g)
			}
		}
	})
	stepped := s.h.count()
	var flood sync.WaitGroup
	for range clients {
		flood.Go(func() {
			for {
				i := next.Add(1)
				if i > requests {
					return
				}
				resp, _, err := send(s.addr, garbage[i%int64(len(garbage))])
				if err != nil {
					dropped.Add(1)
					continue
				}
				count(resp.StatusCode)
			}
		})
	}
	flood.Wait()
	close(done)
	watchers.Wait()

	var summary []string
	codes.Range(func(k, v any) bool {
		code := k.(int)
		summary = append(summary, fmt.Sprintf("%d×%d", v.(*atomic.Int64).Load(), code))
		if code < 400 || code > 499 {
			t.Errorf("garbage answered with status %d", code)
		}
		return true
	})
	sort.Strings(summary)
	t.Logf("%d garbage requests on %d clients: replies %v, %d dropped; leader: %d heartbeats answered, %d failed; at most %d connections open, %d serving goroutines (limit %d)",
		requests, clients, summary, dropped.Load(), heartbeats.Load(), hbF.Load(), maxOpen.Load(), maxGoroutines.Load(), maxConns)
	// The leader's own heartbeats are the only messages the member may have been stepped with.
	if n := s.h.count() - stepped; int64(n) != heartbeats.Load() {
		t.Errorf("member stepped %d times, but only %d heartbeats were answered", n, heartbeats.Load())
	}
	if maxOpen.Load() > maxConns {
		t.Errorf("%d connections open, the limit is %d", maxOpen.Load(), maxConns)
	}
	// Evicted and refused connections end at once, but their goroutines may take a moment.
	if g := maxGoroutines.Load() - int64(baseGoroutines); g > 2*maxConns {
		t.Errorf("%d goroutines served connections at once, more than twice the limit of %d", g, maxConns)
	}
	if heartbeats.Load() == 0 {
		t.Errorf("no heartbeat was answered during the flood (%d failed)", hbF.Load())
	}
	s.mustHeartbeat(t, "the flood")
}

// TestHostileIdleConnections: connections that never send anything hold no slot a newcomer
// needs: the newest takes the place of the one that has waited longest, and the leader's own
// keep-alive connection is never the one.
func TestHostileIdleConnections(t *testing.T) {
	const maxConns = 16
	s := newHostileServer(t, maxConns, nil)
	if _, err := s.heartbeat(); err != nil {
		t.Fatal(err)
	}
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	// Ten times the limit of connections that send nothing.
	for range 10 * maxConns {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitFor(t, "the limit to be reached", func() bool {
		open, _, _ := s.lim.counts()
		return open == maxConns && s.lim.evicted.Load() >= 9*maxConns-1
	})
	// The leader's idle keep-alive connection survived the flood of silent connections.
	reused, err := s.heartbeat()
	if err != nil || !reused {
		t.Fatalf("heartbeat after %d silent connections: reused %t, %v", len(idle), reused, err)
	}
	// A newcomer gets in too.
	if resp, body, err := send(s.addr, wireRequest{body: msgBody("append-entries", `"term":2,"round":1`)}.bytes()); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a new connection at the limit: %v %v %s", resp, err, body)
	}
	// The oldest silent connections were closed; the newest may still be open.
	for i, c := range idle[:8*maxConns] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			t.Fatalf("silent connection %d is still open (%v)", i, err)
		}
	}
	open, fresh, idleN := s.lim.counts()
	t.Logf("open %d (waiting for a first request %d, idle %d), evicted %d, refused %d", open, fresh, idleN, s.lim.evicted.Load(), s.lim.refused.Load())
	if s.lim.refused.Load() != 0 {
		t.Errorf("%d connections refused although idle ones could make room", s.lim.refused.Load())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestHostileSlowloris trickles headers and bodies byte by byte. The server's timeouts close
// such connections, a refused request loses its connection at once however slowly its body
// comes, trickling connections beyond the limit make room for newcomers, and the leader's
// heartbeats are answered throughout.
func TestHostileSlowloris(t *testing.T) {
	const maxConns = 16
	s := newHostileServer(t, maxConns, func(srv *http.Server) {
		srv.ReadHeaderTimeout = 300 * time.Millisecond
		srv.ReadTimeout = 600 * time.Millisecond
	})
	trickle := func(raw []byte, every time.Duration) (net.Conn, chan error) {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		closed := make(chan error, 1)
		go func() {
			for _, b := range raw {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(every)
			}
		}()
		go func() {
			// The first thing read is the server's reply or close; then wait for the close.
			r := bufio.NewReader(c)
			for {
				if _, err := r.ReadByte(); err != nil {
					closed <- err
					return
				}
			}
		}()
		return c, closed
	}
	waitClosed := func(what string, closed chan error, within time.Duration) {
		t.Helper()
		select {
		case <-closed:
		case <-time.After(within):
			t.Fatalf("%s: connection still open after %v", what, within)
		}
	}
	hb := wireRequest{body: msgBody("append-entries", `"term":2`)}.bytes()

	t.Run("headers", func(t *testing.T) {
		start := time.Now()
		var all []chan error
		for range 3 * maxConns {
			_, closed := trickle(hb, 20*time.Millisecond)
			all = append(all, closed)
		}
		s.mustHeartbeat(t, "trickling headers")
		for _, closed := range all {
			waitClosed("trickled headers", closed, 5*time.Second)
		}
		t.Logf("%d connections trickling headers all closed after %v", len(all), time.Since(start).Round(time.Millisecond))
		s.mustHeartbeat(t, "trickling headers")
	})
	t.Run("body", func(t *testing.T) {
		stepped := s.h.count()
		i := bytes.Index(hb, []byte("\r\n\r\n")) + 4
		c, closed := trickle(hb[i:], 50*time.Millisecond)
		if _, err := c.Write(hb[:i]); err != nil { // the headers at once, then the body slowly
			t.Fatal(err)
		}
		s.mustHeartbeat(t, "trickling a body")
		waitClosed("trickled body", closed, 5*time.Second)
		if n := s.h.count() - stepped; n != 1 {
			t.Errorf("member stepped %d times, want 1 (the heartbeat)", n)
		}
	})
	t.Run("body of a refused request", func(t *testing.T) {
		// Long timeouts here: only the refusal may end the connection.
		s := newHostileServer(t, maxConns, func(srv *http.Server) { srv.ReadTimeout = time.Minute })
		req := wireRequest{contentType: "text/plain", contentLength: 1000}.bytes()
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(req); err != nil {
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
		if err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("reply %v %v, want 415", resp, err)
		}
		start := time.Now()
		io.Copy(io.Discard, resp.Body)
		if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
			t.Fatal("connection still open 5 s after its request was refused")
		}
		t.Logf("refused connection closed %v after its reply", time.Since(start).Round(time.Millisecond))
		s.mustHeartbeat(t, "a refused trickling body")
	})
}

// TestHostileLargeBodies: bodies over smallBodyBytes are read only a few at a time, so a
// flood of large bodies buffers a bounded amount; the heartbeat, a small body, never waits.
func TestHostileLargeBodies(t *testing.T) {
	// The held requests must not time out while the test runs.
	s := newHostileServer(t, 0, func(srv *http.Server) { srv.ReadTimeout = time.Minute })
	// maxLargeBodies requests that declare a large body and send a little of it.
	var held []net.Conn
	for range maxLargeBodies {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
		if _, err := c.Write(wireRequest{contentLength: 100 << 10, body: `{"type":`}.bytes()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every large-body slot to be taken", func() bool { return len(s.tr.largeBodies) == maxLargeBodies })
	stepped := s.h.count()
	big := msgBody("append-entries", `"term":2,"config":{"voters":`+members(raft.MaxMembers, raft.MaxIDLength)+`}`)
	if len(big) <= smallBodyBytes {
		t.Fatalf("test message of %d bytes is not large", len(big))
	}
	for _, chunked := range []bool{false, true} {
		resp, body, err := send(s.addr, wireRequest{body: big, chunked: chunked}.bytes())
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("large body (chunked %t) while the slots are taken: %v %v %s", chunked, resp, err, body)
		}
	}
	if n := s.h.count() - stepped; n != 0 {
		t.Fatalf("member stepped %d times", n)
	}
	s.mustHeartbeat(t, "the large-body slots filled up")
	for _, c := range held {
		c.Close()
	}
	waitFor(t, "the slots to be free", func() bool { return len(s.tr.largeBodies) == 0 })
	// A legitimate large message (a configuration of MaxMembers members with the longest ids)
	// is served again.
	resp, body, err := send(s.addr, wireRequest{body: big}.bytes())
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("large valid message: %v %v %s", resp, err, body)
	}
	s.mustHeartbeat(t, "the large message")
}

// TestServeLimitsConnections: Serve holds at most HTTPConfig.MaxConns connections; when all
// of them serve a request, a newcomer is refused (reset without a reply) at once.
func TestServeLimitsConnections(t *testing.T) {
	block := make(chan struct{})
	h := &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return respond(m), nil
	}}
	tr := newTestHTTP(t, "b", h, func(c *HTTPConfig) { c.MaxConns = 2 })
	srv := tr.NewServer("")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- tr.Serve(srv, ln) }()
	defer func() {
		close(block)
		srv.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	}()
	hb := wireRequest{body: msgBody("append-entries", `"term":2,"round":1`)}.bytes()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hb)
	}
	waitFor(t, "two requests in the member", func() bool { return h.count() == 2 })
	start := time.Now()
	_, _, err = send(ln.Addr().String(), hb)
	if err == nil {
		t.Fatal("a third connection was served while two requests were in progress and the limit is 2")
	}
	t.Logf("third connection refused after %v: %v", time.Since(start).Round(time.Microsecond), err)
	if n := h.count(); n != 2 {
		t.Errorf("member stepped %d times, want 2", n)
	}
}

// TestConnLimiterOrder checks the limiter's bookkeeping directly: which connection is evicted,
// that serving connections are never, and that an evicted connection keeps its slot until its
// server closes it.
func TestConnLimiterOrder(t *testing.T) {
	l := newConnLimiter(3, hclog.NewNullLogger())
	// serve plays the server of a connection: it reads until the connection fails, then
	// closes it.
	serve := func(c *limitedConn) {
		go func() {
			io.Copy(io.Discard, c)
			l.connState(c, http.StateClosed)
			c.Close()
		}()
	}
	conn := func() net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a
	}
	admit := func() *limitedConn {
		t.Helper()
		c := l.admit(conn())
		if c == nil {
			t.Fatal("refused")
		}
		serve(c)
		return c
	}
	a, b, c := admit(), admit(), admit()
	l.connState(a, http.StateActive)
	l.connState(a, http.StateIdle)   // a served a request and waits for the next
	l.connState(b, http.StateActive) // b is serving one
	// c waits for its first request: it goes first.
	d := admit()
	if !c.evicted || a.evicted || b.evicted {
		t.Fatalf("evicted a %t b %t c %t, want only c (waiting for its first request)", a.evicted, b.evicted, c.evicted)
	}
	l.connState(d, http.StateActive)
	// Only a, idle, could make room, but it served a request just now: refused.
	if e := l.admit(conn()); e != nil || a.evicted {
		t.Fatalf("admitted %p (a evicted: %t) while the only idle connection went idle just now", e, a.evicted)
	}
	// Once a has been idle for minIdleToEvict, it makes room.
	l.mu.Lock()
	a.idleSince = time.Now().Add(-minIdleToEvict)
	l.mu.Unlock()
	e := admit()
	if !a.evicted || b.evicted {
		t.Fatalf("evicted a %t b %t, want a (idle)", a.evicted, b.evicted)
	}
	// A late report that the evicted a went idle does not make it a candidate again.
	l.connState(a, http.StateIdle)
	l.connState(e, http.StateActive)
	// b, d and e serve requests: refused.
	if f := l.admit(conn()); f != nil {
		t.Fatalf("admitted %p while every connection serves a request", f)
	}
	if open, fresh, idle := l.counts(); open != 3 || fresh != 0 || idle != 0 {
		t.Fatalf("counts %d %d %d, want 3 0 0", open, fresh, idle)
	}
	b.Close()
	b.Close()
	if open, _, _ := l.counts(); open != 2 {
		t.Fatalf("open %d after a close, want 2", open)
	}
	admit()
	if l.refused.Load() != 2 || l.evicted.Load() != 2 {
		t.Errorf("refused %d evicted %d, want 2 and 2", l.refused.Load(), l.evicted.Load())
	}
}

// TestConnLimiterEvictionWait: if an evicted connection is never closed by its server, the
// accept loop waits for it at most evictWait and goes on.
func TestConnLimiterEvictionWait(t *testing.T) {
	l := newConnLimiter(1, hclog.NewNullLogger())
	a, b := net.Pipe()
	defer b.Close()
	if l.admit(a) == nil {
		t.Fatal("refused")
	}
	c, d := net.Pipe()
	defer d.Close()
	start := time.Now()
	if l.admit(c) == nil {
		t.Fatal("refused")
	}
	if waited := time.Since(start); waited < evictWait {
		t.Errorf("waited %v, want evictWait (%v)", waited, evictWait)
	}
	if open, _, _ := l.counts(); open != 1 {
		t.Errorf("open %d, want 1", open)
	}
}

func TestServerErrorLogIsRateLimited(t *testing.T) {
	var out bytes.Buffer
	l := ServerErrorLog(hclog.New(&hclog.LoggerOptions{Output: &out}))
	for i := range 100 {
		l.Printf("http: URL query contains semicolon, which is no longer a supported separator (%d)", i)
	}
	l.Printf("http: panic serving 127.0.0.1:1234: boom")
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 100 of one kind and 1 of another, want 2:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "suppressed_since_last=99") {
		t.Errorf("no count of the suppressed lines:\n%s", out.String())
	}
}
