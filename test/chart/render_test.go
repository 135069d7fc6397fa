package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// What the chart fixes (the sidecar's defaults, passed explicitly) and the tests expect.
const (
	peerPort     = 4041
	opsPort      = 4042
	appPort      = 8080
	localAddr    = "127.0.0.1:4040"
	dataDir      = "/var/lib/raft-elector"
	authDir      = "/etc/raft-elector/auth"
	dataVolume   = "raft-elector-data"
	authVolume   = "raft-elector-auth"
	sidecarName  = "raft-elector"
	appName      = "app"
	nonRootID    = int64(65532)
	testRelease  = "web"
	keyLength    = 48
	chartName    = "raft-elector"
	maxNameBytes = 63
	// shutdownMargin is what the chart requires of the grace period beyond the sidecar's shutdown
	// timeout: the rest of a pod's stop after the handover.
	shutdownMargin = 5 * time.Second
)

// rendered is one scenario's objects and the values they came from.
type rendered struct {
	name      string
	namespace string
	release   string
	values    chartValues
	objs      []*unstructured.Unstructured
}

func renderScenario(t testing.TB, sc scenario, namespace string) rendered {
	t.Helper()
	return rendered{
		name:      sc.name,
		namespace: namespace,
		release:   testRelease,
		values:    loadValues(t, sc.path),
		objs:      render(t, chartDir(t), testRelease, namespace, "-f", sc.path),
	}
}

// fullname is what raft-elector.fullname gives for the values.
func (r rendered) fullname() string {
	if r.values.FullnameOverride != "" {
		return trunc63(r.values.FullnameOverride)
	}
	name := chartName
	if r.values.NameOverride != "" {
		name = r.values.NameOverride
	}
	if strings.Contains(r.release, name) {
		return trunc63(r.release)
	}
	return trunc63(r.release + "-" + name)
}

func trunc63(s string) string {
	if len(s) > maxNameBytes {
		s = s[:maxNameBytes]
	}
	return strings.TrimRight(s, "-")
}

// suffixed is raft-elector.suffixedName: <fullname cut to fit>-suffix.
func (r rendered) suffixed(suffix string) string {
	base := r.fullname()
	if n := maxNameBytes - 1 - len(suffix); len(base) > n {
		base = base[:n]
	}
	return strings.TrimRight(base, "-") + "-" + suffix
}

func (r rendered) workloadName() string {
	n := r.fullname()
	if len(n) > 52 {
		n = n[:52]
	}
	return strings.TrimRight(n, "-")
}

func (r rendered) bootstrapName() string {
	if r.values.Bootstrap.Name != "" {
		return r.values.Bootstrap.Name
	}
	return r.suffixed("bootstrap")
}

func (r rendered) authSecretName() string {
	if r.values.Auth.ExistingSecret != "" {
		return r.values.Auth.ExistingSecret
	}
	return r.suffixed("auth")
}

func (r rendered) serviceAccountName() string {
	switch {
	case r.values.ServiceAccount.Name != "":
		return r.values.ServiceAccount.Name
	case r.values.ServiceAccount.Create:
		return r.fullname()
	}
	return "default"
}

// memberLabels are the labels that select the members: members.selectorLabels (templates
// rendered) or the selector labels plus component=member.
func (r rendered) memberLabels() map[string]string {
	if len(r.values.Members.SelectorLabels) > 0 {
		out := map[string]string{}
		for k, v := range r.values.Members.SelectorLabels {
			out[k] = strings.ReplaceAll(v, "{{ .Release.Name }}", r.release)
		}
		return out
	}
	return map[string]string{
		"app.kubernetes.io/name":      chartName,
		"app.kubernetes.io/instance":  r.release,
		"app.kubernetes.io/component": "member",
	}
}

// find returns the objects of kind (and name, if not empty).
func (r rendered) find(kind, name string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			out = append(out, o)
		}
	}
	return out
}

// one checks that there is exactly one object of kind and name and converts it to out, if not
// nil (strictly: a field the Go type does not know is an error, as in the API server).
func (r rendered) one(t *testing.T, kind, name string, out runtime.Object) bool {
	t.Helper()
	found := r.find(kind, name)
	if len(found) != 1 {
		t.Errorf("%s: %d objects %s %q, want 1", r.name, len(found), kind, name)
		return false
	}
	if out != nil {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(found[0].Object, out, true); err != nil {
			t.Errorf("%s: %s %s: %v", r.name, kind, name, err)
			return false
		}
	}
	return true
}

func (r rendered) none(t *testing.T, kind string) {
	t.Helper()
	if found := r.find(kind, ""); len(found) != 0 {
		t.Errorf("%s: renders %d %s, want none", r.name, len(found), kind)
	}
}

// TestScenariosRender renders every ci scenario and checks its objects against its values.
func TestScenariosRender(t *testing.T) {
	meta := readChartMeta(t)
	for _, sc := range scenarios(t) {
		t.Run(sc.name, func(t *testing.T) {
			r := renderScenario(t, sc, "ns-"+sc.name)
			checkEveryObject(t, r, meta)
			checkRBAC(t, r)
			checkBootstrapAndSecret(t, r)
			checkServices(t, r)
			checkNetworkPolicy(t, r)
			checkPDB(t, r)
			checkMonitoring(t, r)
			if r.values.Workload.Enabled {
				checkWorkload(t, r, meta)
			} else {
				r.none(t, "Deployment")
				r.none(t, "StatefulSet")
			}
			checkTestPod(t, r)
		})
	}
}

// checkEveryObject: names, namespaces, labels; known kinds decode strictly; nothing
// cluster-scoped.
func checkEveryObject(t *testing.T, r rendered, meta chartMeta) {
	t.Helper()
	known := map[string]bool{"ServiceAccount": true, "Role": true, "RoleBinding": true, "ConfigMap": true, "Secret": true,
		"Service": true, "PodDisruptionBudget": true, "NetworkPolicy": true, "Deployment": true, "StatefulSet": true,
		"Pod": true, "ServiceMonitor": true, "PrometheusRule": true}
	for _, o := range r.objs {
		id := o.GetKind() + " " + o.GetName()
		if !known[o.GetKind()] {
			t.Errorf("%s: unexpected kind %s (cluster-scoped objects are not allowed; new kinds need tests)", r.name, id)
		}
		if len(o.GetName()) > maxNameBytes {
			t.Errorf("%s: %s: name is %d characters, more than %d", r.name, id, len(o.GetName()), maxNameBytes)
		}
		if errs := validation.IsDNS1123Subdomain(o.GetName()); len(errs) > 0 {
			t.Errorf("%s: %s: %v", r.name, id, errs)
		}
		if o.GetKind() == "Service" {
			if errs := validation.IsDNS1035Label(o.GetName()); len(errs) > 0 {
				t.Errorf("%s: %s: a Service name must be a DNS-1035 label: %v", r.name, id, errs)
			}
		}
		if o.GetNamespace() != r.namespace {
			t.Errorf("%s: %s: namespace %q, want the release namespace %q", r.name, id, o.GetNamespace(), r.namespace)
		}
		checkLabels(t, r, meta, id, o.GetLabels())
		for k, v := range r.values.CommonAnnotations {
			if o.GetAnnotations()[k] != v {
				t.Errorf("%s: %s: annotation %s=%q, want commonAnnotations' %q", r.name, id, k, o.GetAnnotations()[k], v)
			}
		}
		gvk := o.GroupVersionKind()
		if scheme.Scheme.Recognizes(gvk) {
			typed, _ := scheme.Scheme.New(gvk)
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, typed, true); err != nil {
				t.Errorf("%s: %s: %v", r.name, id, err)
			}
		}
	}
}

