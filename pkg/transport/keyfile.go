package transport

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// Limits and defaults of the key file.
const (
	// MinKeyBytes is the shortest key accepted. HMAC-SHA256 is only as strong as its key; a
	// key shorter than this is a password, not a key.
	MinKeyBytes = 16
	// RecommendedKeyBytes is the length below which a key is accepted with a warning:
	// `openssl rand -base64 32` gives 44 characters.
	RecommendedKeyBytes = 32
	// MaxKeyFileBytes bounds the key file; anything larger is not a key file.
	MaxKeyFileBytes = 64 << 10
	// DefaultKeyReloadInterval is how often a KeyFile is re-read. The kubelet updates a
	// mounted Secret within about a minute; two seconds adds little to that and costs one
	// small read.
	DefaultKeyReloadInterval = 2 * time.Second
)

// keyIDContext is the HMAC message that derives a key's id from the key.
const keyIDContext = "raft-elector key id"

// KeySource gives the keys that sign and verify peer messages. It is called on every RPC, so
// it must be fast and safe for concurrent use; it must never return nil once given to a
// transport (a transport with a nil keyring refuses everything rather than run unsigned).
type KeySource interface {
	Keys() *Keyring
}

// Keyring is an immutable set of peer authentication keys: the first one signs requests, all
// of them verify. Holding an old and a new key at once is what lets keys rotate without
// downtime (docs/security.md).
type Keyring struct {
	keys []authKey
}

type authKey struct {
	id     string // 8 lower-case hex digits, derived from the secret; not secret itself
	secret []byte
	line   int // in the file it came from, for messages
}

var _ KeySource = (*Keyring)(nil)

// Keys returns k itself, so that a fixed Keyring is a KeySource.
func (k *Keyring) Keys() *Keyring { return k }

// ParseKeyring parses the content of a key file: one key per line; blank lines and lines
// starting with # are ignored; white space around a key is trimmed. A key is at least
// MinKeyBytes bytes of printable characters without white space. The first key signs; every
// key is accepted. Errors name line numbers, never key material.
func ParseKeyring(data []byte) (*Keyring, error) {
	if len(data) > MaxKeyFileBytes {
		return nil, fmt.Errorf("%d bytes, more than a key file's limit of %d", len(data), MaxKeyFileBytes)
	}
	if !utf8.Valid(data) {
		return nil, errors.New("not UTF-8 text; write each key as one line of printable characters (for example the output of `openssl rand -base64 32`)")
	}
	var k Keyring
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.IndexFunc(line, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
			return nil, fmt.Errorf("line %d holds white space or an unprintable character inside the key; put one key per line", n)
		}
		if len(line) < MinKeyBytes {
			return nil, fmt.Errorf("the key on line %d is %d bytes, shorter than the minimum %d; use a long random key (`openssl rand -base64 32`)", n, len(line), MinKeyBytes)
		}
		secret := []byte(line)
		id := keyID(secret)
		dup := false
		for _, prev := range k.keys {
			switch {
			case hmac.Equal(prev.secret, secret):
				dup = true // harmless: the same key listed twice
			case prev.id == id:
				return nil, fmt.Errorf("the keys on lines %d and %d have the same key id %s; replace one with a new random key", prev.line, n, id)
			}
		}
		if !dup {
			k.keys = append(k.keys, authKey{id: id, secret: secret, line: n})
		}
	}
	if len(k.keys) == 0 {
		return nil, errors.New("holds no key (one key per line; lines starting with # are comments)")
	}
	return &k, nil
}

// keyID names a key in signatures and logs without revealing it: the first four bytes of an
// HMAC of a fixed string under the key, in hex.
func keyID(secret []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(keyIDContext))
	return hex.EncodeToString(mac.Sum(nil)[:4])
}

// SigningKeyID is the id of the key that signs requests.
func (k *Keyring) SigningKeyID() string { return k.keys[0].id }

// KeyIDs lists the ids of every accepted key, the signing key first.
func (k *Keyring) KeyIDs() []string {
	ids := make([]string, len(k.keys))
	for i, key := range k.keys {
		ids[i] = key.id
	}
	return ids
}

// ShortKeyIDs lists the ids of the keys shorter than RecommendedKeyBytes.
func (k *Keyring) ShortKeyIDs() []string {
	var ids []string
	for _, key := range k.keys {
		if len(key.secret) < RecommendedKeyBytes {
			ids = append(ids, key.id)
		}
	}
	return ids
}

func (k *Keyring) signing() *authKey { return &k.keys[0] }

func (k *Keyring) lookup(id string) *authKey {
	for i := range k.keys {
		if k.keys[i].id == id {
			return &k.keys[i]
		}
	}
	return nil
}

