package main

import (
	"bytes"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/transport"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeKeyFile writes a key file and returns its path.
func writeKeyFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const testKey = "0123456789abcdef0123456789abcdef0123456789ab"

func TestBadFlagsExitTwoWithOneLineNamingTheFlag(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "missing")
	shortKey := writeKeyFile(t, "# a comment\nonly-15-bytes!!\n")
	noKey := writeKeyFile(t, "# nothing here yet\n\n")
	twoOnALine := writeKeyFile(t, testKey+" "+testKey+"\n")
	goodKey := writeKeyFile(t, testKey+"\n")
	cases := []struct {
		args []string
		env  map[string]string
		flag string
	}{
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--heartbeat-interval=abc"}, nil, "heartbeat-interval"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--election-timeout=100ms"}, nil, "election-timeout"},
		{[]string{"--id=a", "--peers=a=127.0.0.1"}, nil, "peers"},
		{[]string{"--id=a", "--peers=b=127.0.0.1:1"}, nil, "peers"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1,a=127.0.0.1:2"}, nil, "peers"},
		{[]string{"--peers=a=127.0.0.1:1"}, nil, "id"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--discovery=consul"}, nil, "discovery"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--log-format=xml"}, nil, "log-format"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--log-level=loud"}, nil, "log-level"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--peer-addr=nope"}, nil, "peer-addr"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + secret}, nil, "auth-secret-file"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + shortKey}, nil, "auth-secret-file"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + noKey}, nil, "auth-secret-file"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + twoOnALine}, nil, "auth-secret-file"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + t.TempDir()}, nil, "auth-secret-file"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1"}, map[string]string{"RAFT_ELECTOR_AUTH_SECRET_FILE": shortKey}, "auth-secret-file"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + goodKey, "--auth-max-skew=soon"}, nil, "auth-max-skew"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + goodKey, "--auth-max-skew=500ms"}, nil, "auth-max-skew"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + goodKey, "--auth-max-skew=11m"}, nil, "auth-max-skew"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + goodKey, "--auth-max-skew=-30s"}, nil, "auth-max-skew"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + goodKey, "--auth-max-skew=5m",
			"--heartbeat-interval=5ms", "--election-timeout=50ms"}, nil, "auth-max-skew"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-max-skew=1m"}, nil, "auth-max-skew"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-accept-unsigned"}, nil, "auth-accept-unsigned"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + goodKey, "--auth-accept-unsigned=maybe"}, nil, "auth-accept-unsigned"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "--no-such-flag"}, nil, "no-such-flag"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1"}, map[string]string{"RAFT_ELECTOR_ELECTION_TIMEOUT": "soon"}, "RAFT_ELECTOR_ELECTION_TIMEOUT"},
		{[]string{"--id=a", "--peers=a=127.0.0.1:1", "extra"}, nil, "extra"},
		{[]string{"--id=a", "--discovery=kubernetes"}, nil, "pod-uid"},
		{[]string{"--id=Bad_Name", "--discovery=kubernetes", "--pod-uid=u1"}, nil, "--id"},
		{[]string{"--id=web-0", "--discovery=kubernetes", "--pod-uid=u1"}, nil, "namespace"},
		{[]string{"--id=web-0", "--pod-uid=u1", "--namespace=ns"}, nil, "selector"},
		{[]string{"--id=web-0", "--pod-uid=u1", "--namespace=ns", "--selector=app in (("}, nil, "selector"},
		{[]string{"--id=web-0", "--pod-uid=u1", "--namespace=ns", "--selector=app=web", "--kubeconfig=/nonexistent"}, nil, "kubeconfig"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, env(tc.env), &stdout, &stderr)
		out := stderr.String()
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, tc.flag) {
			t.Errorf("%v %v: exit %d, stderr %q; want exit 2 and one line naming %s", tc.args, tc.env, code, out, tc.flag)
		}
	}
}

