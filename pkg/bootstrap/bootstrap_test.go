package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

const (
	testNS   = "apps"
	testName = "raft-elector-test"
	testBase = "k8s-0123456789ab"
)

var (
	configMaps   = corev1.SchemeGroupVersion.WithResource("configmaps")
	configMapsGR = configMaps.GroupResource()
)

// fakeAPI is a fake clientset whose ConfigMaps keep the two promises of the API server that
// the bootstrap object relies on and that client-go's object tracker does not keep: every
// write gets a new resourceVersion, and an update that carries a resourceVersion fails with
// Conflict unless it is the stored one (an update without one is unconditional, as it is for
// ConfigMaps on a real server). Reactors a test prepends run before these, under the
// clientset's lock, so they change the store atomically with the request they intercept.
type fakeAPI struct {
	*fake.Clientset
	rv atomic.Int64
}

func newFakeAPI(t *testing.T, seed ...*corev1.ConfigMap) *fakeAPI {
	t.Helper()
	f := &fakeAPI{Clientset: fake.NewClientset()}
	f.rv.Store(100)
	for _, cm := range seed {
		if err := f.Tracker().Add(cm); err != nil {
			t.Fatalf("seed %s: %v", cm.Name, err)
		}
	}
	f.PrependReactor("update", "configmaps", f.update)
	f.PrependReactor("create", "configmaps", f.create)
	return f
}

func (f *fakeAPI) nextRV() string { return strconv.FormatInt(f.rv.Add(1), 10) }

func (f *fakeAPI) create(action k8stesting.Action) (bool, runtime.Object, error) {
	cm := action.(k8stesting.CreateAction).GetObject().(*corev1.ConfigMap).DeepCopy()
	if cm.ResourceVersion != "" {
		return true, nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	cm.ResourceVersion = f.nextRV()
	if err := f.Tracker().Create(configMaps, cm, action.GetNamespace()); err != nil {
		return true, nil, err
	}
	return true, cm.DeepCopy(), nil
}

func (f *fakeAPI) update(action k8stesting.Action) (bool, runtime.Object, error) {
	cm := action.(k8stesting.UpdateAction).GetObject().(*corev1.ConfigMap).DeepCopy()
	cur, err := f.Tracker().Get(configMaps, action.GetNamespace(), cm.Name)
	if err != nil {
		return true, nil, err
	}
	if cm.ResourceVersion != "" && cm.ResourceVersion != cur.(*corev1.ConfigMap).ResourceVersion {
		return true, nil, apierrors.NewConflict(configMapsGR, cm.Name, errors.New("the object has been modified"))
	}
	cm.ResourceVersion = f.nextRV()
	if err := f.Tracker().Update(configMaps, cm, action.GetNamespace()); err != nil {
		return true, nil, err
	}
	return true, cm.DeepCopy(), nil
}

// write stores data as the object's whole content, as another member would, and returns the
// record it now holds. It goes to the tracker directly, so reactors may call it.
func (f *fakeAPI) write(t *testing.T, data map[string]string) Record {
	t.Helper()
	cm := configMap("", data)
	cm.ResourceVersion = f.nextRV()
	err := f.Tracker().Update(configMaps, cm, testNS)
	if apierrors.IsNotFound(err) {
		err = f.Tracker().Create(configMaps, cm, testNS)
	}
	if err != nil {
		t.Errorf("write the bootstrap object: %v", err)
	}
	r, err := (&Object{}).parse(cm)
	if err != nil {
		t.Errorf("write the bootstrap object: %v", err)
	}
	return r
}

// stored returns the object as the API holds it, or nil if there is none.
func (f *fakeAPI) stored(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	obj, err := f.Tracker().Get(configMaps, testNS, testName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get the stored object: %v", err)
	}
	return obj.(*corev1.ConfigMap)
}

// storedRecord parses the stored object.
func (f *fakeAPI) storedRecord(t *testing.T) Record {
	t.Helper()
	cm := f.stored(t)
	if cm == nil {
		t.Fatal("no bootstrap object is stored")
	}
	r, err := (&Object{}).parse(cm)
	if err != nil {
		t.Fatalf("the stored object does not parse: %v", err)
	}
	return r
}

// writes returns the ConfigMap writes sent to the API, failed ones included.
func (f *fakeAPI) writes(verb string) []*corev1.ConfigMap {
	var out []*corev1.ConfigMap
	for _, a := range f.Actions() {
		if a.GetResource() != configMaps || a.GetVerb() != verb {
			continue
		}
		switch a := a.(type) {
		case k8stesting.CreateAction:
			out = append(out, a.GetObject().(*corev1.ConfigMap))
		case k8stesting.UpdateAction:
			out = append(out, a.GetObject().(*corev1.ConfigMap))
		}
	}
	return out
}

func configMap(rv string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: testName, Namespace: testNS, ResourceVersion: rv},
		Data:       data,
	}
}

func recordData(clusterID, generation, bootstrapper string) map[string]string {
	return map[string]string{KeyCluster: clusterID, KeyGeneration: generation, KeyBootstrapper: bootstrapper}
}

func newObject(t *testing.T, client kubernetes.Interface) *Object {
	t.Helper()
	o, err := New(Config{Client: client, Namespace: testNS, Name: testName, Base: testBase})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return o
}

func validTimestamp(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// checkGeneration checks a record a member wrote for itself as generation gen.
func checkGeneration(t *testing.T, rec Record, gen int64, self string) {
	t.Helper()
	if rec.Generation != gen || rec.Bootstrapper != self || rec.ResourceVersion == "" {
		t.Errorf("record = %+v, want generation %d bootstrapped by %q with a resourceVersion", rec, gen, self)
	}
	if want := testBase + "-g" + strconv.FormatInt(gen, 10) + "-"; !strings.HasPrefix(rec.ClusterID, want) || len(rec.ClusterID) <= len(want) {
		t.Errorf("cluster id %q does not start with %q followed by a random suffix", rec.ClusterID, want)
	}
	// The bootstrapper starts the generation as its only voter, at index 1.
	if !slices.Equal(rec.Voters(), []string{self}) || rec.ConfigIndex != 1 {
		t.Errorf("record voters %q at config index %d, want [%s] at 1", rec.Voters(), rec.ConfigIndex, self)
	}
}

func TestDefaultNameIsStableAcrossReleases(t *testing.T) {
	// A member finds its cluster by this name at every start: a release that changed it would
	// make every member of a running application bootstrap a new cluster.
	const want = "raft-elector-82d63aa350"
	if got := DefaultName("apps", "app.kubernetes.io/name=db"); got != want {
		t.Errorf("DefaultName = %q, want %q", got, want)
	}
	if a, b := DefaultName("apps", "app=db"), DefaultName("apps", "app=db"); a != b {
		t.Errorf("DefaultName is not deterministic: %q then %q", a, b)
	}
}

func TestDefaultNameIsAConfigMapName(t *testing.T) {
	for _, in := range [][2]string{
		{"apps", "app=db"},
		{"a", ""},
		{strings.Repeat("n", 63), strings.Repeat("app.kubernetes.io/name=x,", 40)},
	} {
		name := DefaultName(in[0], in[1])
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("DefaultName(%q, %q) = %q is not a DNS subdomain: %v", in[0], in[1], name, errs)
		}
		if _, err := New(Config{Client: fake.NewClientset(), Name: name, Base: testBase}); err != nil {
			t.Errorf("New rejects DefaultName(%q, %q): %v", in[0], in[1], err)
		}
	}
}

