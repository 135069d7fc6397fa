package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/raft-elector/raft-elector/internal/klogroute"
)

func TestMain(m *testing.M) {
	klogroute.Route(hclog.NewNullLogger()) // client-go's elector logs through klog in these tests
	os.Exit(m.Run())
}

func TestRunRefusesBadCommandLines(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(garbage, []byte("{not yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "usage: lease-elector"},
		{nil, 2, "lease-elector: --id is empty and $POD_NAME is not set\n"},
		{[]string{"--id", "a", "--namespace", "ns", "--kubeconfig", garbage}, 2, "lease-elector: --kubeconfig " + garbage},
		{[]string{"--id", "a", "--namespace", "ns"}, 2, "lease-elector: --kubeconfig is empty and there is no in-cluster config"},
	} {
		var out strings.Builder
		code := run(tc.args, envOf(nil), &out)
		if code != tc.code || !strings.HasPrefix(out.String(), tc.want) {
			t.Errorf("run(%q) = %d, %q; want %d, starting %q", tc.args, code, out.String(), tc.code, tc.want)
		}
		if code == 2 && strings.Count(out.String(), "\n") != 1 {
			t.Errorf("run(%q): %q is not one line", tc.args, out.String())
		}
	}
}

// fakeAPIServer serves one Lease (ns/l) as the API server would: it reads protobuf (what
// client-go sends) or JSON, answers JSON (which client-go also accepts) and refuses updates
// from an old resourceVersion. onPut sees every update before it is stored.
type fakeAPIServer struct {
	mu    sync.Mutex
	lease *coordinationv1.Lease
	rv    int
	onPut func(*coordinationv1.Lease)
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const collection = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
	f.mu.Lock()
	defer f.mu.Unlock()
	status := func(code int, reason metav1.StatusReason) {
		writeJSON(w, code, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: reason, Code: int32(code)})
	}
	var in coordinationv1.Lease
	if r.Method != http.MethodGet {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			_, _, err = scheme.Codecs.UniversalDeserializer().Decode(body, nil, &in)
		}
		if err != nil {
			status(http.StatusBadRequest, metav1.StatusReasonBadRequest)
			return
		}
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == collection+"/l":
		if f.lease == nil {
			status(http.StatusNotFound, metav1.StatusReasonNotFound)
			return
		}
		writeJSON(w, http.StatusOK, f.lease)
	case r.Method == http.MethodPost && r.URL.Path == collection:
		if f.lease != nil {
			status(http.StatusConflict, metav1.StatusReasonAlreadyExists)
			return
		}
		f.store(&in)
		writeJSON(w, http.StatusCreated, f.lease)
	case r.Method == http.MethodPut && r.URL.Path == collection+"/l":
		if f.lease == nil || in.ResourceVersion != f.lease.ResourceVersion {
			status(http.StatusConflict, metav1.StatusReasonConflict)
			return
		}
		if f.onPut != nil {
			f.onPut(&in)
		}
		f.store(&in)
		writeJSON(w, http.StatusOK, f.lease)
	default:
		status(http.StatusNotFound, metav1.StatusReasonNotFound)
	}
}

func (f *fakeAPIServer) store(l *coordinationv1.Lease) {
	f.rv++
	l.TypeMeta = metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"}
	l.ResourceVersion = strconv.Itoa(f.rv)
	f.lease = l
}

func (f *fakeAPIServer) holder() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lease == nil || f.lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *f.lease.Spec.HolderIdentity
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRunLeadsAndReleasesOnSIGTERM runs the whole program against a fake API server: it
// acquires the Lease, answers on its local API, counts its requests, and on SIGTERM releases
// the Lease only after its local API has stopped saying it leads, then exits 0.
func TestRunLeadsAndReleasesOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the program for a few seconds")
	}
	localAddr, opsAddr := freeAddr(t), freeAddr(t)
	get := func(url string) (int, string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	released := make(chan string, 1)
	api := &fakeAPIServer{onPut: func(l *coordinationv1.Lease) {
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "" {
			_, body, err := get("http://" + localAddr + "/leader")
			if err != nil {
				body = err.Error()
			}
			released <- body
		}
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "`+srv.URL+`"}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
`), 0o600); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run([]string{"--id", "pod-0", "--namespace", "ns", "--lease-name", "l", "--kubeconfig", kubeconfig,
			"--lease-duration", "2s", "--renew-deadline", "1s", "--retry-period", "200ms",
			"--local-addr", localAddr, "--ops-addr", opsAddr}, envOf(nil), &logs)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, _ := get("http://" + localAddr + "/leader")
		var a Answer
		if code == http.StatusOK && json.Unmarshal([]byte(body), &a) == nil && a.IsLeader {
			if a.Name != "pod-0" || a.Self != "pod-0" || a.Term != 0 || a.State != "leader" {
				t.Errorf("leading answer %s", body)
			}
			break
		}
		select {
		case c := <-exit:
			t.Fatalf("run exited with %d:\n%s", c, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not leading within 10s (last answer %d %s):\n%s", code, body, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _, err := get("http://" + opsAddr + "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %v", code, err)
	}
	_, metrics, err := get("http://" + opsAddr + "/metrics")
	for _, m := range []string{`lease_elector_api_requests_total{verb="GET"}`, `lease_elector_api_requests_total{verb="POST"} 1`,
		"lease_elector_is_leader 1", "lease_elector_leader_changes_total 1"} {
		if err != nil || !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q (%v)", m, err)
		}
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-exit:
		if c != 0 {
			t.Errorf("exit code %d after SIGTERM", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not return within 10s of SIGTERM:\n%s", logs.String())
	}
	select {
	case body := <-released:
		var a Answer
		if err := json.Unmarshal([]byte(body), &a); err != nil || a.IsLeader || a.Name != "" {
			t.Errorf("the local API said %q when the Lease was released; want the claim withdrawn", body)
		}
	default:
		t.Errorf("the Lease was not released (holder %q)", api.holder())
	}
	for _, line := range []string{"answer changed", "shutting down", "signal=terminated", "stopped"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "answer changed"); n > 3 {
		t.Errorf("%d answer changes logged for one leadership:\n%s", n, logs.String())
	}
}
