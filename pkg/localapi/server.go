package localapi

import (
	"log"
	"net/http"
	"time"
)

// Limits of the local API and operations servers. The local API is reached from inside the
// pod only; the operations port from the cluster network (probes, Prometheus). Either may be
// sent anything, by a buggy application or a scanner: these bound what that costs.
const (
	// MaxLongPolls bounds the long polls (GET /leader?index=N that wait) one local API holds
	// at once. Each holds a goroutine, a timer and a connection for up to MaxWait; one more is
	// answered 503 at once, with Retry-After: 1 and an error body.
	MaxLongPolls = 1024
	// MaxLocalConns bounds the local API's open connections: every long poll and 256 more.
	MaxLocalConns = MaxLongPolls + 256
	// MaxOpsConns bounds the operations server's open connections.
	MaxOpsConns = 256

	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
)

// NewLocalServer returns the http.Server for the local API (Handler): requests must send their
// headers within 5 s (16 KiB at most: 431 beyond) and are not expected to send a body;
// replies may take up to MaxWait (a long poll) and 10 s more. Idle connections are closed
// after 2 minutes. errorLog receives net/http's complaints (nil: the standard logger).
//
// Serve it on a listener that bounds its connections to MaxLocalConns
// (transport.LimitConns).
func NewLocalServer(h http.Handler, errorLog *log.Logger) *http.Server {
	return newServer(h, MaxWait+10*time.Second, errorLog)
}

// NewOpsServer returns the http.Server for the operations endpoints (OpsHandler): as
// NewLocalServer, but a reply (a metrics scrape) must be written within 30 s. Serve it on a
// listener that bounds its connections to MaxOpsConns.
func NewOpsServer(h http.Handler, errorLog *log.Logger) *http.Server {
	return newServer(h, 30*time.Second, errorLog)
}

func newServer(h http.Handler, write time.Duration, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      write,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errorLog,
	}
}