func checkLabels(t *testing.T, r rendered, meta chartMeta, id string, got map[string]string) {
	t.Helper()
	want := map[string]string{
		"helm.sh/chart":                meta.Name + "-" + meta.Version,
		"app.kubernetes.io/name":       chartName,
		"app.kubernetes.io/instance":   r.release,
		"app.kubernetes.io/version":    meta.AppVersion,
		"app.kubernetes.io/managed-by": "Helm",
	}
	if r.values.Image.Tag != "" {
		want["app.kubernetes.io/version"] = r.values.Image.Tag
	}
	for k, v := range r.values.CommonLabels {
		want[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s: label %s=%q, want %q", r.name, id, k, got[k], v)
		}
	}
	if got["app.kubernetes.io/component"] == "" {
		t.Errorf("%s: %s: no app.kubernetes.io/component label", r.name, id)
	}
	for k, v := range got {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			t.Errorf("%s: %s: label key %q: %v", r.name, id, k, errs)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("%s: %s: label %s value %q: %v", r.name, id, k, v, errs)
		}
	}
}

// checkRBAC: one Role and RoleBinding, exactly the rules the sidecar needs.
func checkRBAC(t *testing.T, r rendered) {
	t.Helper()
	if r.values.ServiceAccount.Create {
		var sa corev1.ServiceAccount
		if r.one(t, "ServiceAccount", r.serviceAccountName(), &sa) {
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("%s: the ServiceAccount mounts its token into every pod; only the members opt in", r.name)
			}
		}
	} else {
		r.none(t, "ServiceAccount")
	}
	if !r.values.RBAC.Create {
		r.none(t, "Role")
		r.none(t, "RoleBinding")
		return
	}
	var role rbacv1.Role
	if r.one(t, "Role", r.fullname(), &role) {
		want := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{r.bootstrapName()},
				Verbs: []string{"get", "list", "watch", "update"}},
		}
		if !r.values.Bootstrap.Create {
			want = append(want, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}})
		}
		if !reflect.DeepEqual(role.Rules, want) {
			t.Errorf("%s: Role rules\n%s\nwant\n%s", r.name, toJSON(role.Rules), toJSON(want))
		}
	}
	var rb rbacv1.RoleBinding
	if r.one(t, "RoleBinding", r.fullname(), &rb) {
		wantRef := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: r.fullname()}
		wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: r.serviceAccountName(), Namespace: r.namespace}}
		if rb.RoleRef != wantRef || !reflect.DeepEqual(rb.Subjects, wantSubjects) {
			t.Errorf("%s: RoleBinding binds %v to %v, want %v to %v", r.name, rb.Subjects, rb.RoleRef, wantSubjects, wantRef)
		}
	}
}

// checkBootstrapAndSecret: the bootstrap ConfigMap is empty; the generated key has 48
// characters.
func checkBootstrapAndSecret(t *testing.T, r rendered) {
	t.Helper()
	if r.values.Bootstrap.Create {
		var cm corev1.ConfigMap
		if r.one(t, "ConfigMap", r.bootstrapName(), &cm) && (len(cm.Data) > 0 || len(cm.BinaryData) > 0) {
			t.Errorf("%s: the bootstrap ConfigMap has data %v; it must be empty so the members fill it", r.name, cm.Data)
		}
		if _, ok := r.find("ConfigMap", r.bootstrapName())[0].Object["data"]; ok {
			t.Errorf("%s: the bootstrap ConfigMap has a data field; an upgrade could then reset what the members wrote", r.name)
		}
	} else {
		r.none(t, "ConfigMap")
	}
	if !r.values.Auth.Enabled || r.values.Auth.ExistingSecret != "" {
		r.none(t, "Secret")
		return
	}
	var s corev1.Secret
	if !r.one(t, "Secret", r.authSecretName(), &s) {
		return
	}
	key := s.Data[r.values.Auth.SecretKey]
	if len(key) != keyLength || !regexp.MustCompile(`^[A-Za-z0-9]+$`).Match(key) {
		t.Errorf("%s: generated key %q: want %d letters and digits", r.name, key, keyLength)
	}
}

func checkServices(t *testing.T, r rendered) {
	t.Helper()
	member := r.memberLabels()
	var peers corev1.Service
	if r.one(t, "Service", r.suffixed("peers"), &peers) {
		if peers.Spec.ClusterIP != corev1.ClusterIPNone || !peers.Spec.PublishNotReadyAddresses {
			t.Errorf("%s: peer Service clusterIP %q publishNotReadyAddresses %v; want headless, publishing not-ready pods",
				r.name, peers.Spec.ClusterIP, peers.Spec.PublishNotReadyAddresses)
		}
		checkSelector(t, r, "peer Service", peers.Spec.Selector, member)
		checkServicePorts(t, r, "peer Service", peers.Spec.Ports, "peer", peerPort, intstr.FromString("peer"))
	}
	metricsName := r.suffixed("metrics")
	if r.values.Metrics.Service.Enabled {
		var svc corev1.Service
		if r.one(t, "Service", metricsName, &svc) {
			checkSelector(t, r, "metrics Service", svc.Spec.Selector, member)
			checkServicePorts(t, r, "metrics Service", svc.Spec.Ports, "metrics", opsPort, intstr.FromString("metrics"))
			if !svc.Spec.PublishNotReadyAddresses {
				t.Errorf("%s: the metrics Service hides not-ready members", r.name)
			}
		}
	} else if len(r.find("Service", metricsName)) != 0 {
		t.Errorf("%s: metrics Service rendered though metrics.service.enabled is false", r.name)
	}
	leaderName := r.suffixed("leader")
	if !r.values.LeaderService.Enabled {
		if len(r.find("Service", leaderName)) != 0 {
			t.Errorf("%s: leader Service rendered though leaderService.enabled is false", r.name)
		}
		return
	}
	var leader corev1.Service
	if r.one(t, "Service", leaderName, &leader) {
		want := map[string]string{r.values.Sidecar.LabelKey: r.values.Sidecar.LeaderLabelValue}
		for k, v := range member {
			want[k] = v
		}
		checkSelector(t, r, "leader Service", leader.Spec.Selector, want)
		target := intstr.FromString("http")
		switch tp := r.values.LeaderService.TargetPort.(type) {
		case string:
			target = intstr.FromString(tp)
		case float64:
			target = intstr.FromInt32(int32(tp))
		}
		checkServicePorts(t, r, "leader Service", leader.Spec.Ports, "http", r.values.LeaderService.Port, target)
	}
}

func checkSelector(t *testing.T, r rendered, what string, got, want map[string]string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: %s selects %v, want %v", r.name, what, got, want)
	}
}

func checkServicePorts(t *testing.T, r rendered, what string, ports []corev1.ServicePort, name string, port int32, target intstr.IntOrString) {
	t.Helper()
	want := []corev1.ServicePort{{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}}
	if !reflect.DeepEqual(ports, want) {
		t.Errorf("%s: %s ports %s, want %s", r.name, what, toJSON(ports), toJSON(want))
	}
}