func TestDefaultNameDiffersPerNamespaceAndSelector(t *testing.T) {
	inputs := [][2]string{
		{"apps", "app=db"},
		{"apps", "app=cache"},
		{"apps", "app=db,tier=primary"},
		{"other", "app=db"},
		{"app=db", "apps"},
		{"apps", ""},
		{"", "apps"},
	}
	seen := map[string][2]string{}
	for _, in := range inputs {
		name := DefaultName(in[0], in[1])
		if prev, ok := seen[name]; ok {
			t.Errorf("DefaultName(%q, %q) = DefaultName(%q, %q) = %q", in[0], in[1], prev[0], prev[1], name)
		}
		seen[name] = in
	}
}

func TestNewChecksTheConfig(t *testing.T) {
	client := fake.NewClientset()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" if the config is valid
	}{
		{"valid", Config{Client: client, Namespace: testNS, Name: testName, Base: testBase}, ""},
		{"longest base", Config{Client: client, Name: testName, Base: strings.Repeat("b", 64)}, ""},
		{"longest name", Config{Client: client, Name: strings.Repeat("n", 253), Base: testBase}, ""},
		{"dotted name", Config{Client: client, Name: "raft-elector.db", Base: testBase}, ""},
		{"no client", Config{Name: testName, Base: testBase}, "no API client"},
		{"empty name", Config{Client: client, Base: testBase}, "--bootstrap-object"},
		{"upper-case name", Config{Client: client, Name: "Raft-Elector", Base: testBase}, "--bootstrap-object"},
		{"underscore in name", Config{Client: client, Name: "raft_elector", Base: testBase}, "--bootstrap-object"},
		{"name too long", Config{Client: client, Name: strings.Repeat("n", 254), Base: testBase}, "--bootstrap-object"},
		{"empty base", Config{Client: client, Name: testName}, "base"},
		{"base too long", Config{Client: client, Name: testName, Base: strings.Repeat("b", 65)}, "base"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || o == nil {
					t.Fatalf("New = %v, %v; want an object", o, err)
				}
				if o.Name() != tt.cfg.Name {
					t.Errorf("Name() = %q, want %q", o.Name(), tt.cfg.Name)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one mentioning %q", err, tt.wantErr)
			}
			if o != nil {
				t.Errorf("New returned an object with its error")
			}
		})
	}
}

func TestResolveOnEmptyAPICreatesGenerationOne(t *testing.T) {
	api := newFakeAPI(t)
	a := newObject(t, api)
	aChanged := a.Changed()

	rec, won, err := a.Resolve(t.Context(), "a")
	if err != nil || !won {
		t.Fatalf("first Resolve = %+v, %v, %v; want to win", rec, won, err)
	}
	checkGeneration(t, rec, 1, "a")
	if stored := api.storedRecord(t); stored != rec {
		t.Errorf("stored record = %+v, Resolve returned %+v", stored, rec)
	}
	if d := api.stored(t).Data; d[KeyVoters] != "a" || d[KeyConfigIndex] != "1" {
		t.Errorf("stored %s=%q %s=%q, want a and 1", KeyVoters, d[KeyVoters], KeyConfigIndex, d[KeyConfigIndex])
	}
	if at := api.stored(t).Data[KeyCreated]; !validTimestamp(at) {
		t.Errorf("%s = %q, want an RFC 3339 time", KeyCreated, at)
	}
	if got := api.stored(t).Labels["app.kubernetes.io/managed-by"]; got != "raft-elector" {
		t.Errorf("managed-by label = %q, want raft-elector", got)
	}
	if a.Latest() != rec || !isClosed(aChanged) {
		t.Errorf("winner: Latest = %+v, Changed closed = %v; want %+v, true", a.Latest(), isClosed(aChanged), rec)
	}

	b := newObject(t, api)
	bChanged := b.Changed()
	got, won, err := b.Resolve(t.Context(), "b")
	if err != nil || won || got != rec {
		t.Errorf("second member's Resolve = %+v, %v, %v; want %+v, false, nil", got, won, err, rec)
	}
	if b.Latest() != rec || !isClosed(bChanged) {
		t.Errorf("second member: Latest = %+v, Changed closed = %v; want %+v, true", b.Latest(), isClosed(bChanged), rec)
	}

	// The winner asking again (a restart before it saved anything) is told it bootstrapped
	// this cluster, but did not win again.
	again, won, err := a.Resolve(t.Context(), "a")
	if err != nil || won || again != rec {
		t.Errorf("winner's second Resolve = %+v, %v, %v; want %+v, false, nil", again, won, err, rec)
	}
	if n := len(api.writes("create")) + len(api.writes("update")); n != 1 {
		t.Errorf("%d writes to the API, want the one create", n)
	}
}

func TestResolveLoserOfTheCreateRaceReturnsTheWinnersRecord(t *testing.T) {
	api := newFakeAPI(t)
	var winner Record
	fired := 0
	api.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		fired++
		if fired == 1 {
			// Another member's create lands between this member's get and create.
			winner = api.write(t, recordData(testBase+"-g1-0a0a0a0a0a0a", "1", "other"))
		}
		return false, nil, nil
	})
	o := newObject(t, api)

	rec, won, err := o.Resolve(t.Context(), "self")
	if err != nil || won {
		t.Fatalf("Resolve = %+v, %v, %v; want to lose without an error", rec, won, err)
	}
	if fired != 1 {
		t.Fatalf("Resolve created %d times, want once", fired)
	}
	if rec != winner || o.Latest() != winner {
		t.Errorf("Resolve = %+v, Latest = %+v; want the winner's %+v", rec, o.Latest(), winner)
	}
	if stored := api.storedRecord(t); stored != winner {
		t.Errorf("stored record = %+v, want the winner's %+v untouched", stored, winner)
	}
}

