package discovery

import (
	"slices"
	"strings"
	"testing"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

func TestParseStaticAcceptsGoodLists(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []Member
	}{
		{"a=127.0.0.1:4041", []Member{{ID: "a", Addr: "127.0.0.1:4041", Name: "a"}}},
		// Sorted by id whatever the order given; spaces around entries are dropped.
		{" c=host-c:1 , a=[::1]:4041,b=b.example:65535 ", []Member{
			{ID: "a", Addr: "[::1]:4041", Name: "a"},
			{ID: "b", Addr: "b.example:65535", Name: "b"},
			{ID: "c", Addr: "host-c:1", Name: "c"},
		}},
		// A pod id is an ordinary id.
		{PodID("web-0", "0b6f4f0e-1c7a-4a57-9f0e-2a7c9d3b8e11") + "=10.0.0.7:4041", []Member{{
			ID:   "web-0_0b6f4f0e-1c7a-4a57-9f0e-2a7c9d3b8e11",
			Addr: "10.0.0.7:4041",
			Name: "web-0_0b6f4f0e-1c7a-4a57-9f0e-2a7c9d3b8e11",
		}}},
		{strings.Repeat("x", raft.MaxIDLength) + "=h:1", []Member{{
			ID: strings.Repeat("x", raft.MaxIDLength), Addr: "h:1", Name: strings.Repeat("x", raft.MaxIDLength),
		}}},
	} {
		got, err := ParseStatic(tc.spec)
		if err != nil {
			t.Errorf("ParseStatic(%q): %v", tc.spec, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("ParseStatic(%q) = %+v, want %+v", tc.spec, got, tc.want)
		}
	}
}

func TestParseStaticRejectsBadLists(t *testing.T) {
	for _, tc := range []struct {
		spec, wantErr string
	}{
		{"", "empty member list"},
		{"   ", "empty member list"},
		{"a", "is not id=host:port"},
		{"=h:1", "is not id=host:port"},
		{"a=", "is not id=host:port"},
		{"a=h:1,", "is not id=host:port"},
		{"a=h:1,,b=h:2", "is not id=host:port"},
		{"a=h:1,a=h:2", `"a" listed twice`},
		{"a b=h:1", "contains a space"},
		{"a/b=h:1", "contains a space"},
		{strings.Repeat("x", raft.MaxIDLength+1) + "=h:1", "longer than"},
		{"a=h", "address of"},
		{"a=:4041", "has no host"},
		{"a=h:0", "no valid port"},
		{"a=h:65536", "no valid port"},
		{"a=h:http", "no valid port"},
	} {
		got, err := ParseStatic(tc.spec)
		if err == nil {
			t.Errorf("ParseStatic(%q) = %+v, want an error containing %q", tc.spec, got, tc.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseStatic(%q): error %q, want it to contain %q", tc.spec, err, tc.wantErr)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for _, addr := range []string{"h:1", "127.0.0.1:4041", "[::1]:65535", "pod.ns.svc.cluster.local:4041"} {
		if err := CheckAddr(addr); err != nil {
			t.Errorf("CheckAddr(%q): %v", addr, err)
		}
	}
	for _, addr := range []string{"", "h", "::1", "[::1]", ":4041", "h:", "h:0", "h:-1", "h:65536", "h:x", "h:1:2"} {
		if err := CheckAddr(addr); err == nil {
			t.Errorf("CheckAddr(%q) accepted a bad address", addr)
		}
	}
}

func TestPodIDRoundTrips(t *testing.T) {
	for _, tc := range []struct{ name, uid string }{
		{"web-0", "0b6f4f0e-1c7a-4a57-9f0e-2a7c9d3b8e11"},
		{"a", "u"},
		{"my.app-7f9c", "abc"},
		{strings.Repeat("n", 253), "0b6f4f0e-1c7a-4a57-9f0e-2a7c9d3b8e11"},
	} {
		id := PodID(tc.name, tc.uid)
		if got := NameOf(id); got != tc.name {
			t.Errorf("NameOf(PodID(%q, %q)) = %q, want the name back", tc.name, tc.uid, got)
		}
		if !strings.HasSuffix(id, tc.uid) || !strings.Contains(id, PodIDSeparator) {
			t.Errorf("PodID(%q, %q) = %q, want name, separator, uid", tc.name, tc.uid, id)
		}
	}
	// The same name with another UID (a re-created pod) is another member.
	if PodID("web-0", "uid-1") == PodID("web-0", "uid-2") {
		t.Error("PodID ignores the UID")
	}
	// An id that is not a PodID shows as itself.
	for _, id := range []string{"a", "static-member", "a_", "_u", "a_b_c", "_", ""} {
		if got := NameOf(id); got != id {
			t.Errorf("NameOf(%q) = %q, want the id itself", id, got)
		}
	}
}

func TestIDsAndAddrBook(t *testing.T) {
	members, err := ParseStatic("b=h:2,a=h:1,c=h:3")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := IDs(members), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("IDs = %v, want %v", got, want)
	}
	book := AddrBook(members, "b")
	if len(book) != 2 || book["a"] != "h:1" || book["c"] != "h:3" {
		t.Errorf("AddrBook without b = %v, want a and c only", book)
	}
}