// checkNetworkPolicy: the members are selected; the peer port admits members only; the ops
// and application ports admit what the values say; nothing else is open.
func checkNetworkPolicy(t *testing.T, r rendered) {
	t.Helper()
	if !r.values.NetworkPolicy.Enabled {
		r.none(t, "NetworkPolicy")
		return
	}
	var np networkingv1.NetworkPolicy
	if !r.one(t, "NetworkPolicy", r.fullname(), &np) {
		return
	}
	member := r.memberLabels()
	checkSelector(t, r, "NetworkPolicy", np.Spec.PodSelector.MatchLabels, member)
	if len(np.Spec.PodSelector.MatchExpressions) > 0 {
		t.Errorf("%s: NetworkPolicy podSelector has expressions %v", r.name, np.Spec.PodSelector.MatchExpressions)
	}
	if !reflect.DeepEqual(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("%s: NetworkPolicy policyTypes %v, want [Ingress]", r.name, np.Spec.PolicyTypes)
	}
	// The chart's own rules name the ports by number: a named port on a native sidecar (an init
	// container) is not resolved by every network plugin, and an unresolved port admits nothing.
	tcp := corev1.ProtocolTCP
	port := func(n int32) []networkingv1.NetworkPolicyPort {
		p := intstr.FromInt32(n)
		return []networkingv1.NetworkPolicyPort{{Port: &p, Protocol: &tcp}}
	}
	var want []networkingv1.NetworkPolicyIngressRule
	want = append(want, networkingv1.NetworkPolicyIngressRule{Ports: port(peerPort),
		From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metaLabelSelector{MatchLabels: member}}}})
	want = append(want, networkingv1.NetworkPolicyIngressRule{Ports: port(opsPort), From: convertList[networkingv1.NetworkPolicyPeer](t, r.values.NetworkPolicy.Ops.From)})
	if len(r.values.NetworkPolicy.App.Ports) > 0 {
		want = append(want, networkingv1.NetworkPolicyIngressRule{
			Ports: convertList[networkingv1.NetworkPolicyPort](t, r.values.NetworkPolicy.App.Ports),
			From:  convertList[networkingv1.NetworkPolicyPeer](t, r.values.NetworkPolicy.App.From)})
	}
	want = append(want, convertList[networkingv1.NetworkPolicyIngressRule](t, r.values.NetworkPolicy.ExtraIngress)...)
	if toJSON(np.Spec.Ingress) != toJSON(want) {
		t.Errorf("%s: NetworkPolicy ingress\n%s\nwant\n%s", r.name, toJSON(np.Spec.Ingress), toJSON(want))
	}
	// The peer rule must not be widened: any rule admitting the peer port (or all ports) must
	// name the members as its only sources.
	for i, rule := range np.Spec.Ingress {
		opens := len(rule.Ports) == 0
		for _, p := range rule.Ports {
			opens = opens || p.Port == nil || p.Port.String() == "peer" || p.Port.IntValue() == peerPort
		}
		if opens && toJSON(rule.From) != toJSON([]networkingv1.NetworkPolicyPeer{{PodSelector: &metaLabelSelector{MatchLabels: member}}}) {
			t.Errorf("%s: NetworkPolicy rule %d admits the peer port from %s", r.name, i, toJSON(rule.From))
		}
	}
}

func checkPDB(t *testing.T, r rendered) {
	t.Helper()
	if !r.values.PodDisruptionBudget.Enabled {
		r.none(t, "PodDisruptionBudget")
		return
	}
	var pdb policyv1.PodDisruptionBudget
	if !r.one(t, "PodDisruptionBudget", r.fullname(), &pdb) {
		return
	}
	checkSelector(t, r, "PodDisruptionBudget", pdb.Spec.Selector.MatchLabels, r.memberLabels())
	asIntOrString := func(v any) *intstr.IntOrString {
		switch v := v.(type) {
		case float64:
			x := intstr.FromInt32(int32(v))
			return &x
		case string:
			if v == "" {
				return nil
			}
			x := intstr.FromString(v)
			return &x
		}
		return nil
	}
	wantMin, wantMax := asIntOrString(r.values.PodDisruptionBudget.MinAvailable), asIntOrString(r.values.PodDisruptionBudget.MaxUnavailable)
	if wantMin != nil {
		wantMax = nil
	}
	if !reflect.DeepEqual(pdb.Spec.MinAvailable, wantMin) || !reflect.DeepEqual(pdb.Spec.MaxUnavailable, wantMax) {
		t.Errorf("%s: PodDisruptionBudget minAvailable %v maxUnavailable %v, want %v and %v", r.name,
			pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable, wantMin, wantMax)
	}
}

func checkMonitoring(t *testing.T, r rendered) {
	t.Helper()
	if !r.values.ServiceMonitor.Enabled {
		r.none(t, "ServiceMonitor")
	} else if sms := r.find("ServiceMonitor", r.fullname()); len(sms) != 1 {
		t.Errorf("%s: %d ServiceMonitors, want 1", r.name, len(sms))
	} else {
		sm := sms[0]
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		svcs := r.find("Service", r.suffixed("metrics"))
		if len(svcs) != 1 || !labels.SelectorFromSet(sel).Matches(labels.Set(svcs[0].GetLabels())) {
			t.Errorf("%s: the ServiceMonitor's selector %v does not select the metrics Service", r.name, sel)
		}
		for _, svc := range r.find("Service", "") {
			if svc.GetName() != r.suffixed("metrics") && labels.SelectorFromSet(sel).Matches(labels.Set(svc.GetLabels())) {
				t.Errorf("%s: the ServiceMonitor's selector %v also selects Service %s", r.name, sel, svc.GetName())
			}
		}
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(eps) != 1 {
			t.Errorf("%s: ServiceMonitor endpoints %v, want 1", r.name, eps)
		} else {
			ep := eps[0].(map[string]any)
			if ep["port"] != "metrics" || ep["path"] != "/metrics" || ep["interval"] != r.values.ServiceMonitor.Interval {
				t.Errorf("%s: ServiceMonitor endpoint %v, want port metrics, path /metrics, interval %s", r.name, ep, r.values.ServiceMonitor.Interval)
			}
		}
		for k, v := range r.values.ServiceMonitor.Labels {
			if sm.GetLabels()[k] != v {
				t.Errorf("%s: ServiceMonitor label %s=%q, want %q", r.name, k, sm.GetLabels()[k], v)
			}
		}
	}
	if !r.values.PrometheusRule.Enabled {
		r.none(t, "PrometheusRule")
		return
	}
	prs := r.find("PrometheusRule", r.fullname())
	if len(prs) != 1 {
		t.Errorf("%s: %d PrometheusRules, want 1", r.name, len(prs))
		return
	}
	alerts := prometheusAlerts(t, prs[0])
	job := fmt.Sprintf(`job=%q`, r.suffixed("metrics"))
	lc := r.values.PrometheusRule.TooManyLeaderChanges
	for _, name := range []string{"RaftElectorNoLeader", "RaftElectorSplitLease", "RaftElectorTooManyLeaderChanges",
		"RaftElectorTermJump", "RaftElectorMemberNotReady", "RaftElectorVoterUnreachable", "RaftElectorHeartbeatRTTHigh"} {
		a, ok := alerts[name]
		if !ok {
			t.Errorf("%s: PrometheusRule has no alert %s", r.name, name)
			continue
		}
		// Every metric the expression reads is scoped to this release.
		for _, sel := range metricSelector.FindAllStringSubmatch(a.Expr, -1) {
			if !strings.Contains(sel[2], job) {
				t.Errorf("%s: alert %s reads %s%s, not scoped to %s", r.name, name, sel[1], sel[2], job)
			}
		}
	}
	want := fmt.Sprintf("[%s])) > %s", lc.Window, strconv.FormatFloat(lc.Threshold, 'f', -1, 64))
	if !strings.Contains(alerts["RaftElectorTooManyLeaderChanges"].Expr, want) {
		t.Errorf("%s: RaftElectorTooManyLeaderChanges %q does not use the values' window and threshold (%s)", r.name,
			alerts["RaftElectorTooManyLeaderChanges"].Expr, want)
	}
}

