package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// HTTPConfig configures an HTTP transport.
type HTTPConfig struct {
	// ID is the local member's id. Send refuses messages from any other sender, a response is
	// accepted only if addressed to ID, and the server answers 421 to a request addressed to
	// another member (a stale address book: in Kubernetes a pod IP is reused by a new pod).
	ID string

	// Handler is the local member. It receives the requests the server is sent and the
	// responses to the requests this member sends. Required.
	Handler Handler

	// RPCTimeout bounds one RPC, from dialling to having read the reply. It also bounds how
	// long a stalled connection holds back the next message to the same peer, so keep it a
	// small multiple of the heartbeat interval and well below the election timeout. Zero
	// means DefaultRPCTimeout.
	RPCTimeout time.Duration

	// QueueSize is how many messages may wait for each peer; when a queue is full the oldest
	// message is dropped. Zero means DefaultQueueSize.
	QueueSize int

	// Logger receives one line per change of a peer's reachability, of the address book, and
	// (rate-limited) refused requests; never one per heartbeat. Nil means no logging.
	Logger hclog.Logger

	// Observer receives per-RPC events for metrics. Nil means none.
	Observer Observer

	// Keys, when set, turns peer authentication on (docs/security.md): every request is
	// signed with the first key, a request without a valid signature by one of the keys is
	// refused with 401 before anything in it is read, and a reply is used only if it is
	// signed and bound to its request. Keys is consulted on every RPC, so a KeyFile's reloads
	// take effect at once. Nil means no authentication: nothing is signed or required.
	Keys KeySource

	// MaxClockSkew is how far a signed request's timestamp may lie from this member's wall
	// clock; older requests are refused as possible replays. Zero means DefaultMaxClockSkew.
	MaxClockSkew time.Duration

	// ReplayCacheSize bounds how many recent requests are remembered to refuse replays; when
	// it is full of unexpired entries further requests are refused (503). Zero means
	// DefaultReplayCacheSize.
	ReplayCacheSize int

	// MaxConns bounds the connections the peer server (Serve) holds open at once; see
	// LimitConns for what happens at the limit. Zero means DefaultMaxConns.
	MaxConns int

	// AcceptUnsigned is the transition mode for turning authentication on or off in a running
	// cluster (docs/security.md), and gives no protection while set: with Keys, every request
	// is still signed and every signature present is verified (a bad one is refused), but a
	// request without a signature is served and a reply without one is used, so that members
	// without keys and members with keys can talk. Requires Keys.
	AcceptUnsigned bool
}

// HTTP is the HTTP/JSON transport: a client that sends the local member's requests to its
// peers, and a server (Handler) that receives theirs. One value serves both sides because
// both deliver into the same local member and share its lifetime: Close stops both.
type HTTP struct {
	id         string
	handler    Handler
	rpcTimeout time.Duration
	queueSize  int
	log        hclog.Logger
	obs        Observer
	client     *http.Client

	// ctx is cancelled by Close; it aborts RPCs and every call into handler.
	ctx    context.Context
	cancel context.CancelFunc

	workers sync.WaitGroup // one per peer outbox
	inbound gate           // server-side Steps in flight
	stats   counters

	misuseLogged atomic.Bool // a caller bug is logged once, then only counted
	serverLog    logLimiter

	// auth signs and verifies peer messages; nil when authentication is off.
	auth *authenticator

	// maxConns bounds the server's connections (Serve); largeBodies holds a token for each
	// request body over smallBodyBytes being read.
	maxConns    int
	largeBodies chan struct{}

	mu     sync.RWMutex
	closed bool
	peers  map[string]*httpPeer
}

// httpPeer is one peer: its address (replaced by SetPeers while the worker runs) and its queue.
type httpPeer struct {
	*outbox
	addr atomic.Pointer[string]
	// failing is the peer's reachability as last logged; only its worker touches it.
	failing bool
}

var _ Transport = (*HTTP)(nil)

