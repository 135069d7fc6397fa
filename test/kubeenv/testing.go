package kubeenv

import (
	"context"
	"testing"
)

// StartT starts an Env for a test and stops it in t.Cleanup. Defaults: opts.Dir is
// t.TempDir() and opts.Logf is t.Logf. A failure to start fails the test with the tail of the
// logs; when the test fails later, the cleanup logs the tails too. Missing binaries fail the
// test (they never skip it): CI must run against the real API server.
func StartT(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	env, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubeenv logs (all in %s):\n%s", opts.Dir, env.LogTails())
		}
		if err := env.Stop(); err != nil {
			t.Errorf("stop Kubernetes test environment: %v", err)
		}
	})
	return env
}
