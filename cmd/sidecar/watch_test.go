package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/pkg/localapi"
)

func TestWatchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--url=ftp://x/leader"}, "--url"},
		{[]string{"--url=http://"}, "--url"},
		{[]string{"--listen=8080"}, "--listen"},
		{[]string{"--wait=0s"}, "--wait"},
		{[]string{"--wait=11m"}, "--wait"},
		{[]string{"--once", "--timeout=-1s"}, "--timeout"},
		{[]string{"--once", "--listen=:8080"}, "--once"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"extra"}, "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"watch"}, tc.args...), func(string) string { return "" }, &stdout, &stderr); code != 2 {
			t.Errorf("watch %v: exit %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("watch %v: stderr %q, want one line naming %q", tc.args, stderr.String(), tc.want)
		}
	}
}

// fakeLocalAPI answers GET /leader like the sidecar: the current answer, or after a change when
// the request names the current index.
type fakeLocalAPI struct {
	mu      sync.Mutex
	a       localapi.Answer
	changed chan struct{}
	polls   int
	queries []string // the raw query of every request
}

func newFakeLocalAPI() *fakeLocalAPI {
	return &fakeLocalAPI{a: localapi.Answer{Self: "a", State: "follower", Index: 1}, changed: make(chan struct{})}
}

func (f *fakeLocalAPI) set(name string, term uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.a.Name, f.a.Term = name, term
	f.a.Index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeLocalAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.polls++
	f.queries = append(f.queries, r.URL.RawQuery)
	a, ch := f.a, f.changed
	f.mu.Unlock()
	if s := r.URL.Query().Get("index"); s != "" {
		if n, _ := strconv.ParseUint(s, 10, 64); n == a.Index {
			select {
			case <-ch:
			case <-time.After(time.Second):
			case <-r.Context().Done():
				return
			}
			f.mu.Lock()
			a = f.a
			f.mu.Unlock()
		}
	}
	code := http.StatusOK
	if a.Name == "" {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, localapi.Answer) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a localapi.Answer
	_ = json.Unmarshal(body, &a)
	return resp.StatusCode, a
}

// TestWatchFollowsAndServes: the watcher prints one line per change, long-polls in between, and
// serves the latest answer with 503 until a leader is known.
func TestWatchFollowsAndServes(t *testing.T) {
	api := newFakeLocalAPI()
	srv := httptest.NewServer(api)
	defer srv.Close()
	c, err := parseWatchFlags([]string{"--url=" + srv.URL + "/leader", "--wait=1s", "--listen=127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() { done <- watchLoop(ctx, c, ln, &stdout, &stderr) }()
	self := "http://" + ln.Addr().String() + "/"

	waitFor(t, "the first line", func() bool { return strings.Contains(stdout.String(), "leader=(none)") })
	if code, _ := get(t, self); code != http.StatusServiceUnavailable {
		t.Fatalf("GET / without a leader: %d, want 503", code)
	}
	api.set("b", 2)
	waitFor(t, "leader b", func() bool { return strings.Contains(stdout.String(), "leader=b term=2") })
	waitFor(t, "GET / naming b", func() bool {
		code, a := get(t, self)
		return code == http.StatusOK && a.Name == "b" && a.Term == 2
	})
	api.set("c", 3)
	waitFor(t, "leader c", func() bool { return strings.Contains(stdout.String(), "leader=c term=3") })

	// After its first answer every request is a long poll naming the index it has.
	api.mu.Lock()
	queries := slices.Clone(api.queries)
	api.mu.Unlock()
	if len(queries) < 3 || queries[0] != "" {
		t.Errorf("queries %q: want a plain first request, then long polls", queries)
	}
	for _, q := range queries[1:] {
		v, err := url.ParseQuery(q)
		if err != nil || v.Get("index") == "" || v.Get("wait") != "1s" {
			t.Errorf("query %q: want index=N&wait=1s", q)
		}
	}
	if n := strings.Count(stdout.String(), "\n"); n != 3 {
		t.Errorf("%d lines, want 3 (one per answer):\n%s", n, stdout.String())
	}

	// The local API going away is reported once and served as 503.
	srv.Close()
	waitFor(t, "the error line", func() bool { return strings.Contains(stderr.String(), "retrying") })
	if code, _ := get(t, self); code != http.StatusServiceUnavailable {
		t.Errorf("GET / while the local API is down: %d, want 503", code)
	}
	if n := strings.Count(stderr.String(), "\n"); n != 1 {
		t.Errorf("%d error lines, want 1:\n%s", n, stderr.String())
	}
	if code, _ := get(t, "http://"+ln.Addr().String()+"/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", code)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d on cancel, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop")
	}
}

// TestWatchOnce: --once succeeds as soon as a leader is named and fails after --timeout.
func TestWatchOnce(t *testing.T) {
	api := newFakeLocalAPI()
	srv := httptest.NewServer(api)
	defer srv.Close()
	// The leader becomes known only after the first answer (503): --once asks again.
	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			api.mu.Lock()
			polled := api.polls > 0
			api.mu.Unlock()
			if polled {
				break
			}
		}
		api.set("b", 7)
	}()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"watch", "--once", "--timeout=10s", "--url=" + srv.URL + "/leader"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "leader b term 7") {
		t.Errorf("stdout %q", stdout.String())
	}

	none := httptest.NewServer(newFakeLocalAPI())
	defer none.Close()
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"watch", "--once", "--timeout=300ms", "--url=" + none.URL + "/leader"}, nil, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d without a leader, want 1", code)
	}
	if !strings.Contains(stderr.String(), "no leader within 300ms") {
		t.Errorf("stderr %q", stderr.String())
	}
}
