package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/raft-elector/raft-elector/pkg/bootstrap"
	"github.com/raft-elector/raft-elector/test/kubeenv"
)

const (
	fieldManager = "raft-elector-chart-test"
	// apiBudget bounds one step against the API server (a few calls); settleBudget bounds a wait
	// for something the API server does asynchronously (a CRD being established, a watch).
	apiBudget    = 30 * time.Second
	settleBudget = 30 * time.Second
)

// One API server for every subtest (it takes seconds to start), as in test/kube; each subtest
// works in namespaces of its own.
func TestChartAgainstAPIServer(t *testing.T) {
	helmBinary(t) // fail at once, before starting anything, when helm is missing
	begin := time.Now()
	env := kubeenv.StartT(t, kubeenv.Options{})
	k := newKube(t, env)
	k.installCRDs(t)
	t.Logf("environment and CRDs ready in %s", time.Since(begin).Round(time.Millisecond))

	t.Run("every scenario applies with strict field validation", func(t *testing.T) {
		for _, sc := range scenarios(t) {
			t.Run(sc.name, func(t *testing.T) { testScenarioApplies(t, k, sc) })
		}
	})
	t.Run("the Role lets a member bootstrap the chart's ConfigMap and nothing more", func(t *testing.T) {
		testRoleWithChartBootstrapObject(t, k)
	})
	t.Run("the Role lets a member create the bootstrap object when the chart does not", func(t *testing.T) {
		testRoleWithoutChartBootstrapObject(t, k)
	})
	t.Run("helm install, upgrade keeps the key and the bootstrap record, uninstall removes them", func(t *testing.T) {
		testHelmLifecycle(t, k)
	})
	t.Logf("whole test took %s", time.Since(begin).Round(time.Millisecond))
}

// kube is the API server as the tests use it: the admin's typed and dynamic clients and a REST
// mapper that knows the CRDs once installCRDs has run.
type kube struct {
	env    *kubeenv.Env
	admin  kubernetes.Interface
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newKube(t *testing.T, env *kubeenv.Env) *kube {
	t.Helper()
	dyn, err := dynamic.NewForConfig(env.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &kube{
		env:    env,
		admin:  env.AdminClient,
		dyn:    dyn,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.AdminClient.Discovery())),
	}
}

// resource finds the API resource of an object and whether it is namespaced.
func (k *kube) resource(t *testing.T, o *unstructured.Unstructured) (dynamic.NamespaceableResourceInterface, bool) {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
	}
	return k.dyn.Resource(m.Resource), m.Scope.Name() == meta.RESTScopeNameNamespace
}

// apply server-side applies objs with strict field validation: a field the API server's schema
// does not know, a wrong type or a failed validation is an error.
func (k *kube) apply(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	for _, o := range objs {
		res, namespaced := k.resource(t, o)
		data, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		var ri dynamic.ResourceInterface = res
		if namespaced {
			ri = res.Namespace(o.GetNamespace())
		}
		_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
			FieldManager: fieldManager, Force: new(true), FieldValidation: metav1.FieldValidationStrict})
		if err != nil {
			t.Fatalf("server-side apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// installCRDs creates our CRDs for the Prometheus Operator kinds (testdata/crds; not the
// operator's own) and waits until the API server serves them.
func (k *kube) installCRDs(t *testing.T) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in testdata/crds: %v", err)
	}
	var crds []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeObjects(string(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		crds = append(crds, objs...)
	}
	k.apply(t, crds)
	ctx, cancel := context.WithTimeout(t.Context(), settleBudget)
	defer cancel()
	for _, crd := range crds {
		res, _ := k.resource(t, crd)
		waitFor(t, ctx, "CRD "+crd.GetName()+" established", func() bool {
			got, err := res.Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return false
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true
				}
			}
			return false
		})
	}
	k.mapper.Reset()
}

