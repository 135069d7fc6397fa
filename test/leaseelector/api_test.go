package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type apiFixture struct {
	*viewFixture
	srv     *httptest.Server
	closing chan struct{}
}

func newAPIFixture(t *testing.T) *apiFixture {
	f := &apiFixture{viewFixture: newViewFixture(t), closing: make(chan struct{})}
	f.srv = httptest.NewServer(localHandler(f.view, f.closing))
	t.Cleanup(f.srv.Close)
	return f
}

// do sends a request and returns the status and the body decoded into a map.
func (f *apiFixture) do(method, target string) (int, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+target, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if method != http.MethodHead {
		if err := json.Unmarshal(body, &m); err != nil {
			f.t.Fatalf("%s %s: %d %q is not JSON: %v", method, target, resp.StatusCode, body, err)
		}
	}
	return resp.StatusCode, m
}

func (f *apiFixture) leader(target string) (int, Answer) {
	f.t.Helper()
	code, a, err := f.leaderErr(target)
	if err != nil {
		f.t.Fatal(err)
	}
	return code, a
}

// poll sends GET target on its own goroutine and delivers the answer.
func (f *apiFixture) poll(target string) <-chan Answer {
	done := make(chan Answer, 1)
	go func() {
		_, a, err := f.leaderErr(target)
		if err != nil {
			f.t.Error(err)
		}
		done <- a
	}()
	return done
}

func (f *apiFixture) leaderErr(target string) (int, Answer, error) {
	var a Answer
	resp, err := f.srv.Client().Get(f.srv.URL + target)
	if err != nil {
		return 0, a, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return 0, a, fmt.Errorf("GET %s: %v", target, err)
	}
	return resp.StatusCode, a, nil
}

func TestLeaderAnswerAndStatus(t *testing.T) {
	f := newAPIFixture(t)
	code, m := f.do(http.MethodGet, "/leader")
	want := map[string]any{"name": "", "self": "a", "isLeader": false, "term": float64(0), "state": "follower", "index": float64(1)}
	if code != http.StatusServiceUnavailable || !equalMaps(m, want) {
		t.Errorf("no leader: %d %v, want 503 %v", code, m, want)
	}
	if code, m := f.do(http.MethodGet, "/"); code != http.StatusOK || !equalMaps(m, map[string]any{"name": ""}) {
		t.Errorf("GET / without leader: %d %v", code, m)
	}

	f.lock.set(record{holder: "b", seconds: 15, transitions: 7, renew: f.clock.now()})
	f.get()
	code, m = f.do(http.MethodGet, "/leader")
	want = map[string]any{"name": "b", "self": "a", "isLeader": false, "term": float64(7), "state": "follower", "index": float64(2)}
	if code != http.StatusOK || !equalMaps(m, want) {
		t.Errorf("b leads: %d %v, want 200 %v (and no leaseExpiresAt)", code, m, want)
	}
	if code, m := f.do(http.MethodGet, "/"); code != http.StatusOK || !equalMaps(m, map[string]any{"name": "b"}) {
		t.Errorf("GET / with b leading: %d %v", code, m)
	}
	if code, _ := f.do(http.MethodHead, "/leader"); code != http.StatusOK {
		t.Errorf("HEAD /leader: %d", code)
	}

	f.lock.set(record{holder: "a", seconds: 15, transitions: 8, renew: f.clock.now()})
	f.get() // index 3: the record names a, but client-go has not called back yet
	f.view.startedLeading(context.Background())
	code, m = f.do(http.MethodGet, "/leader")
	want = map[string]any{"name": "a", "self": "a", "isLeader": true, "term": float64(8), "state": "leader", "index": float64(4)}
	if code != http.StatusOK || !equalMaps(m, want) {
		t.Errorf("a leads: %d %v, want 200 %v", code, m, want)
	}
}