// NewHTTP returns an HTTP transport with an empty address book. Serve its Handler on the peer
// port (NewServer gives a suitably configured http.Server), give it addresses with SetPeers,
// and Close it on shutdown.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	if cfg.ID == "" || len(cfg.ID) > raft.MaxIDLength {
		return nil, fmt.Errorf("transport: member id %q must be 1 to %d bytes", clip(cfg.ID, 64), raft.MaxIDLength)
	}
	if cfg.Handler == nil {
		return nil, errors.New("transport: no handler for received messages")
	}
	if cfg.RPCTimeout < 0 || cfg.QueueSize < 0 || cfg.MaxClockSkew < 0 || cfg.ReplayCacheSize < 0 || cfg.MaxConns < 0 {
		return nil, fmt.Errorf("transport: RPC timeout (%v), queue size (%d), clock skew (%v), replay cache size (%d) and connection limit (%d) must not be negative",
			cfg.RPCTimeout, cfg.QueueSize, cfg.MaxClockSkew, cfg.ReplayCacheSize, cfg.MaxConns)
	}
	if cfg.AcceptUnsigned && cfg.Keys == nil {
		return nil, errors.New("transport: accepting unsigned messages is a mode of authentication, which needs keys")
	}
	var auth *authenticator
	if cfg.Keys != nil {
		if k := cfg.Keys.Keys(); k == nil || len(k.keys) == 0 {
			return nil, errors.New("transport: the key source holds no key")
		}
		if cfg.MaxClockSkew == 0 {
			cfg.MaxClockSkew = DefaultMaxClockSkew
		}
		if cfg.MaxClockSkew < time.Second {
			return nil, fmt.Errorf("transport: clock skew window %v is under a second: requests would expire in flight", cfg.MaxClockSkew)
		}
		if cfg.ReplayCacheSize == 0 {
			cfg.ReplayCacheSize = DefaultReplayCacheSize
		}
		auth = newAuthenticator(cfg.Keys, cfg.MaxClockSkew, cfg.ReplayCacheSize)
		auth.acceptUnsigned = cfg.AcceptUnsigned
	}
	if cfg.RPCTimeout == 0 {
		cfg.RPCTimeout = DefaultRPCTimeout
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &HTTP{
		id:          cfg.ID,
		handler:     cfg.Handler,
		rpcTimeout:  cfg.RPCTimeout,
		queueSize:   cfg.QueueSize,
		log:         cfg.Logger,
		obs:         cfg.Observer,
		client:      newClient(),
		ctx:         ctx,
		cancel:      cancel,
		serverLog:   logLimiter{interval: time.Minute},
		auth:        auth,
		maxConns:    cfg.MaxConns,
		largeBodies: make(chan struct{}, maxLargeBodies),
		peers:       map[string]*httpPeer{},
	}, nil
}

