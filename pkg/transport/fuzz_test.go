package transport

// Fuzz targets for the decoders of peer authentication: the request signature header, the
// reply signature header and the key file; and the documented limits every message the peer
// message decoder accepts must respect (used by FuzzDecodeMessage in codec_test.go). The
// committed corpora are in testdata/fuzz/<FuzzName>/; `go test` runs them as seeds, `make fuzz`
// fuzzes every target (docs/reliability.md).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// The limits docs/api.md documents for peer messages, written out here rather than taken from
// the constants, so that a change of a constant that breaks the documented contract is caught.
const (
	docMaxBodyBytes  = 256 << 10
	docMaxIDBytes    = 320
	docMaxTerm       = 1 << 53
	docMaxEntries    = 256
	docMaxMembers    = 128
	docMaxMsgMembers = 3 * docMaxMembers // entries name at most 2 × 128 members beyond the snapshot's
)

func TestFuzzLimitsMatchTheDocs(t *testing.T) {
	if MaxMessageBytes != docMaxBodyBytes || raft.MaxIDLength != docMaxIDBytes || raft.MaxTerm != docMaxTerm ||
		raft.MaxLogEntries != docMaxEntries || raft.MaxMembers != docMaxMembers {
		t.Fatalf("limits differ from docs/api.md: body %d, id %d, term %d, entries %d, members %d",
			MaxMessageBytes, raft.MaxIDLength, uint64(raft.MaxTerm), raft.MaxLogEntries, raft.MaxMembers)
	}
}

// fuzzCheckMessageLimits fails t if m, which the decoder accepted from body, breaks a limit or
// a field rule of docs/api.md. It restates the rules instead of calling Validate, so that a
// check dropped from Validate is caught too.
func fuzzCheckMessageLimits(t *testing.T, body []byte, m raft.Message) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("accepted %.200q as %+v, which breaks a documented limit: "+format, append([]any{body, m}, args...)...)
	}
	if len(body) > docMaxBodyBytes {
		bad("body of %d bytes", len(body))
	}
	switch m.Type {
	case raft.MsgVote, raft.MsgVoteResp, raft.MsgAppend, raft.MsgAppendResp, raft.MsgTimeoutNow:
	default:
		bad("unknown type")
	}
	for _, id := range []string{m.Cluster, m.From, m.To} {
		if id == "" || len(id) > docMaxIDBytes {
			bad("id of %d bytes", len(id))
		}
	}
	if m.From == m.To {
		bad("sent to itself")
	}
	isResponse := m.Type == raft.MsgVoteResp || m.Type == raft.MsgAppendResp
	if m.Term == 0 && !(isResponse && m.Reject) {
		bad("term 0")
	}
	for _, v := range []uint64{m.Term, m.LastLogIndex, m.LastLogTerm, m.Round, m.PrevLogIndex, m.PrevLogTerm, m.Commit, m.Index} {
		if v > docMaxTerm {
			bad("number %d above 2^53", v)
		}
	}
	if m.Reject && !isResponse {
		bad("reject on a request")
	}
	if (m.PreVote || m.Transfer) && m.Type != raft.MsgVote && m.Type != raft.MsgVoteResp {
		bad("preVote/transfer outside request-vote")
	}
	if m.Type != raft.MsgVote && (m.LastLogIndex != 0 || m.LastLogTerm != 0) {
		bad("lastLog fields outside request-vote")
	}
	if m.Type != raft.MsgAppend && (m.PrevLogIndex != 0 || m.PrevLogTerm != 0 || len(m.Entries) != 0 || m.Snapshot != nil ||
		m.Config != nil || m.Commit != 0) {
		bad("log fields outside append-entries")
	}
	if m.Type != raft.MsgAppendResp && m.Index != 0 {
		bad("index outside append-entries-response")
	}
	if len(m.Entries) > docMaxEntries {
		bad("%d entries", len(m.Entries))
	}
	members := 0
	for i, e := range m.Entries {
		if e.Index != m.PrevLogIndex+uint64(i)+1 {
			bad("entry %d has index %d: entries do not follow prevLogIndex", i, e.Index)
		}
		if e.Index > docMaxTerm {
			bad("entry %d has index %d, above 2^53", i, e.Index)
		}
		if e.Term == 0 || e.Term > m.Term || e.Term < m.PrevLogTerm || i > 0 && e.Term < m.Entries[i-1].Term {
			bad("entry %d has term %d", i, e.Term)
		}
		switch {
		case e.Type == raft.EntryNoop && e.Config == nil:
		case e.Type == raft.EntryConfig && e.Config != nil:
			fuzzCheckConfig(t, bad, *e.Config, true)
			members += len(e.Config.Voters) + len(e.Config.Learners)
		default:
			bad("entry %d of type %q, config %v", i, e.Type, e.Config)
		}
	}
	if members > docMaxMsgMembers {
		bad("entries name %d members", members)
	}
	if m.Snapshot != nil {
		s := m.Snapshot
		if s.Index == 0 || s.Index != m.PrevLogIndex || s.Term != m.PrevLogTerm {
			bad("snapshot %d/%d is not the previous entry", s.Index, s.Term)
		}
		fuzzCheckConfig(t, bad, s.Config, true)
	}
	if m.Config != nil {
		fuzzCheckConfig(t, bad, *m.Config, false)
	}
}

