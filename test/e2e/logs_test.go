package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// harnessMarker starts the lines the harness itself writes into a member's log file (one per
// process start, with the command line); everything else is the member's stdout and stderr.
const harnessMarker = "=== e2e: "

// memberLogLine is one line a member wrote, parsed as JSON.
type memberLogLine struct {
	n      int // line number in the file, from 1
	text   string
	fields map[string]any
}

func (l memberLogLine) str(k string) string { s, _ := l.fields[k].(string); return s }

// readMemberLog returns the complete lines member i wrote to its log file (a last line
// without its newline is still being written and left out) and fails the test on any line
// that is not a JSON object.
func (c *Cluster) readMemberLog(t testing.TB, i int) []memberLogLine {
	t.Helper()
	m := c.Members[i]
	b, err := os.ReadFile(m.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
		b = b[:k+1]
	} else {
		b = nil
	}
	var out []memberLogLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		if strings.HasPrefix(text, harnessMarker) {
			continue
		}
		l := memberLogLine{n: n, text: text}
		if err := json.Unmarshal([]byte(text), &l.fields); err != nil {
			t.Fatalf("%s log line %d is not a JSON object: %q: %v", m.ID, n, text, err)
		}
		out = append(out, l)
	}
	return out
}

// TestLogsAreJSONWithOneLinePerStateChange runs a 3-member cluster with --log-format=json and
// --log-level=info: every line is a JSON object with hclog's @level, @message and @timestamp;
// a few election timeouts of steady state write nothing at all (no line per heartbeat); and
// each state change is one line with its term, leader and reason.
func TestLogsAreJSONWithOneLinePerStateChange(t *testing.T) {
	// Default timings: a 100ms heartbeat and a 300ms reported lease leave a loaded test
	// machine room, so the steady state stays steady.
	cfg := Config{Members: 3, ExtraArgs: []string{"--log-format=json", "--log-level=info"}}
	c := NewCluster(t, cfg)
	leader, term, _ := c.WaitAgreedLeader(c.All(), leaderWithin)
	leaderID := c.Members[leader].ID

	// The steady state starts once the leader has had a round answered by both followers
	// after the agreement (whatever the election made anyone log is written by then), and
	// lasts until it has had as many heartbeats answered as three election timeouts hold (a
	// round every heartbeat interval to each of two followers).
	heartbeats := func() float64 {
		e, err := c.scrapeMetrics(leader)
		if err != nil {
			return -1
		}
		return e.must(t, leaderID, "raft_elector_heartbeat_rtt_seconds", nil)
	}
	e, err := c.scrapeMetrics(leader)
	if err != nil {
		t.Fatal(err)
	}
	settled := e.must(t, leaderID, "raft_elector_heartbeat_rtt_seconds", nil) + 2
	c.WaitUntil(10*time.Second, "a heartbeat round answered after the agreement", func() bool { return heartbeats() >= settled })
	before := map[int]int{}
	for _, i := range c.All() {
		before[i] = len(c.readMemberLog(t, i))
	}
	rtt0 := settled
	want := rtt0 + float64(3*2*int(c.cfg.Election/c.cfg.Heartbeat))
	c.WaitUntil(30*time.Second, "three election timeouts of heartbeats", func() bool { return heartbeats() >= want })
	c.Logf("%s had %v heartbeats answered; checking the logs", leaderID, want-rtt0)
	rounds := want - rtt0
	for _, i := range c.All() {
		if o, err := c.Observe(i); err != nil || o.Answer.Term != term || o.Answer.Name != leaderID {
			// A stall of the machine (the race detector on a busy CI host) can move the
			// leadership; the lines that logs are then checked like any others below.
			c.Logf("%s answers %+v (%v): leadership moved during the steady state", c.Members[i].ID, o.Answer, err)
		}
	}

	for _, i := range c.All() {
		id := c.Members[i].ID
		lines := c.readMemberLog(t, i)
		if len(lines) == 0 {
			t.Errorf("%s wrote no log line", id)
			continue
		}
		// In the steady state a member logs nothing; a stall of the machine may legitimately
		// log an event (a lapsed lease, a late peer), but never a line per heartbeat.
		if extra := lines[before[i]:]; len(extra) > 0 {
			var texts []string
			events := 0
			for _, l := range extra {
				texts = append(texts, l.text)
				switch l.str("@message") {
				case "state changed", "lease lost", "lease regained", "peer unreachable", "peer reachable again":
					events++
				}
			}
			c.Logf("%s wrote %d lines in the steady state:\n%s", id, len(extra), strings.Join(texts, "\n"))
			if events != len(extra) || float64(len(extra)) > rounds/10 {
				t.Errorf("%s wrote %d lines in %v heartbeat rounds of steady state (%d of them events of a stall); want none:\n%s",
					id, len(extra), rounds, events, strings.Join(texts, "\n"))
			}
		}
		var prev *memberLogLine
		leaderLine := false
		for k, l := range lines {
			for _, key := range []string{"@level", "@message", "@timestamp", "@module"} {
				if l.str(key) == "" {
					t.Errorf("%s line %d has no %s: %s", id, l.n, key, l.text)
				}
			}
			if _, err := time.Parse(time.RFC3339Nano, l.str("@timestamp")); err != nil {
				t.Errorf("%s line %d: @timestamp %q: %v", id, l.n, l.str("@timestamp"), err)
			}
			switch l.str("@level") {
			case "info", "warn", "error":
			default:
				t.Errorf("%s line %d at level %q with --log-level=info: %s", id, l.n, l.str("@level"), l.text)
			}
			switch l.str("@message") {
			case "state changed", "lease lost", "lease regained":
			default:
				continue
			}
			for _, key := range []string{"term", "leader", "reason", "state"} {
				if _, ok := l.fields[key]; !ok {
					t.Errorf("%s line %d: a state change without %s: %s", id, l.n, key, l.text)
				}
			}
			if l.str("reason") == "" {
				t.Errorf("%s line %d: empty reason: %s", id, l.n, l.text)
			}
			if l.str("@message") != "state changed" {
				continue
			}
			// One line per change: each starts where the previous one ended and changes
			// something.
			if prev != nil {
				if l.str("from_state") != prev.str("state") {
					t.Errorf("%s line %d starts from %q, the previous change ended in %q: a change went unlogged\n%s\n%s",
						id, l.n, l.str("from_state"), prev.str("state"), prev.text, l.text)
				}
				if l.str("state") == prev.str("state") && l.fields["term"] == prev.fields["term"] && l.str("leader") == prev.str("leader") {
					t.Errorf("%s line %d repeats the previous change:\n%s\n%s", id, l.n, prev.text, l.text)
				}
			}
			prev = &lines[k]
			if l.str("leader") == leaderID && l.fields["term"] == float64(term) {
				leaderLine = true
				if i == leader && (l.str("state") != "leader" || l.str("reason") != "won the election") {
					t.Errorf("%s line %d: the leader's own line says %s", id, l.n, l.text)
				}
			}
		}
		if !leaderLine {
			t.Errorf("%s has no state-change line naming leader %s in term %d", id, leaderID, term)
		}
	}
}
