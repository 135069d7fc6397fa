package metrics

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/raft"
	"github.com/raft-elector/raft-elector/pkg/transport"
)

const (
	alertsFile     = "../../deploy/prometheus/alerts.yaml"
	operationsFile = "../../docs/operations.md"
)

// ruleFile is the Prometheus rule file format, as far as alerting rules go.
type ruleFile struct {
	Groups []struct {
		Name     string      `json:"name"`
		Interval string      `json:"interval,omitempty"`
		Rules    []alertRule `json:"rules"`
	} `json:"groups"`
}

type alertRule struct {
	Alert         string            `json:"alert"`
	Expr          string            `json:"expr"`
	For           string            `json:"for"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels"`
	Annotations   map[string]string `json:"annotations"`
}

func loadAlerts(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	// Strict: a misspelt key (annotation:, label:) would silently drop what it holds.
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return f
}

// TestAlertRulesAreWellFormed checks the structure Prometheus and Alertmanager need and what
// an on-call engineer needs: every rule has an expression, a duration, a severity, a summary,
// a description and a runbook that exists.
func TestAlertRulesAreWellFormed(t *testing.T) {
	f := loadAlerts(t)
	if len(f.Groups) == 0 {
		t.Fatalf("%s has no groups", alertsFile)
	}
	ops, err := os.ReadFile(operationsFile)
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(ops))
	seen := map[string]bool{}
	groups := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group name %q is empty or repeated", g.Name)
		}
		groups[g.Name] = true
		if len(g.Rules) == 0 {
			t.Errorf("group %s has no rules", g.Name)
		}
		for _, r := range g.Rules {
			if !regexp.MustCompile(`^RaftElector[A-Z][A-Za-z0-9]*$`).MatchString(r.Alert) {
				t.Errorf("alert %q: want a RaftElector... CamelCase name (recording rules do not belong here)", r.Alert)
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", r.Alert)
			}
			if err := balanced(r.Expr); err != "" {
				t.Errorf("%s: expr %q: %s", r.Alert, r.Expr, err)
			}
			if d, err := time.ParseDuration(r.For); r.For == "" || err != nil || d < 0 {
				t.Errorf("%s: for %q is not a duration", r.Alert, r.For)
			}
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[k]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, k)
				}
			}
			for k, v := range r.Annotations {
				if err := balanced(v); err != "" {
					t.Errorf("%s: annotation %s: %s", r.Alert, k, err)
				}
			}
			url := r.Annotations["runbook_url"]
			doc, anchor, ok := strings.Cut(url, "#")
			if !ok || !strings.HasPrefix(url, "https://") || !strings.HasSuffix(doc, "/docs/operations.md") {
				t.Errorf("%s: runbook_url %q, want https://.../docs/operations.md#<section>", r.Alert, url)
			} else if !anchors[anchor] {
				t.Errorf("%s: runbook_url %q: docs/operations.md has no section #%s", r.Alert, url, anchor)
			}
		}
	}
	for _, name := range []string{"RaftElectorNoLeader", "RaftElectorSplitLease", "RaftElectorTooManyLeaderChanges", "RaftElectorTermJump"} {
		if !seen[name] {
			t.Errorf("no alert %s", name)
		}
	}
}

// TestAlertRulesUseExistingMetrics gathers a registry built by New, with every labelled series
// touched once, and checks every raft_elector_* and leader_election_* name an expression uses
// exists, and that every label it matches with = is one the metric has, with a value it takes.
func TestAlertRulesUseExistingMetrics(t *testing.T) {
	series := gatheredSeries(t)
	selector := regexp.MustCompile(`\b((?:raft_elector|leader_election)_[a-z0-9_]*[a-z0-9])\b(\{[^}]*\})?`)
	matcher := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	used := 0
	for _, g := range loadAlerts(t).Groups {
		for _, r := range g.Rules {
			for _, m := range selector.FindAllStringSubmatch(r.Expr, -1) {
				used++
				name, sel := m[1], m[2]
				labels, ok := series[name]
				if !ok {
					t.Errorf("%s: expr uses %s, which a member does not expose", r.Alert, name)
					continue
				}
				for _, mm := range matcher.FindAllStringSubmatch(sel, -1) {
					label, op, value := mm[1], mm[2], mm[3]
					values, ok := labels[label]
					if !ok {
						t.Errorf("%s: %s has no label %s", r.Alert, name, label)
						continue
					}
					if op == "=" && !values[value] {
						t.Errorf("%s: %s{%s=%q} matches nothing; the label takes %v", r.Alert, name, label, value, keys(values))
					}
				}
			}
		}
	}
	if used == 0 {
		t.Fatal("no rule uses a raft-elector metric")
	}
}

