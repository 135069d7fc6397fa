package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The image's user and data dir (Dockerfile USER, the chart's emptyDir mount).
const (
	imageUID = 65532
	dataDir  = "/var/lib/raft-elector"
)

// requireSandbox fails the test, saying what is missing, unless this process can build the
// sandbox: root, util-linux unshare and mount, coreutils chroot, and a mount namespace.
func requireSandbox(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the sandbox tests run as root (as on the developers' machines and in CI) to mount and chroot; this is uid %d", os.Geteuid())
	}
	for _, tool := range []string{"unshare", "mount", "chroot", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the sandbox tests need %s (util-linux unshare and mount, coreutils chroot): %v", tool, err)
		}
	}
	if out, err := exec.Command("unshare", "--mount", "--propagation", "private", "--fork", "true").CombinedOutput(); err != nil {
		t.Fatalf("unshare --mount fails here (a container without CAP_SYS_ADMIN?): %v\n%s", err, out)
	}
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sandbox is one run of testdata/sandbox.sh under unshare --mount.
type sandbox struct {
	work string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, once done is closed
}

// startSandbox runs the image's binary in the sandbox with the data dir in state data (rw, ro
// or none) and flags; it is killed when the test ends, if still running.
func startSandbox(t *testing.T, data string, flags ...string) *sandbox {
	t.Helper()
	bin, _ := imageBinary(t)
	script, err := filepath.Abs(filepath.Join("testdata", "sandbox.sh"))
	if err != nil {
		t.Fatal(err)
	}
	s := &sandbox{work: t.TempDir(), out: &lockedBuffer{}, done: make(chan struct{})}
	args := append([]string{"--mount", "--propagation", "private", "--fork", "/bin/sh", script, data, bin, s.work}, flags...)
	s.cmd = exec.Command("unshare", args...)
	// The member's environment is the image's: PATH, and nothing the binary reads as settings.
	s.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start unshare: %v", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
			return
		default:
		}
		// The member keeps unshare's process group across chroot and the change of user.
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	})
	return s
}

