package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFlags(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--id", "pod-0", "--namespace", "ns"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	defaults := config{ID: "pod-0", Namespace: "ns", LeaseName: defaultLeaseName, LeaseDuration: 15 * time.Second,
		RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second, ReleaseOnCancel: true,
		LocalAddr: "127.0.0.1:4040", OpsAddr: ":4041", LogLevel: "info", KubeAPIQPS: 5, KubeAPIBurst: 10}
	modified := func(f func(*config)) config { c := defaults; f(&c); return c }

	good := []struct {
		name string
		args []string
		env  map[string]string
		want config
	}{
		{"defaults", base, nil, defaults},
		{"downward API", nil, map[string]string{"POD_NAME": "pod-0", "POD_NAMESPACE": "ns"}, defaults},
		{"own env beats downward API", nil, map[string]string{"POD_NAME": "x", "POD_NAMESPACE": "y",
			"LEASE_ELECTOR_ID": "pod-0", "LEASE_ELECTOR_NAMESPACE": "ns"}, defaults},
		{"flag beats env", base, map[string]string{"LEASE_ELECTOR_ID": "other", "LEASE_ELECTOR_LEASE_NAME": "from-env"},
			modified(func(c *config) { c.LeaseName = "from-env" })},
		{"every flag", with("--lease-name", "app.leader", "--kubeconfig", kubeconfig, "--lease-duration", "4s",
			"--renew-deadline", "3s", "--retry-period", "500ms", "--release-on-cancel=false", "--local-addr", "127.0.0.1:0",
			"--ops-addr", "127.0.0.1:0", "--log-level", "DEBUG"), nil,
			modified(func(c *config) {
				c.LeaseName, c.Kubeconfig, c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = "app.leader", kubeconfig, 4*time.Second, 3*time.Second, 500*time.Millisecond
				c.ReleaseOnCancel, c.LocalAddr, c.OpsAddr, c.LogLevel = false, "127.0.0.1:0", "127.0.0.1:0", "debug"
			})},
		{"env bool and durations", base, map[string]string{"LEASE_ELECTOR_RELEASE_ON_CANCEL": "false",
			"LEASE_ELECTOR_LEASE_DURATION": "2s", "LEASE_ELECTOR_RENEW_DEADLINE": "1500ms", "LEASE_ELECTOR_RETRY_PERIOD": "1s"},
			modified(func(c *config) {
				c.ReleaseOnCancel, c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = false, 2*time.Second, 1500*time.Millisecond, time.Second
			})},
		{"client rate limits", with("--kube-api-qps", "50", "--kube-api-burst", "100"), nil,
			modified(func(c *config) { c.KubeAPIQPS, c.KubeAPIBurst = 50, 100 })},
		{"same port 0 twice", with("--local-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0"), nil,
			modified(func(c *config) { c.LocalAddr, c.OpsAddr = "127.0.0.1:0", "127.0.0.1:0" })},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, envOf(tc.env), io.Discard)
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			if *c != tc.want {
				t.Errorf("got  %+v\nwant %+v", *c, tc.want)
			}
		})
	}

	bad := []struct {
		name string
		args []string
		env  map[string]string
		want string // in the error, besides being one line
	}{
		{"missing id", []string{"--namespace", "ns"}, nil, "--id is empty and $POD_NAME"},
		{"empty id from env", []string{"--namespace", "ns"}, map[string]string{"POD_NAME": ""}, "--id"},
		{"id too long", []string{"--id", strings.Repeat("a", 321), "--namespace", "ns"}, nil, "--id is longer"},
		{"id with newline", []string{"--id", "a\nb", "--namespace", "ns"}, nil, `--id "a\nb"`},
		{"missing namespace", []string{"--id", "a"}, nil, "--namespace is empty and $POD_NAMESPACE"},
		{"bad namespace", []string{"--id", "a", "--namespace", "Bad_NS"}, nil, "--namespace"},
		{"bad lease name", with("--lease-name", "-leader"), nil, "--lease-name"},
		{"empty lease name", with("--lease-name", ""), nil, "--lease-name"},
		{"missing kubeconfig", with("--kubeconfig", "/does/not/exist"), nil, "--kubeconfig"},
		{"zero lease", with("--lease-duration", "0"), nil, "--lease-duration 0s must be positive"},
		{"negative renew", with("--renew-deadline", "-1s"), nil, "--renew-deadline -1s must be positive"},
		{"zero retry", with("--retry-period", "0s"), nil, "--retry-period 0s must be positive"},
		{"fractional lease", with("--lease-duration", "1500ms", "--renew-deadline", "1s", "--retry-period", "100ms"), nil, "--lease-duration 1.5s must be whole seconds"},
		{"huge lease", with("--lease-duration", "2h"), nil, "--lease-duration 2h0m0s must be whole seconds, at most 1h"},
		{"lease equals renew", with("--renew-deadline", "15s"), nil, "--lease-duration 15s must be greater than --renew-deadline 15s"},
		{"renew at 1.2 retry", with("--renew-deadline", "12s", "--retry-period", "10s", "--lease-duration", "20s"), nil,
			"--renew-deadline 12s must be greater than 1.2 × --retry-period 10s"},
		{"bad duration", with("--retry-period", "soon"), nil, "-retry-period"},
		{"bad env duration", base, map[string]string{"LEASE_ELECTOR_LEASE_DURATION": "soon"}, "LEASE_ELECTOR_LEASE_DURATION (--lease-duration)"},
		{"bad env bool", base, map[string]string{"LEASE_ELECTOR_RELEASE_ON_CANCEL": "maybe"}, "--release-on-cancel"},
		{"local addr without port", with("--local-addr", "4040"), nil, "--local-addr"},
		{"ops addr port out of range", with("--ops-addr", ":65536"), nil, "--ops-addr"},
		{"ops addr port name", with("--ops-addr", ":http"), nil, "--ops-addr"},
		{"same addresses", with("--local-addr", "127.0.0.1:4040", "--ops-addr", "127.0.0.1:4040"), nil, "--ops-addr"},
		{"log level", with("--log-level", "trace"), nil, "--log-level"},
		{"zero qps", with("--kube-api-qps", "0"), nil, "--kube-api-qps 0 must be above 0"},
		{"NaN qps", with("--kube-api-qps", "NaN"), nil, "--kube-api-qps NaN must be above 0"},
		{"zero burst", with("--kube-api-burst", "0"), nil, "--kube-api-burst 0 must be between 1"},
		{"unknown flag", with("--lock-type", "leases"), nil, "-lock-type"},
		{"positional", with("run"), nil, `unexpected argument "run"`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, envOf(tc.env), io.Discard)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("parseFlags = %+v, %v; want a usage error", c, err)
			}
			if c != nil {
				t.Errorf("config %+v returned with the error", c)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("error %q: want one line containing %q", err, tc.want)
			}
		})
	}
}