// TestRegistryHasTheContractsMetrics: the names DESIGN.md promises, with their types and
// labels, next to the Go and process collectors.
func TestRegistryHasTheContractsMetrics(t *testing.T) {
	m := touchedMetrics()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	for _, want := range []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"raft_elector_is_leader", dto.MetricType_GAUGE, nil},
		{"raft_elector_term", dto.MetricType_GAUGE, nil},
		{"raft_elector_state", dto.MetricType_GAUGE, []string{"state"}},
		{"raft_elector_leader_changes_total", dto.MetricType_COUNTER, nil},
		{"raft_elector_elections_total", dto.MetricType_COUNTER, []string{"result"}},
		{"raft_elector_peers", dto.MetricType_GAUGE, []string{"role"}},
		{"raft_elector_heartbeat_rtt_seconds", dto.MetricType_HISTOGRAM, nil},
		{"raft_elector_rpc_requests_total", dto.MetricType_COUNTER, []string{"code", "rpc"}},
		{"raft_elector_lease_remaining_seconds", dto.MetricType_GAUGE, nil},
		{"leader_election_master_status", dto.MetricType_GAUGE, []string{"name"}},
		{"go_goroutines", dto.MetricType_GAUGE, nil},
		{"process_resident_memory_bytes", dto.MetricType_GAUGE, nil},
	} {
		mf, ok := got[want.name]
		if !ok {
			t.Errorf("no %s", want.name)
			continue
		}
		if mf.GetType() != want.typ {
			t.Errorf("%s is a %v, want %v", want.name, mf.GetType(), want.typ)
		}
		for _, metric := range mf.GetMetric() {
			var names []string
			for _, lp := range metric.GetLabel() {
				names = append(names, lp.GetName())
			}
			if !slices.Equal(names, want.labels) {
				t.Errorf("%s has labels %v, want %v", want.name, names, want.labels)
			}
		}
	}
	for _, fam := range []struct {
		name, label string
		values      []string
	}{
		{"raft_elector_state", "state", []string{"candidate", "follower", "leader", "learner"}},
		{"raft_elector_elections_total", "result", []string{"lost", "prevote_failed", "won"}},
		{"raft_elector_peers", "role", []string{"learner", "reachable", "voter"}},
	} {
		var vals []string
		for _, metric := range got[fam.name].GetMetric() {
			for _, lp := range metric.GetLabel() {
				vals = append(vals, lp.GetValue())
			}
		}
		slices.Sort(vals)
		if !slices.Equal(vals, fam.values) {
			t.Errorf("%s{%s} takes %v, want %v", fam.name, fam.label, vals, fam.values)
		}
	}
}

// touchedMetrics is a member's metrics after one observation of each kind, so that every
// labelled series a running member exposes is there.
func touchedMetrics() *Metrics {
	m := New("c1")
	m.Observe(node.Status{ID: "a", State: raft.StateFollower, Voters: 3, Config: raft.Configuration{Voters: []string{"a", "b", "c"}}})
	m.Observe(node.Status{ID: "a", Term: 1, State: raft.StateLeader, Leader: "a", Voters: 3,
		Config: raft.Configuration{Voters: []string{"a", "b", "c"}}, Reachable: []string{"b", "c"}, LeaseExpiresAt: time.Now().Add(time.Second)})
	for _, code := range []int{0, 200, 204, 400} {
		m.ObserveRPC(string(raft.MsgAppend), code, time.Millisecond)
		m.ObserveRPC(string(raft.MsgVote), code, time.Millisecond)
		m.ObserveRPC(string(raft.MsgTimeoutNow), code, time.Millisecond)
		m.ObserveServed(string(raft.MsgAppend), code)
	}
	m.ObserveDrop("b", transport.DropQueueFull)
	return m
}

// gatheredSeries maps every sample name a member exposes (a histogram's _bucket, _sum and
// _count included) to its labels and the values each takes.
func gatheredSeries(t *testing.T) map[string]map[string]map[string]bool {
	t.Helper()
	mfs, err := touchedMetrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]map[string]bool{}
	add := func(name string, metric *dto.Metric, extra ...*dto.LabelPair) {
		if out[name] == nil {
			out[name] = map[string]map[string]bool{}
		}
		for _, lp := range append(slices.Clone(metric.GetLabel()), extra...) {
			if out[name][lp.GetName()] == nil {
				out[name][lp.GetName()] = map[string]bool{}
			}
			out[name][lp.GetName()][lp.GetValue()] = true
		}
	}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, metric := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, b := range metric.GetHistogram().GetBucket() {
					le := "le"
					v := formatLe(b.GetUpperBound())
					add(name+"_bucket", metric, &dto.LabelPair{Name: &le, Value: &v})
				}
				infLe, inf := "le", "+Inf"
				add(name+"_bucket", metric, &dto.LabelPair{Name: &infLe, Value: &inf})
				add(name+"_sum", metric)
				add(name+"_count", metric)
			case dto.MetricType_SUMMARY:
				add(name+"_sum", metric)
				add(name+"_count", metric)
				add(name, metric)
			default:
				add(name, metric)
			}
		}
	}
	return out
}

func formatLe(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// balanced reports unbalanced brackets or quotes, the typos a YAML parser lets through.
func balanced(s string) string {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inQuote := false
	for _, c := range s {
		switch {
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case pairs[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return "unbalanced " + string(c)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote {
		return "unterminated quote"
	}
	if len(stack) > 0 {
		return "unclosed " + string(stack[len(stack)-1])
	}
	return ""
}

// markdownAnchors returns the GitHub anchors of a markdown document's headings.
func markdownAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range title {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				b.WriteRune(r)
			}
		}
		out[b.String()] = true
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
