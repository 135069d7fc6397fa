package transport

import (
	"container/heap"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Peer authentication (docs/security.md). When the transport has keys, every request carries
//
//	Raft-Elector-Signature: v1 kid=<8 hex> ts=<unix ms> nonce=<32 hex> sig=<64 hex>
//
// where sig is the lower-case hex HMAC-SHA256, under the key named by kid, of
//
//	"raft-elector-v1 request" LF kid LF method LF path LF ts LF nonce LF hex(SHA-256(body))
//
// (LF is one "\n", nothing after the last field; path is the URL path without query, method
// upper case; ts the sender's wall clock in decimal milliseconds since the Unix epoch; nonce 16
// random bytes). Every reply to a request that passed verification (200, 204, and the 4xx/5xx
// the member decides after it) carries
//
//	Raft-Elector-Signature: v1 kid=<8 hex> sig=<64 hex>
//
// with sig the HMAC-SHA256, under the key that verified the request, of
//
//	"raft-elector-v1 response" LF kid LF nonce-of-the-request LF status LF hex(SHA-256(body))
//
// Refusals decided before or by verification (404, 405, 401, 413, 415, a 400 for an unreadable
// body, a 503 for a full replay cache) are not signed. The client steps a 200 or counts a 204
// only with a valid reply signature, so a reply cannot be forged or replayed onto another
// request without a key; any other status is a failed RPC anyway. All hex is lower case, all
// fields are exactly in this order, separated by one space.
const (
	// SignatureHeader carries the signature of a request or a reply.
	SignatureHeader = "Raft-Elector-Signature"
	// SignatureScheme names the scheme in the WWW-Authenticate header of a 401.
	SignatureScheme = "Raft-Elector-Signature"

	signatureVersion = "v1"
	requestContext   = "raft-elector-v1 request"
	responseContext  = "raft-elector-v1 response"
	keyIDHexLen      = 8
	nonceBytes       = 16
	sigHexLen        = 2 * sha256.Size
	maxTimestampLen  = 15 // milliseconds until the year 33658
)

// Defaults of the authentication limits.
const (
	// DefaultMaxClockSkew is how far a request's timestamp may lie from the receiver's wall
	// clock, either way. It bounds how long a captured request could be replayed, and so how
	// long the replay cache must remember it. Member clocks must agree within it (NTP does
	// far better); a member whose clock is off by more cannot talk to its peers, which costs
	// liveness only: leases are measured on monotonic clocks and never trust a timestamp.
	DefaultMaxClockSkew = 30 * time.Second
	// DefaultReplayCacheSize bounds the nonces remembered to refuse replays. A member
	// receives about one request per heartbeat interval from its leader, and remembers each
	// for at most twice the clock-skew window: 600 at the default timings. When the cache is
	// full of unexpired entries the member refuses further requests (fails closed) rather
	// than forget one early; only holders of a key can add entries.
	DefaultReplayCacheSize = 1 << 17
)

// authError is a refusal of a request's authentication: always 401.
type authError struct {
	kind string // for the log limiter: missing, malformed, unknown-key, bad-signature, clock, replayed
	msg  string
}

func (e *authError) Error() string { return e.msg }

func authFail(kind, format string, args ...any) *authError {
	return &authError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// errMalformedSignature refuses a request signature header that does not parse.
var errMalformedSignature = authFail("malformed", "malformed %s header: want %q (docs/security.md)", SignatureHeader,
	"v1 kid=KEYID ts=UNIXMILLIS nonce=NONCE sig=HMAC")

// errReplayCacheFull: the member cannot remember another request, so it refuses it (503).
var errReplayCacheFull = errors.New("replay cache full")

// authenticator signs and verifies peer messages for one transport.
type authenticator struct {
	keys    KeySource
	maxSkew time.Duration
	replay  *replayCache
	now     func() time.Time // wall clock; tests replace it

	// acceptUnsigned is the transition mode (HTTPConfig.AcceptUnsigned): requests and replies
	// without a signature are accepted; those with one are verified all the same.
	acceptUnsigned bool
}

func newAuthenticator(keys KeySource, maxSkew time.Duration, cacheSize int) *authenticator {
	return &authenticator{keys: keys, maxSkew: maxSkew, replay: newReplayCache(cacheSize), now: time.Now}
}

// unsigned reports whether h carries no signature at all.
func unsigned(h http.Header) bool { return len(h.Values(SignatureHeader)) == 0 }

func (a *authenticator) keyring() (*Keyring, error) {
	k := a.keys.Keys()
	if k == nil || len(k.keys) == 0 {
		return nil, errors.New("no peer authentication key")
	}
	return k, nil
}

func requestMAC(secret []byte, kid, method, path, ts, nonce string, body []byte) []byte {
	sum := sha256.Sum256(body)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(strings.Join([]string{requestContext, kid, method, path, ts, nonce, hex.EncodeToString(sum[:])}, "\n")))
	return mac.Sum(nil)
}

func responseMAC(secret []byte, kid, nonce string, status int, body []byte) []byte {
	sum := sha256.Sum256(body)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(strings.Join([]string{responseContext, kid, nonce, strconv.Itoa(status), hex.EncodeToString(sum[:])}, "\n")))
	return mac.Sum(nil)
}