func TestResolveConcurrentMembersAgreeOnOneBootstrapper(t *testing.T) {
	const members = 8
	api := newFakeAPI(t)
	type result struct {
		self string
		rec  Record
		won  bool
		err  error
	}
	results := make([]result, members)
	var wg sync.WaitGroup
	for i := range members {
		o := newObject(t, api)
		self := "m" + strconv.Itoa(i)
		wg.Go(func() {
			rec, won, err := o.Resolve(t.Context(), self)
			results[i] = result{self, rec, won, err}
		})
	}
	wg.Wait()

	stored := api.storedRecord(t)
	winners := 0
	for _, r := range results {
		if r.err != nil {
			t.Errorf("%s: Resolve: %v", r.self, r.err)
			continue
		}
		if r.won {
			winners++
			if stored.Bootstrapper != r.self {
				t.Errorf("%s won but the object names %q", r.self, stored.Bootstrapper)
			}
		}
		if r.rec != stored {
			t.Errorf("%s: Resolve = %+v, the object holds %+v", r.self, r.rec, stored)
		}
	}
	if winners != 1 {
		t.Errorf("%d members won the bootstrap, want exactly 1", winners)
	}
}

func TestResolveFillsAnObjectCreatedEmpty(t *testing.T) {
	tests := []struct {
		name string
		data map[string]string
	}{
		{"no data", nil},
		{"empty data", map[string]string{}},
		{"empty values", recordData("", "", "")},
		{"only a timestamp", map[string]string{KeyCreated: "2024-01-01T00:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, configMap("7", tt.data))
			o := newObject(t, api)

			rec, won, err := o.Resolve(t.Context(), "a")
			if err != nil || !won {
				t.Fatalf("Resolve = %+v, %v, %v; want to win", rec, won, err)
			}
			checkGeneration(t, rec, 1, "a")
			if stored := api.storedRecord(t); stored != rec {
				t.Errorf("stored record = %+v, Resolve returned %+v", stored, rec)
			}
			if o.Latest() != rec {
				t.Errorf("Latest = %+v, want %+v", o.Latest(), rec)
			}
			updates := api.writes("update")
			if len(updates) != 1 || updates[0].ResourceVersion != "7" {
				t.Errorf("updates = %d, want one conditional on resourceVersion 7", len(updates))
			}
			if creates := api.writes("create"); len(creates) != 0 {
				t.Errorf("%d creates, want none", len(creates))
			}
		})
	}
}

func TestResolveFillConflictReturnsTheOtherRecord(t *testing.T) {
	api := newFakeAPI(t, configMap("7", nil))
	var other Record
	fired := 0
	api.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		fired++
		if fired > 1 {
			return false, nil, nil
		}
		other = api.write(t, recordData(testBase+"-g1-0b0b0b0b0b0b", "1", "other"))
		return true, nil, apierrors.NewConflict(configMapsGR, testName, errors.New("the object has been modified"))
	})
	o := newObject(t, api)

	rec, won, err := o.Resolve(t.Context(), "self")
	if err != nil || won {
		t.Fatalf("Resolve = %+v, %v, %v; want to lose without an error", rec, won, err)
	}
	if fired != 1 {
		t.Errorf("Resolve updated %d times, want once", fired)
	}
	if rec != other || o.Latest() != other {
		t.Errorf("Resolve = %+v, Latest = %+v; want the other member's %+v", rec, o.Latest(), other)
	}
	if stored := api.storedRecord(t); stored != other {
		t.Errorf("stored record = %+v, want %+v untouched", stored, other)
	}
}

func TestResolveCreatesAnEmptyObjectDeletedBeforeItIsFilled(t *testing.T) {
	api := newFakeAPI(t, configMap("7", nil))
	deleted := false
	api.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !deleted {
			deleted = true
			if err := api.Tracker().Delete(configMaps, testNS, testName); err != nil {
				t.Errorf("delete: %v", err)
			}
		}
		return false, nil, nil
	})
	o := newObject(t, api)

	rec, won, err := o.Resolve(t.Context(), "a")
	if err != nil || !won {
		t.Fatalf("Resolve = %+v, %v, %v; want to win by creating the object", rec, won, err)
	}
	checkGeneration(t, rec, 1, "a")
	if stored := api.storedRecord(t); stored != rec {
		t.Errorf("stored record = %+v, Resolve returned %+v", stored, rec)
	}
	if n := len(api.writes("create")); n != 1 {
		t.Errorf("%d creates, want 1", n)
	}
}

func TestResolveGivesUpWhenTheObjectKeepsChanging(t *testing.T) {
	api := newFakeAPI(t, configMap("7", nil))
	api.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(configMapsGR, testName, errors.New("the object has been modified"))
	})
	o := newObject(t, api)

	rec, won, err := o.Resolve(t.Context(), "a")
	if err == nil || won || !rec.IsZero() {
		t.Fatalf("Resolve = %+v, %v, %v; want an error", rec, won, err)
	}
	if n := len(api.writes("update")); n != 5 {
		t.Errorf("%d updates, want 5 attempts", n)
	}
}