func (k *kube) createNamespace(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	_, err := k.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// testScenarioApplies applies every object of a scenario, the helm test pod included, and
// reads each back.
func testScenarioApplies(t *testing.T, k *kube, sc scenario) {
	ns := "ci-" + sc.name
	k.createNamespace(t, ns)
	objs := render(t, chartDir(t), testRelease, ns, "-f", sc.path)
	k.apply(t, objs)
	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	kinds := map[string]int{}
	for _, o := range objs {
		res, _ := k.resource(t, o)
		if _, err := res.Namespace(ns).Get(ctx, o.GetName(), metav1.GetOptions{}); err != nil {
			t.Errorf("%s %s was applied but cannot be read: %v", o.GetKind(), o.GetName(), err)
		}
		kinds[o.GetKind()]++
	}
	t.Logf("%d objects applied: %v", len(objs), kinds)
}

// member is a sidecar's view of the API: the chart's ServiceAccount's token, and the
// bootstrap object as pkg/bootstrap reads and writes it.
type member struct {
	client kubernetes.Interface
	ns     string
}

func (k *kube) memberClient(t *testing.T, ns, serviceAccount string) member {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	cfg, _, err := k.env.ServiceAccountConfig(ctx, ns, serviceAccount)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return member{client: c, ns: ns}
}

func (m member) bootstrapObject(t *testing.T, name string) *bootstrap.Object {
	t.Helper()
	o, err := bootstrap.New(bootstrap.Config{Client: m.client, Namespace: m.ns, Name: name, Base: "k8s-charttest"})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// resolveAndWatch runs what a member without state does with the bootstrap object (Resolve),
// then has a second member watch it (Run: list and watch by name) until it sees the record.
// It returns the record and whether the first member won.
func (m member) resolveAndWatch(t *testing.T, name string) (bootstrap.Record, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), settleBudget)
	defer cancel()
	rec, won, err := m.bootstrapObject(t, name).Resolve(ctx, "web-0_0000-uid-0")
	if err != nil {
		t.Fatalf("the first member resolves the bootstrap object %s with the chart's Role: %v", name, err)
	}
	watcher := m.bootstrapObject(t, name)
	watchCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- watcher.Run(watchCtx) }()
	waitFor(t, ctx, "a second member's watch of "+name+" to see the record", func() bool {
		return watcher.Latest().ClusterID == rec.ClusterID
	})
	stop()
	if err := <-done; err != nil {
		t.Errorf("watch the bootstrap object: %v", err)
	}
	other, won2, err := m.bootstrapObject(t, name).Resolve(ctx, "web-1_0000-uid-1")
	if err != nil || won2 || other.ClusterID != rec.ClusterID {
		t.Errorf("a second member resolves to %+v (won %v, err %v), want the first member's cluster %s", other, won2, err, rec.ClusterID)
	}
	return rec, won
}

// allowed and forbidden check the outcome of a call made with the member's token.
func allowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("the chart's Role should allow %s: %v", what, err)
	}
}

func forbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("the chart's Role should forbid %s; got %v", what, err)
	}
}

// checkMemberPodAccess: the member reads and watches pods and patches their labels; it cannot
// create or delete them, nor reach other namespaces, secrets or anything cluster-wide.
func checkMemberPodAccess(t *testing.T, k *kube, m member, r rendered) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Labels: r.memberLabels()}}
	if _, err := kubeenv.CreateRunningPod(ctx, k.admin, m.ns, pod, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	pods := m.client.CoreV1().Pods(m.ns)
	sel := labels.SelectorFromSet(r.memberLabels()).String()
	_, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
	allowed(t, "listing the member pods", err)
	w, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: sel})
	allowed(t, "watching the member pods", err)
	if err == nil {
		w.Stop()
	}
	_, err = pods.Get(ctx, "web-0", metav1.GetOptions{})
	allowed(t, "reading a pod", err)
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, r.values.Sidecar.LabelKey, r.values.Sidecar.LeaderLabelValue)
	_, err = pods.Patch(ctx, "web-0", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	allowed(t, "labelling a pod", err)
	forbidden(t, "deleting a pod", pods.Delete(ctx, "web-0", metav1.DeleteOptions{}))
	_, err = pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "intruder"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
	forbidden(t, "creating a pod", err)
	_, err = m.client.CoreV1().Secrets(m.ns).List(ctx, metav1.ListOptions{})
	forbidden(t, "listing secrets", err)
	_, err = m.client.CoreV1().Secrets(m.ns).Get(ctx, r.authSecretName(), metav1.GetOptions{})
	forbidden(t, "reading the auth Secret through the API (it is mounted)", err)
	_, err = m.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	forbidden(t, "listing pods of another namespace", err)
	_, err = m.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	forbidden(t, "listing namespaces", err)
	_, err = m.client.RbacV1().Roles(m.ns).List(ctx, metav1.ListOptions{})
	forbidden(t, "listing Roles", err)
}

