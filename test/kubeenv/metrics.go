package kubeenv

import (
	"fmt"
	"strconv"
	"strings"
)

// SumMetric adds up the samples of the metric called name in a Prometheus text exposition (as
// returned by Env.Metrics) whose labels include every pair in match. For example, the pod reads
// the API server has answered:
//
//	SumMetric(text, "apiserver_request_total", map[string]string{"resource": "pods", "verb": "LIST"})
//
// The API server counts its own internal requests too (RBAC bootstrap, priority-and-fairness
// configuration, lease renewals in kube-system), so a load figure should be the difference
// between two reads, narrowed by labels such as resource="pods".
func SumMetric(text, name string, match map[string]string) (float64, error) {
	var sum float64
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		var labels map[string]string
		switch {
		case strings.HasPrefix(rest, "{"):
			var err error
			labels, rest, err = parseLabels(rest[1:])
			if err != nil {
				return 0, fmt.Errorf("metrics line %d: %w", n+1, err)
			}
		case strings.HasPrefix(rest, " "):
		default:
			continue // a longer metric name with this prefix
		}
		if !labelsMatch(labels, match) {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, fmt.Errorf("metrics line %d: no value", n+1)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %d: %w", n+1, err)
		}
		sum += v
	}
	return sum, nil
}

// parseLabels parses `a="x",b="y"}` (the text after '{') and returns the labels and what
// follows the closing brace.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		eq := strings.Index(s, "=")
		if eq <= 0 || len(s) < eq+2 || s[eq+1] != '"' {
			return nil, "", fmt.Errorf("malformed labels near %q", s)
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var value strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					value.WriteByte('\n')
				default:
					value.WriteByte(s[i])
				}
				continue
			}
			if c == '"' {
				s = s[i+1:]
				closed = true
				break
			}
			value.WriteByte(c)
		}
		if !closed {
			return nil, "", fmt.Errorf("unterminated label value for %s", key)
		}
		labels[key] = value.String()
	}
}

func labelsMatch(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}