func equalMaps(got, want map[string]any) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestLongPoll(t *testing.T) {
	f := newAPIFixture(t)
	query := func(index uint64, wait string) string { return fmt.Sprintf("/leader?index=%d&wait=%s", index, wait) }

	// Wakes on a change.
	_, a := f.leader("/leader")
	done := f.poll(query(a.Index, "30s"))
	select {
	case got := <-done:
		t.Fatalf("returned %+v before any change", got)
	case <-time.After(100 * time.Millisecond):
	}
	f.lock.set(record{holder: "b", seconds: 15, transitions: 1, renew: f.clock.now()})
	f.get()
	select {
	case got := <-done:
		if got.Name != "b" || got.Index != a.Index+1 {
			t.Errorf("woke with %+v, want b at index %d", got, a.Index+1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not wake on the change")
	}

	// Wakes when the record lapses, with no request to the API.
	_, a = f.leader("/leader")
	done = f.poll(query(a.Index, "30s"))
	f.clock.advance(15 * time.Second)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go f.view.watchExpiry(ctx, 5*time.Millisecond)
	select {
	case got := <-done:
		if got.Name != "" || got.Index != a.Index+1 {
			t.Errorf("woke with %+v, want no name at index %d", got, a.Index+1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not wake when the record lapsed")
	}

	// Returns the unchanged answer when its wait ends.
	_, a = f.leader("/leader")
	start := time.Now()
	code, got := f.leader(query(a.Index, "200ms"))
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("returned after %v, before its wait", elapsed)
	}
	if code != http.StatusServiceUnavailable || got != a {
		t.Errorf("timeout: %d %+v, want 503 %+v", code, got, a)
	}

	// Another index returns at once.
	if _, got := f.leader(query(a.Index+5, "60")); got != a {
		t.Errorf("other index: got %+v, want %+v", got, a)
	}

	// Returns at once when the server shuts down.
	done = f.poll(query(a.Index, "60s"))
	close(f.closing)
	select {
	case got := <-done:
		if got != a {
			t.Errorf("on shutdown: got %+v, want the unchanged %+v", got, a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not return on shutdown")
	}
}

func TestParseWaitQuery(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want waitQuery
	}{
		{"", waitQuery{}},
		{"index=0", waitQuery{index: 0, hasIndex: true, wait: defaultWait}},
		{"index=18446744073709551615&wait=1500ms", waitQuery{index: 1<<64 - 1, hasIndex: true, wait: 1500 * time.Millisecond}},
		{"index=3&wait=45", waitQuery{index: 3, hasIndex: true, wait: 45 * time.Second}},
		{"index=3&wait=0", waitQuery{index: 3, hasIndex: true}},
		{"index=3&wait=10m", waitQuery{index: 3, hasIndex: true, wait: maxWait}},
	} {
		got, err := parseWaitQuery(tc.raw)
		if err != nil || got != tc.want {
			t.Errorf("parseWaitQuery(%q) = %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
	}
}

func TestBadRequests(t *testing.T) {
	f := newAPIFixture(t)
	for _, tc := range []struct {
		method, target string
		code           int
		errorHas       string
	}{
		{"GET", "/leader?index=-1", 400, "index"},
		{"GET", "/leader?index=x", 400, "index"},
		{"GET", "/leader?index=18446744073709551616", 400, "index"},
		{"GET", "/leader?index=1&wait=soon", 400, "wait"},
		{"GET", "/leader?index=1&wait=-1s", 400, "negative"},
		{"GET", "/leader?wait=5s", 400, "wait needs index"},
		{"GET", "/leader?index=1&index=2", 400, "2 times"},
		{"GET", "/leader?watch=1", 400, "unknown query parameter"},
		{"GET", "/leader?index=%zz", 400, "malformed"},
		{"GET", "/leader?index=1&" + strings.Repeat("x", 1100), 400, "longer"},
		{"GET", "/?index=1", 400, "no query"},
		{"POST", "/leader", 405, "POST"},
		{"PUT", "/", 405, "PUT"},
		{"DELETE", "/nope", 405, "DELETE"},
		{"GET", "/nope", 404, "/nope"},
		{"GET", "/leader/", 404, "/leader/"},
		{"GET", "/leader/self", 404, "/leader/self"},
	} {
		code, m := f.do(tc.method, tc.target)
		msg, _ := m["error"].(string)
		if code != tc.code || !strings.Contains(msg, tc.errorHas) || len(m) != 1 {
			t.Errorf("%s %.40s: %d %v; want %d with an error containing %q", tc.method, tc.target, code, m, tc.code, tc.errorHas)
		}
	}
	resp, err := f.srv.Client().Post(f.srv.URL+"/leader", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST with a body: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestOpsEndpoints(t *testing.T) {
	f := newViewFixture(t)
	m := newMetrics()
	srv := httptest.NewServer(opsHandler(f.view, m.reg))
	defer srv.Close()
	get := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("GET", "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get("GET", "/readyz"); code != 503 {
		t.Errorf("/readyz before any Lease: %d, want 503", code)
	}
	f.lock.set(record{holder: "b", seconds: 15, transitions: 1, renew: f.clock.now()})
	f.get()
	if code, _ := get("GET", "/readyz"); code != 200 {
		t.Errorf("/readyz after reading the Lease: %d, want 200", code)
	}
	for _, tc := range []struct {
		method, path string
		code         int
	}{{"POST", "/healthz", 405}, {"GET", "/nope", 404}} {
		if code, _ := get(tc.method, tc.path); code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.code)
		}
	}

	// The transport wrapper counts what client-go sends.
	rt := m.countRequests(roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}))
	for _, method := range []string{"GET", "GET", "PUT", "POST"} {
		req, _ := http.NewRequest(method, "https://api/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", nil)
		if _, err := rt.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("GET")); got != 2 {
		t.Errorf("GET requests %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.writes); got != 2 {
		t.Errorf("writes %v, want 2", got)
	}
	m.answerChanged(Answer{Name: "b", Term: 1})
	m.answerChanged(Answer{Name: "", Term: 1})
	m.answerChanged(Answer{Name: "b", Term: 1}) // the same leadership, seen again after a lapse
	m.answerChanged(Answer{Name: "b", Term: 2})
	if got := testutil.ToFloat64(m.leaderChanges); got != 2 {
		t.Errorf("leader changes %v, want 2", got)
	}
	code, body := get("GET", "/metrics")
	for _, name := range []string{"lease_elector_api_requests_total{verb=\"PUT\"} 1", "lease_elector_api_writes_total 2",
		"lease_elector_leader_changes_total 2", "go_goroutines", "process_"} {
		if code != 200 || !strings.Contains(body, name) {
			t.Errorf("/metrics (%d) lacks %q", code, name)
		}
	}
}
