// Package localapi serves the answer to "who leads?" to the application in the member's pod:
// GET /leader (with a long-poll form), GET /leader/self and the leader-elector compatible GET /.
//
// The answer's isLeader is true only while the member holds its reported lease, checked
// against the monotonic clock at the moment of the request: a member that was paused past its
// lease says false as soon as it wakes, before its loop has caught up. The index changes
// exactly when the answer's name, isLeader, term or state changes; lease renewals alone do not
// change it, so a watcher wakes on changes of leadership, not on every heartbeat.
//
// What a client can make it hold is bounded (server.go): MaxLongPolls waiting long polls, the
// connections of NewLocalServer and NewOpsServer served on a limited listener, no request
// bodies, and timeouts on reading a request.
package localapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raft-elector/raft-elector/pkg/node"
)

// MaxWait bounds the wait of a long poll.
const MaxWait = 10 * time.Minute

// DefaultWait is the wait of a long poll that gives an index but no wait.
const DefaultWait = 30 * time.Second

// Answer is the JSON body of GET /leader and GET /leader/self.
type Answer struct {
	// Name is the leader's id, or empty when no leader is known. A member names itself only
	// while it holds the lease.
	Name string `json:"name"`
	// Self is this member's id.
	Self string `json:"self"`
	// IsLeader is true only while this member holds a valid leader lease.
	IsLeader bool `json:"isLeader"`
	// Term is the Raft term: the fencing token. It never decreases.
	Term uint64 `json:"term"`
	// State is leader, follower, candidate or learner.
	State string `json:"state"`
	// LeaseExpiresAt is when the lease promised to the application ends; only while IsLeader.
	LeaseExpiresAt string `json:"leaseExpiresAt,omitempty"`
	// Index changes whenever name, isLeader, term or state changes.
	Index uint64 `json:"index"`
}

type key struct {
	name     string
	isLeader bool
	term     uint64
	state    string
}

// Store holds the member's latest status and numbers the answers it produces. It is a
// node.Observer: Observe never blocks.
type Store struct {
	now    func() time.Time
	nameOf func(id string) string

	mu      sync.Mutex
	st      node.Status
	key     key
	index   uint64
	changed chan struct{}
	timer   *time.Timer
}

// NewStore returns a store holding the member's initial status.
func NewStore(initial node.Status) *Store {
	s := &Store{now: time.Now, nameOf: func(id string) string { return id }, st: initial, index: 1, changed: make(chan struct{})}
	s.key = s.keyAt(s.now())
	return s
}

// WithNames makes the answers show nameOf(id) for member ids (in Kubernetes, the pod name of
// an id that also holds the pod UID). Call it before serving.
func (s *Store) WithNames(nameOf func(id string) string) *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nameOf = nameOf
	s.key = s.keyAt(s.now())
	return s
}

// ContinueFrom makes the store's index follow prev's: a process that replaces its local API
// (it waited for its cluster, or rejoined a new one) keeps one index sequence, so a watcher
// never sees a changed answer under an index it already had. Call it before serving.
func (s *Store) ContinueFrom(prev *Store) *Store {
	prev.mu.Lock()
	next := prev.index + 1
	prev.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index = max(s.index, next)
	return s
}

// Observe records a new status of the member.
func (s *Store) Observe(st node.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	now := s.now()
	s.refreshLocked(now)
	// Wake watchers when the lease runs out even if no new status arrives.
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if st.HoldsLease(now) {
		s.timer = time.AfterFunc(st.LeaseExpiresAt.Sub(now)+time.Millisecond, s.refresh)
	}
}

func (s *Store) refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshLocked(s.now())
}

func (s *Store) keyAt(now time.Time) key {
	st := s.st
	k := key{name: st.Leader, isLeader: st.HoldsLease(now), term: st.Term, state: st.State.Role()}
	if k.name == st.ID && !k.isLeader {
		// A member names itself only while it holds the lease: an application that reads
		// only the name (the leader-elector answer of GET /) must never see two pods name
		// themselves at once, as it would while a handing-over or paused leader that has not
		// yet heard of its successor still thinks it leads.
		k.name = ""
	}
	if k.name != "" {
		k.name = s.nameOf(k.name)
	}
	return k
}