func TestResolveRejectsAMalformedObjectWithoutOverwritingIt(t *testing.T) {
	long := strings.Repeat("c", raft.MaxIDLength)
	tests := []struct {
		name    string
		data    map[string]string
		wantKey string // the key the error names; "" if the object is valid
	}{
		{"valid", recordData("c-g1-x", "1", "a"), ""},
		{"longest cluster id and bootstrapper", recordData(long, "3", strings.Repeat("b", raft.MaxIDLength)), ""},
		{"generation not a number", recordData("c-g1-x", "x", "a"), KeyGeneration},
		{"generation zero", recordData("c-g1-x", "0", "a"), KeyGeneration},
		{"generation negative", recordData("c-g1-x", "-1", "a"), KeyGeneration},
		{"generation missing", map[string]string{KeyCluster: "c-g1-x", KeyBootstrapper: "a"}, KeyGeneration},
		{"cluster id missing", map[string]string{KeyGeneration: "1", KeyBootstrapper: "a"}, KeyCluster},
		{"cluster id with a space", recordData("c g1", "1", "a"), KeyCluster},
		{"cluster id with a NUL", recordData("c-g1\x00", "1", "a"), KeyCluster},
		{"cluster id not ASCII", recordData("c-g1-é", "1", "a"), KeyCluster},
		{"cluster id too long", recordData(long+"c", "1", "a"), KeyCluster},
		{"bootstrapper missing", map[string]string{KeyCluster: "c-g1-x", KeyGeneration: "1"}, KeyBootstrapper},
		{"bootstrapper too long", recordData("c-g1-x", "1", strings.Repeat("b", raft.MaxIDLength+1)), KeyBootstrapper},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, configMap("7", tt.data))
			before := api.stored(t).DeepCopy()
			o := newObject(t, api)
			changed := o.Changed()

			rec, won, err := o.Resolve(t.Context(), "self")
			if tt.wantKey == "" {
				gen, _ := strconv.ParseInt(tt.data[KeyGeneration], 10, 64)
				want := Record{ClusterID: tt.data[KeyCluster], Generation: gen, Bootstrapper: tt.data[KeyBootstrapper], ResourceVersion: "7"}
				if err != nil || won || rec != want {
					t.Fatalf("Resolve = %+v, %v, %v; want %+v, false, nil", rec, won, err, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantKey) || !strings.Contains(err.Error(), testNS+"/"+testName) {
				t.Errorf("Resolve error = %v, want one naming %s/%s and %q", err, testNS, testName, tt.wantKey)
			}
			if won || !rec.IsZero() {
				t.Errorf("Resolve = %+v, %v with its error; want a zero record", rec, won)
			}
			if after := api.stored(t); after.ResourceVersion != before.ResourceVersion || !equalData(after.Data, before.Data) {
				t.Errorf("the malformed object was overwritten: %v, was %v", after.Data, before.Data)
			}
			if n := len(api.writes("create")) + len(api.writes("update")); n != 0 {
				t.Errorf("%d writes to the API, want none", n)
			}
			if !o.Latest().IsZero() || isClosed(changed) {
				t.Errorf("Latest = %+v, Changed closed = %v; a malformed object must not be observed", o.Latest(), isClosed(changed))
			}
		})
	}
}

func equalData(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestGetReportsAMissingObjectAsNotFound(t *testing.T) {
	o := newObject(t, newFakeAPI(t))
	if rec, err := o.Get(t.Context()); !apierrors.IsNotFound(err) || !rec.IsZero() {
		t.Errorf("Get = %+v, %v; want a zero record and NotFound", rec, err)
	}
}

func TestAPIErrorsNameTheRBACFixOnlyWhenForbidden(t *testing.T) {
	forbidden := apierrors.NewForbidden(configMapsGR, testName, errors.New("RBAC: access denied"))
	current := configMap("7", recordData(testBase+"-g1-0c0c0c0c0c0c", "1", "a"))
	doResolve := func(o *Object) error { _, _, err := o.Resolve(t.Context(), "self"); return err }
	doRecover := func(o *Object) error {
		_, _, err := o.Recover(t.Context(), Record{ClusterID: testBase + "-g1-0c0c0c0c0c0c", Generation: 1, Bootstrapper: "a", ResourceVersion: "7"}, "self")
		return err
	}
	tests := []struct {
		name     string
		seed     []*corev1.ConfigMap
		verb     string
		err      error
		call     func(*Object) error
		wantHint bool
	}{
		{"resolve: get forbidden", nil, "get", forbidden, doResolve, true},
		{"resolve: create forbidden", nil, "create", forbidden, doResolve, true},
		{"resolve: fill forbidden", []*corev1.ConfigMap{configMap("7", nil)}, "update", forbidden, doResolve, true},
		{"recover: update forbidden", []*corev1.ConfigMap{current}, "update", forbidden, doRecover, true},
		{"resolve: get fails otherwise", nil, "get", apierrors.NewInternalError(errors.New("etcd down")), doResolve, false},
		{"resolve: create fails otherwise", nil, "create", apierrors.NewServiceUnavailable("overloaded"), doResolve, false},
		{"recover: update fails otherwise", []*corev1.ConfigMap{current}, "update", apierrors.NewInternalError(errors.New("etcd down")), doRecover, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, tt.seed...)
			api.PrependReactor(tt.verb, "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tt.err
			})
			err := tt.call(newObject(t, api))
			if err == nil {
				t.Fatal("no error")
			}
			if apierrors.ReasonForError(err) != apierrors.ReasonForError(tt.err) {
				t.Errorf("error %v lost the API's reason %s", err, apierrors.ReasonForError(tt.err))
			}
			hint := strings.Contains(err.Error(), "configmaps") && strings.Contains(err.Error(), "deploy/rbac.yaml")
			if hint != tt.wantHint {
				t.Errorf("error %q: names the RBAC fix = %v, want %v", err, hint, tt.wantHint)
			}
			if !strings.Contains(err.Error(), testNS+"/"+testName) {
				t.Errorf("error %q does not name the object", err)
			}
		})
	}
}

func TestRecoverWithTheCurrentRecordStartsTheNextGeneration(t *testing.T) {
	api := newFakeAPI(t)
	a := newObject(t, api)
	prev, _, err := a.Resolve(t.Context(), "a")
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	b := newObject(t, api)
	if _, _, err := b.Resolve(t.Context(), "b"); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	changed := b.Changed()

	rec, won, err := b.Recover(t.Context(), prev, "b")
	if err != nil || !won {
		t.Fatalf("Recover = %+v, %v, %v; want to win", rec, won, err)
	}
	checkGeneration(t, rec, 2, "b")
	if rec.ClusterID == prev.ClusterID || rec.ResourceVersion == prev.ResourceVersion {
		t.Errorf("Recover kept the cluster id or resourceVersion of %+v: %+v", prev, rec)
	}
	if stored := api.storedRecord(t); stored != rec {
		t.Errorf("stored record = %+v, Recover returned %+v", stored, rec)
	}
	if updates := api.writes("update"); len(updates) != 1 || updates[0].ResourceVersion != prev.ResourceVersion {
		t.Errorf("updates = %d, want one conditional on resourceVersion %s", len(updates), prev.ResourceVersion)
	}
	if b.Latest() != rec || !isClosed(changed) {
		t.Errorf("Latest = %+v, Changed closed = %v; want %+v, true", b.Latest(), isClosed(changed), rec)
	}
	if isClosed(b.Changed()) {
		t.Error("Changed after the recovery is already closed")
	}

	// The next recovery, from the new record, goes one generation further.
	next, won, err := a.Recover(t.Context(), rec, "a")
	if err != nil || !won {
		t.Fatalf("second Recover = %+v, %v, %v; want to win", next, won, err)
	}
	checkGeneration(t, next, 3, "a")
}

