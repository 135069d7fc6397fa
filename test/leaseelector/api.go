package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/raft-elector/raft-elector/pkg/localapi"
)

const (
	// defaultWait is the wait of a long poll that gives an index but no wait.
	defaultWait = localapi.DefaultWait
	// maxWait caps a long poll's wait; a longer one waits this long.
	maxWait = 60 * time.Second
)

// localHandler serves the application: GET /leader (and its long poll) and GET /. A long poll
// returns early, with the current answer, once closing is closed.
func localHandler(v *leaderView, closing <-chan struct{}) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/leader", func(w http.ResponseWriter, r *http.Request) { serveLeader(v, closing, w, r) })
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			writeJSON(w, http.StatusBadRequest, errorBody{"/ takes no query parameters"})
			return
		}
		a, _ := v.answer()
		// The answer of the retired leader-elector sidecar: always 200, name may be empty.
		writeJSON(w, http.StatusOK, struct {
			Name string `json:"name"`
		}{a.Name})
	})
	mux.HandleFunc("/", notFound)
	return getOnly(mux)
}

func serveLeader(v *leaderView, closing <-chan struct{}, w http.ResponseWriter, r *http.Request) {
	q, err := parseWaitQuery(r.URL.RawQuery)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		return
	}
	a, changed := v.answer()
	if q.hasIndex && a.Index == q.index && q.wait > 0 {
		timer := time.NewTimer(q.wait)
		defer timer.Stop()
	wait:
		for a.Index == q.index {
			select {
			case <-changed:
				a, changed = v.answer()
			case <-timer.C:
				a, _ = v.answer()
				break wait
			case <-closing:
				a, _ = v.answer()
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

// waitQuery is the parsed query of GET /leader.
type waitQuery struct {
	index    uint64
	hasIndex bool
	wait     time.Duration
}

// parseWaitQuery parses index=N and wait=D exactly as raft-elector does (localapi.ParseRawQuery:
// the same errors, a wait over its 10 minutes refused); a wait over maxWait waits maxWait.
func parseWaitQuery(raw string) (waitQuery, error) {
	p, err := localapi.ParseRawQuery(raw)
	if err != nil {
		return waitQuery{}, err
	}
	return waitQuery{index: p.Index, hasIndex: p.HasIndex, wait: min(p.Wait, maxWait)}, nil
}

// opsHandler serves the operations endpoints: /healthz (the process runs), /readyz (a Lease
// record has been read or written) and /metrics.
func opsHandler(v *leaderView, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !v.ready() {
			writeText(w, http.StatusServiceUnavailable, "the Lease has not been read yet")
			return
		}
		writeText(w, http.StatusOK, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %q; try /healthz, /readyz or /metrics", r.URL.Path))
	})
	return getOnly(mux)
}

// getOnly refuses methods other than GET and HEAD (405) and requests with a body (400).
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{fmt.Sprintf("method %s not allowed; use GET", r.Method)})
		case r.ContentLength != 0: // -1: a chunked body
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusBadRequest, errorBody{r.Method + " takes no request body"})
		default:
			h.ServeHTTP(w, r)
		}
	})
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no such endpoint %q; try GET /leader", r.URL.Path)})
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// newServer returns a server that must receive a request's headers within 5 s and the rest
// within 10 s, and may take up to write to reply (a long poll: maxWait and a margin).
func newServer(h http.Handler, write time.Duration, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      write,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          errorLog,
	}
}