// signRequest signs req, whose body is body, with the signing key, and returns the nonce the
// reply's signature must be bound to.
func (a *authenticator) signRequest(req *http.Request, body []byte) (string, error) {
	k, err := a.keyring()
	if err != nil {
		return "", err
	}
	var raw [nonceBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	nonce := hex.EncodeToString(raw[:])
	ts := strconv.FormatInt(a.now().UnixMilli(), 10)
	key := k.signing()
	sig := requestMAC(key.secret, key.id, req.Method, req.URL.Path, ts, nonce, body)
	req.Header.Set(SignatureHeader, fmt.Sprintf("%s kid=%s ts=%s nonce=%s sig=%s", signatureVersion, key.id, ts, nonce, hex.EncodeToString(sig)))
	return nonce, nil
}

// requestSignature is a parsed request signature whose key is known and whose timestamp is
// inside the window, but which is not verified yet.
type requestSignature struct {
	key   *authKey
	ts    string
	tsMS  int64
	nonce string
	sig   []byte
}

// checkRequestHeader parses the request's signature header and checks what can be checked
// before the body is read: the format, the key id and the timestamp.
func (a *authenticator) checkRequestHeader(r *http.Request) (*requestSignature, *authError) {
	values := r.Header.Values(SignatureHeader)
	switch len(values) {
	case 0:
		return nil, authFail("missing", "no %s header: this member requires signed peer requests (is --auth-secret-file set on every member?)", SignatureHeader)
	case 1:
	default:
		return nil, authFail("malformed", "%d %s headers, want one", len(values), SignatureHeader)
	}
	f := strings.Split(values[0], " ")
	if len(f) != 5 || f[0] != signatureVersion {
		return nil, errMalformedSignature
	}
	kid, ok1 := strings.CutPrefix(f[1], "kid=")
	ts, ok2 := strings.CutPrefix(f[2], "ts=")
	nonce, ok3 := strings.CutPrefix(f[3], "nonce=")
	sigHex, ok4 := strings.CutPrefix(f[4], "sig=")
	if !ok1 || !ok2 || !ok3 || !ok4 || !isLowerHex(kid, keyIDHexLen) || !isLowerHex(nonce, 2*nonceBytes) ||
		!isLowerHex(sigHex, sigHexLen) || !isDecimal(ts, maxTimestampLen) {
		return nil, errMalformedSignature
	}
	tsMS, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, errMalformedSignature
	}
	k, err := a.keyring()
	if err != nil {
		return nil, authFail("unknown-key", "this member has no key to verify requests with")
	}
	key := k.lookup(kid)
	if key == nil {
		return nil, authFail("unknown-key", "signed with key %s, which this member does not hold (is the key file the same on every member?)", kid)
	}
	// Both bounds inclusive; the replay cache keeps an entry exactly as long as this accepts it.
	switch d := a.now().UnixMilli() - tsMS; {
	case d > a.maxSkew.Milliseconds():
		return nil, authFail("clock", "request timestamp is %v behind this member's clock, outside the window of %v (a replay, or clocks out of sync: check NTP)",
			time.Duration(d)*time.Millisecond, a.maxSkew)
	case -d > a.maxSkew.Milliseconds():
		return nil, authFail("clock", "request timestamp is %v ahead of this member's clock, outside the window of %v (clocks out of sync: check NTP)",
			time.Duration(-d)*time.Millisecond, a.maxSkew)
	}
	sig, _ := hex.DecodeString(sigHex)
	return &requestSignature{key: key, ts: ts, tsMS: tsMS, nonce: nonce, sig: sig}, nil
}

// verifiedRequest is an authenticated request: the key that verified it signs the reply,
// which is bound to its nonce.
type verifiedRequest struct {
	key   *authKey
	nonce string
}