// podTemplate returns the workload's pod template and checks the workload object itself.
func podTemplate(t *testing.T, r rendered) (corev1.PodTemplateSpec, *metaLabelSelector, bool) {
	t.Helper()
	v := r.values.Workload
	other := map[string]string{"Deployment": "StatefulSet", "StatefulSet": "Deployment"}[v.Kind]
	r.none(t, other)
	switch v.Kind {
	case "Deployment":
		var d appsv1.Deployment
		if !r.one(t, "Deployment", r.workloadName(), &d) {
			return corev1.PodTemplateSpec{}, nil, false
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != v.Replicas {
			t.Errorf("%s: Deployment replicas %v, want %d", r.name, d.Spec.Replicas, v.Replicas)
		}
		if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
			t.Errorf("%s: Deployment strategy %s: a rolling update must add a member before it removes one", r.name, toJSON(d.Spec.Strategy))
		}
		return d.Spec.Template, d.Spec.Selector, true
	case "StatefulSet":
		var s appsv1.StatefulSet
		if !r.one(t, "StatefulSet", r.workloadName(), &s) {
			return corev1.PodTemplateSpec{}, nil, false
		}
		if s.Spec.Replicas == nil || *s.Spec.Replicas != v.Replicas {
			t.Errorf("%s: StatefulSet replicas %v, want %d", r.name, s.Spec.Replicas, v.Replicas)
		}
		if s.Spec.ServiceName != r.suffixed("peers") || s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("%s: StatefulSet serviceName %q podManagementPolicy %q, want %q and Parallel", r.name,
				s.Spec.ServiceName, s.Spec.PodManagementPolicy, r.suffixed("peers"))
		}
		if len(s.Name)+1+10 > maxNameBytes {
			t.Errorf("%s: StatefulSet name %q leaves no room for its pods' controller-revision-hash label", r.name, s.Name)
		}
		return s.Spec.Template, s.Spec.Selector, true
	}
	t.Errorf("%s: workload.kind %q", r.name, v.Kind)
	return corev1.PodTemplateSpec{}, nil, false
}

func checkWorkload(t *testing.T, r rendered, meta chartMeta) {
	t.Helper()
	tmpl, selector, ok := podTemplate(t, r)
	if !ok {
		return
	}
	member := r.memberLabels()
	if selector == nil || !reflect.DeepEqual(selector.MatchLabels, member) || len(selector.MatchExpressions) > 0 {
		t.Errorf("%s: workload selector %v, want %v", r.name, selector, member)
	}
	for k, v := range member {
		if tmpl.Labels[k] != v {
			t.Errorf("%s: pod label %s=%q, want %q (the member selector)", r.name, k, tmpl.Labels[k], v)
		}
	}
	for k, v := range r.values.Workload.PodLabels {
		if tmpl.Labels[k] != v {
			t.Errorf("%s: pod label %s=%q, want podLabels' %q", r.name, k, tmpl.Labels[k], v)
		}
	}
	for k, v := range r.values.Workload.PodAnnotations {
		if tmpl.Annotations[k] != v {
			t.Errorf("%s: pod annotation %s=%q, want %q", r.name, k, tmpl.Annotations[k], v)
		}
	}
	if _, ok := tmpl.Labels[r.values.Sidecar.LabelKey]; ok {
		t.Errorf("%s: the pod template sets %s; only the sidecar may", r.name, r.values.Sidecar.LabelKey)
	}
	spec := tmpl.Spec
	if spec.ServiceAccountName != r.serviceAccountName() {
		t.Errorf("%s: serviceAccountName %q, want %q", r.name, spec.ServiceAccountName, r.serviceAccountName())
	}
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
		t.Errorf("%s: the pod does not mount its service account token; the sidecar needs it", r.name)
	}
	grace := r.values.Workload.TerminationGracePeriodSeconds
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != grace {
		t.Errorf("%s: terminationGracePeriodSeconds %v, want %d", r.name, spec.TerminationGracePeriodSeconds, grace)
	}
	if st := shutdownTimeout(t, r); time.Duration(grace)*time.Second < st+shutdownMargin {
		t.Errorf("%s: terminationGracePeriodSeconds %d is below the shutdown timeout %v + %v", r.name, grace, st, shutdownMargin)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: pod securityContext %s: want runAsNonRoot", r.name, toJSON(spec.SecurityContext))
	}
	checkSpread(t, r, spec, member)
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		checkContainerSecurity(t, r, c)
		if c.Image != r.image(meta) {
			t.Errorf("%s: container %s image %q, want %q", r.name, c.Name, c.Image, r.image(meta))
		}
	}

	sel, err := labels.Parse(flagValue(sidecarOf(t, r, spec).Args, "--selector"))
	if err != nil || !sel.Matches(labels.Set(tmpl.Labels)) {
		t.Errorf("%s: the sidecar's --selector %v (%v) does not select its own pod's labels %v", r.name, sel, err, tmpl.Labels)
	}
	checkSidecar(t, r, spec)
	checkApp(t, r, spec)
}

func (r rendered) image(meta chartMeta) string {
	if r.values.Image.Digest != "" {
		return r.values.Image.Repository + "@" + r.values.Image.Digest
	}
	tag := r.values.Image.Tag
	if tag == "" {
		tag = meta.AppVersion
	}
	return r.values.Image.Repository + ":" + tag
}

func checkSpread(t *testing.T, r rendered, spec corev1.PodSpec, member map[string]string) {
	t.Helper()
	v := r.values.Workload
	switch {
	case len(v.TopologySpreadConstraints) > 0:
		if len(spec.TopologySpreadConstraints) != len(v.TopologySpreadConstraints) {
			t.Errorf("%s: topologySpreadConstraints %s, want the values' %d", r.name, toJSON(spec.TopologySpreadConstraints), len(v.TopologySpreadConstraints))
		}
	case v.SpreadAcrossNodes == "none":
		if len(spec.TopologySpreadConstraints) != 0 {
			t.Errorf("%s: topologySpreadConstraints %s with spreadAcrossNodes none", r.name, toJSON(spec.TopologySpreadConstraints))
		}
	default:
		when := corev1.ScheduleAnyway
		if v.SpreadAcrossNodes == "hard" {
			when = corev1.DoNotSchedule
		}
		want := []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: when,
			LabelSelector: &metaLabelSelector{MatchLabels: member}}}
		if !reflect.DeepEqual(spec.TopologySpreadConstraints, want) {
			t.Errorf("%s: topologySpreadConstraints %s, want %s", r.name, toJSON(spec.TopologySpreadConstraints), toJSON(want))
		}
	}
}

// checkContainerSecurity: every container runs as non-root 65532 with a read-only root file
// system, no privilege escalation, no capabilities and the runtime's seccomp profile.
func checkContainerSecurity(t *testing.T, r rendered, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	problem := ""
	switch {
	case sc == nil:
		problem = "none"
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		problem = "runAsNonRoot is not true"
	case sc.RunAsUser == nil || *sc.RunAsUser != nonRootID || sc.RunAsGroup == nil || *sc.RunAsGroup != nonRootID:
		problem = "runAsUser/runAsGroup are not 65532"
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		problem = "readOnlyRootFilesystem is not true"
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		problem = "allowPrivilegeEscalation is not false"
	case sc.Privileged != nil && *sc.Privileged:
		problem = "privileged"
	case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		problem = "capabilities are not drop [ALL]"
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		problem = "seccompProfile is not RuntimeDefault"
	}
	if problem != "" {
		t.Errorf("%s: container %s securityContext: %s (%s)", r.name, c.Name, problem, toJSON(sc))
	}
}