// checkOtherConfigMaps: the member reaches no ConfigMap but the bootstrap object.
func checkOtherConfigMaps(t *testing.T, k *kube, m member, bootstrapName string, mayCreate bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-settings"}, Data: map[string]string{"a": "b"}}
	if _, err := k.admin.CoreV1().ConfigMaps(m.ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cms := m.client.CoreV1().ConfigMaps(m.ns)
	_, err := cms.Get(ctx, "app-settings", metav1.GetOptions{})
	forbidden(t, "reading another ConfigMap", err)
	_, err = cms.List(ctx, metav1.ListOptions{})
	forbidden(t, "listing every ConfigMap", err)
	_, err = cms.List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", bootstrapName).String()})
	allowed(t, "listing the bootstrap ConfigMap by name", err)
	forbidden(t, "deleting the bootstrap ConfigMap", cms.Delete(ctx, bootstrapName, metav1.DeleteOptions{}))
	_, err = cms.Update(ctx, other, metav1.UpdateOptions{})
	forbidden(t, "updating another ConfigMap", err)
	_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "made-by-member"}}, metav1.CreateOptions{})
	if mayCreate {
		// RBAC cannot restrict create to a name: documented in the chart (bootstrap.create).
		allowed(t, "creating a ConfigMap when the chart does not create the bootstrap object", err)
	} else {
		forbidden(t, "creating a ConfigMap when the chart creates the bootstrap object", err)
	}
}