func TestRecoverWithAStaleRecordReturnsTheCurrentOne(t *testing.T) {
	prevData := recordData(testBase+"-g1-0d0d0d0d0d0d", "1", "a")
	prev := Record{ClusterID: prevData[KeyCluster], Generation: 1, Bootstrapper: "a", ResourceVersion: "7"}
	tests := []struct {
		name string
		data map[string]string // what the object holds when the recovery is attempted
	}{
		{"another survivor recovered first", recordData(testBase+"-g2-0e0e0e0e0e0e", "2", "b")},
		// Only the resourceVersion moved (a label was edited): the record comes back with
		// the cluster unchanged, so the caller sees that nobody recovered.
		{"object rewritten with the same cluster", prevData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, configMap(prev.ResourceVersion, prevData))
			current := api.write(t, tt.data)
			o := newObject(t, api)

			rec, won, err := o.Recover(t.Context(), prev, "self")
			if err != nil || won {
				t.Fatalf("Recover = %+v, %v, %v; want to lose without an error", rec, won, err)
			}
			if rec != current || o.Latest() != current {
				t.Errorf("Recover = %+v, Latest = %+v; want the current %+v", rec, o.Latest(), current)
			}
			if stored := api.storedRecord(t); stored != current {
				t.Errorf("stored record = %+v, want %+v untouched", stored, current)
			}
		})
	}
}

func TestRecoverConcurrentSurvivorsExactlyOneWins(t *testing.T) {
	const survivors = 5
	api := newFakeAPI(t)
	prev, _, err := newObject(t, api).Resolve(t.Context(), "gone")
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	type result struct {
		self string
		rec  Record
		won  bool
		err  error
	}
	results := make([]result, survivors)
	var wg sync.WaitGroup
	for i := range survivors {
		o := newObject(t, api)
		self := "s" + strconv.Itoa(i)
		wg.Go(func() {
			rec, won, err := o.Recover(t.Context(), prev, self)
			results[i] = result{self, rec, won, err}
		})
	}
	wg.Wait()

	stored := api.storedRecord(t)
	if stored.Generation != 2 {
		t.Errorf("stored generation = %d, want 2: more than one recovery took effect", stored.Generation)
	}
	winners := 0
	for _, r := range results {
		if r.err != nil {
			t.Errorf("%s: Recover: %v", r.self, r.err)
			continue
		}
		if r.won {
			winners++
			if stored.Bootstrapper != r.self {
				t.Errorf("%s won but the object names %q", r.self, stored.Bootstrapper)
			}
		}
		if r.rec != stored {
			t.Errorf("%s: Recover = %+v, the object holds %+v", r.self, r.rec, stored)
		}
	}
	if winners != 1 {
		t.Errorf("%d survivors won the recovery, want exactly 1", winners)
	}
}

// Changed tracks the cluster in Latest: a record that only refreshes the resourceVersion of
// the cluster already known updates Latest (the next recovery's precondition) without waking
// the watchers.
func TestObserveKeepsTheNewestClusterAndClosesChangedOnlyForANewOne(t *testing.T) {
	a1 := Record{ClusterID: "c-g1-a", Generation: 1, Bootstrapper: "a", ResourceVersion: "10"}
	a1Refreshed := a1
	a1Refreshed.ResourceVersion = "11"
	b2 := Record{ClusterID: "c-g2-b", Generation: 2, Bootstrapper: "b", ResourceVersion: "12"}
	c1 := Record{ClusterID: "c-g1-c", Generation: 1, Bootstrapper: "c", ResourceVersion: "13"}
	d2 := Record{ClusterID: "c-g2-d", Generation: 2, Bootstrapper: "d", ResourceVersion: "14"}
	e5 := Record{ClusterID: "c-g5-e", Generation: 5, Bootstrapper: "e", ResourceVersion: "15"}
	steps := []struct {
		name        string
		in          Record
		wantLatest  Record
		wantChanged bool
	}{
		{"empty object before any cluster", Record{ResourceVersion: "5"}, Record{}, false},
		{"first cluster", a1, a1, true},
		{"same record again", a1, a1, false},
		{"same cluster, newer resourceVersion", a1Refreshed, a1Refreshed, false},
		{"next generation", b2, b2, true},
		{"older generation", c1, b2, false},
		{"empty object after a cluster", Record{ResourceVersion: "20"}, b2, false},
		{"same generation, another cluster (reinstalled)", d2, d2, true},
		{"generations skipped", e5, e5, true},
	}
	o := newObject(t, fake.NewClientset())
	for _, s := range steps {
		before := o.Changed()
		o.observe(s.in)
		if got := o.Latest(); got != s.wantLatest {
			t.Errorf("%s: Latest = %+v, want %+v", s.name, got, s.wantLatest)
		}
		if got := isClosed(before); got != s.wantChanged {
			t.Errorf("%s: Changed closed = %v, want %v", s.name, got, s.wantChanged)
		}
		if isClosed(o.Changed()) {
			t.Errorf("%s: the next Changed channel is already closed", s.name)
		}
	}
}

// Every cluster id Resolve hands out must be one the next member can read back: the base
// comes from --cluster-id, which the sidecar checks only for length.
func TestResolveHandsOutClusterIDsEveryMemberCanRead(t *testing.T) {
	for _, base := range []string{"my app", "café"} {
		t.Run(base, func(t *testing.T) {
			api := newFakeAPI(t)
			cfg := Config{Client: api, Namespace: testNS, Name: testName, Base: base}
			a, err := New(cfg)
			if err != nil {
				return // refusing the base is a fine answer
			}
			rec, won, err := a.Resolve(t.Context(), "a")
			if err != nil || !won {
				t.Fatalf("first Resolve = %+v, %v, %v; want to win", rec, won, err)
			}
			b, err := New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got, _, err := b.Resolve(t.Context(), "b"); err != nil || got != rec {
				t.Errorf("New accepted base %q and member a bootstrapped cluster %q, but member b's Resolve = %+v, %v: it can never join",
					base, rec.ClusterID, got, err)
			}
		})
	}
}

