package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The peer authentication tests run members with --auth-secret-file, each reading its own key
// file laid out as the kubelet lays out a Secret volume, and sign their own raw requests with
// an implementation written from docs/security.md alone, so the documented format is checked
// against the real binary.

const authClusterID = "e2e-auth"

// Keys of the tests (44 characters, like `openssl rand -base64 32`).
const (
	authKeyA     = "AAAAaaaa0000AAAAaaaa0000AAAAaaaa0000AAAAaaa="
	authKeyB     = "BBBBbbbb1111BBBBbbbb1111BBBBbbbb1111BBBBbbb="
	authKeyWrong = "WWWWwwww2222WWWWwwww2222WWWWwwww2222WWWWwww="
)

// authKeyID is the key id of docs/security.md: the first 4 bytes of HMAC-SHA256(key, "raft-elector
// key id"), in lower-case hex.
func authKeyID(key string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("raft-elector key id"))
	return hex.EncodeToString(m.Sum(nil)[:4])
}

func authHMAC(key string, fields ...string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(strings.Join(fields, "\n")))
	return hex.EncodeToString(m.Sum(nil))
}

func authBodyHash(body []byte) string {
	s := sha256.Sum256(body)
	return hex.EncodeToString(s[:])
}

// authSignature is the Raft-Elector-Signature header of a request signed with key at ts.
func authSignature(key, path string, body []byte, ts time.Time) (header, nonce string) {
	var raw [16]byte
	rand.Read(raw[:])
	nonce = hex.EncodeToString(raw[:])
	kid := authKeyID(key)
	t := strconv.FormatInt(ts.UnixMilli(), 10)
	sig := authHMAC(key, "raft-elector-v1 request", kid, "POST", path, t, nonce, authBodyHash(body))
	return fmt.Sprintf("v1 kid=%s ts=%s nonce=%s sig=%s", kid, t, nonce, sig), nonce
}

// authSecrets holds one key file per member, each in a directory updated like the kubelet
// updates a mounted Secret: <dir>/key → ..data/key, and ..data a symlink to a timestamped
// directory, replaced by renaming a new symlink over it.
type authSecrets struct {
	t   *testing.T
	dir string
	gen int
}

func (s *authSecrets) path(id string) string { return filepath.Join(s.dir, id, "key") }

// write gives member id the key file content keys (one per line, a comment first).
func (s *authSecrets) write(id string, keys ...string) {
	s.t.Helper()
	s.gen++
	dir := filepath.Join(s.dir, id)
	ts := fmt.Sprintf("..2030_01_01_00_00_00.%d", s.gen)
	content := "# raft-elector peer keys: the first signs\n" + strings.Join(keys, "\n") + "\n"
	if err := os.MkdirAll(filepath.Join(dir, ts), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ts, "key"), []byte(content), 0o600); err != nil {
		s.t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		s.t.Fatal(err)
	}
	if _, err := os.Lstat(s.path(id)); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", "key"), s.path(id)); err != nil {
			s.t.Fatal(err)
		}
	}
}

// newAuthCluster starts n members that each read their own key file, initially holding keys.
func newAuthCluster(t *testing.T, n int, keys ...string) (*Cluster, *authSecrets) {
	t.Helper()
	s := &authSecrets{t: t, dir: t.TempDir()}
	for i := range n {
		s.write(memberID(i), keys...)
	}
	cfg := withMembers(fast, n)
	cfg.ExtraArgs = []string{"--cluster-id=" + authClusterID}
	cfg.MemberEnv = func(m *Member) []string {
		return []string{"RAFT_ELECTOR_AUTH_SECRET_FILE=" + s.path(m.ID)}
	}
	return NewCluster(t, cfg), s
}

// authPost sends one raw peer request to addr and returns the reply.
func authPost(t *testing.T, addr, rpc string, body []byte, signature string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/raft/v1/"+rpc, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("Raft-Elector-Signature", signature)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s to %s: %v", rpc, addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, b
}

