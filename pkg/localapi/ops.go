package localapi

import (
	"net/http"
	"time"

	"github.com/raft-elector/raft-elector/pkg/node"
)

// Member is what the operations endpoints ask about the member.
type Member interface {
	Healthy(now time.Time) error
	Status() node.Status
}

// OpsHandler serves /healthz (the member's loop is alive and ticking) and /readyz (the member
// knows a leader or is one), and mounts metrics (if non-nil) on /metrics. Every endpoint takes
// GET or HEAD without a body.
func OpsHandler(m Member, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !checkRequest(w, r, nil) {
			return
		}
		if err := m.Healthy(time.Now()); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, struct {
			Status string `json:"status"`
		}{"ok"})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !checkRequest(w, r, nil) {
			return
		}
		st := m.Status()
		if st.Leader == "" {
			writeError(w, http.StatusServiceUnavailable, "no leader known yet")
			return
		}
		writeJSON(w, http.StatusOK, struct {
			Status string `json:"status"`
			Leader string `json:"leader"`
		}{"ok", st.Leader})
	})
	if metrics != nil {
		mux.Handle("/metrics", metrics)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint; try /healthz, /readyz or /metrics")
	})
	return guard(mux)
}
