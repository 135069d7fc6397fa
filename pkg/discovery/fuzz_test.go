package discovery

import (
	"slices"
	"strings"
	"testing"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// FuzzParseStatic feeds the --peers parser arbitrary lists. It must never panic; an error must
// be one line; a list it accepts must hold what its doc comment promises (unique, non-empty ids
// of at most raft.MaxIDLength bytes without a space, '=', ',' or '/', each with a host:port
// address whose port is in 1..65535, sorted by id, named by the id), one member per entry of
// the spec, and must round-trip: the members written back as id=addr,... parse to the same list.
func FuzzParseStatic(f *testing.F) {
	f.Add("a=127.0.0.1:4041,b=127.0.0.1:4042,c=127.0.0.1:4043")
	f.Add(" c=host-c:1 , a=[::1]:4041,b=b.example:65535 ")
	f.Fuzz(func(t *testing.T, spec string) {
		members, err := ParseStatic(spec)
		if err != nil {
			if members != nil {
				t.Fatalf("refused %q (%v) but returned %v", spec, err, members)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error for %q is not one line: %q", spec, err)
			}
			return
		}
		if len(members) != strings.Count(spec, ",")+1 {
			t.Fatalf("%q: %d members for %d entries", spec, len(members), strings.Count(spec, ",")+1)
		}
		for i, m := range members {
			if m.ID == "" || len(m.ID) > raft.MaxIDLength || strings.ContainsAny(m.ID, " \t=,/") {
				t.Fatalf("%q: accepted id %q", spec, m.ID)
			}
			if i > 0 && members[i-1].ID >= m.ID {
				t.Fatalf("%q: ids not sorted and unique: %v", spec, IDs(members))
			}
			if m.Name != m.ID || m.Node != "" || m.Zone != "" {
				t.Fatalf("%q: member %+v", spec, m)
			}
			if err := CheckAddr(m.Addr); err != nil {
				t.Fatalf("%q: accepted address %q: %v", spec, m.Addr, err)
			}
		}
		entries := make([]string, len(members))
		for i, m := range members {
			entries[i] = m.ID + "=" + m.Addr
		}
		reversed := slices.Clone(entries)
		slices.Reverse(reversed)
		for _, again := range []string{strings.Join(entries, ","), strings.Join(reversed, " , ")} {
			back, err := ParseStatic(again)
			if err != nil || !slices.Equal(back, members) {
				t.Fatalf("%q parses as %v; written back as %q it parses as %v, %v", spec, members, again, back, err)
			}
		}
	})
}