func newClient() *http.Client {
	tr := &http.Transport{
		// Peers are reached directly. An HTTP_PROXY meant for the application must not
		// route (and delay, or break) the election.
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   DefaultDialTimeout,
			KeepAlive: 15 * time.Second,
		}).DialContext,
		// Each peer's worker has one RPC in flight, so one persistent connection per peer
		// carries its heartbeats; a second covers the moment a timed-out one is replaced.
		MaxIdleConns:        0, // no global limit: the per-host one bounds it by cluster size
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // bodies are a few hundred bytes
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{
		Transport: tr,
		// A peer has no business redirecting an RPC; following one would send the member's
		// messages wherever the reply says.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Send queues each message for its recipient and returns at once.
func (t *HTTP) Send(msgs ...raft.Message) {
	for _, m := range msgs {
		if reason, err := checkOutbound(t.id, m); err != nil {
			if t.misuseLogged.CompareAndSwap(false, true) {
				t.log.Error("dropping a message the transport must not send (logged once, counted always)", "reason", reason, "error", err)
			}
			t.drop(m.To, reason)
			continue
		}
		t.mu.RLock()
		closed, p := t.closed, t.peers[m.To]
		t.mu.RUnlock()
		switch {
		case closed:
			t.drop(m.To, DropClosed)
		case p == nil:
			// Discovery has not (or no longer) an address for it; the protocol will resend.
			t.drop(m.To, DropNoAddress)
		default:
			if p.push(m) {
				t.drop(m.To, DropQueueFull)
			}
		}
	}
}

func (t *HTTP) drop(peer string, reason DropReason) {
	t.stats.drop(reason)
	t.obs.ObserveDrop(peer, reason)
}

// SetPeers replaces the address book. The local member's own entry and entries with an empty
// or over-long id or an address that is not host:port are ignored. A peer that keeps its id
// keeps its queue when its address changes; a peer that leaves the book loses its queue.
func (t *HTTP) SetPeers(addrs map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	valid := make(map[string]string, len(addrs))
	for id, addr := range addrs {
		if id == t.id {
			continue // static peer lists may include the member itself
		}
		if id == "" || len(id) > raft.MaxIDLength {
			t.log.Warn("ignoring peer with an invalid id", "id", clip(id, 64))
			continue
		}
		if err := checkAddr(addr); err != nil {
			t.log.Warn("ignoring peer with an invalid address", "peer", id, "error", err)
			continue
		}
		valid[id] = addr
	}
	for id, p := range t.peers {
		if _, ok := valid[id]; !ok {
			p.stop()
			delete(t.peers, id)
			t.log.Info("peer removed", "peer", id)
		}
	}
	for id, addr := range valid {
		if p, ok := t.peers[id]; ok {
			if old := *p.addr.Load(); old != addr {
				p.addr.Store(&addr)
				t.log.Info("peer address changed", "peer", id, "old", old, "addr", addr)
			}
			continue
		}
		p := &httpPeer{outbox: newOutbox(t.ctx, id, t.queueSize)}
		p.addr.Store(&addr)
		t.peers[id] = p
		t.workers.Add(1)
		go func() {
			defer t.workers.Done()
			p.run(func(ctx context.Context, m raft.Message) { t.rpc(ctx, p, m) })
		}()
		t.log.Info("peer added", "peer", id, "addr", addr)
	}
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", clip(addr, 64), err)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", clip(addr, 64))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q: port must be a number from 1 to 65535", clip(addr, 64))
	}
	return nil
}

// Close stops every peer's worker, aborts the RPCs in flight, refuses further requests on
// the server side (503) and waits until no call into the Handler is left. It is idempotent.
// The http.Server serving Handler is the caller's to shut down.
func (t *HTTP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.peers = nil
	t.mu.Unlock()

	t.cancel()
	t.workers.Wait()
	t.inbound.close()
	t.client.CloseIdleConnections()
	return nil
}

// Stats returns the transport's counters.
func (t *HTTP) Stats() Stats { return t.stats.snapshot() }