// sidecarOf finds the sidecar where sidecar.native puts it.
func sidecarOf(t *testing.T, r rendered, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	var found []corev1.Container
	for _, c := range spec.InitContainers {
		if c.Name == sidecarName {
			found = append(found, c)
			if !r.values.Sidecar.Native {
				t.Errorf("%s: the sidecar is an init container though sidecar.native is false", r.name)
			}
			if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("%s: the native sidecar has restartPolicy %v, want Always", r.name, c.RestartPolicy)
			}
		}
	}
	for _, c := range spec.Containers {
		if c.Name == sidecarName {
			found = append(found, c)
			if r.values.Sidecar.Native {
				t.Errorf("%s: the sidecar is a regular container though sidecar.native is true", r.name)
			}
			if c.RestartPolicy != nil {
				t.Errorf("%s: the sidecar container has restartPolicy %v", r.name, *c.RestartPolicy)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d containers named %s, want 1", r.name, len(found), sidecarName)
	}
	return found[0]
}

// expectedSidecarArgs is the sidecar's command line for the values.
func expectedSidecarArgs(r rendered) []string {
	v := r.values.Sidecar
	args := []string{
		"--discovery=kubernetes",
		"--selector=" + labels.SelectorFromSet(r.memberLabels()).String(),
		"--peer-addr=:" + strconv.Itoa(peerPort),
		"--local-addr=" + localAddr,
		"--ops-addr=:" + strconv.Itoa(opsPort),
		"--data-dir=" + dataDir,
		"--heartbeat-interval=" + v.HeartbeatInterval,
		"--election-timeout=" + v.ElectionTimeout,
		"--max-voters=" + strconv.Itoa(v.MaxVoters),
		"--bootstrap-object=" + r.bootstrapName(),
		"--label-key=" + v.LabelKey,
		"--leader-label-value=" + v.LeaderLabelValue,
		"--follower-label-value=" + v.FollowerLabelValue,
		"--log-level=" + v.LogLevel,
		"--log-format=" + v.LogFormat,
	}
	if r.values.Auth.Enabled {
		args = append(args, "--auth-secret-file="+authDir+"/"+r.values.Auth.SecretKey)
		if r.values.Auth.AcceptUnsigned {
			args = append(args, "--auth-accept-unsigned")
		}
	}
	return append(args, v.ExtraArgs...)
}

func checkSidecar(t *testing.T, r rendered, spec corev1.PodSpec) {
	t.Helper()
	c := sidecarOf(t, r, spec)
	v := r.values.Sidecar
	if len(c.Command) != 0 {
		t.Errorf("%s: the sidecar sets command %v; the image's entrypoint is the binary", r.name, c.Command)
	}
	if want := expectedSidecarArgs(r); !slices.Equal(c.Args, want) {
		t.Errorf("%s: sidecar args\n  %s\nwant\n  %s", r.name, strings.Join(c.Args, "\n  "), strings.Join(want, "\n  "))
	}
	// The downward API gives the member its identity and address.
	wantEnv := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "POD_UID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
	}
	wantEnv = append(wantEnv, convertList[corev1.EnvVar](t, toAnyList(v.ExtraEnv))...)
	if !reflect.DeepEqual(c.Env, wantEnv) {
		t.Errorf("%s: sidecar env %s, want %s", r.name, toJSON(c.Env), toJSON(wantEnv))
	}
	wantPorts := []corev1.ContainerPort{
		{Name: "peer", ContainerPort: peerPort, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", ContainerPort: opsPort, Protocol: corev1.ProtocolTCP},
	}
	if !reflect.DeepEqual(c.Ports, wantPorts) {
		t.Errorf("%s: sidecar ports %s, want %s", r.name, toJSON(c.Ports), toJSON(wantPorts))
	}
	checkProbe(t, r, "liveness", c.LivenessProbe, v.LivenessProbe, "/healthz")
	checkProbe(t, r, "readiness", c.ReadinessProbe, v.ReadinessProbe, "/readyz")
	checkProbe(t, r, "startup", c.StartupProbe, v.StartupProbe, "/healthz")
	for kind, want := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
		got := map[string]string{}
		for name, q := range want {
			got[string(name)] = q.String()
		}
		if !reflect.DeepEqual(got, v.Resources[kind]) && !(len(got) == 0 && len(v.Resources[kind]) == 0) {
			t.Errorf("%s: sidecar resources.%s %v, want %v", r.name, kind, got, v.Resources[kind])
		}
	}
	// The data dir is an emptyDir (survives container restarts); the key is the whole Secret
	// mounted read-only, never a subPath (a subPath mount does not see a rotated key).
	wantMounts := []corev1.VolumeMount{{Name: dataVolume, MountPath: dataDir}}
	if r.values.Auth.Enabled {
		wantMounts = append(wantMounts, corev1.VolumeMount{Name: authVolume, MountPath: authDir, ReadOnly: true})
	}
	if !reflect.DeepEqual(c.VolumeMounts, wantMounts) {
		t.Errorf("%s: sidecar volumeMounts %s, want %s", r.name, toJSON(c.VolumeMounts), toJSON(wantMounts))
	}
	vols := map[string]corev1.Volume{}
	for _, vol := range spec.Volumes {
		vols[vol.Name] = vol
	}
	if d, ok := vols[dataVolume]; !ok || d.EmptyDir == nil {
		t.Errorf("%s: volume %s is %s, want an emptyDir", r.name, dataVolume, toJSON(d))
	} else if lim := v.DataVolume.SizeLimit; lim != "" && (d.EmptyDir.SizeLimit == nil || d.EmptyDir.SizeLimit.String() != lim) {
		t.Errorf("%s: volume %s sizeLimit %v, want %s", r.name, dataVolume, d.EmptyDir.SizeLimit, lim)
	}
	a, ok := vols[authVolume]
	switch {
	case !r.values.Auth.Enabled && ok:
		t.Errorf("%s: volume %s with auth.enabled false", r.name, authVolume)
	case r.values.Auth.Enabled && (!ok || a.Secret == nil || a.Secret.SecretName != r.authSecretName() || len(a.Secret.Items) > 0):
		t.Errorf("%s: volume %s is %s, want the whole Secret %s", r.name, authVolume, toJSON(a), r.authSecretName())
	}
}

func checkProbe(t *testing.T, r rendered, what string, p *corev1.Probe, v probeValues, path string) {
	t.Helper()
	if !v.Enabled {
		if p != nil {
			t.Errorf("%s: sidecar has a %s probe though it is disabled", r.name, what)
		}
		return
	}
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: sidecar %s probe %s, want httpGet %s", r.name, what, toJSON(p), path)
		return
	}
	want := corev1.Probe{
		ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("metrics")}},
		InitialDelaySeconds: v.InitialDelaySeconds, PeriodSeconds: v.PeriodSeconds,
		TimeoutSeconds: v.TimeoutSeconds, FailureThreshold: v.FailureThreshold,
	}
	if !reflect.DeepEqual(*p, want) {
		t.Errorf("%s: sidecar %s probe %s, want %s", r.name, what, toJSON(p), toJSON(want))
	}
}

func checkApp(t *testing.T, r rendered, spec corev1.PodSpec) {
	t.Helper()
	var app *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == appName {
			app = &spec.Containers[i]
		}
	}
	if app == nil {
		t.Errorf("%s: no container %s", r.name, appName)
		return
	}
	want := append([]string{"watch", "--listen=:" + strconv.Itoa(appPort)}, r.values.Workload.App.ExtraArgs...)
	if len(app.Command) != 0 || !slices.Equal(app.Args, want) {
		t.Errorf("%s: app runs %v %v, want args %v", r.name, app.Command, app.Args, want)
	}
	if !reflect.DeepEqual(app.Ports, []corev1.ContainerPort{{Name: "http", ContainerPort: appPort, Protocol: corev1.ProtocolTCP}}) {
		t.Errorf("%s: app ports %s, want http %d", r.name, toJSON(app.Ports), appPort)
	}
	if len(app.VolumeMounts) != 0 {
		t.Errorf("%s: the app mounts %s; the key is the sidecar's alone", r.name, toJSON(app.VolumeMounts))
	}
}

