package bootstrap

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// FuzzParseObject feeds the parser of the bootstrap ConfigMap arbitrary values of its keys (and
// of one other key). It must never panic. It must either refuse the data with an error wrapping
// ErrMalformed, on one line, and the zero Record; or return the empty record of an object
// created empty; or a record within the limits (a generation in 1..MaxGeneration, a printable
// cluster id and a bootstrapper within raft.MaxIDLength, recorded voters sorted, distinct,
// printable and without commas, at most raft.MaxMembers of them, with a positive config index
// exactly when there are voters) that the member writes back (data) as data that parses to
// the same record.
func FuzzParseObject(f *testing.F) {
	f.Add("app-g1-0a1b2c3d4e5f", "1", "web-0_u0", "", "", "", "")
	f.Add("app-g2-0a1b2c3d4e5f", "2", "web-1_u1", "web-0_u0,web-1_u1,web-2_u2", "7", KeyCreated, "2024-01-01T00:00:00Z")
	// parse and data read only the object's configuration: one object serves every input.
	o, err := New(Config{Client: fake.NewClientset(), Namespace: "ns", Name: "obj", Base: "app"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, cluster, generation, bootstrapper, voters, configIndex, otherKey, otherValue string) {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "obj", ResourceVersion: "42", UID: "uid-1"},
			Data:       map[string]string{},
		}
		for k, v := range map[string]string{KeyCluster: cluster, KeyGeneration: generation, KeyBootstrapper: bootstrapper,
			KeyVoters: voters, KeyConfigIndex: configIndex} {
			if v != "" {
				cm.Data[k] = v
			}
		}
		if otherKey != "" {
			if _, known := cm.Data[otherKey]; !known {
				cm.Data[otherKey] = otherValue
			}
		}
		r, err := o.parse(cm)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("data %q: error %v does not wrap ErrMalformed", cm.Data, err)
			}
			if r != (Record{}) {
				t.Fatalf("data %q: refused (%v) with record %+v", cm.Data, err, r)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("data %q: error is not one line: %q", cm.Data, err)
			}
			return
		}
		if r.ResourceVersion != "42" || r.UID != "uid-1" {
			t.Fatalf("data %q: record %+v does not carry the object's version and UID", cm.Data, r)
		}
		if r.IsZero() {
			if r != (Record{ResourceVersion: "42", UID: "uid-1"}) || cluster+generation+bootstrapper+voters+configIndex != "" {
				t.Fatalf("data %q: parsed as an empty object: %+v", cm.Data, r)
			}
			return
		}
		if r.Generation < 1 || r.Generation > MaxGeneration {
			t.Fatalf("data %q: generation %d", cm.Data, r.Generation)
		}
		if len(r.ClusterID) > raft.MaxIDLength || !printable(r.ClusterID) || r.Bootstrapper == "" || len(r.Bootstrapper) > raft.MaxIDLength {
			t.Fatalf("data %q: cluster %q bootstrapper %q", cm.Data, r.ClusterID, r.Bootstrapper)
		}
		vs := r.Voters()
		if (len(vs) > 0) != (r.ConfigIndex > 0) || len(vs) > raft.MaxMembers || !slices.IsSorted(vs) || len(slices.Compact(slices.Clone(vs))) != len(vs) {
			t.Fatalf("data %q: voters %q at config index %d", cm.Data, vs, r.ConfigIndex)
		}
		for _, id := range vs {
			if id == "" || len(id) > raft.MaxIDLength || !printable(id) || strings.Contains(id, ",") {
				t.Fatalf("data %q: voter %q", cm.Data, id)
			}
		}
		back := &corev1.ConfigMap{ObjectMeta: cm.ObjectMeta, Data: o.data(r)}
		again, err := o.parse(back)
		if err != nil || again != r {
			t.Fatalf("record %+v from %q is written as %q, which parses as %+v, %v", r, cm.Data, back.Data, again, err)
		}
	})
}