func TestEnvironmentSetsFlagsAndDownwardAPIDefaults(t *testing.T) {
	c, err := parseMemberFlags([]string{"--peers=p1=10.0.0.1:4041,p2=10.0.0.2:4041"}, env(map[string]string{
		"POD_NAME":                        "p1",
		"POD_IP":                          "10.0.0.1",
		"RAFT_ELECTOR_HEARTBEAT_INTERVAL": "50ms",
		"RAFT_ELECTOR_ELECTION_TIMEOUT":   "500ms",
		"RAFT_ELECTOR_LOG_FORMAT":         "json",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "p1" || c.AdvertiseAddr != "10.0.0.1:4041" || c.HeartbeatInterval.String() != "50ms" ||
		c.LogFormat != "json" || c.Discovery != "static" || c.ShutdownTimeout.String() != "1s" {
		t.Fatalf("config %+v", c)
	}
	if !strings.HasPrefix(c.ClusterID, "static-") {
		t.Fatalf("cluster id %q", c.ClusterID)
	}
	// A flag on the command line wins over the environment.
	c, err = parseMemberFlags([]string{"--id=p2", "--peers=p1=10.0.0.1:4041,p2=10.0.0.2:4041"},
		env(map[string]string{"RAFT_ELECTOR_ID": "p1"}), &bytes.Buffer{})
	if err != nil || c.ID != "p2" {
		t.Fatalf("flag vs env: %+v %v", c, err)
	}
	// Two static clusters with different members get different cluster ids.
	c2, _ := parseMemberFlags([]string{"--id=p1", "--peers=p1=10.0.0.1:4041,p3=10.0.0.3:4041"}, env(nil), &bytes.Buffer{})
	if c2.ClusterID == c.ClusterID {
		t.Fatal("different member sets share a cluster id")
	}
}

func TestKubernetesIdentityAndClusterID(t *testing.T) {
	e := env(map[string]string{"POD_NAME": "web-0", "POD_UID": "0a1b", "POD_NAMESPACE": "shop", "POD_IP": "10.1.2.3"})
	c, err := parseMemberFlags([]string{"--selector=app=web"}, e, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Discovery != "kubernetes" || c.ID != "web-0_0a1b" || c.PodName != "web-0" || c.PeerPort != 4041 || !strings.HasPrefix(c.ClusterID, "k8s-") {
		t.Fatalf("config %+v", c)
	}
	// The advertised address follows the port of --peer-addr, from a flag or the environment.
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--selector=app=web", "--peer-addr=:5041"}, nil, "10.1.2.3:5041"},
		{[]string{"--selector=app=web"}, map[string]string{"RAFT_ELECTOR_PEER_ADDR": "0.0.0.0:6041"}, "10.1.2.3:6041"},
		{[]string{"--selector=app=web", "--peer-addr=:5041", "--advertise-addr=10.9.9.9:7041"}, nil, "10.9.9.9:7041"},
	} {
		vars := map[string]string{"POD_NAME": "web-0", "POD_UID": "0a1b", "POD_NAMESPACE": "shop", "POD_IP": "10.1.2.3"}
		maps.Copy(vars, tc.env)
		c, err := parseMemberFlags(tc.args, env(vars), &bytes.Buffer{})
		if err != nil || c.AdvertiseAddr != tc.want || c.PeerPort != portOf(tc.want) {
			t.Errorf("%v %v: advertise %q port %d (%v), want %s", tc.args, tc.env, c.AdvertiseAddr, c.PeerPort, err, tc.want)
		}
	}
	other, err := parseMemberFlags([]string{"--selector=app=cart"}, e, &bytes.Buffer{})
	if err != nil || other.ClusterID == c.ClusterID {
		t.Fatalf("two selectors share cluster id %q (%v)", c.ClusterID, err)
	}
}

func TestCorruptStateIsAStartupError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "raft-state.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := run([]string{"--id=a", "--peers=a=127.0.0.1:1", "--data-dir=" + dir, "--peer-addr=127.0.0.1:0",
		"--local-addr=127.0.0.1:0", "--ops-addr=127.0.0.1:0"}, env(nil), &bytes.Buffer{}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "corrupt") {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming the corrupt state file", code, stderr.String())
	}
}

func TestDemoElectsALeader(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"demo", "--nodes=3", "--duration=2s", "--heartbeat-interval=20ms", "--election-timeout=200ms"}, env(nil), &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "leader is m") {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
}