func TestHelpPrintsEveryFlag(t *testing.T) {
	var out strings.Builder
	if _, err := parseFlags([]string{"--help"}, envOf(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"id", "namespace", "lease-name", "kubeconfig", "lease-duration", "renew-deadline",
		"retry-period", "release-on-cancel", "local-addr", "ops-addr", "log-level", "LEASE_ELECTOR_"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("usage lacks %q:\n%s", f, out.String())
		}
	}
}

// TestTimingRulesMatchClientGo checks the timing rules against client-go's own: whatever
// parseFlags accepts, NewLeaderElector accepts; what client-go refuses, parseFlags refuses
// first, with our flag names.
func TestTimingRulesMatchClientGo(t *testing.T) {
	for _, tm := range []struct{ lease, renew, retry time.Duration }{
		{15 * time.Second, 10 * time.Second, 2 * time.Second},
		{time.Second, 500 * time.Millisecond, 100 * time.Millisecond},
		{2 * time.Second, 1200 * time.Millisecond, time.Second},
		{2 * time.Second, 1201 * time.Millisecond, time.Second},
		{10 * time.Second, 10 * time.Second, time.Second},
		{10 * time.Second, 11 * time.Second, time.Second},
		{10 * time.Second, 5 * time.Second, 5 * time.Second},
		{10 * time.Second, 0, time.Second},
		{10 * time.Second, 5 * time.Second, -time.Second},
	} {
		c := &config{ID: "a", Namespace: "ns", LeaseName: "l", LeaseDuration: tm.lease, RenewDeadline: tm.renew,
			RetryPeriod: tm.retry, LocalAddr: "127.0.0.1:0", OpsAddr: ":0", LogLevel: "info"}
		ours := c.validate()
		_, theirs := newElector(c, &fakeLock{id: "a"}, newLeaderView("a", time.Now, nil))
		if ours == nil && theirs != nil {
			t.Errorf("%+v: accepted, but client-go refuses it: %v", tm, theirs)
		}
		if theirs != nil && (ours == nil || !strings.Contains(ours.Error(), "--")) {
			t.Errorf("%+v: client-go refuses it (%v); we say %v", tm, theirs, ours)
		}
	}
}
