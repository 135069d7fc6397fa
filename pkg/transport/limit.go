package transport

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultMaxConns bounds the connections the peer server holds open at once. A member's peers
// keep one or two connections each to it (heartbeats reuse them); a cluster of a hundred
// members uses well under half of it.
const DefaultMaxConns = 256

// LimitConns makes srv hold at most max connections accepted from l at once, so that a flood
// of connections costs a bounded number of goroutines and buffers instead of one of each per
// connection (net/http has no limit of its own). Serve srv on the listener it returns; it sets
// srv.ConnState (calling any hook already there) to learn which connections are serving a
// request.
//
// A connection arriving while max are open takes the place of one that is not serving a
// request: the one that has waited longest for its first request's headers to arrive (a
// silent or a trickling client), or, if there is none, the one that has waited longest for
// its next request, if it has waited at least 5 s (a peer's heartbeat connection never
// waits that long between two requests). That connection is closed as http.Server.Shutdown
// closes idle ones. So silent or trickling connections cannot lock the port: a newcomer gets
// in unless the open connections are in the middle of a request, which the server's
// ReadTimeout and WriteTimeout bound, or recently served one. Only then is the newcomer
// refused: it is reset as soon as it is accepted, without a reply, and the accept loop
// carries on at once. Connections that are serving a request are never closed by the limit,
// and neither are connections that served one less than 5 s ago.
//
// log (nil for none) receives at most one line a minute about refused and evicted connections.
func LimitConns(srv *http.Server, l net.Listener, max int, log hclog.Logger) net.Listener {
	if max <= 0 {
		max = DefaultMaxConns
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	lim := newConnLimiter(max, log)
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		lim.connState(c, s)
		if prev != nil {
			prev(c, s)
		}
	}
	return &limitListener{Listener: l, lim: lim}
}

// minIdleToEvict is how long a connection must have been idle since its last request before
// the limit may close it to admit another. A peer's heartbeat connection is never idle that
// long, so it is never closed for a newcomer.
const minIdleToEvict = 5 * time.Second

// evictWait bounds how long Accept waits for an evicted connection's server goroutine to close
// it. That takes microseconds (its read fails at once); the bound only keeps a connection the
// server never closes (which net/http does not do) from stopping the accept loop.
const evictWait = time.Second

// connLimiter counts the open connections of one listener and orders those not serving a
// request by how long they have waited.
type connLimiter struct {
	max    int
	log    hclog.Logger
	logged logLimiter

	mu sync.Mutex
	// released is signalled (with mu held) whenever a connection's slot is given back.
	released sync.Cond
	// open counts the connections accepted and not yet closed, evicted ones included until
	// their server goroutine has closed them: so the goroutines serving connections are at
	// most max.
	open int
	// fresh holds the open connections that have not sent a complete request yet, and idle
	// those that wait for their next request after serving one; each list has the connection
	// that has waited longest first. A connection is in neither while it serves a request,
	// nor once it is evicted.
	fresh, idle list.List

	refused, evicted atomic.Uint64
}

func newConnLimiter(max int, log hclog.Logger) *connLimiter {
	l := &connLimiter{max: max, log: log, logged: logLimiter{interval: time.Minute}}
	l.released.L = &l.mu
	return l
}

// limitedConn is a connection counted by a connLimiter.
type limitedConn struct {
	net.Conn
	lim *connLimiter

	// Guarded by lim.mu.
	list      *list.List    // lim.fresh, lim.idle or nil
	elem      *list.Element // its element in list
	idleSince time.Time     // when it last went idle
	evicted   bool          // closed by admit; never put in a list again
	released  bool          // its slot was given back
}

// wait puts c at the back of list l (nil: in no list).
func (c *limitedConn) wait(l *list.List) {
	if c.list != nil {
		c.list.Remove(c.elem)
		c.list, c.elem = nil, nil
	}
	if l != nil {
		c.list, c.elem = l, l.PushBack(c)
	}
}

// Close gives the connection's slot back and closes it.
func (c *limitedConn) Close() error {
	c.lim.mu.Lock()
	c.lim.releaseLocked(c)
	c.lim.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection, as net/http does after some refusals so that the
// client reads the reply to the end before the connection is reset.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type limitListener struct {
	net.Listener
	lim *connLimiter
}

// Accept returns the next connection the limit admits; those it refuses are closed here.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.lim.admit(c); lc != nil {
			return lc, nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			// A reset instead of a FIN: the client learns at once, and no TIME_WAIT
			// socket is left behind for each refused connection of a flood.
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// admit counts c in. If all slots are taken, it makes room by evicting the connection that has
// waited longest for its first request or, if there is none, the one that has been idle
// longest if that is minIdleToEvict or more, and waits until that connection's server
// goroutine has closed it (so Accept slows down to the pace at which the server can let go of
// connections). Connections that served a request are spared because they are the peers': a
// stranger's request is refused, which ends its connection (Handler), unless the peer port is
// unauthenticated and the stranger sends well-formed messages in a member's name. It returns
// nil (c must be closed) when no connection can be evicted.
func (l *connLimiter) admit(c net.Conn) *limitedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.open >= l.max {
		front := l.fresh.Front()
		if front == nil {
			if f := l.idle.Front(); f != nil && time.Since(f.Value.(*limitedConn).idleSince) >= minIdleToEvict {
				front = f
			}
		}
		if front == nil {
			l.refused.Add(1)
			if l.logged.allow("refused") {
				l.log.Warn("refusing connections: every connection is serving a request (rate-limited)",
					"open", l.open, "limit", l.max, "remote", c.RemoteAddr(), "refused_so_far", l.refused.Load())
			}
			return nil
		}
		victim := front.Value.(*limitedConn)
		victim.wait(nil)
		victim.evicted = true
		l.evicted.Add(1)
		if l.logged.allow("evicted") {
			l.log.Warn("at the connection limit: closing connections that wait without a request to admit new ones (rate-limited)",
				"limit", l.max, "remote", c.RemoteAddr(), "evicted_so_far", l.evicted.Load())
		}
		// Closing the socket ends the read its server goroutine waits in; the server then
		// closes the connection through its wrapper, which gives the slot back.
		victim.Conn.Close()
		wake := time.AfterFunc(evictWait, func() {
			l.mu.Lock()
			l.released.Broadcast()
			l.mu.Unlock()
		})
		deadline := time.Now().Add(evictWait)
		for !victim.released && time.Now().Before(deadline) {
			l.released.Wait()
		}
		wake.Stop()
		l.releaseLocked(victim)
	}
	lc := &limitedConn{Conn: c, lim: l}
	l.open++
	lc.wait(&l.fresh)
	return lc
}

func (l *connLimiter) releaseLocked(c *limitedConn) {
	if c.released {
		return
	}
	c.released = true
	l.open--
	c.wait(nil)
	l.released.Broadcast()
}

// connState follows the server's view of a connection: serving a request (active) or waiting.
func (l *connLimiter) connState(nc net.Conn, s http.ConnState) {
	c, ok := nc.(*limitedConn)
	if !ok || c.lim != l {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.released {
		return
	}
	switch s {
	case http.StateActive, http.StateHijacked:
		c.wait(nil)
	case http.StateIdle:
		if !c.evicted {
			c.idleSince = time.Now()
			c.wait(&l.idle)
		}
	case http.StateClosed:
		l.releaseLocked(c)
	}
}

// counts reports the open connections, those waiting for their first request and the idle.
func (l *connLimiter) counts() (open, fresh, idle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.fresh.Len(), l.idle.Len()
}