// checkTestPod: the helm test asks the leader Service once, and is no member.
func checkTestPod(t *testing.T, r rendered) {
	t.Helper()
	name := r.suffixed("test-leader")
	if !r.values.Workload.Enabled || !r.values.LeaderService.Enabled {
		if len(r.find("Pod", name)) != 0 {
			t.Errorf("%s: helm test pod rendered without the example workload and the leader Service", r.name)
		}
		return
	}
	var pod corev1.Pod
	if !r.one(t, "Pod", name, &pod) {
		return
	}
	if pod.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("%s: test pod hook annotation %q", r.name, pod.Annotations["helm.sh/hook"])
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || len(pod.Spec.Containers) != 1 {
		t.Fatalf("%s: test pod restartPolicy %q with %d containers", r.name, pod.Spec.RestartPolicy, len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	checkContainerSecurity(t, r, c)
	want := []string{"watch", "--once", fmt.Sprintf("--url=http://%s:%d/", r.suffixed("leader"), r.values.LeaderService.Port),
		"--timeout=" + r.values.Tests.Timeout}
	if !slices.Equal(c.Args, want) {
		t.Errorf("%s: test pod args %v, want %v", r.name, c.Args, want)
	}
	if labels.SelectorFromSet(r.memberLabels()).Matches(labels.Set(pod.Labels)) {
		t.Errorf("%s: the test pod's labels %v match the member selector: discovery would count it as a member", r.name, pod.Labels)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("%s: the test pod mounts a service account token it does not need", r.name)
	}
}

// TestValuesRejected: the schema and the chart's guards refuse bad values before anything is
// rendered, with a message that names the value.
func TestValuesRejected(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a Job is no workload", []string{"--set", "workload.kind=Job"}, "/workload/kind"},
		{"duration in hours", []string{"--set", "sidecar.electionTimeout=1h"}, "/sidecar/electionTimeout"},
		{"duration without unit", []string{"--set", "sidecar.heartbeatInterval=100"}, "/sidecar/heartbeatInterval"},
		{"duration that is a word", []string{"--set", "sidecar.electionTimeout=fast"}, "/sidecar/electionTimeout"},
		{"unknown top-level key", []string{"--set", "replicas=3"}, "additional properties 'replicas'"},
		{"unknown sidecar key", []string{"--set", "sidecar.electionTimout=2s"}, "additional properties 'electionTimout'"},
		{"log format", []string{"--set", "sidecar.logFormat=xml"}, "/sidecar/logFormat"},
		{"log level", []string{"--set", "sidecar.logLevel=verbose"}, "/sidecar/logLevel"},
		{"no voters", []string{"--set", "sidecar.maxVoters=0"}, "/sidecar/maxVoters"},
		{"too many voters", []string{"--set", "sidecar.maxVoters=16"}, "/sidecar/maxVoters"},
		{"grace period below 6", []string{"--set", "workload.terminationGracePeriodSeconds=5"}, "/workload/terminationGracePeriodSeconds"},
		{"grace period within the shutdown timeout", []string{"--set", "sidecar.electionTimeout=3s", "--set", "workload.terminationGracePeriodSeconds=6"},
			"workload.terminationGracePeriodSeconds 6 must be at least the sidecar's shutdown timeout (2 × sidecar.electionTimeout 3s = 6000ms) + 5s"},
		{"grace period without the 5 s margin", []string{"--set", "sidecar.electionTimeout=1s", "--set", "workload.terminationGracePeriodSeconds=6"},
			"workload.terminationGracePeriodSeconds 6 must be at least the sidecar's shutdown timeout (2 × sidecar.electionTimeout 1s = 2000ms) + 5s for the rest of the pod's stop, i.e. 7,"},
		{"grace period within --shutdown-timeout of extraArgs", []string{"--set", "sidecar.extraArgs={--shutdown-timeout=30s}"},
			"workload.terminationGracePeriodSeconds 30 must be at least the sidecar's shutdown timeout (--shutdown-timeout of sidecar.extraArgs/extraEnv = 30000ms) + 5s for the rest of the pod's stop, i.e. 35,"},
		{"the last --shutdown-timeout counts", []string{"--set", "sidecar.extraArgs={--shutdown-timeout=1s,--shutdown-timeout=25001ms}"},
			"(--shutdown-timeout of sidecar.extraArgs/extraEnv = 25001ms) + 5s for the rest of the pod's stop, i.e. 31,"},
		{"grace period within RAFT_ELECTOR_SHUTDOWN_TIMEOUT", []string{"--set", "sidecar.extraEnv[0].name=RAFT_ELECTOR_SHUTDOWN_TIMEOUT", "--set", "sidecar.extraEnv[0].value=1m"},
			"(--shutdown-timeout of sidecar.extraArgs/extraEnv = 60000ms)"},
		{"--shutdown-timeout that is no duration", []string{"--set", "sidecar.extraArgs={--shutdown-timeout=10}"},
			`sidecar.extraArgs --shutdown-timeout: "10" is not a duration`},
		{"accept unsigned without auth", []string{"--set", "auth.enabled=false", "--set", "auth.acceptUnsigned=true"},
			"auth.acceptUnsigned needs auth.enabled"},
		{"accept unsigned without auth or the example workload", []string{"--set", "auth.enabled=false", "--set", "auth.acceptUnsigned=true", "--set", "workload.enabled=false"},
			"auth.acceptUnsigned needs auth.enabled"},
		{"accept unsigned that is no bool", []string{"--set-string", "auth.acceptUnsigned=yes"}, "/auth/acceptUnsigned"},
		{"election timeout under 3 heartbeats", []string{"--set", "sidecar.heartbeatInterval=100ms", "--set", "sidecar.electionTimeout=250ms"},
			"must be at least 3 × sidecar.heartbeatInterval"},
		{"heartbeat under 5ms", []string{"--set", "sidecar.heartbeatInterval=4ms", "--set", "sidecar.electionTimeout=100ms"}, "below the minimum 5ms"},
		{"election timeout over 5m", []string{"--set", "sidecar.electionTimeout=6m", "--set", "workload.terminationGracePeriodSeconds=900"}, "above the maximum 5m"},
		{"same leader and follower value", []string{"--set", "sidecar.followerLabelValue=leader"}, "must differ"},
		{"bad label value", []string{"--set", "sidecar.leaderLabelValue=the leader"}, "/sidecar/leaderLabelValue"},
		{"bad secret name", []string{"--set", "auth.existingSecret=My_Secret"}, "/auth/existingSecret"},
		{"bad pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, "/image/pullPolicy"},
		{"negative replicas", []string{"--set", "workload.replicas=-1"}, "/workload/replicas"},
		{"bad spread", []string{"--set", "workload.spreadAcrossNodes=maybe"}, "/workload/spreadAcrossNodes"},
		{"bad PDB percentage", []string{"--set", "podDisruptionBudget.maxUnavailable=half"}, "/podDisruptionBudget/maxUnavailable"},
		{"the guards hold without the example workload", []string{"--set", "workload.enabled=false", "--set", "sidecar.electionTimeout=200ms"},
			"must be at least 3 × sidecar.heartbeatInterval"},
		{"ServiceMonitor without the metrics Service", []string{"--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"},
			"serviceMonitor.enabled needs metrics.service.enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm(t, nil, append([]string{"template", testRelease, chartDir(t)}, tc.args...)...)
			if err == nil {
				t.Fatalf("helm template %v rendered (%d bytes); want it refused", tc.args, len(out))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template %v failed with\n%v\nwant a message containing %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestGracePeriodGuard: the grace period must be at least the sidecar's shutdown timeout (2
// election timeouts, or --shutdown-timeout) plus 5 s. Each case is checked twice: against the
// test's own model of the rule (shutdownTimeout, with Go's duration parser), so the table cannot
// drift from what the sidecar does, and against the chart.
func TestGracePeriodGuard(t *testing.T) {
	for _, tc := range []struct {
		name              string
		heartbeat, et     string
		extraArgs         []string
		grace             int64
		wantShutdown      time.Duration
		wantRenderAllowed bool
	}{
		{"the defaults", "100ms", "1s", nil, 30, 2 * time.Second, true},
		{"2 election timeouts + 5 s exactly", "100ms", "1s", nil, 7, 2 * time.Second, true},
		{"a second short", "100ms", "1s", nil, 6, 2 * time.Second, false},
		{"the default grace covers 12.5 s election timeouts", "100ms", "12500ms", nil, 30, 25 * time.Second, true},
		{"but not 12.501 s", "100ms", "12501ms", nil, 30, 25002 * time.Millisecond, false},
		{"a shorter --shutdown-timeout replaces 2 election timeouts", "100ms", "10s", []string{"--shutdown-timeout=2s"}, 7, 2 * time.Second, true},
		{"a longer one too", "100ms", "1s", []string{"--shutdown-timeout=1m30s"}, 94, 90 * time.Second, false},
		{"a fraction of a second", "20ms", "200ms", []string{"--shutdown-timeout=1.5s"}, 7, 1500 * time.Millisecond, true},
		{"a microsecond over", "100ms", "1s", []string{"--shutdown-timeout=25000001us"}, 30, 25000001 * time.Microsecond, false},
		{"0 is the default", "100ms", "1s", []string{"--shutdown-timeout=0"}, 7, 2 * time.Second, true},
		{"other flags do not count", "20ms", "200ms", []string{"--reported-lease=60ms", "--recover-after=40s"}, 6, 400 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rendered{values: loadValues(t)}
			r.values.Sidecar.ElectionTimeout, r.values.Sidecar.ExtraArgs = tc.et, tc.extraArgs
			st := shutdownTimeout(t, r)
			if st != tc.wantShutdown {
				t.Fatalf("the test's model gives a shutdown timeout of %v, the table %v", st, tc.wantShutdown)
			}
			if ok := time.Duration(tc.grace)*time.Second >= st+shutdownMargin; ok != tc.wantRenderAllowed {
				t.Fatalf("the test's model allows grace %d with shutdown timeout %v: %v; the table says %v", tc.grace, st, ok, tc.wantRenderAllowed)
			}
			args := []string{"template", testRelease, chartDir(t), "--set", "sidecar.heartbeatInterval=" + tc.heartbeat,
				"--set", "sidecar.electionTimeout=" + tc.et, "--set", fmt.Sprintf("workload.terminationGracePeriodSeconds=%d", tc.grace)}
			for i, a := range tc.extraArgs {
				args = append(args, "--set", fmt.Sprintf("sidecar.extraArgs[%d]=%s", i, a))
			}
			out, err := helm(t, nil, args...)
			switch {
			case tc.wantRenderAllowed && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.wantRenderAllowed && err == nil:
				t.Fatalf("rendered (%d bytes); want grace %d refused", len(out), tc.grace)
			case !tc.wantRenderAllowed && !strings.Contains(err.Error(), fmt.Sprintf("workload.terminationGracePeriodSeconds %d must be at least", tc.grace)):
				t.Fatalf("refused with the wrong message: %v", err)
			}
		})
	}
}

// TestAuthAcceptUnsigned: auth.acceptUnsigned adds --auth-accept-unsigned, right after
// --auth-secret-file, to the sidecar wherever it runs (a container, a native sidecar, a parent
// chart's pod), and nothing else changes; without it the flag is absent. Without auth.enabled the
// chart refuses to render, in this chart and in a parent that includes the sidecar.
func TestAuthAcceptUnsigned(t *testing.T) {
	sidecarArgs := func(t *testing.T, objs []*unstructured.Unstructured, kind, name string) []string {
		t.Helper()
		r := rendered{name: kind, objs: objs}
		var d appsv1.Deployment
		if !r.one(t, kind, name, &d) {
			t.FailNow()
		}
		for _, c := range append(slices.Clone(d.Spec.Template.Spec.InitContainers), d.Spec.Template.Spec.Containers...) {
			if c.Name == sidecarName {
				return c.Args
			}
		}
		t.Fatalf("no container %s", sidecarName)
		return nil
	}
	const flag = "--auth-accept-unsigned"
	without := func(args []string) []string {
		var out []string
		for _, a := range args {
			if a != flag {
				out = append(out, a)
			}
		}
		return out
	}
	for _, native := range []bool{false, true} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			set := fmt.Sprintf("sidecar.native=%v", native)
			name := testRelease + "-" + chartName
			plain := sidecarArgs(t, render(t, chartDir(t), testRelease, "ns", "--set", set), "Deployment", name)
			if slices.Contains(plain, flag) {
				t.Errorf("the defaults pass %s: %v", flag, plain)
			}
			off := sidecarArgs(t, render(t, chartDir(t), testRelease, "ns", "--set", set, "--set", "auth.acceptUnsigned=false"), "Deployment", name)
			if !slices.Equal(off, plain) {
				t.Errorf("auth.acceptUnsigned=false changes the args: %v, want %v", off, plain)
			}
			on := sidecarArgs(t, render(t, chartDir(t), testRelease, "ns", "--set", set, "--set", "auth.acceptUnsigned=true"), "Deployment", name)
			i := slices.Index(on, flag)
			if i < 1 || !strings.HasPrefix(on[i-1], "--auth-secret-file=") || slices.Index(on[i+1:], flag) >= 0 {
				t.Errorf("auth.acceptUnsigned=true: args %v, want %s once, right after --auth-secret-file", on, flag)
			}
			if !slices.Equal(without(on), plain) {
				t.Errorf("auth.acceptUnsigned=true changes more than %s: %v, want %v plus the flag", flag, on, plain)
			}
			// The off switch of the procedure: auth off, no transition flag, no key file.
			noAuth := sidecarArgs(t, render(t, chartDir(t), testRelease, "ns", "--set", set, "--set", "auth.enabled=false"), "Deployment", name)
			for _, a := range noAuth {
				if strings.HasPrefix(a, "--auth-") {
					t.Errorf("auth.enabled=false passes %s", a)
				}
			}
		})
	}
	t.Run("parent chart", func(t *testing.T) {
		parent := parentChart(t)
		const release = "shop"
		args := sidecarArgs(t, render(t, parent, release, "apps", "--set", "raft-elector.auth.acceptUnsigned=true"), "Deployment", release+"-my-app")
		if !slices.Contains(args, flag) {
			t.Errorf("the parent's sidecar lacks %s: %v", flag, args)
		}
		out, err := helm(t, nil, "template", release, parent, "--set", "raft-elector.auth.acceptUnsigned=true", "--set", "raft-elector.auth.enabled=false")
		if err == nil || !strings.Contains(err.Error(), "auth.acceptUnsigned needs auth.enabled") {
			t.Errorf("auth.acceptUnsigned without auth.enabled in a parent chart: %v (%d bytes), want it refused", err, len(out))
		}
	})
}

// TestNetworkPolicyPortsAreNumeric: the NetworkPolicy names no port by name (a named port of a
// native sidecar, an init container, is not resolved by every network plugin, and a port it
// cannot resolve admits nothing), and the numbers it admits are the containers' own ports: the
// peer port only from members, the ops port, and the application's port.
func TestNetworkPolicyPortsAreNumeric(t *testing.T) {
	for _, native := range []bool{false, true} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			r := rendered{name: "numeric", namespace: "ns", release: testRelease, values: loadValues(t),
				objs: render(t, chartDir(t), testRelease, "ns", "--set", fmt.Sprintf("sidecar.native=%v", native))}
			var np networkingv1.NetworkPolicy
			var d appsv1.Deployment
			if !r.one(t, "NetworkPolicy", r.fullname(), &np) || !r.one(t, "Deployment", r.workloadName(), &d) {
				return
			}
			containerPort := map[string]int32{} // container/port name → number
			spec := d.Spec.Template.Spec
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				for _, p := range c.Ports {
					containerPort[c.Name+"/"+p.Name] = p.ContainerPort
				}
			}
			if native && (len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != sidecarName) {
				t.Fatalf("sidecar.native=true: init containers %v, want the sidecar", spec.InitContainers)
			}
			var got []int32
			for i, rule := range np.Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port == nil || p.Port.Type != intstr.Int {
						t.Errorf("NetworkPolicy rule %d admits port %v: want a number", i, p.Port)
						continue
					}
					got = append(got, p.Port.IntVal)
				}
			}
			want := []int32{containerPort[sidecarName+"/peer"], containerPort[sidecarName+"/metrics"], containerPort[appName+"/http"]}
			if !slices.Equal(got, want) || !slices.Equal(want, []int32{peerPort, opsPort, appPort}) {
				t.Errorf("NetworkPolicy ports %v, want the sidecar's peer and metrics ports and the app's http port %v (%d, %d, %d)",
					got, want, peerPort, opsPort, appPort)
			}
		})
	}
}