// authCheckStable fails the test if any member answered with another leader or term since
// from, and checks that every member names the same leader in the same term now.
func authCheckStable(t *testing.T, c *Cluster, from time.Time, leader int, term uint64) {
	t.Helper()
	l, tm, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	if l != leader || tm != term {
		t.Fatalf("leadership moved from %s in term %d to %s in term %d", c.Members[leader].ID, term, c.Members[l].ID, tm)
	}
	id := c.Members[leader].ID
	for i := range c.Members {
		for _, o := range c.Checker.Changes(i, from, time.Now()) {
			if o.Answer.Name != id || o.Answer.Term != term {
				t.Fatalf("leadership changed (want %s in term %d): %s", id, term, c.Checker.describe(o))
			}
		}
	}
}

// TestAuthElectsAndRefusesUnsigned: three members with the same key elect a leader; raw
// requests that would move terms if they were accepted, unsigned or badly signed, get 401 from
// the leader and a follower and change nothing; a correctly signed request gets through to the
// member (which refuses it for its cluster id) with a signed reply, and its replay gets 401.
func TestAuthElectsAndRefusesUnsigned(t *testing.T) {
	c, _ := newAuthCluster(t, 3, authKeyA)
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	f := c.Except(l)[0]
	lid, fid := c.Members[l].ID, c.Members[f].ID
	from := time.Now()

	big := term + 1000
	msg := func(typ, cluster, sender, to string) []byte {
		return fmt.Appendf(nil, `{"type":%q,"cluster":%q,"from":%q,"to":%q,"term":%d}`, typ, cluster, sender, to, big)
	}
	type target struct {
		idx       int
		rpc       string
		body      []byte
		whatIfSet string
	}
	targets := []target{
		// A heartbeat of the leader in a far higher term: a follower would adopt the term.
		{f, "append-entries", msg("append-entries", authClusterID, lid, fid), "the follower would adopt term " + fmt.Sprint(big)},
		// A vote request in a far higher term: the leader would step down.
		{l, "request-vote", msg("request-vote", authClusterID, fid, lid), "the leader would step down"},
		// timeout-now: the follower would campaign at once.
		{f, "timeout-now", msg("timeout-now", authClusterID, lid, fid), "the follower would campaign"},
	}
	for _, tg := range targets {
		addr := c.Members[tg.idx].PeerAddr()
		path := "/raft/v1/" + tg.rpc
		good, _ := authSignature(authKeyA, path, tg.body, time.Now())
		tampered := bytes.Replace(tg.body, []byte(`"term":`), []byte(`"term":1`), 1)
		wrongKey, _ := authSignature(authKeyWrong, path, tg.body, time.Now())
		stale, _ := authSignature(authKeyA, path, tg.body, time.Now().Add(-2*time.Minute))
		future, _ := authSignature(authKeyA, path, tg.body, time.Now().Add(2*time.Minute))
		other := "/raft/v1/request-vote"
		if tg.rpc == "request-vote" {
			other = "/raft/v1/append-entries"
		}
		otherPath, _ := authSignature(authKeyA, other, tg.body, time.Now())
		cases := []struct {
			name, signature string
			body            []byte
			want            string
		}{
			{"no signature", "", tg.body, "no Raft-Elector-Signature header"},
			{"garbage signature", "v1 trust-me", tg.body, "malformed"},
			{"truncated signature", good[:len(good)-8], tg.body, "malformed"},
			{"wrong key", wrongKey, tg.body, "does not hold"},
			{"body changed after signing", good, tampered, "bad signature"},
			{"signed for another path", otherPath, tg.body, "bad signature"},
			{"two minutes old", stale, tg.body, "behind"},
			{"two minutes ahead", future, tg.body, "ahead"},
		}
		for _, tc := range cases {
			resp, body := authPost(t, addr, tg.rpc, tc.body, tc.signature)
			c.Logf("%s to %s (%s if accepted), %s: %d %s", tg.rpc, c.Members[tg.idx].ID, tg.whatIfSet, tc.name, resp.StatusCode, bytes.TrimSpace(body))
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s to %s, %s: status %d %s; want 401 saying %q", tg.rpc, c.Members[tg.idx].ID, tc.name, resp.StatusCode, body, tc.want)
			}
			if resp.Header.Get("WWW-Authenticate") != "Raft-Elector-Signature" {
				t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
			}
		}
	}
	authCheckStable(t, c, from, l, term)

	// A correctly signed request reaches the member, which refuses it for its cluster id (403,
	// no state change), and signs its reply for this request; the same request again is a replay.
	body := msg("request-vote", "another-cluster", fid, lid)
	sig, nonce := authSignature(authKeyA, "/raft/v1/request-vote", body, time.Now())
	resp, reply := authPost(t, c.Members[l].PeerAddr(), "request-vote", body, sig)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("signed request of another cluster: status %d %s, want 403 from the member", resp.StatusCode, reply)
	}
	kid := authKeyID(authKeyA)
	want := "v1 kid=" + kid + " sig=" + authHMAC(authKeyA, "raft-elector-v1 response", kid, nonce, "403", authBodyHash(reply))
	if got := resp.Header.Get("Raft-Elector-Signature"); got != want {
		t.Errorf("reply signature %q, want %q", got, want)
	}
	resp, reply = authPost(t, c.Members[l].PeerAddr(), "request-vote", body, sig)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(reply), "replayed") {
		t.Errorf("replayed request: status %d %s, want 401 replayed", resp.StatusCode, reply)
	}
	authCheckStable(t, c, from, l, term)

	// The refusals are counted like every other refusal.
	code, metrics, err := c.get(c.Members[f].OpsAddr(), "/metrics", time.Second)
	if err != nil || code != 200 || !strings.Contains(string(metrics), `code="401"`) {
		t.Errorf("the follower's /metrics (%d, %v) does not count 401 replies", code, err)
	}
}

