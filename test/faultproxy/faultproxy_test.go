package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every line it reads, and counts connections.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close proxy: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes one line and reads its echo, with a deadline.
func roundTrip(c net.Conn, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestPassForwardsBothWays(t *testing.T) {
	echo := newEchoServer(t)
	p := newProxy(t, echo.addr())
	c := dial(t, p.Addr())
	for i := range 10 {
		want := fmt.Sprintf("hello %d", i)
		got, err := roundTrip(c, want, 2*time.Second)
		if err != nil || got != want {
			t.Fatalf("round trip %d: got %q, %v; want %q", i, got, err, want)
		}
	}
	if st := p.Stats(); st.Accepted != 1 || st.Forwarded != 1 || st.Bytes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDropSeversOpenConnections(t *testing.T) {
	echo := newEchoServer(t)
	p := newProxy(t, echo.addr())
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "before", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	// The open connection must end: a keep-alive connection may not carry traffic past a cut.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || isTimeout(err) {
		t.Fatalf("read on a severed connection: %v; want EOF or reset", err)
	}
	if st := p.Stats(); st.Severed < 1 {
		t.Fatalf("stats %+v: want a severed connection", st)
	}
}

func TestDropBlackHolesNewConnections(t *testing.T) {
	echo := newEchoServer(t)
	p := newProxy(t, echo.addr())
	p.Cut()
	c := dial(t, p.Addr()) // accepted, like a SYN answered by a switch that then drops all
	// A bounded observation window: nothing may come back.
	if got, err := roundTrip(c, "into the void", 300*time.Millisecond); err == nil || !isTimeout(err) {
		t.Fatalf("round trip through a dropping proxy: %q, %v; want a timeout", got, err)
	}
	if st := p.Stats(); st.Held != 1 || st.Forwarded != 0 {
		t.Fatalf("stats %+v: want one held connection and none forwarded", st)
	}
	echo.mu.Lock()
	n := len(echo.conns)
	echo.mu.Unlock()
	if n != 0 {
		t.Fatalf("target saw %d connections through a dropping proxy", n)
	}

	// Healing closes the held connection, and new connections pass again.
	p.Heal()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("held connection after heal: %v; want it closed", err)
	}
	c2 := dial(t, p.Addr())
	if got, err := roundTrip(c2, "back", 2*time.Second); err != nil || got != "back" {
		t.Fatalf("after heal: %q, %v", got, err)
	}
}

func TestLatencyDelaysAndKeepsOrder(t *testing.T) {
	echo := newEchoServer(t)
	p := newProxy(t, echo.addr())
	const base = 40 * time.Millisecond
	p.SetLatency(base, 20*time.Millisecond)
	c := dial(t, p.Addr())
	start := time.Now()
	got, err := roundTrip(c, "slow", 5*time.Second)
	if err != nil || got != "slow" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	// Both directions are delayed: at least 2 × base.
	if rtt := time.Since(start); rtt < 2*base {
		t.Fatalf("round trip took %v; want at least %v", rtt, 2*base)
	}

	// Many small writes with jitter must arrive in order.
	var sb strings.Builder
	for i := range 200 {
		fmt.Fprintf(&sb, "%03d,", i)
	}
	want := sb.String()
	go func() {
		for i := range 200 {
			fmt.Fprintf(c, "%03d,", i)
		}
		io.WriteString(c, "\n")
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(line, "\n") != want {
		t.Fatalf("stream reordered:\n got %q\nwant %q", line, want)
	}

	p.SetLatency(0, 0)
	start = time.Now()
	if _, err := roundTrip(c, "fast", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Chunks queued before the change may still be in flight; the new one must not wait base.
	if rtt := time.Since(start); rtt >= 2*base {
		t.Logf("round trip after removing latency took %v (machine busy?)", rtt)
	}
}

func TestTargetDownRefusesClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newProxy(t, dead)
	c := dial(t, p.Addr())
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read through a proxy to a dead target: %v; want EOF", err)
	}
	if st := p.Stats(); st.DialErrors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSetTargetMovesNewConnections(t *testing.T) {
	a, b := newEchoServer(t), newEchoServer(t)
	p := newProxy(t, a.addr())
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "to a", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetTarget(b.addr())
	c2 := dial(t, p.Addr())
	if _, err := roundTrip(c2, "to b", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	n := len(b.conns)
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("new target saw %d connections, want 1", n)
	}
}

// TestHTTPKeepAliveCut checks the case the e2e tests depend on: an HTTP client with a pooled
// keep-alive connection gets no answer once the link is cut, and gets answers again after a heal.
func TestHTTPKeepAliveCut(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	p := newProxy(t, strings.TrimPrefix(srv.URL, "http://"))
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 300 * time.Millisecond}
	get := func() error {
		resp, err := client.Get("http://" + p.Addr() + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		return err
	}
	for range 3 {
		if err := get(); err != nil {
			t.Fatalf("before cut: %v", err)
		}
	}
	p.Cut()
	for i := range 3 {
		if err := get(); err == nil {
			t.Fatalf("request %d went through a cut link", i)
		}
	}
	p.Heal()
	if err := get(); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

// TestConcurrentSwitching flips modes and latency while traffic flows; run it with -race.
func TestConcurrentSwitching(t *testing.T) {
	echo := newEchoServer(t)
	p := newProxy(t, echo.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
				if err != nil {
					continue
				}
				_, _ = roundTrip(c, fmt.Sprintf("w%d", w), 50*time.Millisecond)
				c.Close()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			switch i % 4 {
			case 0:
				p.Cut()
			case 1:
				p.SetLatency(time.Millisecond, time.Millisecond)
			case 2:
				p.Heal()
			case 3:
				p.SetLatency(0, 0)
			}
			_ = p.Mode()
			_ = p.Stats()
			time.Sleep(3 * time.Millisecond)
		}
	}()
	wg.Wait()
	p.Heal()
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "still works", 2*time.Second); err != nil || got != "still works" {
		t.Fatalf("after switching: %q, %v", got, err)
	}
}

// TestCloseReleasesEverything checks that Close ends every goroutine of the proxy, with
// connections open in every state.
func TestCloseReleasesEverything(t *testing.T) {
	echo := newEchoServer(t)
	before := runtime.NumGoroutine()
	p, err := Listen(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	p.SetLatency(10*time.Millisecond, 0)
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := roundTrip(c, "x", 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	p.Cut()
	for range 2 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		io.WriteString(c, "held\n")
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("closed proxy still accepts")
	}
	// The echo server's goroutines for the severed connections end too; allow them a moment.
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}