// newRequest builds the HTTP request for one message. It is the one place requests are made,
// so it signs them too, next to the body the signature covers. With authentication on it
// returns the nonce the reply's signature must be bound to.
func (t *HTTP) newRequest(ctx context.Context, addr string, m raft.Message) (*http.Request, string, error) {
	body, err := encodeMessage(m)
	if err != nil {
		return nil, "", fmt.Errorf("encode %s: %w", m.Type, err)
	}
	u := url.URL{Scheme: "http", Host: addr, Path: rpcPath(m.Type)}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, "", fmt.Errorf("build %s request to %s: %w", m.Type, addr, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", contentType)
	var nonce string
	if t.auth != nil {
		if nonce, err = t.auth.signRequest(req, body); err != nil {
			return nil, "", fmt.Errorf("sign %s request: %w", m.Type, err)
		}
	}
	return req, nonce, nil
}

// rpc sends m to peer p and steps the response, if any, into the local member. ctx is the
// worker's; the RPC's own deadline is derived from it so that stepping the response is not cut
// short by the network's budget.
func (t *HTTP) rpc(ctx context.Context, p *httpPeer, m raft.Message) {
	addr := *p.addr.Load()
	rpcCtx, cancel := context.WithTimeout(ctx, t.rpcTimeout)
	defer cancel()

	req, nonce, err := t.newRequest(rpcCtx, addr, m)
	if err != nil {
		t.stats.failed.Add(1)
		t.peerFailed(p, addr, m, err)
		return
	}
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		t.obs.ObserveRPC(string(m.Type), 0, time.Since(start))
		t.stats.failed.Add(1)
		t.peerFailed(p, addr, m, err)
		return
	}
	body, readErr := readBody(resp.Body)
	rtt := time.Since(start)

	// A reply that claims success is believed only if the peer signed it for this request:
	// otherwise anyone on the path could grant votes or acknowledge heartbeats. One that is
	// not is observed as no reply (code 0), so a dashboard never counts it as a heartbeat
	// answered. In the transition mode an unsigned reply is used as it is (a peer without
	// keys sent it).
	if t.auth != nil && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent) &&
		!(t.auth.acceptUnsigned && unsigned(resp.Header)) {
		err := readErr
		if err == nil {
			err = t.auth.verifyResponse(resp, nonce, body)
		} else {
			err = fmt.Errorf("read response: %w", err)
		}
		if err != nil {
			t.obs.ObserveRPC(string(m.Type), 0, rtt)
			t.stats.invalid.Add(1)
			t.peerFailed(p, addr, m, err)
			return
		}
	}
	t.obs.ObserveRPC(string(m.Type), resp.StatusCode, rtt)

	switch {
	case readErr != nil && resp.StatusCode == http.StatusOK:
		t.stats.invalid.Add(1)
		t.peerFailed(p, addr, m, fmt.Errorf("read response: %w", readErr))
	case resp.StatusCode == http.StatusNoContent:
		t.stats.delivered.Add(1)
		t.peerOK(p, addr)
	case resp.StatusCode == http.StatusOK:
		r, err := decodeMessage(body)
		if err == nil {
			err = checkResponse(m, r)
		}
		if err != nil {
			t.stats.invalid.Add(1)
			t.peerFailed(p, addr, m, err)
			return
		}
		t.stats.delivered.Add(1)
		t.peerOK(p, addr)
		if _, err := t.handler.Step(ctx, r); err != nil && ctx.Err() == nil {
			t.log.Debug("local member refused a response", "peer", p.peer, "type", r.Type, "error", err)
		}
	default:
		t.stats.failed.Add(1)
		t.peerFailed(p, addr, m, fmt.Errorf("status %d: %s", resp.StatusCode, errorText(body)))
	}
}

// readBody reads a reply body up to MaxMessageBytes and closes it. Reading it to the end lets
// the connection be reused for the next heartbeat.
func readBody(rc io.ReadCloser) ([]byte, error) {
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, MaxMessageBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxMessageBytes {
		return nil, fmt.Errorf("reply longer than %d bytes", MaxMessageBytes)
	}
	return body, nil
}

// errorText extracts the message of an error reply for a log line.
func errorText(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return clip(e.Error, 200)
	}
	return clip(string(bytes.TrimSpace(body)), 200)
}

// peerFailed and peerOK log a peer's reachability when it changes, not on every heartbeat.
func (t *HTTP) peerFailed(p *httpPeer, addr string, m raft.Message, err error) {
	if t.ctx.Err() != nil || p.ctx.Err() != nil {
		return // shutting down or removed: failures are expected and not the peer's
	}
	if !p.failing {
		p.failing = true
		t.log.Warn("peer unreachable", "peer", p.peer, "addr", addr, "rpc", m.Type, "error", err)
	}
}

func (t *HTTP) peerOK(p *httpPeer, addr string) {
	if p.failing {
		p.failing = false
		t.log.Info("peer reachable again", "peer", p.peer, "addr", addr)
	}
}
