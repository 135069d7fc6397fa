package membership

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fuzzIDs are the member ids a fuzzed state is made of: few, so that lists overlap, and the
// empty id, which the planner must ignore.
var fuzzIDs = []string{"", "a", "b", "c", "d", "e", "f", "g", "a_2"}

var (
	fuzzZones = []string{"", "z1", "z2", "z3"}
	fuzzNodes = []string{"", "n1", "n2", "n3", "n4"}
)

// fuzzState decodes a planner input from bytes: the number of voters, learners and live pods,
// then an id for each (and a zone and a node for a pod), then which ids are caught up (a bit
// each; none of the bits given: nil, every learner caught up). Missing bytes read as zero.
func fuzzState(data []byte, self uint8, maxVoters int) State {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return int(b)
	}
	id := func() string { return fuzzIDs[next()%len(fuzzIDs)] }
	s := State{Self: fuzzIDs[int(self)%len(fuzzIDs)], MaxVoters: maxVoters}
	nv, nl, np := next()%9, next()%9, next()%12
	for range nv {
		s.Voters = append(s.Voters, id())
	}
	for range nl {
		s.Learners = append(s.Learners, id())
	}
	for range np {
		s.Alive = append(s.Alive, Pod{ID: id(), Zone: fuzzZones[next()%len(fuzzZones)], Node: fuzzNodes[next()%len(fuzzNodes)]})
	}
	if len(data) > 0 {
		mask := next()<<8 | next()
		s.CaughtUp = func(id string) bool {
			i := slices.Index(fuzzIDs, id)
			return i >= 0 && mask&(1<<i) != 0
		}
	}
	return s
}

func fuzzFormatState(s State) string {
	var b strings.Builder
	fmt.Fprintf(&b, "self %q, max voters %d, voters %q, learners %q, alive", s.Self, s.MaxVoters, s.Voters, s.Learners)
	for _, p := range s.Alive {
		fmt.Fprintf(&b, " %q@%s/%s", p.ID, p.Zone, p.Node)
	}
	if s.CaughtUp != nil {
		var up []string
		for _, id := range fuzzIDs {
			if s.CaughtUp(id) {
				up = append(up, id)
			}
		}
		fmt.Fprintf(&b, ", caught up %q", up)
	}
	return b.String()
}

// FuzzNext feeds the planner arbitrary states: ids listed twice, in both lists or empty, pods
// reported twice, dead members, Self missing, any MaxVoters, any caught-up set. It must never
// panic or modify its input, and its answer must not depend on the order of the lists. Every
// change it proposes must be one the rules allow (the check of TestPlanConverges: apply in
// plan_test.go) and move exactly one member; applying its changes must settle within three
// steps per id on the configuration the package doc promises: every live pod a member, no
// member without a live pod but Self, Self a voter, and as many voters as MaxVoters allows
// among the live pods that are voters or caught up.
func FuzzNext(f *testing.F) {
	// self a, max 3; voters a b c; learner d; pods a b d e.
	f.Add([]byte{3, 1, 4, 1, 2, 3, 4, 1, 0, 0, 2, 0, 0, 4, 0, 0, 5, 0, 0}, uint8(1), 3)
	f.Fuzz(func(t *testing.T, data []byte, self uint8, maxVoters int) {
		s := fuzzState(data, self, maxVoters)
		desc := fuzzFormatState(s)
		voters, learners, alive := slices.Clone(s.Voters), slices.Clone(s.Learners), slices.Clone(s.Alive)
		c, ok := Next(s)
		if !slices.Equal(s.Voters, voters) || !slices.Equal(s.Learners, learners) || !slices.Equal(s.Alive, alive) {
			t.Fatalf("Next modified its input: %s", desc)
		}
		rev := s
		rev.Voters, rev.Learners, rev.Alive = slices.Clone(voters), slices.Clone(learners), slices.Clone(alive)
		slices.Reverse(rev.Voters)
		slices.Reverse(rev.Learners)
		slices.Reverse(rev.Alive)
		// Reversed, the first report of a pod listed twice becomes the last: the placement the
		// planner reads changes. Compare only when no pod is reported twice.
		seen := map[string]bool{}
		dup := false
		for _, p := range alive {
			dup = dup || seen[p.ID]
			seen[p.ID] = true
		}
		if c2, ok2 := Next(rev); !dup && (c2 != c || ok2 != ok) {
			t.Fatalf("%s: plan %v %v, with the lists reversed %v %v", desc, c, ok, c2, ok2)
		}
		if !slices.Contains(s.Voters, s.Self) || s.Self == "" || s.MaxVoters < 1 {
			if ok {
				t.Fatalf("%s: a leader cannot be in this state, yet the plan is %v", desc, c)
			}
			return
		}

		ids := map[string]bool{}
		for _, id := range slices.Concat(s.Voters, s.Learners) {
			ids[id] = id != ""
		}
		liveIDs := map[string]bool{}
		for _, p := range s.Alive {
			if p.ID != "" {
				ids[p.ID], liveIDs[p.ID] = true, true
			}
		}
		n := 0
		for _, in := range ids {
			if in {
				n++
			}
		}
		final, plan, err := settle(s, 3*n)
		if err != nil {
			t.Fatalf("%s: %v", desc, err)
		}
		candidates := map[string]bool{s.Self: true}
		for id := range liveIDs {
			if slices.Contains(s.Voters, id) || s.CaughtUp == nil || s.CaughtUp(id) {
				candidates[id] = true
			}
		}
		r := roles(final)
		nVoters := 0
		for id, x := range r {
			switch {
			case x == voter && !liveIDs[id] && id != s.Self:
				t.Fatalf("%s: voter %s has no live pod after %v", desc, id, plan)
			case x == learner && !liveIDs[id]:
				t.Fatalf("%s: learner %s has no live pod after %v", desc, id, plan)
			case x == voter:
				nVoters++
			}
		}
		for id := range liveIDs {
			if r[id] == notMember {
				t.Fatalf("%s: live pod %s is not a member after %v", desc, id, plan)
			}
		}
		if r[s.Self] != voter {
			t.Fatalf("%s: self is no longer a voter after %v", desc, plan)
		}
		want := min(s.MaxVoters, len(candidates))
		if !liveIDs[s.Self] {
			want = min(s.MaxVoters+1, len(candidates)) // room for the leaving leader's successor
			if s.MaxVoters+1 < s.MaxVoters {
				want = len(candidates)
			}
		}
		if nVoters != want {
			t.Fatalf("%s: %d voters %v after %v, want %d (candidates %v)", desc, nVoters, final.Voters, plan, want, candidates)
		}
	})
}