// fuzzNormalizeMessage returns m with every empty list made nil: the encoder leaves empty
// lists out, so they decode as absent.
func fuzzNormalizeMessage(m raft.Message) raft.Message {
	config := func(c raft.Configuration) raft.Configuration {
		if len(c.Voters) == 0 {
			c.Voters = nil
		}
		if len(c.Learners) == 0 {
			c.Learners = nil
		}
		return c
	}
	if len(m.Entries) == 0 {
		m.Entries = nil
	}
	m.Entries = slices.Clone(m.Entries)
	for i, e := range m.Entries {
		if e.Config != nil {
			c := config(*e.Config)
			m.Entries[i].Config = &c
		}
	}
	if m.Snapshot != nil {
		s := *m.Snapshot
		s.Config = config(s.Config)
		m.Snapshot = &s
	}
	if m.Config != nil {
		c := config(*m.Config)
		m.Config = &c
	}
	return m
}

func fuzzCheckConfig(t *testing.T, bad func(string, ...any), c raft.Configuration, needVoters bool) {
	t.Helper()
	if n := len(c.Voters) + len(c.Learners); n > docMaxMembers {
		bad("configuration of %d members", n)
	}
	if needVoters && len(c.Voters) == 0 {
		bad("configuration without voters")
	}
	all := slices.Concat(c.Voters, c.Learners)
	for _, id := range all {
		if id == "" || len(id) > docMaxIDBytes {
			bad("member id of %d bytes", len(id))
		}
	}
	if !slices.IsSorted(c.Voters) || !slices.IsSorted(c.Learners) {
		bad("configuration not sorted")
	}
	slices.Sort(all)
	if len(slices.Compact(all)) != len(c.Voters)+len(c.Learners) {
		bad("a member listed twice")
	}
}

// fuzzNow is the wall clock of the authentication fuzz targets: the corpus holds requests
// signed for this instant.
var fuzzNow = time.UnixMilli(1_700_000_000_000)

// The signature headers exactly as docs/security.md writes them.
var (
	fuzzRequestHeader  = regexp.MustCompile(`^v1 kid=([0-9a-f]{8}) ts=([0-9]{1,15}) nonce=([0-9a-f]{32}) sig=([0-9a-f]{64})$`)
	fuzzResponseHeader = regexp.MustCompile(`^v1 kid=([0-9a-f]{8}) sig=([0-9a-f]{64})$`)
)

// fuzzMAC is the HMAC-SHA256 of the lines, in lower-case hex, computed from docs/security.md
// rather than with requestMAC or responseMAC.
func fuzzMAC(secret string, lines ...string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(mac.Sum(nil))
}

func fuzzBodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// fuzzKeyID is a key's id as docs/security.md defines it.
func fuzzKeyID(secret string) string { return fuzzMAC(secret, keyIDContext)[:8] }

// fuzzSecrets are the keys of the authentication fuzz targets; the second one only verifies.
var fuzzSecrets = []string{key1, key2}

func fuzzSecretOf(kid string) (string, bool) {
	for _, s := range fuzzSecrets {
		if fuzzKeyID(s) == kid {
			return s, true
		}
	}
	return "", false
}

func fuzzAuthenticator(t *testing.T) *authenticator {
	a := newAuthenticator(keyring(t, fuzzSecrets...), DefaultMaxClockSkew, 64)
	a.now = func() time.Time { return fuzzNow }
	return a
}