// TestNamesFitWithLongReleaseNames: Helm allows release names of 53 characters; every name
// and label value must still fit.
func TestNamesFitWithLongReleaseNames(t *testing.T) {
	meta := readChartMeta(t)
	for _, release := range []string{
		strings.Repeat("a", 53),
		strings.Repeat("b", 40) + "-raft-elector", // contains the chart name: used as is
		"x-" + strings.Repeat("y", 48) + "-z",     // cut inside a word
		strings.Repeat("c", 50),                   // <fullname>-leader is cut right after a dash
	} {
		for _, kind := range []string{"Deployment", "StatefulSet"} {
			t.Run(fmt.Sprintf("%d-%s", len(release), kind), func(t *testing.T) {
				r := rendered{name: kind, namespace: "long", release: release, values: loadValues(t),
					objs: render(t, chartDir(t), release, "long", "--set", "workload.kind="+kind)}
				r.values.Workload.Kind = kind
				checkEveryObject(t, r, meta)
				checkWorkload(t, r, meta)
				for _, o := range r.objs {
					if strings.Contains(o.GetName(), "--") || strings.HasSuffix(o.GetName(), "-") {
						t.Errorf("%s %q: a cut name must not end in or double a dash", o.GetKind(), o.GetName())
					}
				}
			})
		}
	}
}

