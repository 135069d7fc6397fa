package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// helmBinEnv names a helm binary to use instead of the one hack/helm/build.sh builds.
const helmBinEnv = "HELM_BIN"

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// repoRoot is the repository root: the directory above the working directory that holds go.mod
// and the chart.
func repoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for dir := wd; ; dir = filepath.Dir(dir) {
			if fileExists(filepath.Join(dir, "go.mod")) && fileExists(filepath.Join(dir, "deploy", "helm", "raft-elector", "Chart.yaml")) {
				rootDir = dir
				return
			}
			if filepath.Dir(dir) == dir {
				rootErr = fmt.Errorf("no repository root (go.mod beside deploy/helm/raft-elector) above %s", wd)
				return
			}
		}
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return rootDir
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func chartDir(t testing.TB) string {
	return filepath.Join(repoRoot(t), "deploy", "helm", "raft-elector")
}

// helmBinary is the helm that hack/helm/build.sh built (or $HELM_BIN). A missing binary fails
// the test: CI must check the chart, not skip it.
func helmBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(helmBinEnv); p != "" {
		return p
	}
	dir := os.Getenv("HELM_ENV_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), ".cache", "helm")
	}
	p := filepath.Join(dir, "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no helm at %s: run hack/helm/build.sh (make test does) to build it from the Go module proxy "+
			"(a minute or two the first time, cached in .cache/helm): %v", p, err)
	}
	return p
}

// helm runs the helm binary with Helm's config, cache and data homes and the Kubernetes
// discovery cache in a temporary directory (nothing is written to the user's) and returns its standard output. extraEnv adds
// environment variables (KUBECONFIG). Without a KUBECONFIG in extraEnv, helm gets /dev/null: the
// offline commands must not reach any cluster.
func helm(t testing.TB, extraEnv []string, args ...string) (string, error) {
	t.Helper()
	home := helmHome(t)
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		// client-go's discovery cache (default ~/.kube/cache) when helm talks to a cluster.
		"KUBECACHEDIR="+filepath.Join(home, "kube-cache"),
		"KUBECONFIG="+os.DevNull,
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

var (
	homeOnce sync.Once
	homeDir  string
)

// helmHome is one temporary Helm home for the whole test binary, removed by TestMain.
func helmHome(t testing.TB) string {
	homeOnce.Do(func() {
		d, err := os.MkdirTemp("", "raft-elector-chart-helm-")
		if err != nil {
			panic(err)
		}
		homeDir = d
	})
	return homeDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if homeDir != "" {
		os.RemoveAll(homeDir)
	}
	os.Exit(code)
}

// scenario is one ci/*-values.yaml file of the chart.
type scenario struct {
	name string // the file name without -values.yaml
	path string
}

func scenarios(t testing.TB) []scenario {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml scenarios in %s", chartDir(t))
	}
	sort.Strings(files)
	var out []scenario
	for _, f := range files {
		out = append(out, scenario{name: strings.TrimSuffix(filepath.Base(f), "-values.yaml"), path: f})
	}
	return out
}

// render runs helm template for release in namespace and returns every rendered object, hooks
// included.
func render(t testing.TB, chart, release, namespace string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helm(t, nil, append([]string{"template", release, chart, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(out)
	if err != nil {
		t.Fatalf("helm template %s: %v", strings.Join(args, " "), err)
	}
	return objs
}

// decodeObjects splits a multi-document YAML stream into objects, skipping empty documents.
func decodeObjects(manifest string) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%v in:\n%s", err, doc)
		}
		if len(m) == 0 {
			continue // only comments
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// chartMeta is what the tests read from Chart.yaml.
type chartMeta struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

func readChartMeta(t testing.TB) chartMeta {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m chartMeta
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// probeValues is one probe's values.
type probeValues struct {
	Enabled             bool
	InitialDelaySeconds int32
	PeriodSeconds       int32
	TimeoutSeconds      int32
	FailureThreshold    int32
}

// chartValues is the part of the chart's values the tests compare the objects with. It is
// filled from values.yaml and then from a scenario file, as Helm merges them: maps merge key by
// key, everything else is replaced (encoding/json does the same when it decodes into a filled
// value).
type chartValues struct {
	NameOverride      string
	FullnameOverride  string
	CommonLabels      map[string]string
	CommonAnnotations map[string]string
	Image             struct{ Repository, Tag, Digest, PullPolicy string }
	ServiceAccount    struct {
		Create bool
		Name   string
	}
	RBAC struct {
		Create bool
	} `json:"rbac"`
	Bootstrap struct {
		Create bool
		Name   string
	}
	Auth struct {
		Enabled        bool
		AcceptUnsigned bool
		ExistingSecret string
		SecretKey      string
	}
	Sidecar struct {
		Native                                         bool
		HeartbeatInterval, ElectionTimeout             string
		MaxVoters                                      int
		LabelKey, LeaderLabelValue, FollowerLabelValue string
		LogLevel, LogFormat                            string
		ExtraArgs                                      []string
		ExtraEnv                                       []map[string]any
		Resources                                      map[string]map[string]string
		SecurityContext                                map[string]any
		LivenessProbe, ReadinessProbe, StartupProbe    probeValues
		DataVolume                                     struct{ SizeLimit string }
	}
	Workload struct {
		Enabled                       bool
		Kind                          string
		Replicas                      int32
		PodLabels, PodAnnotations     map[string]string
		TerminationGracePeriodSeconds int64
		SpreadAcrossNodes             string
		TopologySpreadConstraints     []any
		App                           struct{ ExtraArgs []string }
	}
	Members struct {
		SelectorLabels map[string]string
	}
	LeaderService struct {
		Enabled    bool
		Port       int32
		TargetPort any
	}
	Metrics struct {
		Service struct{ Enabled bool }
	}
	ServiceMonitor struct {
		Enabled  bool
		Labels   map[string]string
		Interval string
	}
	PrometheusRule struct {
		Enabled              bool
		TooManyLeaderChanges struct {
			Threshold float64
			Window    string
		}
	}
	PodDisruptionBudget struct {
		Enabled        bool
		MaxUnavailable any
		MinAvailable   any
	}
	NetworkPolicy struct {
		Enabled bool
		Ops     struct{ From []any }
		App     struct{ Ports, From []any }
		// ExtraIngress is compared as JSON.
		ExtraIngress []any
	}
	Tests struct{ Timeout string }
}

// loadValues merges values.yaml and the given files (later ones win) the way Helm does.
func loadValues(t testing.TB, files ...string) chartValues {
	t.Helper()
	var v chartValues
	for _, f := range append([]string{filepath.Join(chartDir(t), "values.yaml")}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return v
}
