package localapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
)

// fakeClock is a settable clock for the store.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestStore(st node.Status) (*Store, *fakeClock) {
	clk := &fakeClock{now: time.Now()}
	s := NewStore(st)
	s.now = clk.Now
	s.key = s.keyAt(clk.Now())
	return s, clk
}

func get(t *testing.T, h http.Handler, target string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("GET %s: body %q is not JSON: %v", target, rec.Body.String(), err)
	}
	return rec.Code, body
}

func TestLeaderAnswerShapes(t *testing.T) {
	s, clk := newTestStore(node.Status{ID: "a", Term: 0, State: raft.StateFollower})
	h := Handler(s)
	code, body := get(t, h, "/leader")
	if code != 503 || body["name"] != "" || body["self"] != "a" || body["isLeader"] != false || body["state"] != "follower" {
		t.Fatalf("no leader: %d %v", code, body)
	}
	if _, ok := body["leaseExpiresAt"]; ok {
		t.Fatal("leaseExpiresAt present without a lease")
	}
	lease := clk.Now().Add(300 * time.Millisecond)
	s.Observe(node.Status{ID: "a", Term: 3, State: raft.StateLeader, Leader: "a", LeaseExpiresAt: lease, ProtocolLeaseExpiresAt: lease})
	code, body = get(t, h, "/leader")
	if code != 200 || body["name"] != "a" || body["isLeader"] != true || body["term"] != 3.0 || body["state"] != "leader" {
		t.Fatalf("leader: %d %v", code, body)
	}
	if got, _ := time.Parse(time.RFC3339Nano, body["leaseExpiresAt"].(string)); !got.Equal(lease) {
		t.Fatalf("leaseExpiresAt %v, want %v", body["leaseExpiresAt"], lease)
	}
	if code, _ := get(t, h, "/leader/self"); code != 200 {
		t.Fatalf("/leader/self %d while leading", code)
	}
	if code, body := get(t, h, "/"); code != 200 || body["name"] != "a" || len(body) != 1 {
		t.Fatalf("/: %d %v, want the leader-elector answer", code, body)
	}
	// Past the lease (a paused process that just woke up) the answer changes at once.
	clk.Add(301 * time.Millisecond)
	code, body = get(t, h, "/leader")
	if code != 503 || body["isLeader"] != false || body["name"] != "" || body["state"] != "leader" {
		t.Fatalf("after the lease: %d %v; a member names itself only while it holds the lease", code, body)
	}
	if code, body := get(t, h, "/"); code != 200 || body["name"] != "" {
		t.Fatalf("/ after the lease: %d %v", code, body)
	}
	if code, _ := get(t, h, "/leader/self"); code != 503 {
		t.Fatalf("/leader/self %d after the lease, want 503", code)
	}
}

func TestIndexChangesExactlyWhenAnswerChanges(t *testing.T) {
	s, clk := newTestStore(node.Status{ID: "a", State: raft.StateFollower})
	a0, _ := s.Answer()
	s.Observe(node.Status{ID: "a", State: raft.StateFollower}) // same answer
	if a, _ := s.Answer(); a.Index != a0.Index {
		t.Fatal("index moved without a change")
	}
	lease := clk.Now().Add(time.Second)
	s.Observe(node.Status{ID: "a", Term: 1, State: raft.StateLeader, Leader: "a", LeaseExpiresAt: lease})
	a1, _ := s.Answer()
	if a1.Index == a0.Index {
		t.Fatal("index did not move when leadership changed")
	}
	// A lease renewal alone keeps the index.
	s.Observe(node.Status{ID: "a", Term: 1, State: raft.StateLeader, Leader: "a", LeaseExpiresAt: lease.Add(time.Second)})
	if a, _ := s.Answer(); a.Index != a1.Index {
		t.Fatal("index moved on a lease renewal")
	}
}