func (s *Store) refreshLocked(now time.Time) {
	k := s.keyAt(now)
	if k != s.key {
		s.key = k
		s.index++
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// Answer returns the answer at this instant and a channel closed when it next changes.
func (s *Store) Answer() (Answer, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.refreshLocked(now)
	a := Answer{Name: s.key.name, Self: s.nameOf(s.st.ID), IsLeader: s.key.isLeader, Term: s.key.term,
		State: s.key.state, Index: s.index}
	if a.IsLeader {
		a.LeaseExpiresAt = s.st.LeaseExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return a, s.changed
}

// Handler returns the local API: GET /leader, GET /leader/self, GET /. At most MaxLongPolls
// long polls wait at once; one more is answered 503 at once.
func Handler(s *Store) http.Handler { return newHandler(s, MaxLongPolls) }

// apiHandler is the local API with its count of waiting long polls.
type apiHandler struct {
	http.Handler
	polls *pollLimit
}

func newHandler(s *Store, maxPolls int) *apiHandler {
	polls := &pollLimit{max: int64(maxPolls)}
	mux := http.NewServeMux()
	mux.HandleFunc("/leader", func(w http.ResponseWriter, r *http.Request) { serveLeader(s, polls, w, r) })
	mux.HandleFunc("/leader/self", func(w http.ResponseWriter, r *http.Request) {
		if !checkRequest(w, r, nil) {
			return
		}
		a, _ := s.Answer()
		code := http.StatusOK
		if !a.IsLeader {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, a)
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		if !checkRequest(w, r, nil) {
			return
		}
		a, _ := s.Answer()
		// The answer of the retired leader-elector sidecar: always 200, name may be empty.
		writeJSON(w, http.StatusOK, struct {
			Name string `json:"name"`
		}{a.Name})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %q; try GET /leader", truncate(r.URL.Path)))
	})
	return &apiHandler{Handler: guard(mux), polls: polls}
}

// pollLimit counts the long polls waiting.
type pollLimit struct {
	max     int64
	waiting atomic.Int64
}

func (p *pollLimit) enter() bool {
	if p.waiting.Add(1) > p.max {
		p.waiting.Add(-1)
		return false
	}
	return true
}

func (p *pollLimit) exit() { p.waiting.Add(-1) }

// WaitQuery is a parsed long-poll query.
type WaitQuery struct {
	// Index is the index the caller has; zero when the request is not a long poll.
	Index uint64
	// HasIndex is set when the query names an index.
	HasIndex bool
	Wait     time.Duration
}

// ParseQuery parses the query of GET /leader: index=N (a non-negative integer) and
// wait=D (a Go duration such as 30s, or whole seconds, at most MaxWait; only with index).
func ParseQuery(values map[string][]string) (WaitQuery, error) {
	var q WaitQuery
	for k, v := range values {
		if k != "index" && k != "wait" {
			return q, fmt.Errorf("unknown query parameter %q; GET /leader takes index and wait", truncate(k))
		}
		if len(v) != 1 {
			return q, fmt.Errorf("query parameter %q given %d times", k, len(v))
		}
	}
	if v, ok := values["index"]; ok {
		i, err := strconv.ParseUint(v[0], 10, 64)
		if err != nil {
			return q, fmt.Errorf("index %q is not a non-negative integer", truncate(v[0]))
		}
		q.Index, q.HasIndex = i, true
		q.Wait = DefaultWait
	}
	if v, ok := values["wait"]; ok {
		if !q.HasIndex {
			return q, errors.New("wait needs index: use ?index=<index of your last answer>&wait=30s")
		}
		d, err := parseWait(v[0])
		if err != nil {
			return q, err
		}
		q.Wait = d
	}
	return q, nil
}

func parseWait(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, serr := strconv.ParseUint(v, 10, 32)
		if serr != nil {
			return 0, fmt.Errorf("wait %q is not a duration (like 30s or 2m)", truncate(v))
		}
		d = time.Duration(secs) * time.Second
	}
	if d < 0 {
		return 0, fmt.Errorf("wait %q is negative", truncate(v))
	}
	if d > MaxWait {
		return 0, fmt.Errorf("wait %q is longer than the limit %v", truncate(v), MaxWait)
	}
	return d, nil
}

func serveLeader(s *Store, polls *pollLimit, w http.ResponseWriter, r *http.Request) {
	var q WaitQuery
	if !checkRequest(w, r, &q) {
		return
	}
	a, changed := s.Answer()
	if q.HasIndex && a.Index == q.Index && q.Wait > 0 {
		// Each waiting poll holds a goroutine, a timer and a connection for up to MaxWait:
		// an application that leaks them must not make the sidecar leak memory too.
		if !polls.enter() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
				"%d long polls are already waiting, the most this member serves; retry after a second (does the application leak long polls?)", polls.max))
			return
		}
		defer polls.exit()
		timer := time.NewTimer(q.Wait)
		defer timer.Stop()
	wait:
		for a.Index == q.Index {
			select {
			case <-changed:
				a, changed = s.Answer()
			case <-timer.C:
				a, _ = s.Answer()
				break wait
			case <-r.Context().Done():
				return
			}
		}
	}
	code := http.StatusOK
	if a.Name == "" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, a)
}

// guard refuses, for every endpoint, methods other than GET and HEAD (405) and requests with
// a body (400), so that no handler waits for a body: a client that trickles one is refused
// once its headers are in, and loses its connection at once.
func guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			refuseAndClose(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use GET", truncate(r.Method)))
		case r.ContentLength != 0: // -1: a chunked body
			refuseAndClose(w, http.StatusBadRequest, r.Method+" takes no request body")
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// refuseAndClose writes an error and ends the connection without reading what is left of the
// request body (net/http would otherwise read up to 256 KiB of it first).
func refuseAndClose(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Connection", "close")
	writeError(w, code, msg)
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// checkRequest allows GET and HEAD, and parses the query into q (or refuses any query when q
// is nil).
func checkRequest(w http.ResponseWriter, r *http.Request, q *WaitQuery) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use GET", r.Method))
		return false
	}
	values, err := parseRawQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	if q == nil {
		if len(values) > 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s takes no query parameters", r.URL.Path))
			return false
		}
		return true
	}
	parsed, err := ParseQuery(values)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	*q = parsed
	return true
}

// ParseRawQuery parses the raw query string of GET /leader, bounded in length, as ParseQuery
// does. The client-go baseline of the benchmarks (test/leaseelector) answers the same query.
func ParseRawQuery(raw string) (WaitQuery, error) {
	values, err := parseRawQuery(raw)
	if err != nil {
		return WaitQuery{}, err
	}
	return ParseQuery(values)
}

// maxQuery bounds the raw query string.
const maxQuery = 1024

func parseRawQuery(raw string) (map[string][]string, error) {
	if len(raw) > maxQuery {
		return nil, fmt.Errorf("query of %d bytes is longer than %d", len(raw), maxQuery)
	}
	values, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fmt.Errorf("malformed query: %v", err)
	}
	return values, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
