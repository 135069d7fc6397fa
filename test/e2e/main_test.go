package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// binEnv names a prebuilt raft-elector binary to test instead of building one.
const binEnv = "RAFT_ELECTOR_E2E_BIN"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	if raw := os.Getenv(floodEnv); raw != "" {
		os.Exit(floodAttacker(raw)) // TestHostileInput's attacker process, not a test run
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary returns the path of the raft-elector binary, building it on first use. The binary is
// built without -race even when the tests run with it: the suite is about the protocol's
// timing, and a race-instrumented member is several times slower.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv(binEnv); p != "" {
			binPath, buildErr = filepath.Abs(p)
			return
		}
		var err error
		buildDir, err = os.MkdirTemp("", "raft-elector-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		out := filepath.Join(buildDir, "raft-elector")
		if buildErr = goBuild("./cmd/sidecar", out); buildErr != nil {
			return
		}
		binPath = out
	})
	if buildErr != nil {
		t.Fatalf("build raft-elector: %v", buildErr)
	}
	return binPath
}

// goBuild builds the main package pkg of this module into out, without -race.
func goBuild(pkg, out string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %v\n%s", pkg, root, err, b)
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// childEnv is the environment of a member: ours without anything the binary reads as
// configuration (RAFT_ELECTOR_*, and the downward-API variables), so the flags alone decide.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RAFT_ELECTOR_") || strings.HasPrefix(k, "POD_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a loopback port that was free a moment ago. It picks below the kernel's
// ephemeral range, so neither a listener on port 0 nor the source port of an outgoing
// connection (the proxies, the pollers) can take it between the pick and the member's bind;
// what is left (another program picking the same way) is handled by retrying the start.
func freePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	low := ephemeralLow()
	const floor = 20000
	if low-floor >= 2000 {
		for range 200 {
			p := floor + rand.IntN(low-floor)
			if portsUsed[p] {
				continue
			}
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				continue
			}
			ln.Close()
			portsUsed[p] = true
			return p, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	p := ln.Addr().(*net.TCPAddr).Port
	portsUsed[p] = true
	return p, nil
}

func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

func freeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}