func TestRunWatchesTheObject(t *testing.T) {
	first := configMap("", recordData(testBase+"-g1-aaaa", "1", "a"))
	first.UID, first.ResourceVersion = "uid-1", "1"
	f := newFakeAPI(t, first)
	o := newObject(t, f)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := o.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	defer func() { cancel(); <-done }()
	waitUntil := func(what string, cond func(Record) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond(o.Latest()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; latest %+v", what, o.Latest())
			}
			select {
			case <-o.Changed():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitUntil("generation 1 from the list", func(r Record) bool { return r.Generation == 1 && r.UID == "uid-1" })

	// A recovery by another member: generation 2 arrives through the watch.
	ch := o.Changed()
	second := configMap("", recordData(testBase+"-g2-bbbb", "2", "b"))
	second.UID, second.ResourceVersion = "uid-1", "2"
	if err := f.Tracker().Update(configMaps, second, testNS); err != nil {
		t.Fatal(err)
	}
	waitUntil("generation 2 from the watch", func(r Record) bool { return r.ClusterID == testBase+"-g2-bbbb" })
	if !isClosed(ch) {
		t.Error("Changed not closed by the new generation")
	}

	// The leader records its voters: the watch updates Latest without waking the watchers.
	ch = o.Changed()
	recorded := configMap("", votersData(testBase+"-g2-bbbb", "2", "b", "a,b,c", "12"))
	recorded.UID, recorded.ResourceVersion = "uid-1", "3"
	if err := f.Tracker().Update(configMaps, recorded, testNS); err != nil {
		t.Fatal(err)
	}
	waitUntil("the recorded voters from the watch", func(r Record) bool { return r.ConfigIndex == 12 && len(r.Voters()) == 3 })
	if isClosed(ch) {
		t.Error("Changed closed by recorded voters of the same cluster")
	}

	// A malformed update is ignored; the record stays.
	bad := configMap("", recordData(testBase+"-g3-cccc", "x", "c"))
	bad.UID, bad.ResourceVersion = "uid-1", "4"
	if err := f.Tracker().Update(configMaps, bad, testNS); err != nil {
		t.Fatal(err)
	}
	// The object re-created (the application was reinstalled): generation 1 again, but a new
	// object, so it is the truth now.
	if err := f.Tracker().Delete(configMaps, testNS, testName); err != nil {
		t.Fatal(err)
	}
	again := configMap("", recordData(testBase+"-g1-dddd", "1", "d"))
	again.UID, again.ResourceVersion = "uid-2", "5"
	if err := f.Tracker().Create(configMaps, again, testNS); err != nil {
		t.Fatal(err)
	}
	waitUntil("the re-created object", func(r Record) bool { return r.ClusterID == testBase+"-g1-dddd" && r.UID == "uid-2" })
}

// votersData is recordData with recorded voters.
func votersData(clusterID, generation, bootstrapper, voters, index string) map[string]string {
	d := recordData(clusterID, generation, bootstrapper)
	d[KeyVoters], d[KeyConfigIndex] = voters, index
	return d
}

func TestParseRecordedVoters(t *testing.T) {
	const cluster = testBase + "-g1-0f0f0f0f0f0f"
	long := strings.Repeat("v", raft.MaxIDLength)
	many := make([]string, raft.MaxMembers+1)
	for i := range many {
		many[i] = fmt.Sprintf("m%03d", i)
	}
	tests := []struct {
		name       string
		data       map[string]string
		wantVoters []string
		wantIndex  uint64
		wantKey    string // the key a malformed object's error names; "" if valid
	}{
		{"written by an older version", recordData(cluster, "1", "a"), nil, 0, ""},
		{"one voter", votersData(cluster, "1", "a", "a", "1"), []string{"a"}, 1, ""},
		{"three voters", votersData(cluster, "2", "a", "a_1,b_2,c_3", "17"), []string{"a_1", "b_2", "c_3"}, 17, ""},
		{"longest id", votersData(cluster, "1", "a", long, "1"), []string{long}, 1, ""},
		{"most voters", votersData(cluster, "1", "a", strings.Join(many[:raft.MaxMembers], ","), "9"), many[:raft.MaxMembers], 9, ""},
		{"largest index", votersData(cluster, "1", "a", "a", "18446744073709551615"), []string{"a"}, 1<<64 - 1, ""},
		{"index without voters", votersData(cluster, "1", "a", "", "3"), nil, 0, KeyVoters},
		{"voters without index", votersData(cluster, "1", "a", "a", ""), nil, 0, KeyConfigIndex},
		{"index zero", votersData(cluster, "1", "a", "a", "0"), nil, 0, KeyConfigIndex},
		{"index negative", votersData(cluster, "1", "a", "a", "-1"), nil, 0, KeyConfigIndex},
		{"index not decimal", votersData(cluster, "1", "a", "a", "0x10"), nil, 0, KeyConfigIndex},
		{"index with a space", votersData(cluster, "1", "a", "a", " 1"), nil, 0, KeyConfigIndex},
		{"index overflows", votersData(cluster, "1", "a", "a", "18446744073709551616"), nil, 0, KeyConfigIndex},
		{"unsorted", votersData(cluster, "1", "a", "b,a", "2"), nil, 0, KeyVoters},
		{"duplicate", votersData(cluster, "1", "a", "a,a", "2"), nil, 0, KeyVoters},
		{"empty id", votersData(cluster, "1", "a", "a,,b", "2"), nil, 0, KeyVoters},
		{"trailing comma", votersData(cluster, "1", "a", "a,", "2"), nil, 0, KeyVoters},
		{"id with a space", votersData(cluster, "1", "a", "a, b", "2"), nil, 0, KeyVoters},
		{"id not ASCII", votersData(cluster, "1", "a", "é", "2"), nil, 0, KeyVoters},
		{"id too long", votersData(cluster, "1", "a", long+"v", "2"), nil, 0, KeyVoters},
		{"too many voters", votersData(cluster, "1", "a", strings.Join(many, ","), "2"), nil, 0, KeyVoters},
		{"too long", votersData(cluster, "1", "a", strings.Repeat("v,", maxVotersLength), "2"), nil, 0, KeyVoters},
		// Recorded voters do not make an object without a cluster valid.
		{"voters without a cluster", map[string]string{KeyVoters: "a", KeyConfigIndex: "1"}, nil, 0, KeyGeneration},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := (&Object{}).parse(configMap("7", tt.data))
			if tt.wantKey != "" {
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.wantKey) {
					t.Fatalf("parse = %+v, %v; want %v naming %q", r, err, ErrMalformed, tt.wantKey)
				}
				if !r.IsZero() || r.Voters() != nil {
					t.Errorf("parse returned %+v with its error", r)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !slices.Equal(r.Voters(), tt.wantVoters) || r.ConfigIndex != tt.wantIndex {
				t.Errorf("voters %q at %d, want %q at %d", r.Voters(), r.ConfigIndex, tt.wantVoters, tt.wantIndex)
			}
			if r.ClusterID != cluster || r.Bootstrapper != "a" {
				t.Errorf("record %+v lost the cluster or bootstrapper", r)
			}
		})
	}
}

// An object filled by an older version (no voters) is a cluster, not an empty object: Resolve
// joins it and writes nothing.
func TestResolveJoinsAnObjectWithoutRecordedVoters(t *testing.T) {
	api := newFakeAPI(t, configMap("7", recordData(testBase+"-g1-1a1a1a1a1a1a", "1", "old")))
	rec, won, err := newObject(t, api).Resolve(t.Context(), "self")
	if err != nil || won || rec.ClusterID != testBase+"-g1-1a1a1a1a1a1a" || rec.Voters() != nil || rec.ConfigIndex != 0 {
		t.Fatalf("Resolve = %+v, %v, %v; want to join the old cluster with no recorded voters", rec, won, err)
	}
	if n := len(api.writes("create")) + len(api.writes("update")); n != 0 {
		t.Errorf("%d writes, want none", n)
	}
}

// A recovery records the new generation's single voter even where the object recorded the
// old generation's voters, or none.
func TestRecoverReplacesTheRecordedVoters(t *testing.T) {
	for _, data := range []map[string]string{
		recordData(testBase+"-g1-1b1b1b1b1b1b", "1", "a"),
		votersData(testBase+"-g1-1b1b1b1b1b1b", "1", "a", "a,b,c", "40"),
	} {
		api := newFakeAPI(t, configMap("7", data))
		o := newObject(t, api)
		prev, err := o.Get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		rec, won, err := o.Recover(t.Context(), prev, "d")
		if err != nil || !won {
			t.Fatalf("Recover = %+v, %v, %v; want to win", rec, won, err)
		}
		checkGeneration(t, rec, 2, "d")
		if stored := api.storedRecord(t); stored != rec {
			t.Errorf("stored record = %+v, Recover returned %+v", stored, rec)
		}
	}
}

func TestResolveAndRecoverRefuseAnIDTheObjectCannotRecord(t *testing.T) {
	for _, self := range []string{"a,b", "a b", "é"} {
		api := newFakeAPI(t)
		if rec, won, err := newObject(t, api).Resolve(t.Context(), self); err == nil || won {
			t.Errorf("Resolve(%q) = %+v, %v, %v; want an error", self, rec, won, err)
		}
		prev := api.write(t, recordData(testBase+"-g1-1c1c1c1c1c1c", "1", "a"))
		if rec, won, err := newObject(t, api).Recover(t.Context(), prev, self); err == nil || won {
			t.Errorf("Recover(%q) = %+v, %v, %v; want an error", self, rec, won, err)
		}
		if n := len(api.writes("create")) + len(api.writes("update")); n != 0 {
			t.Errorf("%q: %d writes, want none", self, n)
		}
	}
}

func TestRecordVoters(t *testing.T) {
	const cluster = testBase + "-g3-2a2a2a2a2a2a"
	tests := []struct {
		name      string
		data      map[string]string
		index     uint64
		voters    []string
		wantWrote bool
		wantData  map[string]string // the stored data afterwards (KeyCreated aside)
	}{
		{"newer voters", votersData(cluster, "3", "a", "a", "1"), 7, []string{"c", "a", "b"}, true,
			votersData(cluster, "3", "a", "a,b,c", "7")},
		{"object of an older version", recordData(cluster, "3", "a"), 7, []string{"a", "b"}, true,
			votersData(cluster, "3", "a", "a,b", "7")},
		{"stale index", votersData(cluster, "3", "a", "a,b,c", "9"), 7, []string{"a", "b"}, false,
			votersData(cluster, "3", "a", "a,b,c", "9")},
		{"same index", votersData(cluster, "3", "a", "a,b,c", "7"), 7, []string{"a", "b"}, false,
			votersData(cluster, "3", "a", "a,b,c", "7")},
		// The same voters at a later index (a new leader's no-op committed) are no reason to
		// write: a write per configuration change, not per leader change.
		{"same voters", votersData(cluster, "3", "a", "a,b,c", "5"), 9, []string{"a", "b", "c"}, false,
			votersData(cluster, "3", "a", "a,b,c", "5")},
		{"another cluster", votersData(testBase+"-g4-2b2b2b2b2b2b", "4", "d", "d", "1"), 7, []string{"a", "b"}, false,
			votersData(testBase+"-g4-2b2b2b2b2b2b", "4", "d", "d", "1")},
		{"an empty object", nil, 7, []string{"a", "b"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seed := configMap("7", tt.data)
			seed.Labels = map[string]string{"helm.sh/chart": "raft-elector"}
			api := newFakeAPI(t, seed)
			o := newObject(t, api)
			if _, err := o.Get(t.Context()); err != nil {
				t.Fatal(err)
			}
			changed := o.Changed()

			wrote, err := o.RecordVoters(t.Context(), cluster, tt.index, tt.voters)
			if err != nil || wrote != tt.wantWrote {
				t.Fatalf("RecordVoters = %v, %v; want %v, nil", wrote, err, tt.wantWrote)
			}
			stored := api.stored(t)
			if !equalData(stored.Data, tt.wantData) {
				t.Errorf("stored data %v, want %v", stored.Data, tt.wantData)
			}
			if stored.Labels["helm.sh/chart"] != "raft-elector" {
				t.Errorf("labels %v: the chart's label was lost", stored.Labels)
			}
			updates := api.writes("update")
			if !tt.wantWrote {
				if len(updates) != 0 {
					t.Errorf("%d updates, want none", len(updates))
				}
				return
			}
			if len(updates) != 1 || updates[0].ResourceVersion != "7" {
				t.Errorf("updates = %d, want one conditional on resourceVersion 7", len(updates))
			}
			if l := o.Latest(); !slices.Equal(l.Voters(), strings.Split(tt.wantData[KeyVoters], ",")) || l.ConfigIndex != tt.index ||
				l.ResourceVersion != stored.ResourceVersion {
				t.Errorf("Latest = %+v (voters %q), want the record written", l, l.Voters())
			}
			if isClosed(changed) {
				t.Error("Changed closed by a record of the same cluster")
			}
		})
	}
}

func TestRecordVotersRetriesAConflict(t *testing.T) {
	const cluster = testBase + "-g1-2c2c2c2c2c2c"
	tests := []struct {
		name     string
		between  map[string]string // what another writer stores between the read and the update
		wantData map[string]string
		wantRV   int // updates sent
	}{
		// Only the resourceVersion moved (a label edit, an older leader's record): read again
		// and write.
		{"an older record in between", votersData(cluster, "1", "a", "a,b", "4"), votersData(cluster, "1", "a", "a,b,c", "7"), 2},
		// A newer leader recorded a newer configuration: leave it.
		{"a newer record in between", votersData(cluster, "1", "a", "a,c", "9"), votersData(cluster, "1", "a", "a,c", "9"), 1},
		// A recovery: leave it.
		{"a new generation in between", votersData(testBase+"-g2-2d2d2d2d2d2d", "2", "d", "d", "1"), votersData(testBase+"-g2-2d2d2d2d2d2d", "2", "d", "d", "1"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, configMap("7", votersData(cluster, "1", "a", "a", "1")))
			fired := 0
			api.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				fired++
				if fired == 1 {
					api.write(t, tt.between) // the update below then fails its precondition
				}
				return false, nil, nil
			})
			o := newObject(t, api)
			wrote, err := o.RecordVoters(t.Context(), cluster, 7, []string{"a", "b", "c"})
			if err != nil || wrote != (tt.wantRV == 2) {
				t.Fatalf("RecordVoters = %v, %v; want %v, nil", wrote, err, tt.wantRV == 2)
			}
			if got := api.stored(t).Data; !equalData(got, tt.wantData) {
				t.Errorf("stored data %v, want %v", got, tt.wantData)
			}
			if n := len(api.writes("update")); n != tt.wantRV {
				t.Errorf("%d updates, want %d", n, tt.wantRV)
			}
		})
	}
}