// TestParentChartExample renders deploy/helm/examples/parent-chart with this chart as its
// dependency (as `helm dependency build` would unpack it) and checks the sidecar it includes.
func TestParentChartExample(t *testing.T) {
	parent := parentChart(t)
	if out, err := helm(t, nil, "lint", "--strict", parent); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, native := range []bool{false, true} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			const release, ns = "shop", "apps"
			objs := render(t, parent, release, ns, "--set", fmt.Sprintf("raft-elector.sidecar.native=%v", native))
			// The dependency's values: its defaults, then the parent's raft-elector: section.
			var sub struct {
				Sub chartValues `json:"raft-elector"`
			}
			sub.Sub = loadValues(t)
			b, err := os.ReadFile(filepath.Join(parent, "values.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(b, &sub); err != nil {
				t.Fatal(err)
			}
			r := rendered{name: "parent", namespace: ns, release: release, objs: objs, values: sub.Sub}
			r.values.Sidecar.Native = native
			if r.values.Workload.Enabled {
				t.Fatal("the example keeps the dependency's example workload")
			}
			var dep appsv1.Deployment
			if !r.one(t, "Deployment", release+"-my-app", &dep) {
				return
			}
			spec := dep.Spec.Template.Spec
			checkSidecar(t, r, spec)
			sidecar := sidecarOf(t, r, spec)
			checkContainerSecurity(t, r, sidecar)
			sel, err := labels.Parse(flagValue(sidecar.Args, "--selector"))
			if err != nil || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
				t.Errorf("the sidecar's --selector %v (%v) does not select the parent's pods %v", sel, err, dep.Spec.Template.Labels)
			}
			if spec.ServiceAccountName != r.serviceAccountName() {
				t.Errorf("the parent's pods run as %q, want the dependency's ServiceAccount %q", spec.ServiceAccountName, r.serviceAccountName())
			}
			checkRBAC(t, r)
			checkServices(t, r)
			checkNetworkPolicy(t, r)
			checkPDB(t, r)
			checkBootstrapAndSecret(t, r)
			checkTestPod(t, r)
		})
	}
}

// parentChart is a copy of deploy/helm/examples/parent-chart with this chart unpacked as its
// dependency, as `helm dependency build` would.
func parentChart(t *testing.T) string {
	t.Helper()
	parent := filepath.Join(t.TempDir(), "parent-chart")
	copyDir(t, filepath.Join(repoRoot(t), "deploy", "helm", "examples", "parent-chart"), parent)
	os.RemoveAll(filepath.Join(parent, "charts"))
	copyDir(t, chartDir(t), filepath.Join(parent, "charts", chartName))
	return parent
}

// TestChartFlagsExistInTheBinary: every flag the chart passes is one the binary knows: the
// sidecar's flags in `raft-elector --help`, the example app's and the helm test's in
// `raft-elector watch --help`.
func TestChartFlagsExistInTheBinary(t *testing.T) {
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "raft-elector")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sidecar")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sidecar: %v\n%s", err, out)
	}
	help := func(args ...string) string {
		out, _ := exec.Command(bin, args...).CombinedOutput() // --help exits 0 or 2 by flag package
		return string(out)
	}
	known := func(helpText string) map[string]bool {
		m := map[string]bool{}
		for _, match := range regexp.MustCompile(`(?m)^\s+-([a-z][-a-z0-9]*)`).FindAllStringSubmatch(helpText, -1) {
			m["--"+match[1]] = true
		}
		return m
	}
	member, watch := known(help("--help")), known(help("watch", "--help"))
	if len(member) == 0 || len(watch) == 0 {
		t.Fatalf("cannot read the flags from --help:\n%s\n%s", help("--help"), help("watch", "--help"))
	}
	for _, sc := range scenarios(t) {
		r := renderScenario(t, sc, "flags")
		var pods []corev1.PodSpec
		for _, kind := range []string{"Deployment", "StatefulSet"} {
			for _, o := range r.find(kind, "") {
				var d struct {
					Spec struct{ Template corev1.PodTemplateSpec } `json:"spec"`
				}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
					t.Fatal(err)
				}
				pods = append(pods, d.Spec.Template.Spec)
			}
		}
		for _, o := range r.find("Pod", "") {
			var p corev1.Pod
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &p); err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p.Spec)
		}
		for _, spec := range pods {
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				flags, args := member, c.Args
				if len(args) > 0 && args[0] == "watch" {
					flags, args = watch, args[1:]
				}
				for _, a := range args {
					name, _, _ := strings.Cut(a, "=")
					if !flags[name] {
						t.Errorf("%s: container %s passes %s, which the binary does not know", sc.name, c.Name, name)
					}
				}
			}
		}
	}
}

// metaLabelSelector is metav1.LabelSelector (aliased to keep the struct literals short).
type metaLabelSelector = metav1.LabelSelector

// shutdownTimeout is the sidecar's --shutdown-timeout as the values set it, parsed the way the
// sidecar parses it: the last --shutdown-timeout= of extraArgs, else RAFT_ELECTOR_SHUTDOWN_TIMEOUT
// of extraEnv, else (and for 0) 2 election timeouts.
func shutdownTimeout(t *testing.T, r rendered) time.Duration {
	t.Helper()
	var d time.Duration
	for _, e := range r.values.Sidecar.ExtraEnv {
		if v, ok := e["value"].(string); ok && e["name"] == "RAFT_ELECTOR_SHUTDOWN_TIMEOUT" {
			d = mustDuration(t, v)
		}
	}
	for _, a := range r.values.Sidecar.ExtraArgs {
		if v, ok := strings.CutPrefix(a, "--shutdown-timeout="); ok {
			d = mustDuration(t, v)
		}
	}
	if d == 0 {
		d = 2 * mustDuration(t, r.values.Sidecar.ElectionTimeout)
	}
	return d
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

func flagValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// convertList converts values (decoded YAML) to Kubernetes types, strictly.
func convertList[T any](t *testing.T, in []any) []T {
	t.Helper()
	if len(in) == 0 {
		return nil
	}
	out := make([]T, len(in))
	for i, v := range in {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out[i]); err != nil {
			t.Fatalf("values item %s is no %T: %v", b, out[i], err)
		}
	}
	return out
}

func toAnyList[T any](in []T) []any {
	out := make([]any, len(in))
	for i, v := range in {
		out[i] = v
	}
	return out
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestValuesDocumented: every value of values.yaml has a row in the chart README's values table
// (generated from the `# --` comments), so the README cannot fall behind a new knob.
func TestValuesDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(chartDir(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			path := prefix + k
			if strings.Contains(string(readme), "| `"+path+"` |") {
				continue
			}
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(path+".", sub)
				continue
			}
			t.Errorf("values.yaml's %s has no row in the README's values table: document it with a `# --` comment and add the row", path)
		}
	}
	walk("", values)
}
