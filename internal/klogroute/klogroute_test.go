package klogroute

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"k8s.io/klog/v2"
)

func TestWriterMapsSeverities(t *testing.T) {
	var out bytes.Buffer
	w := Writer{hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Debug})}
	for _, line := range []string{
		"I1125 20:00:00.000000  123 leaderelection.go:257] \"Attempting to acquire leader lease...\" lock=\"ns/l\"\n",
		"W1125 20:00:00.000000  123 x.go:1] careful\n",
		"E1125 20:00:00.000000  123 leaderelection.go:436] \"Error retrieving lease lock\" err=\"refused\"\n",
	} {
		if n, err := w.Write([]byte(line)); n != len(line) || err != nil {
			t.Errorf("Write = %d, %v", n, err)
		}
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{`[DEBUG] "Attempting to acquire leader lease..." lock="ns/l"`, "[WARN]  careful", `[ERROR] "Error retrieving lease lock" err="refused"`}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), out.String())
	}
	for i := range want {
		if !strings.HasSuffix(got[i], want[i]) {
			t.Errorf("line %d: %q, want it to end in %q", i, got[i], want[i])
		}
	}
}

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

// With klog's defaults an error written to one shared output appears once per severity at or
// below it; routed, it appears once.
func TestRouteWritesEachLineOnce(t *testing.T) {
	var out lockedBuffer
	Route(hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Debug}))
	klog.ErrorS(nil, "the watch failed", "resource", "pods")
	klog.Warning("a warning")
	klog.Flush()
	text := out.String()
	if n := strings.Count(text, "the watch failed"); n != 1 {
		t.Errorf("the error appears %d times, want once:\n%s", n, text)
	}
	if n := strings.Count(text, "a warning"); n != 1 {
		t.Errorf("the warning appears %d times, want once:\n%s", n, text)
	}
	if !strings.Contains(text, "[ERROR]") || !strings.Contains(text, "[WARN]") {
		t.Errorf("severities lost:\n%s", text)
	}
}
