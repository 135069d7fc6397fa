// Package faultproxy is a TCP proxy for one directed network link between two raft-elector
// members, with faults that a test switches at run time: pass, drop and added latency.
//
// A proxy listens on a loopback port and forwards every accepted connection to its target.
// The end-to-end tests put one proxy on every directed link a→b: member a's --peers entry for b
// names the proxy, and the proxy forwards to b's --peer-addr. Because the peer protocol is
// request/response over HTTP, link a→b carries a's requests to b and b's replies to them; b's
// own requests to a travel over link b→a.
//
// Modes:
//
//   - Pass forwards bytes in both directions (after the configured latency, if any).
//   - Drop is a black hole. Switching to Drop severs every open connection at once, so an
//     HTTP keep-alive connection cannot carry traffic past a cut. Connections accepted while
//     dropping are held open, their bytes read and discarded, and nothing is forwarded in
//     either direction; the client sees a peer that never answers, as with a pulled cable.
//     Switching back to Pass closes the held connections so the client redials instead of
//     waiting for its own timeout.
//
// Latency delays every chunk of bytes, in each direction, by base + a uniformly random jitter
// in [0, jitter), while keeping the byte order of the stream (a chunk never overtakes the one
// before it, as on a real TCP connection).
//
// All methods are safe for concurrent use. Close stops the listener, closes every connection and
// waits for all of the proxy's goroutines.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what a proxy does with traffic.
type Mode int

const (
	// Pass forwards traffic.
	Pass Mode = iota
	// Drop forwards nothing and severs open connections.
	Drop
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// dialTimeout bounds the dial to the target; a target that is down refuses at once on loopback.
const dialTimeout = 2 * time.Second

// chunkSize is the read buffer of one direction of one connection.
const chunkSize = 32 << 10

// Stats counts what a proxy did, for tests and failure reports.
type Stats struct {
	// Accepted counts connections accepted from clients.
	Accepted int64
	// Forwarded counts connections that were connected to the target.
	Forwarded int64
	// Held counts connections accepted while dropping (black-holed).
	Held int64
	// Severed counts connections closed by a switch to Drop, a heal or Close.
	Severed int64
	// DialErrors counts failed dials to the target.
	DialErrors int64
	// Bytes counts bytes delivered, both directions.
	Bytes int64
}

// Proxy forwards connections from its listen address to a target, injecting faults.
type Proxy struct {
	ln net.Listener

	mu      sync.Mutex
	target  string
	mode    Mode
	latency time.Duration
	jitter  time.Duration
	conns   map[*conn]struct{}
	closed  bool

	wg sync.WaitGroup

	accepted, forwarded, held, severed, dialErrors, bytes atomic.Int64
}

// conn is one accepted client connection and, when forwarding, its connection to the target.
type conn struct {
	client   net.Conn
	upstream net.Conn // nil while held
	once     sync.Once
}

func (c *conn) close() {
	c.once.Do(func() {
		c.client.Close()
		if c.upstream != nil {
			c.upstream.Close()
		}
	})
}

// Listen starts a proxy on 127.0.0.1 with a free port, forwarding to target (host:port).
func Listen(target string) (*Proxy, error) {
	return ListenOn("127.0.0.1:0", target)
}

// ListenOn starts a proxy on addr, forwarding to target.
func ListenOn(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on %s: %w", addr, err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[*conn]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listen address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is where the proxy forwards new connections.
func (p *Proxy) Target() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// SetTarget changes where new connections go and severs the open ones, which lead to the old
// target (used when a member restarts on a new port).
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	victims := p.takeConnsLocked(func(*conn) bool { return true })
	p.mu.Unlock()
	p.sever(victims)
}

// Mode is the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// SetMode switches the mode. Switching to Drop severs every open connection; switching to Pass
// closes the connections held while dropping.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	if p.mode == m {
		p.mu.Unlock()
		return
	}
	p.mode = m
	var victims []*conn
	switch m {
	case Drop:
		victims = p.takeConnsLocked(func(*conn) bool { return true })
	case Pass:
		victims = p.takeConnsLocked(func(c *conn) bool { return c.upstream == nil })
	}
	p.mu.Unlock()
	p.sever(victims)
}

