package main

import (
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/pkg/localapi"
	"github.com/raft-elector/raft-elector/pkg/raft"
)

// fuzzList splits a fuzzed string into a list: NUL separates the items, and "" is no item.
func fuzzList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// fuzzKeyFiles stands in for any --auth-secret-file value: the parser opens and reads that
// file, and the fuzzer must not make it read arbitrary files (a FIFO would block). A value is
// replaced by a valid key file, an invalid one or a missing path, chosen by its length.
type fuzzKeyFiles []string

func newFuzzKeyFiles(f *testing.F) fuzzKeyFiles {
	dir := f.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte(testKey+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("short\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	return fuzzKeyFiles{good, bad, filepath.Join(dir, "missing")}
}

func (k fuzzKeyFiles) path(v string) string {
	if v == "" {
		return ""
	}
	return k[len(v)%len(k)]
}

// args replaces the value of every argument that could set --auth-secret-file (whether or not
// the flag parser would get to it).
func (k fuzzKeyFiles) args(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			name, ok = strings.CutPrefix(a, "-")
		}
		if !ok {
			continue
		}
		name, v, hasValue := strings.Cut(name, "=")
		if name != "auth-secret-file" {
			continue
		}
		if hasValue {
			out[i] = a[:len(a)-len(v)] + k.path(v)
		} else if i+1 < len(out) {
			out[i+1] = k.path(out[i+1])
		}
	}
	return out
}

// FuzzParseMemberFlags feeds the member's flag and environment parser arbitrary arguments
// (NUL-separated) and environment variables (NUL-separated NAME=value). It must never panic.
// It must either refuse them with --help or a usage error of one line (the process prints it
// and exits 2), or return a configuration that holds what finish checks: a member id and a
// cluster id within raft.MaxIDLength, static peers that include the member, timings in their
// bounds, a known log level and format, and distinct label values.
func FuzzParseMemberFlags(f *testing.F) {
	keys := newFuzzKeyFiles(f)
	f.Add("--id=a\x00--peers=a=127.0.0.1:4041,b=127.0.0.1:4042", "")
	f.Add("", "POD_NAME=web-0\x00POD_UID=u1\x00POD_NAMESPACE=ns\x00POD_IP=10.0.0.7\x00RAFT_ELECTOR_SELECTOR=app=web")
	f.Fuzz(func(t *testing.T, rawArgs, rawEnv string) {
		vars := map[string]string{}
		for _, kv := range fuzzList(rawEnv) {
			k, v, _ := strings.Cut(kv, "=")
			if k == envName("auth-secret-file") {
				v = keys.path(v)
			}
			vars[k] = v
		}
		args := keys.args(fuzzList(rawArgs))
		c, err := parseMemberFlags(args, func(k string) string { return vars[k] }, io.Discard)
		if err != nil {
			var ue *usageError
			if !errors.Is(err, flag.ErrHelp) && !errors.As(err, &ue) {
				t.Fatalf("args %q env %q: %T %v is not a usage error", args, vars, err, err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("args %q env %q: the error is not one line: %q", args, vars, err)
			}
			return
		}
		bad := func(what string, v any) {
			t.Helper()
			t.Fatalf("args %q env %q: accepted %s %v", args, vars, what, v)
		}
		if c.ID == "" || len(c.ID) > raft.MaxIDLength {
			bad("id", c.ID)
		}
		if c.ClusterID == "" || len(c.ClusterID) > raft.MaxIDLength {
			bad("cluster id", c.ClusterID)
		}
		switch c.Discovery {
		case "static":
			found := false
			for _, m := range c.Peers {
				found = found || m.ID == c.ID
			}
			if !found {
				bad("peers without the member", c.Peers)
			}
		case "kubernetes":
			if c.PeerPort < 1 || c.PeerPort > 65535 {
				bad("peer port", c.PeerPort)
			}
			if c.MaxVoters < 1 || c.MaxVoters > 15 {
				bad("max voters", c.MaxVoters)
			}
			if c.RecoverAfter < 2*c.ElectionTimeout {
				bad("recover-after", c.RecoverAfter)
			}
			if c.Namespace == "" || c.Selector == "" || c.PodUID == "" || c.BootstrapObject == "" {
				bad("kubernetes settings", c)
			}
		default:
			bad("discovery", c.Discovery)
		}
		for _, a := range []string{c.PeerAddr, c.LocalAddr, c.OpsAddr} {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad("address", a)
			}
		}
		if c.HeartbeatInterval < 5*time.Millisecond || c.ElectionTimeout < 3*c.HeartbeatInterval || c.ElectionTimeout > 5*time.Minute {
			bad("timings", []time.Duration{c.HeartbeatInterval, c.ElectionTimeout})
		}
		if c.ReportedLease < 0 || c.ReportedLease != 0 && c.ReportedLease < c.HeartbeatInterval || c.ShutdownTimeout <= 0 {
			bad("reported lease or shutdown timeout", []time.Duration{c.ReportedLease, c.ShutdownTimeout})
		}
		if c.DataDir == "" || c.LabelKey == "" || c.LeaderValue == "" || c.FollowerValue == "" || c.LeaderValue == c.FollowerValue {
			bad("data dir or labels", []string{c.DataDir, c.LabelKey, c.LeaderValue, c.FollowerValue})
		}
		switch strings.ToLower(c.LogLevel) {
		case "trace", "debug", "info", "warn", "error":
		default:
			bad("log level", c.LogLevel)
		}
		if c.LogFormat != "text" && c.LogFormat != "json" {
			bad("log format", c.LogFormat)
		}
		if (c.AuthSecretFile == "") != (c.AuthKeys == nil) || c.AuthKeys != nil && (c.AuthMaxSkew < minAuthMaxSkew || c.AuthMaxSkew > maxAuthMaxSkew) {
			bad("authentication settings", []any{c.AuthSecretFile, c.AuthMaxSkew})
		}
	})
}

// FuzzParseWatchFlags feeds the flag parser of `raft-elector watch` arbitrary arguments
// (NUL-separated). It must never panic; it must refuse them with --help or an error of one line
// (printed before exit code 2), or return a configuration with an http(s) URL, a listen
// address that is host:port (if any), a positive --timeout, a --wait within the local API's
// bound, and not both --once and --listen.
func FuzzParseWatchFlags(f *testing.F) {
	f.Add("--url=http://127.0.0.1:4040/leader\x00--listen=:8080")
	f.Add("--once\x00--timeout=5s")
	f.Fuzz(func(t *testing.T, rawArgs string) {
		args := fuzzList(rawArgs)
		c, err := parseWatchFlags(args, io.Discard)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("args %q: the error is not one line: %q", args, err)
			}
			return
		}
		if c.url == nil || c.url.Scheme != "http" && c.url.Scheme != "https" || c.url.Host == "" {
			t.Fatalf("args %q: accepted URL %v", args, c.url)
		}
		if c.listen != "" {
			if _, _, err := net.SplitHostPort(c.listen); err != nil {
				t.Fatalf("args %q: accepted --listen %q", args, c.listen)
			}
		}
		if c.timeout <= 0 || c.wait <= 0 || c.wait > localapi.MaxWait || c.once && c.listen != "" {
			t.Fatalf("args %q: accepted %+v", args, c)
		}
	})
}