// authWaitReloaded waits until every member has logged, after offsets, that it reloaded its key
// file to keys (signing key first).
func authWaitReloaded(t *testing.T, c *Cluster, offsets []int64, keys ...string) {
	t.Helper()
	var ids []string
	for _, k := range keys {
		ids = append(ids, authKeyID(k))
	}
	want := []string{"peer authentication keys reloaded", "signing_key=" + ids[0] + " ", "accepted_keys=" + strings.Join(ids, ",")}
	c.WaitUntil(15*time.Second, fmt.Sprintf("every member reloads keys %v", ids), func() bool {
		for i, m := range c.Members {
			found := false
			for _, line := range strings.Split(authLogFrom(t, m.LogPath, offsets[i]), "\n") {
				line = strings.ReplaceAll(line, `"`, "") + " "
				ok := true
				for _, w := range want {
					ok = ok && strings.Contains(line, w)
				}
				found = found || ok
			}
			if !found {
				return false
			}
		}
		return true
	})
	c.Logf("every member reloaded its keys: %v", ids)
}

// authLogFrom returns a member's log from offset on.
func authLogFrom(t *testing.T, path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Error(err)
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func authLogOffsets(t *testing.T, c *Cluster) []int64 {
	t.Helper()
	var out []int64
	for _, m := range c.Members {
		fi, err := os.Stat(m.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fi.Size())
	}
	return out
}

// TestAuthKeyRotation rotates the key of a running cluster as docs/security.md describes: add
// the new key second everywhere, then move it first, then remove the old one. Each member reads
// its own file on its own schedule, and the leader keeps its lease and term throughout.
func TestAuthKeyRotation(t *testing.T) {
	c, secrets := newAuthCluster(t, 3, authKeyA)
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	from := time.Now()

	for _, step := range []struct {
		name string
		keys []string
	}{
		{"add the new key second", []string{authKeyA, authKeyB}},
		{"sign with the new key", []string{authKeyB, authKeyA}},
		{"remove the old key", []string{authKeyB}},
	} {
		c.Logf("rotation: %s", step.name)
		offsets := authLogOffsets(t, c)
		for _, m := range c.Members {
			secrets.write(m.ID, step.keys...)
		}
		authWaitReloaded(t, c, offsets, step.keys...)
		authCheckStable(t, c, from, l, term)
	}

	// The old key is refused now, the new one accepted.
	body := fmt.Appendf(nil, `{"type":"append-entries","cluster":"another-cluster","from":%q,"to":%q,"term":%d}`,
		c.Members[l].ID, c.Members[c.Except(l)[0]].ID, term+1000)
	addr := c.Members[c.Except(l)[0]].PeerAddr()
	old, _ := authSignature(authKeyA, "/raft/v1/append-entries", body, time.Now())
	if resp, reply := authPost(t, addr, "append-entries", body, old); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("request signed with the removed key: status %d %s, want 401", resp.StatusCode, reply)
	}
	current, _ := authSignature(authKeyB, "/raft/v1/append-entries", body, time.Now())
	if resp, reply := authPost(t, addr, "append-entries", body, current); resp.StatusCode != http.StatusForbidden {
		t.Errorf("request signed with the new key: status %d %s, want 403 from the member (another cluster)", resp.StatusCode, reply)
	}
	authCheckStable(t, c, from, l, term)
}

