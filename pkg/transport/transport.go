package transport

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// Handler is the member a transport delivers received messages to.
type Handler interface {
	// Step hands a received message to the member and waits until it is processed and any
	// state it changed is durable. It returns the response (request-vote-response or
	// append-entries-response) for a request that has one, or nil.
	//
	// Transports call Step concurrently (one call per peer queue and per served request), so
	// it must be safe for concurrent use, and it must return once ctx is cancelled: Close
	// waits for every call in flight.
	Step(ctx context.Context, m raft.Message) (*raft.Message, error)
}

// Transport sends the local member's requests to its peers.
type Transport interface {
	// Send queues messages for delivery and returns at once; it never blocks on a slow or dead peer.
	Send(msgs ...raft.Message)
	// SetPeers replaces the address book: member id -> "host:port". Addresses come from discovery.
	SetPeers(addrs map[string]string)
	Close() error
}

// Defaults for the configurable limits.
const (
	// DefaultRPCTimeout bounds one RPC. Each peer's queue is drained one RPC at a time, so a
	// connection that silently stalled (a lost packet on a half-open connection) holds back
	// that peer's next heartbeat for up to this long. Twice the default heartbeat interval
	// costs that peer at most a couple of heartbeats, far less than an election timeout;
	// runtimes with another heartbeat interval should keep that ratio.
	DefaultRPCTimeout = 200 * time.Millisecond
	// DefaultQueueSize is the number of messages waiting per peer. A healthy peer has at most
	// one or two waiting; anything beyond a few heartbeat intervals' worth is stale anyway.
	DefaultQueueSize = 8
	// DefaultDialTimeout bounds connecting to a peer (including the DNS lookup when the
	// address is a name). Peers are in the same cluster network, where a connection takes
	// well under a millisecond, and connections persist, so dialling is rare except towards a
	// dead peer, which it should give up on quickly. The RPC timeout applies as well.
	DefaultDialTimeout = 100 * time.Millisecond
)

// MaxMessageBytes bounds a request or response body. A message is a few hundred bytes (three
// ids of at most raft.MaxIDLength and a few numbers); 256 KiB leaves room for the configuration
// entries and snapshot an append-entries carries (up to raft.MaxMembers ids of
// raft.MaxIDLength bytes each, several times), while a hostile or broken peer cannot make a
// member buffer megabytes. The server reads bodies over 16 KiB only a few at a time (Handler).
const MaxMessageBytes = 256 << 10

// Observer receives the events metrics are made of (raft_elector_rpc_requests_total{rpc,code},
// raft_elector_heartbeat_rtt_seconds). Its methods are called synchronously from Send, from
// the peer queues and from the server, so they must be fast and must not block.
type Observer interface {
	// ObserveRPC reports one RPC this member sent: its name (the request type), the HTTP
	// status of the reply, or 0 when none arrived (refused, timed out, reset) or, with
	// authentication on, when a success reply was not validly signed; and the time from
	// sending the request to having read the whole reply.
	ObserveRPC(rpc string, code int, rtt time.Duration)
	// ObserveServed reports one request this member answered. rpc is "unknown" when the path
	// names no RPC, so that a scanner cannot blow up the label set.
	ObserveServed(rpc string, code int)
	// ObserveDrop reports a message that was not sent, and why.
	ObserveDrop(peer string, reason DropReason)
}

// DropReason says why a message was not sent.
type DropReason string

const (
	// DropQueueFull: the peer's queue was full; the oldest queued message made room.
	DropQueueFull DropReason = "queue-full"
	// DropNoAddress: no address is known for the recipient (in memory: it has not joined or
	// has closed).
	DropNoAddress DropReason = "no-address"
	// DropNotRequest: a response (or anything but a request) was passed to Send. Responses
	// travel in the reply to their request; this is a bug in the caller.
	DropNotRequest DropReason = "not-request"
	// DropInvalid: the message failed validation or was not sent by the local member; a bug
	// in the caller.
	DropInvalid DropReason = "invalid"
	// DropClosed: the transport was closed.
	DropClosed DropReason = "closed"
	// DropPartitioned: an in-memory link is cut (either the request's or, for a response,
	// the reverse direction).
	DropPartitioned DropReason = "partitioned"
	// DropLost: the in-memory network's random loss took the message.
	DropLost DropReason = "lost"
)

// Stats counts what a transport did with the messages given to it.
type Stats struct {
	// Delivered counts requests the recipient processed without error (HTTP 200 or 204).
	Delivered uint64
	// Failed counts requests sent without getting a usable reply: refused, timed out, or
	// answered with an error status.
	Failed uint64
	// InvalidResponses counts responses that failed decoding or validation, did not answer
	// their request, or (with authentication on) were not validly signed for it. They were
	// not stepped.
	InvalidResponses uint64
	// Dropped counts messages not sent, by reason.
	Dropped map[DropReason]uint64
}

// counters backs Stats. Drops are rare enough for a mutex.
type counters struct {
	delivered, failed, invalid atomic.Uint64

	mu      sync.Mutex
	dropped map[DropReason]uint64
}

func (c *counters) drop(reason DropReason) {
	c.mu.Lock()
	if c.dropped == nil {
		c.dropped = map[DropReason]uint64{}
	}
	c.dropped[reason]++
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Delivered:        c.delivered.Load(),
		Failed:           c.failed.Load(),
		InvalidResponses: c.invalid.Load(),
		Dropped:          map[DropReason]uint64{},
	}
	c.mu.Lock()
	for k, v := range c.dropped {
		s.Dropped[k] = v
	}
	c.mu.Unlock()
	return s
}

// gate tracks the calls into a Handler that are in flight, so that Close can refuse new ones
// and wait for the rest: after Close nothing may step a member that has been shut down.
type gate struct {
	mu       sync.Mutex
	closed   bool
	inFlight sync.WaitGroup
}

// enter reports whether a call may start; if it does, the caller must call exit when done.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.inFlight.Add(1)
	return true
}

func (g *gate) exit() { g.inFlight.Done() }

// close refuses new calls and waits for those in flight.
func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.inFlight.Wait()
}

// logLimiter lets one line per key through per interval, so that a misbehaving peer sending
// ten requests a second does not become ten log lines a second.
type logLimiter struct {
	interval time.Duration

	mu   sync.Mutex
	last map[string]time.Time
}

func (l *logLimiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < l.interval {
		return false
	}
	l.last[key] = now
	return true
}

// clip shortens s for an error body or a log line: ids and field names come from the peer and
// may be long.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

type nopObserver struct{}

func (nopObserver) ObserveRPC(string, int, time.Duration) {}
func (nopObserver) ObserveServed(string, int)             {}
func (nopObserver) ObserveDrop(string, DropReason)        {}