// fuzzHeaderValues turns a fuzzed string into the values of a header: none for "", else one
// per line, so that repeated headers are fuzzed too.
func fuzzHeaderValues(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// fuzzSignRequest is a request signature made as docs/security.md describes it.
func fuzzSignRequest(secret, method, path string, ts int64, nonce string, body []byte) string {
	kid := fuzzKeyID(secret)
	tss := strconv.FormatInt(ts, 10)
	return "v1 kid=" + kid + " ts=" + tss + " nonce=" + nonce + " sig=" +
		fuzzMAC(secret, requestContext, kid, method, path, tss, nonce, fuzzBodyHash(body))
}

// FuzzRequestSignature feeds the server's check of a request's Raft-Elector-Signature header
// (the parse, the key and the window, then the signature over method, path and body) arbitrary
// headers, methods, paths and bodies. It must never panic; a header it accepts must have
// exactly the documented format, name a key the member holds and a timestamp inside the
// window; a request it verifies must carry the HMAC docs/security.md defines (and one that
// carries it must be verified), must be refused when replayed, and the signature of the reply
// must verify on the client.
func FuzzRequestSignature(f *testing.F) {
	body := []byte(`{"type":"append-entries","cluster":"c1","from":"a","to":"b","term":2,"round":1}`)
	path := rpcPath(raft.MsgAppend)
	nonce := strings.Repeat("0f", nonceBytes)
	ts := fuzzNow.UnixMilli()
	f.Add(fuzzSignRequest(key1, http.MethodPost, path, ts, nonce, body), http.MethodPost, path, body)
	f.Add(fuzzSignRequest(key2, http.MethodPost, path, ts-DefaultMaxClockSkew.Milliseconds(), nonce, body), http.MethodPost, path, body)
	f.Add(fuzzSignRequest(key3, http.MethodPost, path, ts, nonce, body), http.MethodPost, path, body)
	f.Add("", http.MethodPost, path, body)
	f.Fuzz(func(t *testing.T, header, method, path string, body []byte) {
		a := fuzzAuthenticator(t)
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}}
		values := fuzzHeaderValues(header)
		if values != nil {
			r.Header[SignatureHeader] = values
		}
		sig, aerr := a.checkRequestHeader(r)
		if aerr != nil {
			if sig != nil {
				t.Fatalf("refused %q (%v) but returned a signature", header, aerr)
			}
			if strings.ContainsAny(aerr.Error(), "\r\n") {
				t.Fatalf("refusal of %q is not one line: %q", header, aerr)
			}
			return
		}
		if len(values) != 1 {
			t.Fatalf("accepted %d header values %q", len(values), values)
		}
		fields := fuzzRequestHeader.FindStringSubmatch(values[0])
		if fields == nil {
			t.Fatalf("accepted %q, which is not of the documented format", values[0])
		}
		kid, tss, nonce, mac := fields[1], fields[2], fields[3], fields[4]
		secret, ok := fuzzSecretOf(kid)
		if !ok || sig.key.id != kid || string(sig.key.secret) != secret {
			t.Fatalf("accepted %q: key %q is not the member's key %s", values[0], sig.key.id, kid)
		}
		tsMS, err := strconv.ParseInt(tss, 10, 64)
		if err != nil || sig.tsMS != tsMS || sig.ts != tss || sig.nonce != nonce || hex.EncodeToString(sig.sig) != mac {
			t.Fatalf("accepted %q as ts %q (%d) nonce %q sig %x", values[0], sig.ts, sig.tsMS, sig.nonce, sig.sig)
		}
		if d := fuzzNow.UnixMilli() - tsMS; d > DefaultMaxClockSkew.Milliseconds() || -d > DefaultMaxClockSkew.Milliseconds() {
			t.Fatalf("accepted %q, whose timestamp is %d ms from the clock", values[0], d)
		}

		want := fuzzMAC(secret, requestContext, kid, method, path, tss, nonce, fuzzBodyHash(body))
		v, err := a.verifyRequest(sig, r, body)
		if (err == nil) != (mac == want) {
			t.Fatalf("verify %q over %s %q and %d bytes = %v; the documented signature is %s", values[0], method, path, len(body), err, want)
		}
		if err != nil {
			return
		}
		if _, err := a.verifyRequest(sig, r, body); err == nil {
			t.Fatalf("a replay of %q was verified", values[0])
		}
		h := http.Header{}
		v.signResponse(h, http.StatusOK, body)
		client := fuzzAuthenticator(t)
		if err := client.verifyResponse(&http.Response{StatusCode: http.StatusOK, Header: h}, nonce, body); err != nil {
			t.Fatalf("the reply to %q does not verify: %v", values[0], err)
		}
		if err := client.verifyResponse(&http.Response{StatusCode: http.StatusOK, Header: h}, strings.Repeat("0", 32), body); err == nil && nonce != strings.Repeat("0", 32) {
			t.Fatalf("the reply to %q verifies for another request's nonce", values[0])
		}
	})
}

