package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// metricSelector matches a raft_elector_ metric and its label matchers (empty when it has none).
var metricSelector = regexp.MustCompile(`(raft_elector_[a-z_]+)(\{[^}]*\}|)`)

// alertRule is one alerting rule of a PrometheusRule or a rule file.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// alertRules reads the alerting rules of rule groups (a PrometheusRule's spec or a rule file).
func alertRules(t *testing.T, doc map[string]any) map[string]alertRule {
	t.Helper()
	var spec struct {
		Groups []struct {
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	out := map[string]alertRule{}
	for _, g := range spec.Groups {
		for _, a := range g.Rules {
			if a.Alert != "" {
				out[a.Alert] = a
			}
		}
	}
	return out
}

func prometheusAlerts(t *testing.T, pr *unstructured.Unstructured) map[string]alertRule {
	t.Helper()
	spec, _, _ := unstructured.NestedMap(pr.Object, "spec")
	return alertRules(t, spec)
}

// TestAlertsMatchThePlainRuleFile: with its default values, the chart's PrometheusRule holds
// the rules of deploy/prometheus/alerts.yaml (same alerts, expressions, durations and
// severities), only scoped to the release.
func TestAlertsMatchThePlainRuleFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	plain := alertRules(t, file)
	r := rendered{name: "alerts", namespace: "alerts", release: testRelease, values: loadValues(t),
		objs: render(t, chartDir(t), testRelease, "alerts", "--set", "prometheusRule.enabled=true")}
	prs := r.find("PrometheusRule", "")
	if len(prs) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(prs))
	}
	chart := prometheusAlerts(t, prs[0])
	scope := fmt.Sprintf(`namespace=%q,job=%q`, r.namespace, r.suffixed("metrics"))
	unscope := strings.NewReplacer("{"+scope+"}", "", ","+scope, "")
	for name, p := range plain {
		c, ok := chart[name]
		if !ok {
			t.Errorf("deploy/prometheus/alerts.yaml has %s; the chart does not", name)
			continue
		}
		if got, want := normalizePromQL(unscope.Replace(c.Expr)), normalizePromQL(p.Expr); got != want {
			t.Errorf("%s: the chart's expression (scope removed)\n  %s\ndiffers from deploy/prometheus/alerts.yaml's\n  %s", name, got, want)
		}
		if c.For != p.For || c.Labels["severity"] != p.Labels["severity"] {
			t.Errorf("%s: the chart says for %s severity %s; deploy/prometheus/alerts.yaml for %s severity %s",
				name, c.For, c.Labels["severity"], p.For, p.Labels["severity"])
		}
	}
	for name := range chart {
		if _, ok := plain[name]; !ok {
			t.Errorf("the chart has alert %s; deploy/prometheus/alerts.yaml does not", name)
		}
	}
}

// normalizePromQL makes two spellings of one expression compare equal: one space between
// tokens, none just inside parentheses.
func normalizePromQL(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.NewReplacer("( ", "(", " )", ")").Replace(s)
}