// sameKeys reports whether two keyrings hold the same keys in the same order.
func (k *Keyring) sameKeys(o *Keyring) bool {
	return slices.EqualFunc(k.keys, o.keys, func(a, b authKey) bool { return hmac.Equal(a.secret, b.secret) })
}

// KeyFile is a key file that is re-read while the member runs, so that a rotated Kubernetes
// Secret takes effect without a restart. It is read by path every time, so a kubelet that
// updates a mounted Secret by swapping a symlink is seen, and a change is recognised by the
// content's hash rather than by modification times (which a symlink swap need not change).
//
// A read that fails or yields an invalid key set keeps the keys in force: a broken edit of
// the Secret never turns authentication off or locks the member out of its cluster by itself.
type KeyFile struct {
	path string

	keys atomic.Pointer[Keyring]

	mu       sync.Mutex // one Reload at a time; guards the fields below
	seen     [32]byte   // hash of the content last read, valid or not
	haveSeen bool
	seenErr  error  // why that content is unusable, or nil
	lastErr  string // the problem last logged by Run, so it is logged once, not every poll
}

var _ KeySource = (*KeyFile)(nil)

// OpenKeyFile reads and parses the key file at path. Unlike a reload, any problem is an
// error: a member must not start with keys it cannot use.
func OpenKeyFile(path string) (*KeyFile, error) {
	f := &KeyFile{path: path}
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.keys.Store(k)
	f.seen, f.haveSeen = sha256.Sum256(data), true
	return f, nil
}

func readKeyFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxKeyFileBytes+1))
	if err != nil {
		return nil, err // an *os.PathError, which names the file
	}
	if len(data) > MaxKeyFileBytes {
		return nil, fmt.Errorf("%s is larger than a key file's limit of %d bytes", path, MaxKeyFileBytes)
	}
	return data, nil
}

// Path is the file's path.
func (f *KeyFile) Path() string { return f.path }

// Keys returns the keys in force.
func (f *KeyFile) Keys() *Keyring { return f.keys.Load() }

// Reload reads the file once. It reports whether the keys in force changed, and why the
// file could not be used, if it could not; the keys in force are then unchanged. Content
// that has not changed since the last read is not parsed again, and an edit that leaves the
// same keys in the same order (a comment, say) is not a change.
func (f *KeyFile) Reload() (changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := readKeyFile(f.path)
	if err != nil {
		// Read again in full once it is back, even if it comes back unchanged.
		f.haveSeen = false
		return false, fmt.Errorf("keeping the keys in force: %w", err)
	}
	sum := sha256.Sum256(data)
	if f.haveSeen && sum == f.seen {
		return false, f.seenErr
	}
	k, err := ParseKeyring(data)
	f.seen, f.haveSeen = sum, true
	if err != nil {
		// Invalid content is remembered too, so it is not parsed again every poll.
		f.seenErr = fmt.Errorf("keeping the keys in force: %s: %w", f.path, err)
		return false, f.seenErr
	}
	f.seenErr = nil
	if k.sameKeys(f.keys.Load()) {
		return false, nil
	}
	f.keys.Store(k)
	return true, nil
}

// Run re-reads the file every interval until ctx ends, and logs each change of the keys in
// force (their ids, never the keys) and each new problem with the file, once.
func (f *KeyFile) Run(ctx context.Context, interval time.Duration, log hclog.Logger) {
	if interval <= 0 {
		interval = DefaultKeyReloadInterval
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		f.reloadAndLog(log)
	}
}

func (f *KeyFile) reloadAndLog(log hclog.Logger) {
	changed, err := f.Reload()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			log.Error("peer authentication key file is unusable; the keys in force stay", "file", f.path, "error", err,
				"signing_key", f.Keys().SigningKeyID(), "accepted_keys", strings.Join(f.Keys().KeyIDs(), ","))
		}
		return
	}
	if f.lastErr != "" && !changed {
		log.Info("peer authentication key file is usable again; keys unchanged", "file", f.path)
	}
	f.lastErr = ""
	if changed {
		LogKeys(log, "peer authentication keys reloaded", f.Keys(), "file", f.path)
	}
}

// LogKeys logs which keys are in force (by id) with msg, and warns about short keys.
func LogKeys(log hclog.Logger, msg string, k *Keyring, args ...any) {
	args = append(args, "signing_key", k.SigningKeyID(), "accepted_keys", strings.Join(k.KeyIDs(), ","))
	log.Info(msg, args...)
	if short := k.ShortKeyIDs(); len(short) > 0 {
		log.Warn("peer authentication keys shorter than recommended; generate keys with `openssl rand -base64 32`",
			"keys", strings.Join(short, ","), "recommended_bytes", RecommendedKeyBytes)
	}
}