func TestDemoChaosPrintsFailovers(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"demo", "--nodes=3", "--chaos", "--seed=7", "--duration=5s", "--heartbeat-interval=20ms", "--election-timeout=200ms"},
		env(nil), &stdout, &stderr)
	out := stdout.String()
	if code != 0 || strings.Contains(out, "VIOLATION") || strings.Count(out, "failover after crash")+strings.Count(out, "handover after graceful stop") < 2 {
		t.Fatalf("demo --chaos exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
	}
}

func TestAuthFlags(t *testing.T) {
	key := writeKeyFile(t, "# current key first\n"+testKey+"\n")
	c, err := parseMemberFlags([]string{"--id=a", "--peers=a=127.0.0.1:1,b=127.0.0.2:1", "--auth-secret-file=" + key}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthKeys == nil || c.AuthMaxSkew != DefaultAuthMaxSkew || len(c.AuthKeys.Keys().KeyIDs()) != 1 {
		t.Fatalf("config %+v", c)
	}
	// Through the environment, with a skew that the replay cache can hold at 5 ms heartbeats.
	c, err = parseMemberFlags([]string{"--id=a", "--peers=a=127.0.0.1:1", "--heartbeat-interval=5ms", "--election-timeout=50ms"},
		env(map[string]string{"RAFT_ELECTOR_AUTH_SECRET_FILE": key, "RAFT_ELECTOR_AUTH_MAX_SKEW": "40s"}), &bytes.Buffer{})
	if err != nil || c.AuthKeys == nil || c.AuthMaxSkew != 40*time.Second {
		t.Fatalf("from the environment: %+v %v", c, err)
	}
	c, err = parseMemberFlags([]string{"--id=a", "--peers=a=127.0.0.1:1", "--auth-secret-file=" + key, "--auth-accept-unsigned"}, env(nil), &bytes.Buffer{})
	if err != nil || !c.AuthAcceptUnsigned {
		t.Fatalf("--auth-accept-unsigned: %+v %v", c, err)
	}
	// Without a key file, nothing changes.
	c, err = parseMemberFlags([]string{"--id=a", "--peers=a=127.0.0.1:1"}, env(nil), &bytes.Buffer{})
	if err != nil || c.AuthKeys != nil {
		t.Fatalf("without --auth-secret-file: %+v %v", c, err)
	}
}

// TestMemberWithAuth starts a one-member static cluster with a key file: its peer port refuses
// unsigned requests, the key file's reload loop runs, and shutdown stops it.
func TestMemberWithAuth(t *testing.T) {
	key := writeKeyFile(t, testKey+"\n")
	c, err := parseMemberFlags([]string{"--id=a", "--peers=a=127.0.0.1:1", "--data-dir=" + t.TempDir(), "--peer-addr=127.0.0.1:0",
		"--local-addr=127.0.0.1:0", "--ops-addr=127.0.0.1:0", "--auth-secret-file=" + key}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := startMember(t.Context(), c, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			m.shutdown(false)
		}
	}()

	req := httptest.NewRequest(http.MethodPost, transport.RPCPathPrefix+"append-entries",
		strings.NewReader(`{"type":"append-entries","cluster":"`+c.ClusterID+`","from":"a","to":"a","term":99}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	m.tr.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("unsigned request: status %d %s, want 401", rec.Code, rec.Body)
	}
	if term := m.node.Status().Term; term >= 99 {
		t.Fatalf("term %d after an unsigned request", term)
	}

	// A rotation step: the reload loop picks the new key up.
	const newKey = "fedcba9876543210fedcba9876543210fedcba98"
	if err := os.WriteFile(key, []byte(testKey+"\n"+newKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(4 * transport.DefaultKeyReloadInterval)
	for len(c.AuthKeys.Keys().KeyIDs()) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the key file was not reloaded; keys %v", c.AuthKeys.Keys().KeyIDs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { m.shutdown(false); close(done) }()
	select {
	case <-done:
		stopped = true
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not return")
	}
	select {
	case <-m.keysDone:
	default:
		t.Fatal("the reload loop still runs after shutdown")
	}
}