func TestRecordVotersGivesUpWhenTheObjectKeepsChanging(t *testing.T) {
	const cluster = testBase + "-g1-2e2e2e2e2e2e"
	api := newFakeAPI(t, configMap("7", votersData(cluster, "1", "a", "a", "1")))
	api.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(configMapsGR, testName, errors.New("the object has been modified"))
	})
	wrote, err := newObject(t, api).RecordVoters(t.Context(), cluster, 7, []string{"a", "b"})
	if err == nil || wrote {
		t.Fatalf("RecordVoters = %v, %v; want an error", wrote, err)
	}
	if n := len(api.writes("update")); n != 5 {
		t.Errorf("%d updates, want 5 attempts", n)
	}
}

func TestRecordVotersErrors(t *testing.T) {
	const cluster = testBase + "-g1-2f2f2f2f2f2f"
	t.Run("bad arguments", func(t *testing.T) {
		for _, tc := range []struct {
			index  uint64
			voters []string
		}{
			{7, nil},
			{7, []string{"a", "a"}},
			{7, []string{"a,b"}},
			{7, []string{""}},
			{7, []string{"a b"}},
			{7, make([]string, raft.MaxMembers+1)},
			{0, []string{"a"}},
		} {
			api := newFakeAPI(t, configMap("7", votersData(cluster, "1", "a", "a", "1")))
			if wrote, err := newObject(t, api).RecordVoters(t.Context(), cluster, tc.index, tc.voters); err == nil || wrote {
				t.Errorf("RecordVoters(%d, %q) = %v, %v; want an error", tc.index, tc.voters, wrote, err)
			}
			if n := len(api.Actions()); n != 0 {
				t.Errorf("RecordVoters(%d, %q) sent %d requests, want none", tc.index, tc.voters, n)
			}
		}
	})
	t.Run("no object", func(t *testing.T) {
		api := newFakeAPI(t)
		if wrote, err := newObject(t, api).RecordVoters(t.Context(), cluster, 7, []string{"a"}); err != nil || wrote {
			t.Errorf("RecordVoters = %v, %v; want nothing done", wrote, err)
		}
		if api.stored(t) != nil {
			t.Error("RecordVoters created the object")
		}
	})
	t.Run("malformed object", func(t *testing.T) {
		api := newFakeAPI(t, configMap("7", votersData(cluster, "1", "a", "b,a", "1")))
		if wrote, err := newObject(t, api).RecordVoters(t.Context(), cluster, 7, []string{"a"}); !errors.Is(err, ErrMalformed) || wrote {
			t.Errorf("RecordVoters = %v, %v; want %v", wrote, err, ErrMalformed)
		}
		if n := len(api.writes("update")); n != 0 {
			t.Errorf("%d updates of a malformed object, want none", n)
		}
	})
	t.Run("forbidden", func(t *testing.T) {
		api := newFakeAPI(t, configMap("7", votersData(cluster, "1", "a", "a", "1")))
		api.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(configMapsGR, testName, errors.New("RBAC: access denied"))
		})
		_, err := newObject(t, api).RecordVoters(t.Context(), cluster, 7, []string{"a", "b"})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "deploy/rbac.yaml") {
			t.Errorf("RecordVoters error %v, want Forbidden naming the RBAC fix", err)
		}
	})
}