func (s *sandbox) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// pid waits for the member's pid, which the script writes just before it execs the member.
func (s *sandbox) pid(t *testing.T, deadline time.Time) int {
	t.Helper()
	for {
		if b, err := os.ReadFile(filepath.Join(s.work, "pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		if s.exited() {
			t.Fatalf("the sandbox ended before it started the member: %v\n%s", s.err, s.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox did not start the member in time\n%s", s.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its exit code.
func (s *sandbox) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(d):
		t.Fatalf("the member did not exit within %v\n%s", d, s.out)
	}
	var ee *exec.ExitError
	if s.err != nil && !errors.As(s.err, &ee) {
		t.Fatalf("wait for unshare: %v", s.err)
	}
	return s.cmd.ProcessState.ExitCode()
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a loopback port that was free a moment ago, below the kernel's ephemeral
// range so that no outgoing connection's source port takes it before the member binds it.
func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const floor = 20000
	for range 200 {
		p := floor + rand.IntN(max(low-floor, 1000))
		if portsUsed[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		portsUsed[p] = true
		return p
	}
	t.Fatal("no free loopback port")
	return 0
}

// memberFlags are the flags of a one-member static cluster on three fresh loopback ports.
func memberFlags(t *testing.T) (flags []string, localAddr, opsAddr string) {
	peer := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	localAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	opsAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	return []string{"--discovery=static", "--id=a", "--peers=a=" + peer, "--peer-addr=" + peer,
		"--data-dir=" + dataDir, "--local-addr=" + localAddr, "--ops-addr=" + opsAddr}, localAddr, opsAddr
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func get(url string) (int, []byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// leaderAnswer is the part of GET /leader the test reads.
type leaderAnswer struct {
	Name     string `json:"name"`
	Self     string `json:"self"`
	IsLeader bool   `json:"isLeader"`
	Term     uint64 `json:"term"`
}

// TestSandboxReadOnlyRootNonRoot runs the image's binary as the image runs it (a read-only
// root holding nothing but the binary, uid and gid 65532, no capabilities, a tmpfs data dir)
// and checks that it elects itself, serves its APIs, keeps its state in the data dir, sees no
// other writable file system, and exits cleanly on SIGTERM.
func TestSandboxReadOnlyRootNonRoot(t *testing.T) {
	requireSandbox(t)
	var (
		s               *sandbox
		pid             int
		localAddr, opsA string
		answer          leaderAnswer
	)
	// A port taken by another program between the pick and the bind fails the start: retry
	// with new ports.
	for attempt := 1; ; attempt++ {
		var flags []string
		flags, localAddr, opsA = memberFlags(t)
		s = startSandbox(t, "rw", flags...)
		pid = s.pid(t, time.Now().Add(30*time.Second))
		var lastErr error
		deadline := time.Now().Add(30 * time.Second)
		for !s.exited() && time.Now().Before(deadline) {
			code, body, err := get("http://" + localAddr + "/leader")
			if err == nil && code == http.StatusOK {
				if err = json.Unmarshal(body, &answer); err == nil && answer.IsLeader && answer.Term >= 1 {
					break
				}
				err = fmt.Errorf("GET /leader: %s", body)
			} else if err == nil {
				err = fmt.Errorf("GET /leader: %d %s", code, body)
			}
			lastErr = err
			time.Sleep(20 * time.Millisecond)
		}
		if answer.IsLeader {
			break
		}
		if s.exited() && strings.Contains(s.out.String(), "address already in use") && attempt < 3 {
			t.Logf("attempt %d: a port was taken; retrying\n%s", attempt, s.out)
			continue
		}
		t.Fatalf("the member did not report itself leader (last: %v); exited: %v %v\n%s", lastErr, s.exited(), s.err, s.out)
	}
	if answer.Name != "a" || answer.Self != "a" {
		t.Errorf("GET /leader: %+v, want leader and self a", answer)
	}

	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		code, body, err := get("http://" + opsA + p)
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s on the ops port: %d %v\n%.300s", p, code, err, body)
			continue
		}
		if p == "/metrics" {
			if !regexp.MustCompile(`(?m)^raft_elector_is_leader 1$`).Match(body) {
				t.Errorf("/metrics has no raft_elector_is_leader 1")
			}
			// The process collector reads /proc, which a container runtime provides.
			if !bytes.Contains(body, []byte("\nprocess_resident_memory_bytes ")) {
				t.Errorf("/metrics has no process_resident_memory_bytes")
			}
		}
	}

	// The member's credentials: the image's user and group, no capabilities.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(imageUID)
	for _, line := range strings.Split(string(status), "\n") {
		key, val, _ := strings.Cut(line, ":")
		f := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			if len(f) != 4 || slices.ContainsFunc(f, func(v string) bool { return v != want }) {
				t.Errorf("member %s: %v, want %s (real, effective, saved, fs)", key, f, want)
			}
		case "Groups":
			if slices.ContainsFunc(f, func(v string) bool { return v != want }) {
				t.Errorf("member supplementary groups %v, want none but %s", f, want)
			}
		case "CapEff", "CapPrm":
			if len(f) != 1 || strings.Trim(f[0], "0") != "" {
				t.Errorf("member %s %v, want no capabilities", key, f)
			}
		}
	}

	// What the member sees: every file system read-only except its data dir.
	mounts := memberMounts(t, pid)
	t.Logf("mounts the member sees: %v", mounts)
	var writable []string
	for mp, opts := range mounts {
		if slices.Contains(opts, "rw") {
			writable = append(writable, mp)
		}
	}
	slices.Sort(writable)
	if !slices.Equal(writable, []string{dataDir}) {
		t.Errorf("writable mounts the member sees: %v, want only %s (all mounts: %v)", writable, dataDir, mounts)
	}

	// Its durable state is in the data dir, written as the image's user.
	root := fmt.Sprintf("/proc/%d/root", pid)
	entries, err := os.ReadDir(filepath.Join(root, dataDir))
	if err != nil {
		t.Fatalf("list the data dir through %s: %v", root, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	t.Logf("data dir %s: %v", dataDir, names)
	state := filepath.Join(root, dataDir, "raft-state.json")
	st, err := os.Stat(state)
	if err != nil {
		t.Fatalf("no state file in the data dir: %v", err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != imageUID || sys.Gid != imageUID {
		t.Errorf("state file owned by %v, want %d:%d", st.Sys(), imageUID, imageUID)
	}
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk struct {
		ID    string `json:"id"`
		State struct {
			Term uint64 `json:"term"`
		} `json:"state"`
	}
	if err := json.Unmarshal(b, &onDisk); err != nil || onDisk.ID != "a" || onDisk.State.Term < 1 {
		t.Errorf("state file: %s (%v), want member a with term >= 1", b, err)
	}

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM the member: %v", err)
	}
	if code := s.wait(t, 30*time.Second); code != 0 {
		t.Errorf("after SIGTERM the member exited with %d, want 0\n%s", code, s.out)
	}
	if t.Failed() {
		t.Logf("member output:\n%s", s.out)
	}
}

// memberMounts returns the mounts the process sees (mount point → its options), from its
// mountinfo; the kernel lists only those under the process's root, relative to it.
func memberMounts(t *testing.T, pid int) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("mountinfo line %q", line)
		}
		mounts[f[4]] = strings.Split(f[5], ",")
	}
	return mounts
}

// TestSandboxNeedsWritableDataDir: the same run with the data dir read-only, or missing under
// the read-only root, does not start: exit code 1 and an error naming the data dir. So the
// member writes its state nowhere else, and says what is wrong when it cannot.
func TestSandboxNeedsWritableDataDir(t *testing.T) {
	requireSandbox(t)
	for _, data := range []string{"ro", "none"} {
		t.Run("data-dir-"+data, func(t *testing.T) {
			flags, _, _ := memberFlags(t)
			s := startSandbox(t, data, flags...)
			code := s.wait(t, 30*time.Second)
			out := s.out.String()
			if !strings.Contains(out, "sandbox: exec") {
				t.Fatalf("the sandbox script failed before it started the member (exit %d):\n%s", code, out)
			}
			if code != 1 {
				t.Errorf("exit code %d, want 1 (a startup error)", code)
			}
			var msg string
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "raft-elector: ") {
					msg = line
				}
			}
			if !strings.Contains(msg, dataDir) || !strings.Contains(msg, "read-only file system") {
				t.Errorf("want a one-line error naming the data dir %s and why, got %q\n%s", dataDir, msg, out)
			}
			t.Logf("%s", msg)
		})
	}
}
