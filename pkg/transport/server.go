package transport

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// RPCPathPrefix is where the peer RPCs live: POST RPCPathPrefix + <request type>.
const RPCPathPrefix = "/raft/v1/"

const contentType = "application/json"

func rpcPath(t raft.MessageType) string { return RPCPathPrefix + string(t) }

// rpcFromPath returns the request type a path names.
func rpcFromPath(path string) (raft.MessageType, bool) {
	name, ok := strings.CutPrefix(path, RPCPathPrefix)
	if !ok {
		return "", false
	}
	t := raft.MessageType(name)
	return t, t.IsRequest()
}

// Handler returns the server side of the transport, to be served on the peer port:
//
//	POST /raft/v1/{request-vote,append-entries,timeout-now}
//	Content-Type: application/json, body: one raft.Message of that type, at most MaxMessageBytes
//
// Replies: 200 with the response message, or 204 when the request has none (timeout-now, or a
// request the member chose not to answer). Errors are one line of JSON, {"error": "..."}:
//
//	404 the path names no RPC            405 not POST
//	415 not application/json             413 body over MaxMessageBytes
//	400 malformed, invalid, or of another type than the path (also raft.ErrInvalidMessage)
//	403 raft.ErrWrongCluster, raft.ErrUnknownMember
//	421 addressed to another member (also raft.ErrWrongRecipient): the sender's address book is stale
//	401 authentication is on and the request is not validly signed: no (unless
//	    HTTPConfig.AcceptUnsigned) or a malformed Raft-Elector-Signature header, an unknown key, a
//	    bad signature, a timestamp outside the clock-skew window, or a replay (the reply carries
//	    WWW-Authenticate)
//	500 the local member produced a response that does not answer the request (a bug here)
//	503 the member could not process it now (context ended, shutting down, any other error;
//	    also a full replay cache, and a body over 16 KiB while maxLargeBodies others are
//	    being read)
//
// Every 4xx is decided before the member is involved, except those the member itself returns,
// and nothing malformed reaches Handler.Step. With authentication on, the signature is checked
// right after the path and method, before the body is read (header, key and timestamp) and
// before it is decoded (the signature over it, then the replay check); every reply to an
// authenticated request is signed.
//
// Every refusal (any status but 200 and 204) also ends its connection (Connection: close,
// without waiting for the rest of an unread body), so that a client refused before its body
// was read cannot hold the connection by trickling the rest, and a flood of bad requests
// costs its sender a new connection each, which the connection limit of Serve bounds.
func (t *HTTP) Handler() http.Handler { return http.HandlerFunc(t.serve) }

// Server timeouts of the peer port. A request is a few hundred bytes and is answered in a
// millisecond or two (a write of the durable state included); these bound how long a client
// that trickles its headers or body, by accident or on purpose, holds a connection.
const (
	serverReadHeaderTimeout = 2 * time.Second
	serverReadTimeout       = 5 * time.Second
	serverWriteTimeout      = 5 * time.Second
	// serverIdleTimeout is longer than the client's 90 s, so that the client closes first.
	serverIdleTimeout = 2 * time.Minute
	serverMaxHeader   = 16 << 10
)

// NewServer returns an http.Server for the peer port serving Handler, with timeouts that keep
// a peer that trickles its headers or body (by accident or on purpose) from holding a
// connection and a goroutine for long, and a 16 KiB bound on the request headers (431 beyond).
// net/http's own complaints are logged rate-limited (ServerErrorLog). Connections stay open
// between requests so heartbeats reuse them. Serve it with Serve, which also bounds the
// connections it holds. Shut it down before or after Close; either order is safe.
func (t *HTTP) NewServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           t.Handler(),
		ReadHeaderTimeout: serverReadHeaderTimeout,
		ReadTimeout:       serverReadTimeout,
		WriteTimeout:      serverWriteTimeout,
		IdleTimeout:       serverIdleTimeout,
		MaxHeaderBytes:    serverMaxHeader,
		ErrorLog:          ServerErrorLog(t.log),
	}
}

// Serve serves srv (from NewServer) on l, holding at most HTTPConfig.MaxConns connections at
// once (LimitConns): a flood of connections, idle ones or ones that trickle their requests
// cost a bounded number of goroutines and buffers, and cannot lock out a peer that connects
// anew. It returns what srv.Serve returns.
func (t *HTTP) Serve(srv *http.Server, l net.Listener) error {
	return srv.Serve(LimitConns(srv, l, t.maxConns, t.log))
}

