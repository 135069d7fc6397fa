package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestBadFlagsExitTwoWithOneLineNamingTheFlag(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "missing")
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