// verifyRequest checks the signature over the request and its body, then that it is not a
// replay. Only a request with a valid signature is remembered, so a stranger cannot fill the
// replay cache. errReplayCacheFull is returned, not an authError, when it is full.
func (a *authenticator) verifyRequest(s *requestSignature, r *http.Request, body []byte) (*verifiedRequest, error) {
	want := requestMAC(s.key.secret, s.key.id, r.Method, r.URL.Path, s.ts, s.nonce, body)
	if !hmac.Equal(want, s.sig) {
		return nil, authFail("bad-signature", "bad signature: the request was not signed with key %s over this method, path, timestamp, nonce and body", s.key.id)
	}
	var nonce [nonceBytes]byte
	hex.Decode(nonce[:], []byte(s.nonce))
	if err := a.replay.admit(nonce, s.tsMS+a.maxSkew.Milliseconds(), a.now().UnixMilli()); err != nil {
		if errors.Is(err, errReplayCacheFull) {
			return nil, err
		}
		if errors.Is(err, errExpired) {
			return nil, authFail("clock", "request timestamp left the window of %v before its body arrived (a replay, or a very slow sender)", a.maxSkew)
		}
		return nil, authFail("replayed", "replayed request: nonce %s was already used", s.nonce)
	}
	return &verifiedRequest{key: s.key, nonce: s.nonce}, nil
}

// signResponse sets the signature of a reply to an authenticated request.
func (v *verifiedRequest) signResponse(h http.Header, status int, body []byte) {
	sig := responseMAC(v.key.secret, v.key.id, v.nonce, status, body)
	h.Set(SignatureHeader, fmt.Sprintf("%s kid=%s sig=%s", signatureVersion, v.key.id, hex.EncodeToString(sig)))
}

// verifyResponse checks the signature of a reply to the request that carried nonce.
func (a *authenticator) verifyResponse(resp *http.Response, nonce string, body []byte) error {
	values := resp.Header.Values(SignatureHeader)
	if len(values) != 1 {
		return fmt.Errorf("reply has %d %s headers, want one: the peer does not sign its replies (is --auth-secret-file set on every member?)", len(values), SignatureHeader)
	}
	f := strings.Split(values[0], " ")
	if len(f) != 3 || f[0] != signatureVersion {
		return fmt.Errorf("reply's %s header is malformed", SignatureHeader)
	}
	kid, ok1 := strings.CutPrefix(f[1], "kid=")
	sigHex, ok2 := strings.CutPrefix(f[2], "sig=")
	if !ok1 || !ok2 || !isLowerHex(kid, keyIDHexLen) || !isLowerHex(sigHex, sigHexLen) {
		return fmt.Errorf("reply's %s header is malformed", SignatureHeader)
	}
	k, err := a.keyring()
	if err != nil {
		return err
	}
	key := k.lookup(kid)
	if key == nil {
		return fmt.Errorf("reply signed with key %s, which this member does not hold", kid)
	}
	sig, _ := hex.DecodeString(sigHex)
	if !hmac.Equal(responseMAC(key.secret, key.id, nonce, resp.StatusCode, body), sig) {
		return fmt.Errorf("reply has a bad signature (key %s): forged, altered, or the answer to another request", kid)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isDecimal(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// replayCache remembers the nonces of authenticated requests until their timestamps leave
// the window, when the window check alone refuses a replay. It holds at most limit entries.
type replayCache struct {
	limit int

	mu      sync.Mutex
	seen    map[[nonceBytes]byte]struct{}
	expires expiryHeap
	high    int64 // the latest now admit was called with (Unix ms)
}

// errExpired: the request's timestamp left the window before it could be admitted.
var errExpired = errors.New("the request's timestamp left the window before its body arrived")

func newReplayCache(limit int) *replayCache {
	return &replayCache{limit: limit, seen: map[[nonceBytes]byte]struct{}{}}
}

// admit records nonce until expiry (Unix ms) and reports whether it was new.
//
// An entry is forgotten once the latest time admit has seen (a high-water mark, so a clock
// stepped back cannot bring forgotten nonces back) is past its expiry, and a request whose own
// expiry is past that mark is refused with errExpired: the timestamp check happens before the
// body is read, so without this a request whose headers arrived just inside the window and
// whose body arrived just after it would find its first use already forgotten. Together the
// two rules mean a nonce is admitted at most once, whenever its pieces arrive.
func (c *replayCache) admit(nonce [nonceBytes]byte, expiry, now int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.high = max(c.high, now)
	for len(c.expires) > 0 && c.expires[0].expiry < c.high {
		delete(c.seen, heap.Pop(&c.expires).(replayEntry).nonce)
	}
	if expiry < c.high {
		return errExpired
	}
	if _, ok := c.seen[nonce]; ok {
		return errors.New("replayed")
	}
	if len(c.seen) >= c.limit {
		return errReplayCacheFull
	}
	c.seen[nonce] = struct{}{}
	heap.Push(&c.expires, replayEntry{expiry: expiry, nonce: nonce})
	return nil
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

type replayEntry struct {
	expiry int64
	nonce  [nonceBytes]byte
}

// expiryHeap is a min-heap of entries by expiry. Senders' clocks differ, so entries do not
// arrive in expiry order.
type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry < h[j].expiry }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