func (t *HTTP) serve(w http.ResponseWriter, r *http.Request) {
	rpc, ok := rpcFromPath(r.URL.Path)
	if !ok {
		t.refuse(w, r, "unknown", http.StatusNotFound, "no such RPC; use POST "+RPCPathPrefix+"{request-vote,append-entries,timeout-now}", nil)
		return
	}
	name := string(rpc)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		t.refuse(w, r, name, http.StatusMethodNotAllowed, "use POST", nil)
		return
	}
	// With authentication on, what the header alone decides (no or a malformed signature, an
	// unknown key, a stale timestamp) is refused before the body is even read.
	var sig *requestSignature
	if t.auth != nil && t.auth.acceptUnsigned && unsigned(r.Header) {
		// The transition mode serves an unsigned request as if authentication were off,
		// and leaves its reply unsigned: the sender has no keys.
		if t.serverLog.allow("accepted-unsigned") {
			t.log.Warn("served an unsigned peer request: --auth-accept-unsigned is set (rate-limited); remove it once every member has keys",
				"rpc", name, "remote", r.RemoteAddr)
		}
	} else if t.auth != nil {
		var aerr *authError
		if sig, aerr = t.auth.checkRequestHeader(r); aerr != nil {
			t.refuseAuth(w, r, name, aerr)
			return
		}
	}
	// Requiring application/json also means a browser cannot send an RPC from another origin
	// without a CORS preflight, which this server never grants.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != contentType {
		t.refuse(w, r, name, http.StatusUnsupportedMediaType, "content type must be "+contentType, nil)
		return
	}
	body, code, msg := t.readRequestBody(w, r)
	if code != 0 {
		t.refuse(w, r, name, code, msg, nil)
		return
	}
	// The signature covers the body: it is verified after the body is read and before
	// anything in it is trusted. From here on every reply is signed (auth is nil when
	// authentication is off).
	var auth *verifiedRequest
	var err error
	if sig != nil {
		auth, err = t.auth.verifyRequest(sig, r, body)
		if aerr, ok := errors.AsType[*authError](err); ok {
			t.refuseAuth(w, r, name, aerr)
			return
		}
		if err != nil { // the replay cache is full: fail closed
			if t.serverLog.allow("replay-cache-full") {
				t.log.Error("refusing signed peer requests: the replay cache is full (rate-limited); is a peer sending far more requests than one per heartbeat, or --auth-max-skew very long?",
					"rpc", name, "remote", r.RemoteAddr, "entries", t.auth.replay.limit)
			}
			t.refuse(w, r, name, http.StatusServiceUnavailable, "member cannot accept more signed requests now", nil)
			return
		}
	}
	m, err := decodeMessage(body)
	if err != nil {
		t.refuse(w, r, name, http.StatusBadRequest, err.Error(), auth)
		return
	}
	if m.Type != rpc {
		t.refuse(w, r, name, http.StatusBadRequest, "body is a "+string(m.Type)+" sent to the "+name+" RPC", auth)
		return
	}
	if m.To != t.id {
		t.refuse(w, r, name, http.StatusMisdirectedRequest, "this is member "+t.id+", not "+clip(m.To, 64), auth)
		return
	}

	if !t.inbound.enter() {
		t.refuse(w, r, name, http.StatusServiceUnavailable, "member is shutting down", auth)
		return
	}
	defer t.inbound.exit()
	// The call ends when the client gives up or when Close asks every call to end.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()

	resp, err := t.handler.Step(ctx, m)
	if err != nil {
		code := statusForStepError(err)
		msg := err.Error()
		if code == http.StatusServiceUnavailable {
			// Internal errors (a disk that cannot be written) are the operator's business,
			// logged here; the peer only needs to know to try again later.
			msg = "member cannot process the message now"
			if ctx.Err() == nil && t.serverLog.allow("step-error") {
				t.log.Error("member failed to process a peer message (rate-limited)", "rpc", name, "from", m.From, "error", err)
			}
		}
		t.refuse(w, r, name, code, msg, auth)
		return
	}
	if resp == nil {
		t.obs.ObserveServed(name, http.StatusNoContent)
		if auth != nil {
			auth.signResponse(w.Header(), http.StatusNoContent, nil)
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	err = resp.Validate()
	if err == nil {
		err = checkResponse(m, *resp)
	}
	if err != nil {
		if t.serverLog.allow("bad-response") {
			t.log.Error("local member answered with a response that does not answer the request; not sent", "rpc", name, "error", err)
		}
		t.refuse(w, r, name, http.StatusInternalServerError, "member produced an invalid response", auth)
		return
	}
	out, err := encodeMessage(*resp)
	if err != nil {
		t.refuse(w, r, name, http.StatusInternalServerError, "encode response", auth)
		return
	}
	out = append(out, '\n')
	t.obs.ObserveServed(name, http.StatusOK)
	if auth != nil {
		auth.signResponse(w.Header(), http.StatusOK, out)
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// smallBodyBytes is what any request may buffer; a body beyond it needs one of maxLargeBodies
// slots. A heartbeat or a vote is a few hundred bytes; only an append-entries carrying the
// configuration of dozens of members is larger, and a member is sent those rarely, by its
// leader alone. So a flood of large bodies buffers at most maxLargeBodies × MaxMessageBytes
// (2 MiB) on top of smallBodyBytes per connection, while a heartbeat never waits for a slot.
const (
	smallBodyBytes = 16 << 10
	maxLargeBodies = 8
)

// readRequestBody reads the request's body, at most MaxMessageBytes, or returns the status
// and message to refuse the request with: 413 over the limit, 400 unreadable, 503 when the
// body is large and every slot for large bodies is taken.
func (t *HTTP) readRequestBody(w http.ResponseWriter, r *http.Request) (body []byte, code int, msg string) {
	if r.ContentLength > MaxMessageBytes {
		return nil, http.StatusRequestEntityTooLarge, "body over the limit"
	}
	rd := http.MaxBytesReader(w, r.Body, MaxMessageBytes)
	fail := func(err error) ([]byte, int, string) {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			return nil, http.StatusRequestEntityTooLarge, "body over the limit"
		}
		return nil, http.StatusBadRequest, "read body: " + err.Error()
	}
	if r.ContentLength <= smallBodyBytes { // -1 too: a chunked body of unknown length
		var err error
		if body, err = io.ReadAll(io.LimitReader(rd, smallBodyBytes+1)); err != nil {
			return fail(err)
		}
		if len(body) <= smallBodyBytes {
			return body, 0, ""
		}
	}
	select {
	case t.largeBodies <- struct{}{}:
		defer func() { <-t.largeBodies }()
	default:
		if t.serverLog.allow("large-bodies") {
			t.log.Warn("refusing a large peer request: other large bodies are being read (rate-limited)",
				"remote", r.RemoteAddr, "content_length", r.ContentLength, "slots", maxLargeBodies)
		}
		return nil, http.StatusServiceUnavailable, "member is reading other large requests; try again"
	}
	rest, err := io.ReadAll(rd)
	if err != nil {
		return fail(err)
	}
	return append(body, rest...), 0, ""
}

// statusForStepError maps what the member refused a message for to the status that tells the
// sender what to fix.
func statusForStepError(err error) int {
	switch {
	case errors.Is(err, raft.ErrInvalidMessage):
		return http.StatusBadRequest
	case errors.Is(err, raft.ErrWrongCluster), errors.Is(err, raft.ErrUnknownMember):
		return http.StatusForbidden
	case errors.Is(err, raft.ErrWrongRecipient):
		return http.StatusMisdirectedRequest
	default: // context errors included: the peer may try again
		return http.StatusServiceUnavailable
	}
}

// refuse writes an error reply and accounts for it. auth is the request's authentication, if
// it was authenticated: the reply is then signed, as every reply to such a request is.
func (t *HTTP) refuse(w http.ResponseWriter, r *http.Request, rpc string, code int, msg string, auth *verifiedRequest) {
	if code != http.StatusServiceUnavailable && t.serverLog.allow(http.StatusText(code)) {
		t.log.Warn("refused a peer request (rate-limited)", "code", code, "rpc", rpc, "remote", r.RemoteAddr, "error", clip(msg, 200))
	}
	t.writeError(w, rpc, code, msg, auth)
}

// refuseAuth refuses a request that failed authentication (401). It is logged at most once a
// minute per kind of failure, so that a replay among missing signatures is not hidden.
func (t *HTTP) refuseAuth(w http.ResponseWriter, r *http.Request, rpc string, e *authError) {
	if t.serverLog.allow("401 " + e.kind) {
		t.log.Warn("refused an unauthenticated peer request (rate-limited)", "code", http.StatusUnauthorized, "reason", e.kind,
			"rpc", rpc, "remote", r.RemoteAddr, "error", clip(e.msg, 200))
	}
	w.Header().Set("WWW-Authenticate", SignatureScheme)
	t.writeError(w, rpc, http.StatusUnauthorized, e.msg, nil)
}

func (t *HTTP) writeError(w http.ResponseWriter, rpc string, code int, msg string, auth *verifiedRequest) {
	t.obs.ObserveServed(rpc, code)
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{clip(msg, 500)})
	body = append(body, '\n')
	h := w.Header()
	if auth != nil {
		auth.signResponse(h, code, body)
	}
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	// See Handler: a refused client does not keep its connection. net/http would still read
	// up to 256 KiB of an unread body before closing it; the deadline ends that wait at once,
	// so a client that trickles a body it was refused for loses its connection now.
	h.Set("Connection", "close")
	w.WriteHeader(code)
	w.Write(body)
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}