func testRoleWithChartBootstrapObject(t *testing.T, k *kube) {
	const ns = "rbac-default"
	k.createNamespace(t, ns)
	sc := scenarioNamed(t, "default")
	r := renderScenario(t, sc, ns)
	k.apply(t, r.objs)
	m := k.memberClient(t, ns, r.serviceAccountName())
	rec, won := m.resolveAndWatch(t, r.bootstrapName())
	if !won {
		t.Errorf("the first member did not claim the empty bootstrap object: %+v", rec)
	}
	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	cm, err := k.admin.CoreV1().ConfigMaps(ns).Get(ctx, r.bootstrapName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[bootstrap.KeyCluster] != rec.ClusterID {
		t.Errorf("the chart's bootstrap ConfigMap holds %v, want the member's cluster %s", cm.Data, rec.ClusterID)
	}
	checkMemberPodAccess(t, k, m, r)
	checkOtherConfigMaps(t, k, m, r.bootstrapName(), false)
}

func testRoleWithoutChartBootstrapObject(t *testing.T, k *kube) {
	const ns = "rbac-minimal"
	k.createNamespace(t, ns)
	r := renderScenario(t, scenarioNamed(t, "minimal-rbac"), ns)
	k.apply(t, r.objs)
	m := k.memberClient(t, ns, r.serviceAccountName())
	rec, won := m.resolveAndWatch(t, r.bootstrapName())
	if !won || rec.ClusterID == "" {
		t.Errorf("the first member did not create the bootstrap object: %+v (won %v)", rec, won)
	}
	checkMemberPodAccess(t, k, m, r)
	checkOtherConfigMaps(t, k, m, r.bootstrapName(), true)
}

func scenarioNamed(t *testing.T, name string) scenario {
	t.Helper()
	for _, sc := range scenarios(t) {
		if sc.name == name {
			return sc
		}
	}
	t.Fatalf("no scenario ci/%s-values.yaml", name)
	return scenario{}
}

// testHelmLifecycle runs the helm binary against the API server: install, a member fills the
// bootstrap object, upgrade with changed values, uninstall.
func testHelmLifecycle(t *testing.T, k *kube) {
	const ns, release = "helm-release", "web"
	kc := []string{"KUBECONFIG=" + k.env.AdminKubeconfig}
	chart := chartDir(t)
	out, err := helm(t, kc, "install", release, chart, "--namespace", ns, "--create-namespace")
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{name: "install", namespace: ns, release: release, values: loadValues(t)}
	for _, want := range []string{
		"kubectl get pods -n " + ns + " -l " + labels.SelectorFromSet(r.memberLabels()).String() + " -L raft-elector/role",
		"raft-elector watch --once",
		"helm test " + release,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install's notes do not say %q:\n%s", want, out)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), apiBudget)
	defer cancel()
	secrets := k.admin.CoreV1().Secrets(ns)
	readKey := func(when string) string {
		t.Helper()
		s, err := secrets.Get(ctx, r.authSecretName(), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: auth Secret: %v", when, err)
		}
		key := string(s.Data[r.values.Auth.SecretKey])
		if len(key) != keyLength {
			t.Fatalf("%s: auth key %q has %d characters, want %d", when, key, len(key), keyLength)
		}
		return key
	}
	key := readKey("after install")
	cm, err := k.admin.CoreV1().ConfigMaps(ns).Get(ctx, r.bootstrapName(), metav1.GetOptions{})
	if err != nil || len(cm.Data) != 0 {
		t.Fatalf("after install the bootstrap ConfigMap is %v (%v); want it empty", cm.Data, err)
	}
	// A member fills it, as the first pod would.
	m := k.memberClient(t, ns, r.serviceAccountName())
	rec, _, err := m.bootstrapObject(t, r.bootstrapName()).Resolve(ctx, "web-0_0000-uid-0")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := helm(t, kc, "upgrade", release, chart, "--namespace", ns,
		"--set", "workload.replicas=5", "--set", "sidecar.logLevel=debug", "--set", "sidecar.electionTimeout=2s"); err != nil {
		t.Fatal(err)
	}
	if got := readKey("after upgrade"); got != key {
		t.Errorf("helm upgrade changed the auth key from %q to %q; members would stop trusting each other", key, got)
	}
	dep, err := k.admin.AppsV1().Deployments(ns).Get(ctx, r.workloadName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 5 {
		t.Errorf("after upgrade replicas %v, want 5", dep.Spec.Replicas)
	}
	var args []string
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == sidecarName {
			args = c.Args
		}
	}
	if !slices.Contains(args, "--log-level=debug") || !slices.Contains(args, "--election-timeout=2s") {
		t.Errorf("after upgrade the sidecar runs %v, want the new log level and election timeout", args)
	}
	cm, err = k.admin.CoreV1().ConfigMaps(ns).Get(ctx, r.bootstrapName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[bootstrap.KeyCluster] != rec.ClusterID {
		t.Errorf("helm upgrade changed the bootstrap record to %v; want the members' cluster %s kept", cm.Data, rec.ClusterID)
	}

	// A second upgrade that changes nothing about auth, and one with --reuse-values: the key stays.
	if _, err := helm(t, kc, "upgrade", release, chart, "--namespace", ns, "--reuse-values", "--set", "workload.replicas=3"); err != nil {
		t.Fatal(err)
	}
	if got := readKey("after a second upgrade"); got != key {
		t.Errorf("a second helm upgrade changed the auth key from %q to %q", key, got)
	}

	if _, err := helm(t, kc, "uninstall", release, "--namespace", ns); err != nil {
		t.Fatal(err)
	}
	gone := func(what string, get func() error) {
		t.Helper()
		waitFor(t, ctx, what+" deleted by helm uninstall", func() bool { return apierrors.IsNotFound(get()) })
	}
	gone("bootstrap ConfigMap", func() error {
		_, err := k.admin.CoreV1().ConfigMaps(ns).Get(ctx, r.bootstrapName(), metav1.GetOptions{})
		return err
	})
	gone("auth Secret", func() error { _, err := secrets.Get(ctx, r.authSecretName(), metav1.GetOptions{}); return err })
	gone("Deployment", func() error {
		_, err := k.admin.AppsV1().Deployments(ns).Get(ctx, r.workloadName(), metav1.GetOptions{})
		return err
	})
	gone("Role", func() error {
		_, err := k.admin.RbacV1().Roles(ns).Get(ctx, r.fullname(), metav1.GetOptions{})
		return err
	})
	// Reinstalled, the chart generates a new key and an empty bootstrap object: a new cluster.
	if _, err := helm(t, kc, "install", release, chart, "--namespace", ns); err != nil {
		t.Fatal(err)
	}
	if got := readKey("after reinstall"); got == key {
		t.Errorf("a reinstall kept the old key %q", key)
	}
	if cm, err := k.admin.CoreV1().ConfigMaps(ns).Get(ctx, r.bootstrapName(), metav1.GetOptions{}); err != nil || len(cm.Data) != 0 {
		t.Errorf("after reinstall the bootstrap ConfigMap is %v (%v); want it new and empty", cm.Data, err)
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}
