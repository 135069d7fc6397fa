package transport

import (
	"log"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ServerErrorLog returns a logger for http.Server.ErrorLog that passes net/http's complaints to
// log as warnings, at most one a minute of each kind. net/http logs some of them once per
// request (a query with a semicolon, a panic in a handler), and a flood of such requests must
// not become a flood of log lines. The suppressed lines are counted in the next one let through.
func ServerErrorLog(l hclog.Logger) *log.Logger {
	if l == nil {
		l = hclog.NewNullLogger()
	}
	return log.New(&serverErrorWriter{log: l, limit: logLimiter{interval: time.Minute}}, "", 0)
}

type serverErrorWriter struct {
	log        hclog.Logger
	limit      logLimiter
	suppressed atomic.Uint64
}

// kindLength is how much of a line names its kind: net/http's lines start with a fixed text
// ("http: URL query contains semicolon", "http: panic serving <addr>", "http: Accept error")
// and go on with details that vary.
const kindLength = 20

func (w *serverErrorWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	kind := msg
	if len(kind) > kindLength {
		kind = kind[:kindLength]
	}
	if !w.limit.allow(kind) {
		w.suppressed.Add(1)
		return len(p), nil
	}
	w.log.Warn("http server error (rate-limited)", "error", clip(msg, 500), "suppressed_since_last", w.suppressed.Swap(0))
	return len(p), nil
}