// Cut is SetMode(Drop).
func (p *Proxy) Cut() { p.SetMode(Drop) }

// Heal is SetMode(Pass).
func (p *Proxy) Heal() { p.SetMode(Pass) }

// SetLatency delays every chunk by base plus a random jitter in [0, jitter). It applies to
// chunks read from now on, on open connections too. Zero for both removes the delay.
func (p *Proxy) SetLatency(base, jitter time.Duration) {
	if base < 0 {
		base = 0
	}
	if jitter < 0 {
		jitter = 0
	}
	p.mu.Lock()
	p.latency, p.jitter = base, jitter
	p.mu.Unlock()
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted:   p.accepted.Load(),
		Forwarded:  p.forwarded.Load(),
		Held:       p.held.Load(),
		Severed:    p.severed.Load(),
		DialErrors: p.dialErrors.Load(),
		Bytes:      p.bytes.Load(),
	}
}

// Close stops accepting, closes every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	victims := p.takeConnsLocked(func(*conn) bool { return true })
	p.mu.Unlock()
	err := p.ln.Close()
	p.sever(victims)
	p.wg.Wait()
	return err
}

func (p *Proxy) takeConnsLocked(match func(*conn) bool) []*conn {
	var out []*conn
	for c := range p.conns {
		if match(c) {
			out = append(out, c)
			delete(p.conns, c)
		}
	}
	return out
}

func (p *Proxy) sever(cs []*conn) {
	for _, c := range cs {
		p.severed.Add(1)
		c.close()
	}
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary errors (EMFILE and the like): back off briefly.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.handle(client)
	}
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	mode, target, closed := p.mode, p.target, p.closed
	p.mu.Unlock()
	if closed {
		client.Close()
		return
	}
	if mode == Drop {
		p.hold(client)
		return
	}
	upstream, err := net.DialTimeout("tcp", target, dialTimeout)
	if err != nil {
		// The target is down: refuse the client the way the target would have.
		p.dialErrors.Add(1)
		client.Close()
		return
	}
	c := &conn{client: client, upstream: upstream}
	// Register under the lock, and re-check the mode: a cut that happened while dialing must
	// not let this connection through.
	p.mu.Lock()
	if p.closed || p.mode == Drop {
		p.mu.Unlock()
		upstream.Close()
		p.hold(client) // closes the client unless the proxy is still dropping
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.forwarded.Add(1)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(c, upstream, client) }()
	go func() { defer wg.Done(); p.pipe(c, client, upstream) }()
	wg.Wait()
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// hold black-holes a client connection: it reads and discards until the connection is closed
// by the client, a heal or Close.
func (p *Proxy) hold(client net.Conn) {
	c := &conn{client: client}
	p.mu.Lock()
	if p.closed || p.mode != Drop {
		p.mu.Unlock()
		client.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.held.Add(1)
	_, _ = io.Copy(io.Discard, client)
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// chunk is bytes read from one side, due at the other side at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, delaying chunks by the configured latency. On EOF from src it
// half-closes dst after the last chunk is delivered; on any error it closes the connection.
func (p *Proxy) pipe(c *conn, dst, src net.Conn) {
	queue := make(chan chunk, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range queue {
			if d := time.Until(ch.due); d > 0 {
				time.Sleep(d)
			}
			n, err := dst.Write(ch.b)
			p.bytes.Add(int64(n))
			if err != nil {
				c.close()
				// Drain so the reader never blocks on a full queue.
				for range queue {
				}
				return
			}
		}
	}()
	var last time.Time
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			delay := p.latency
			if p.jitter > 0 {
				delay += rand.N(p.jitter)
			}
			p.mu.Unlock()
			due := time.Now().Add(delay)
			if due.Before(last) {
				due = last
			}
			last = due
			b := make([]byte, n)
			copy(b, buf[:n])
			queue <- chunk{b: b, due: due}
		}
		if err != nil {
			close(queue)
			<-done
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			c.close()
			return
		}
	}
}