// Within one cluster, Latest takes the recorded voters with the highest config index, and
// never wakes the watchers for them.
func TestObserveKeepsTheNewestRecordedVoters(t *testing.T) {
	base := Record{ClusterID: "c-g1-a", Generation: 1, Bootstrapper: "a", ResourceVersion: "10", ConfigIndex: 1, voters: "a"}
	at := func(rv string, index uint64, voters string) Record {
		r := base
		r.ResourceVersion, r.ConfigIndex, r.voters = rv, index, voters
		return r
	}
	o := newObject(t, fake.NewClientset())
	o.observe(base)
	for _, s := range []struct {
		name string
		in   Record
		want Record
	}{
		{"newer voters", at("11", 5, "a,b"), at("11", 5, "a,b")},
		{"a stale read", at("10", 1, "a"), at("10", 5, "a,b")},
		{"newer again", at("12", 9, "a,b,c"), at("12", 9, "a,b,c")},
		{"no voters (edited by hand)", at("13", 0, ""), at("13", 9, "a,b,c")},
	} {
		before := o.Changed()
		o.observe(s.in)
		if got := o.Latest(); got != s.want {
			t.Errorf("%s: Latest = %+v, want %+v", s.name, got, s.want)
		}
		if isClosed(before) {
			t.Errorf("%s: Changed closed", s.name)
		}
	}
}