// FuzzResponseSignature feeds the client's check of a reply's Raft-Elector-Signature header
// arbitrary headers, request nonces, statuses and bodies. It must never panic, and it may
// accept only a header of the documented format whose HMAC, under a key the member holds, is
// the one docs/security.md defines over that nonce, status and body.
func FuzzResponseSignature(f *testing.F) {
	nonce := strings.Repeat("a1", nonceBytes)
	body := []byte(`{"type":"append-entries-response","cluster":"c1","from":"b","to":"a","term":2,"round":1}`)
	for _, secret := range []string{key1, key2, key3} {
		kid := fuzzKeyID(secret)
		f.Add("v1 kid="+kid+" sig="+fuzzMAC(secret, responseContext, kid, nonce, "200", fuzzBodyHash(body)), nonce, http.StatusOK, body)
	}
	f.Add("", nonce, http.StatusNoContent, []byte(nil))
	f.Fuzz(func(t *testing.T, header, nonce string, status int, body []byte) {
		a := fuzzAuthenticator(t)
		h := http.Header{}
		values := fuzzHeaderValues(header)
		if values != nil {
			h[SignatureHeader] = values
		}
		err := a.verifyResponse(&http.Response{StatusCode: status, Header: h}, nonce, body)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("refusal of %q is not one line: %q", header, err)
			}
			return
		}
		if len(values) != 1 {
			t.Fatalf("accepted %d header values %q", len(values), values)
		}
		fields := fuzzResponseHeader.FindStringSubmatch(values[0])
		if fields == nil {
			t.Fatalf("accepted %q, which is not of the documented format", values[0])
		}
		secret, ok := fuzzSecretOf(fields[1])
		if !ok {
			t.Fatalf("accepted %q, signed with a key the member does not hold", values[0])
		}
		if want := fuzzMAC(secret, responseContext, fields[1], nonce, strconv.Itoa(status), fuzzBodyHash(body)); fields[2] != want {
			t.Fatalf("accepted %q for nonce %q, status %d and %d bytes; the documented signature is %s", values[0], nonce, status, len(body), want)
		}
	})
}

// FuzzParseKeyring feeds the key file parser arbitrary files. It must never panic; an error
// must be one line and must not show key material; a keyring it returns must hold only keys
// of the documented form (a whole trimmed line of at least MinKeyBytes printable characters
// without white space, not a comment), each under the id docs/security.md defines, in file
// order without repeats, and must round-trip: the keys written one per line parse back to the
// same keyring.
func FuzzParseKeyring(f *testing.F) {
	f.Add([]byte(key1))
	f.Add([]byte("# rotation\r\n" + key2 + "\r\n" + key1 + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyring(data)
		lines := strings.Split(string(data), "\n")
		if err != nil {
			if k != nil {
				t.Fatalf("error %v with a keyring", err)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error is not one line: %q", msg)
			}
			for _, line := range lines {
				line = strings.TrimSpace(line)
				if len(line) >= MinKeyBytes && strings.IndexFunc(line, unicode.IsSpace) < 0 && strings.Contains(msg, line[:MinKeyBytes]) {
					t.Fatalf("error %q shows key material from line %q", msg, line)
				}
			}
			return
		}
		if k == nil || len(k.keys) == 0 {
			t.Fatalf("no error and no key from %q", data)
		}
		// The keys are exactly the distinct key lines, in file order.
		var want []string
		for _, line := range lines {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") || slices.Contains(want, line) {
				continue
			}
			want = append(want, line)
		}
		var got, idList []string
		ids := map[string]bool{}
		for _, key := range k.keys {
			s := string(key.secret)
			got = append(got, s)
			if len(s) < MinKeyBytes || strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
				t.Fatalf("accepted key %q", s)
			}
			if key.id != fuzzKeyID(s) || ids[key.id] {
				t.Fatalf("key id %q of %q: want %s, once", key.id, s, fuzzKeyID(s))
			}
			ids[key.id] = true
			idList = append(idList, key.id)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("keys %q, want the key lines %q", got, want)
		}
		if k.SigningKeyID() != fuzzKeyID(got[0]) || !slices.Equal(k.KeyIDs(), idList) {
			t.Fatalf("signing key %s, ids %v; want %v", k.SigningKeyID(), k.KeyIDs(), idList)
		}
		for _, file := range []string{strings.Join(got, "\n"), "# written back\r\n" + strings.Join(got, "\r\n") + "\r\n"} {
			back, err := ParseKeyring([]byte(file))
			if err != nil || !back.sameKeys(k) || !slices.Equal(back.KeyIDs(), k.KeyIDs()) {
				t.Fatalf("keys %q written back as %q parse as %v, %v", got, file, back, err)
			}
		}
	})
}