// TestAuthEnableOnRunningCluster turns authentication on in a running cluster as
// docs/security.md describes, one member at a time with a graceful restart each: first every
// member gets the key file with --auth-accept-unsigned, then every member drops that flag. A
// leader is agreed after every restart, the cluster (and so its terms: the lease checker fails
// the test if a term goes backwards) carries on, and at the end unsigned requests are refused.
func TestAuthEnableOnRunningCluster(t *testing.T) {
	s := &authSecrets{t: t, dir: t.TempDir()}
	const n = 3
	modes := make([]string, n) // "" (no authentication), "accept-unsigned", "required"
	for i := range n {
		s.write(memberID(i), authKeyA)
	}
	cfg := withMembers(fast, n)
	cfg.ExtraArgs = []string{"--cluster-id=" + authClusterID}
	cfg.MemberEnv = func(m *Member) []string {
		file := "RAFT_ELECTOR_AUTH_SECRET_FILE=" + s.path(m.ID)
		switch modes[m.Index] {
		case "accept-unsigned":
			return []string{file, "RAFT_ELECTOR_AUTH_ACCEPT_UNSIGNED=true"}
		case "required":
			return []string{file}
		}
		return nil
	}
	c := NewCluster(t, cfg)
	_, firstTerm, _ := c.WaitAgreedLeader(c.All(), leaderWithin)

	var lastTerm uint64
	for _, phase := range []string{"accept-unsigned", "required"} {
		for i := range c.Members {
			c.Logf("rolling update: %s to %s", c.Members[i].ID, phase)
			c.Terminate(i)
			if code, _ := c.WaitExit(i, 30*time.Second); code != 0 {
				t.Fatalf("%s exited with %d after SIGTERM", c.Members[i].ID, code)
			}
			modes[i] = phase
			c.Restart(i)
			_, lastTerm, _ = c.WaitAgreedLeader(c.All(), leaderWithin)
		}
	}
	c.Logf("terms went from %d to %d through six graceful restarts", firstTerm, lastTerm)
	if lastTerm < firstTerm {
		t.Fatalf("term went back from %d to %d", firstTerm, lastTerm)
	}
	from := time.Now()
	l, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	for i, m := range c.Members {
		body := fmt.Appendf(nil, `{"type":"append-entries","cluster":%q,"from":%q,"to":%q,"term":%d}`,
			authClusterID, c.Members[(i+1)%n].ID, m.ID, term+1000)
		if resp, reply := authPost(t, m.PeerAddr(), "append-entries", body, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: unsigned request after the rollout: status %d %s, want 401", m.ID, resp.StatusCode, reply)
		}
	}
	authCheckStable(t, c, from, l, term)
}