func TestLongPoll(t *testing.T) {
	s := NewStore(node.Status{ID: "a", State: raft.StateFollower})
	srv := httptest.NewServer(Handler(s))
	defer srv.Close()
	a, _ := s.Answer()
	type result struct {
		code int
		body Answer
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/leader?index=" + itoa(a.Index) + "&wait=10s")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var b Answer
		err = json.NewDecoder(resp.Body).Decode(&b)
		done <- result{resp.StatusCode, b, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("long poll returned before any change: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	s.Observe(node.Status{ID: "a", Term: 2, State: raft.StateFollower, Leader: "b"})
	select {
	case r := <-done:
		if r.err != nil || r.code != 200 || r.body.Name != "b" || r.body.Index == a.Index {
			t.Fatalf("long poll: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not return after a change")
	}
	// A stale index returns at once; a short wait returns the same index when nothing changes.
	resp, err := http.Get(srv.URL + "/leader?index=0&wait=10s")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stale index: %v %v", resp, err)
	}
	resp.Body.Close()
	cur, _ := s.Answer()
	resp, err = http.Get(srv.URL + "/leader?index=" + itoa(cur.Index) + "&wait=20ms")
	if err != nil {
		t.Fatal(err)
	}
	var b Answer
	json.NewDecoder(resp.Body).Decode(&b)
	resp.Body.Close()
	if b.Index != cur.Index {
		t.Fatalf("timed-out poll index %d, want %d", b.Index, cur.Index)
	}
}

func TestLongPollWakesWhenLeaseRunsOut(t *testing.T) {
	s := NewStore(node.Status{ID: "a"})
	lease := time.Now().Add(50 * time.Millisecond)
	s.Observe(node.Status{ID: "a", Term: 1, State: raft.StateLeader, Leader: "a", LeaseExpiresAt: lease})
	a, changed := s.Answer()
	if !a.IsLeader {
		t.Fatal("not leading")
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("watchers not woken when the lease ran out")
	}
	if a2, _ := s.Answer(); a2.IsLeader || a2.Index == a.Index {
		t.Fatalf("after expiry: %+v", a2)
	}
}

func TestBadRequests(t *testing.T) {
	s := NewStore(node.Status{ID: "a"})
	h := Handler(s)
	for _, tc := range []struct {
		method, target string
		code           int
	}{
		{"GET", "/leader?index=abc", 400},
		{"GET", "/leader?index=-1", 400},
		{"GET", "/leader?index=1&wait=forever", 400},
		{"GET", "/leader?index=1&wait=-5s", 400},
		{"GET", "/leader?index=1&wait=11m", 400},
		{"GET", "/leader?wait=5s", 400},
		{"GET", "/leader?index=1&index=2", 400},
		{"GET", "/leader?indx=1", 400},
		{"GET", "/leader?index=%zz", 400},
		{"GET", "/leader?" + strings.Repeat("a", 2000), 400},
		{"GET", "/leader/self?x=1", 400},
		{"POST", "/leader", 405},
		{"DELETE", "/", 405},
		{"GET", "/nope", 404},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
		if rec.Code != tc.code {
			t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.target, rec.Code, tc.code, rec.Body.String())
		}
		var e struct{ Error string }
		if json.Unmarshal(rec.Body.Bytes(), &e); e.Error == "" {
			t.Errorf("%s %s: no error message in %q", tc.method, tc.target, rec.Body.String())
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, q := range []string{"", "index=1", "index=1&wait=30s", "index=18446744073709551615&wait=10m",
		"wait=1s", "index=1&wait=600", "index=%ff", "index=1;wait=2", "index=&wait=", "a=b&c=d"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		values, err := parseRawQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseQuery(values)
		if err != nil {
			return
		}
		if q.Wait < 0 || q.Wait > MaxWait || (!q.HasIndex && (q.Wait != 0 || q.Index != 0)) {
			t.Fatalf("accepted %q as %+v", raw, q)
		}
		if _, ok := values["index"]; ok != q.HasIndex {
			t.Fatalf("%q: HasIndex %v", raw, q.HasIndex)
		}
		_ = url.Values(values).Encode()
	})
}

func TestOpsEndpoints(t *testing.T) {
	m := &fakeMember{st: node.Status{ID: "a"}}
	h := OpsHandler(m, nil)
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _ := get(t, h, "/readyz"); code != 503 {
		t.Fatalf("readyz %d without a leader", code)
	}
	m.st.Leader = "b"
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Fatalf("readyz %d with a leader", code)
	}
	m.err = errWedged
	if code, _ := get(t, h, "/healthz"); code != 503 {
		t.Fatalf("healthz %d while wedged", code)
	}
}

type fakeMember struct {
	st  node.Status
	err error
}

var errWedged = &wedged{}

type wedged struct{}

func (*wedged) Error() string { return "member loop has not run for 5s" }

func (f *fakeMember) Healthy(time.Time) error { return f.err }
func (f *fakeMember) Status() node.Status     { return f.st }

func itoa(v uint64) string {
	return strings.TrimSpace(strings.Replace(jsonNum(v), "\n", "", -1))
}

func jsonNum(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAnswersShowPodNames(t *testing.T) {
	s, clk := newTestStore(node.Status{ID: "web-0_uid0", State: raft.StateFollower, Leader: "web-1_uid1", Term: 2})
	s.WithNames(func(id string) string { name, _, _ := strings.Cut(id, "_"); return name })
	code, body := get(t, Handler(s), "/leader")
	if code != 200 || body["name"] != "web-1" || body["self"] != "web-0" {
		t.Fatalf("%d %v", code, body)
	}
	s.Observe(node.Status{ID: "web-0_uid0", State: raft.StateLeader, Leader: "web-0_uid0", Term: 3, LeaseExpiresAt: clk.Now().Add(time.Second)})
	if code, body := get(t, Handler(s), "/"); code != 200 || body["name"] != "web-0" {
		t.Fatalf("%d %v", code, body)
	}
}
