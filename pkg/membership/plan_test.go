package membership

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// pod returns a live pod in zone and on node (either may be empty).
func pod(id, zone, node string) Pod { return Pod{ID: id, Zone: zone, Node: node} }

// pods returns live pods with no known placement.
func pods(ids ...string) []Pod {
	out := make([]Pod, 0, len(ids))
	for _, id := range ids {
		out = append(out, Pod{ID: id})
	}
	return out
}

// only returns a CaughtUp that holds for the given ids and no other.
func only(ids ...string) func(string) bool {
	return func(id string) bool { return slices.Contains(ids, id) }
}

func TestNext(t *testing.T) {
	tests := []struct {
		name   string
		state  State
		want   Change
		wantOK bool
	}{
		{
			name: "settled configuration proposes nothing",
			state: State{Self: "s", Voters: []string{"s", "a", "b"}, Learners: []string{"c"},
				Alive: pods("s", "a", "b", "c"), MaxVoters: 3},
		},
		{
			name:  "self not a voter proposes nothing",
			state: State{Self: "s", Voters: []string{"a"}, Learners: []string{"s"}, Alive: pods("s", "a", "b"), MaxVoters: 3},
		},
		{
			name:  "empty self proposes nothing",
			state: State{Voters: []string{"a"}, Alive: pods("a", "b"), MaxVoters: 3},
		},
		{
			name:  "MaxVoters below one proposes nothing",
			state: State{Self: "s", Voters: []string{"s", "a"}, Alive: pods("s", "a", "b"), MaxVoters: 0},
		},

		// Rule 1.
		{
			name:  "rule 1 removes the smallest dead voter",
			state: State{Self: "s", Voters: []string{"s", "z", "d", "a"}, Alive: pods("s", "a"), MaxVoters: 5},
			want:  Change{Remove, "d"}, wantOK: true,
		},
		{
			name: "rule 1 removes a voter whose pod was replaced under a new uid",
			state: State{Self: "web-0_u1", Voters: []string{"web-0_u1", "web-1_u1", "web-2_u1"},
				Alive: pods("web-0_u1", "web-1_u2", "web-2_u1"), MaxVoters: 3},
			want: Change{Remove, "web-1_u1"}, wantOK: true,
		},
		{
			name:  "rule 1 never removes self",
			state: State{Self: "s", Voters: []string{"s", "a"}, Alive: pods("a"), MaxVoters: 3},
		},
		{
			name:  "rule 1 does not remove an unreachable voter whose pod exists",
			state: State{Self: "s", Voters: []string{"s", "a"}, Alive: pods("s", "a"), MaxVoters: 3, CaughtUp: only()},
		},
		{
			name: "rule 1 comes before rule 2",
			state: State{Self: "s", Voters: []string{"s", "v"}, Learners: []string{"a"},
				Alive: pods("s"), MaxVoters: 3},
			want: Change{Remove, "v"}, wantOK: true,
		},

		// Rule 2.
		{
			name: "rule 2 removes the smallest dead learner",
			state: State{Self: "s", Voters: []string{"s"}, Learners: []string{"y", "x", "a"},
				Alive: pods("s", "a"), MaxVoters: 3},
			want: Change{Remove, "x"}, wantOK: true,
		},
		{
			name: "rule 2 comes before rule 3",
			state: State{Self: "s", Voters: []string{"s", "a", "b"}, Learners: []string{"x"},
				Alive: pods("s", "a", "b"), MaxVoters: 1},
			want: Change{Remove, "x"}, wantOK: true,
		},

		// Rule 3.
		{
			name: "rule 3 demotes the voter in the most crowded zone",
			state: State{Self: "s", Voters: []string{"s", "a", "b", "c"}, MaxVoters: 3,
				Alive: []Pod{pod("s", "z1", ""), pod("a", "z1", ""), pod("b", "z2", ""), pod("c", "z2", "")}},
			// Every zone has two voters; the largest id of those sharing a zone other than self.
			want: Change{Demote, "c"}, wantOK: true,
		},
		{
			name: "rule 3 demotes from the zone with the most voters even with a smaller id",
			state: State{Self: "s", Voters: []string{"s", "a", "b", "z"}, MaxVoters: 3,
				Alive: []Pod{pod("s", "z1", ""), pod("a", "z2", ""), pod("b", "z2", ""), pod("z", "z3", "")}},
			want: Change{Demote, "b"}, wantOK: true,
		},
		{
			name: "rule 3 demotes from the most crowded node when zones tie",
			state: State{Self: "s", Voters: []string{"s", "a", "b", "c"}, MaxVoters: 3,
				Alive: []Pod{pod("s", "", "n1"), pod("a", "", "n2"), pod("b", "", "n2"), pod("c", "", "n3")}},
			want: Change{Demote, "b"}, wantOK: true,
		},
		{
			name: "rule 3 ties go to the largest id",
			state: State{Self: "s", Voters: []string{"s", "a", "b", "c"}, MaxVoters: 3,
				Alive: pods("s", "a", "b", "c")},
			want: Change{Demote, "c"}, wantOK: true,
		},
		{
			name: "rule 3 never demotes self even in the most crowded zone",
			state: State{Self: "s", Voters: []string{"s", "a", "b"}, MaxVoters: 1,
				Alive: []Pod{pod("s", "z1", "n1"), pod("a", "z2", "n2"), pod("b", "z1", "n1")}},
			want: Change{Demote, "b"}, wantOK: true,
		},
		{
			name: "rule 3 demotes down to MaxVoters one with self as the last voter",
			state: State{Self: "s", Voters: []string{"s", "a"}, MaxVoters: 1,
				Alive: pods("s", "a")},
			want: Change{Demote, "a"}, wantOK: true,
		},
		{
			name: "rule 3 comes before rule 4",
			state: State{Self: "s", Voters: []string{"s", "a", "b"}, MaxVoters: 2,
				Alive: pods("s", "a", "b", "c")},
			want: Change{Demote, "b"}, wantOK: true,
		},

		// Rule 4.
		{
			name: "rule 4 adds the smallest new pod as a learner",
			state: State{Self: "s", Voters: []string{"s"}, Learners: []string{"a"},
				Alive: pods("s", "a", "q", "c"), MaxVoters: 1},
			want: Change{AddLearner, "c"}, wantOK: true,
		},
		{
			name: "rule 4 comes before rule 5",
			state: State{Self: "s", Voters: []string{"s"}, Learners: []string{"a"},
				Alive: pods("s", "a", "b"), MaxVoters: 3},
			want: Change{AddLearner, "b"}, wantOK: true,
		},
		{
			name:  "rule 4 adds a new pod even when it is not caught up",
			state: State{Self: "s", Voters: []string{"s"}, Alive: pods("s", "a"), MaxVoters: 3, CaughtUp: only()},
			want:  Change{AddLearner, "a"}, wantOK: true,
		},

		// Rule 5.
		{
			name: "rule 5 promotes into the zone with the fewest voters",
			state: State{Self: "s", Voters: []string{"s", "v1", "v2"}, Learners: []string{"l1", "l9"}, MaxVoters: 5,
				Alive: []Pod{pod("s", "a", ""), pod("v1", "a", ""), pod("v2", "b", ""), pod("l1", "a", ""), pod("l9", "c", "")}},
			want: Change{Promote, "l9"}, wantOK: true,
		},
		{
			name: "rule 5 promotes onto the node with the fewest voters when zones tie",
			state: State{Self: "s", Voters: []string{"s", "v1"}, Learners: []string{"l1", "l9"}, MaxVoters: 5,
				Alive: []Pod{pod("s", "a", "n1"), pod("v1", "b", "n2"), pod("l1", "a", "n1"), pod("l9", "a", "n3")}},
			want: Change{Promote, "l9"}, wantOK: true,
		},
		{
			name: "rule 5 zone outweighs node",
			state: State{Self: "s", Voters: []string{"s", "v1"}, Learners: []string{"l1", "l9"}, MaxVoters: 5,
				Alive: []Pod{pod("s", "a", "n1"), pod("v1", "a", "n2"), pod("l1", "a", "n3"), pod("l9", "b", "n1")}},
			want: Change{Promote, "l9"}, wantOK: true,
		},
		{
			name: "rule 5 unknown zone ties with a zone without voters and the smallest id wins",
			state: State{Self: "s", Voters: []string{"s"}, Learners: []string{"l1", "l2", "l3"}, MaxVoters: 5,
				Alive: []Pod{pod("s", "a", ""), pod("l1", "a", ""), pod("l2", "b", ""), pod("l3", "", "")}},
			want: Change{Promote, "l2"}, wantOK: true,
		},
		{
			name: "rule 5 skips learners that are not caught up",
			state: State{Self: "s", Voters: []string{"s"}, Learners: []string{"a", "b", "c"}, MaxVoters: 3,
				Alive: pods("s", "a", "b", "c"), CaughtUp: only("c")},
			want: Change{Promote, "c"}, wantOK: true,
		},
		{
			name: "rule 5 proposes nothing when no learner is caught up",
			state: State{Self: "s", Voters: []string{"s"}, Learners: []string{"a", "b"}, MaxVoters: 3,
				Alive: pods("s", "a", "b"), CaughtUp: only()},
		},
		{
			name: "rule 5 nil CaughtUp means every learner is caught up",
			state: State{Self: "s", Voters: []string{"s"}, Learners: []string{"b", "a"}, MaxVoters: 3,
				Alive: pods("s", "a", "b")},
			want: Change{Promote, "a"}, wantOK: true,
		},
		{
			name: "rule 5 respects MaxVoters",
			state: State{Self: "s", Voters: []string{"s", "a"}, Learners: []string{"b"}, MaxVoters: 2,
				Alive: pods("s", "a", "b")},
		},

		// Malformed input.
		{
			name: "pods with an empty id are ignored",
			state: State{Self: "s", Voters: []string{"s"}, MaxVoters: 3,
				Alive: []Pod{pod("", "a", "n1"), pod("s", "", "")}},
		},
		{
			name: "empty ids in the configuration are ignored",
			state: State{Self: "s", Voters: []string{"s", ""}, Learners: []string{""}, MaxVoters: 3,
				Alive: pods("s")},
		},
		{
			name: "duplicate ids count once",
			state: State{Self: "s", Voters: []string{"s", "a", "s", "a"}, Learners: []string{"b", "b"}, MaxVoters: 2,
				Alive: pods("s", "a", "a", "b", "b", "s")},
		},
		{
			name: "an id listed as voter and learner is a voter",
			state: State{Self: "s", Voters: []string{"s", "a"}, Learners: []string{"a", "s"}, MaxVoters: 3,
				Alive: pods("s", "a")},
		},
		{
			name: "the first report of a pod gives its placement",
			state: State{Self: "s", Voters: []string{"s", "v"}, Learners: []string{"l1", "l2"}, MaxVoters: 3,
				Alive: []Pod{pod("s", "a", ""), pod("v", "b", ""), pod("l2", "c", ""), pod("l2", "a", ""), pod("l1", "a", "")}},
			want: Change{Promote, "l2"}, wantOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Next(tt.state)
			if ok != tt.wantOK || got != tt.want {
				t.Fatalf("Next() = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestNextDoesNotModifyItsInput(t *testing.T) {
	s := State{Self: "s", Voters: []string{"s", "d", "b", "a"}, Learners: []string{"z", "c"},
		Alive: pods("s", "c", "b", "a"), MaxVoters: 2}
	voters, learners, alive := slices.Clone(s.Voters), slices.Clone(s.Learners), slices.Clone(s.Alive)
	Next(s)
	if !slices.Equal(s.Voters, voters) || !slices.Equal(s.Learners, learners) || !slices.Equal(s.Alive, alive) {
		t.Fatalf("Next modified its input: %+v", s)
	}
}

func TestChangeString(t *testing.T) {
	for _, tt := range []struct {
		c    Change
		want string
	}{
		{Change{AddLearner, "pod-a_uid"}, "add-learner pod-a_uid"},
		{Change{Promote, "pod-a_uid"}, "promote pod-a_uid"},
		{Change{Demote, "pod-a_uid"}, "demote pod-a_uid"},
		{Change{Remove, "pod-a_uid"}, "remove pod-a_uid"},
		{Change{0, "x"}, "ChangeType(0) x"},
		{Change{9, "x"}, "ChangeType(9) x"},
	} {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.c, got, tt.want)
		}
	}
}

// role is where a member stands in a configuration.
type role uint8

const (
	notMember role = iota
	learner
	voter
)

// roles returns the configuration of s as a map, with the planner's reading of malformed input:
// empty ids ignored, a voter listed as learner too is a voter.
func roles(s State) map[string]role {
	r := map[string]role{}
	for _, id := range s.Learners {
		if id != "" {
			r[id] = learner
		}
	}
	for _, id := range s.Voters {
		if id != "" {
			r[id] = voter
		}
	}
	return r
}

// apply makes change c to the configuration of s, checking that it is one the rules allow, and
// returns the new state.
func apply(s State, c Change) (State, error) {
	r := roles(s)
	alive := map[string]bool{}
	for _, p := range s.Alive {
		alive[p.ID] = p.ID != ""
	}
	nVoters := 0
	for _, x := range r {
		if x == voter {
			nVoters++
		}
	}
	switch c.Type {
	case AddLearner:
		if r[c.ID] != notMember || !alive[c.ID] {
			return s, fmt.Errorf("%v: not a live pod outside the configuration", c)
		}
		r[c.ID] = learner
	case Promote:
		maxVoters := s.MaxVoters
		if !alive[s.Self] && maxVoters < math.MaxInt {
			maxVoters++ // a leaving leader's successor
		}
		if r[c.ID] != learner || !alive[c.ID] || nVoters >= maxVoters || (s.CaughtUp != nil && !s.CaughtUp(c.ID)) {
			return s, fmt.Errorf("%v: not a live caught-up learner, or %d voters already (max %d)", c, nVoters, s.MaxVoters)
		}
		r[c.ID] = voter
	case Demote:
		if r[c.ID] != voter || c.ID == s.Self || nVoters <= s.MaxVoters {
			return s, fmt.Errorf("%v: not a voter other than self, or only %d voters (max %d)", c, nVoters, s.MaxVoters)
		}
		r[c.ID] = learner
	case Remove:
		if r[c.ID] == notMember || c.ID == s.Self || alive[c.ID] {
			return s, fmt.Errorf("%v: not a member other than self whose pod is gone", c)
		}
		delete(r, c.ID)
	default:
		return s, fmt.Errorf("%v: unknown change", c)
	}
	next := s
	next.Voters, next.Learners = nil, nil
	for id, x := range r {
		if x == voter {
			next.Voters = append(next.Voters, id)
		} else {
			next.Learners = append(next.Learners, id)
		}
	}
	slices.Sort(next.Voters)
	slices.Sort(next.Learners)
	return next, nil
}

// changed counts the members whose role differs between a and b.
func changed(a, b State) int {
	ra, rb := roles(a), roles(b)
	n := 0
	for id, x := range ra {
		if rb[id] != x {
			n++
		}
	}
	for id := range rb {
		if _, ok := ra[id]; !ok {
			n++
		}
	}
	return n
}

// settle applies Next until it proposes nothing, failing if a step breaks a rule, changes other
// than one member, or the plan has not settled after limit steps.
func settle(s State, limit int) (State, []Change, error) {
	var plan []Change
	for {
		c, ok := Next(s)
		if !ok {
			return s, plan, nil
		}
		if len(plan) == limit {
			return s, plan, fmt.Errorf("not settled after %d steps: %v", limit, plan)
		}
		next, err := apply(s, c)
		if err != nil {
			return s, plan, fmt.Errorf("step %d: %w", len(plan)+1, err)
		}
		if n := changed(s, next); n != 1 {
			return s, plan, fmt.Errorf("step %d (%v) changed %d members", len(plan)+1, c, n)
		}
		plan = append(plan, c)
		s = next
	}
}

func mustSettle(t *testing.T, s State, limit int) (State, []Change) {
	t.Helper()
	final, plan, err := settle(s, limit)
	if err != nil {
		t.Fatal(err)
	}
	return final, plan
}

func TestScaleUpOneToSeven(t *testing.T) {
	alive := []Pod{
		pod("p0", "a", "n0"), pod("p1", "a", "n1"), pod("p2", "a", "n2"),
		pod("p3", "b", "n3"), pod("p4", "b", "n4"), pod("p5", "c", "n5"), pod("p6", "c", "n6"),
	}
	s := State{Self: "p0", Voters: []string{"p0"}, Alive: alive, MaxVoters: 5}
	final, plan := mustSettle(t, s, 100)
	want := []Change{
		{AddLearner, "p1"}, {AddLearner, "p2"}, {AddLearner, "p3"}, {AddLearner, "p4"}, {AddLearner, "p5"}, {AddLearner, "p6"},
		{Promote, "p3"}, {Promote, "p5"}, {Promote, "p1"}, {Promote, "p4"},
	}
	if !slices.Equal(plan, want) {
		t.Fatalf("plan = %v\nwant   %v", plan, want)
	}
	if !slices.Equal(final.Voters, []string{"p0", "p1", "p3", "p4", "p5"}) || !slices.Equal(final.Learners, []string{"p2", "p6"}) {
		t.Fatalf("final voters %v learners %v, want 5 voters spread a,a,b,b,c and 2 learners", final.Voters, final.Learners)
	}
}

func TestScaleUpWaitsForLearnersToCatchUp(t *testing.T) {
	s := State{Self: "p0", Voters: []string{"p0"}, Alive: pods("p0", "p1", "p2"), MaxVoters: 3, CaughtUp: only("p2")}
	final, _ := mustSettle(t, s, 100)
	if !slices.Equal(final.Voters, []string{"p0", "p2"}) || !slices.Equal(final.Learners, []string{"p1"}) {
		t.Fatalf("final voters %v learners %v, want p1 left a learner until it catches up", final.Voters, final.Learners)
	}
	final.CaughtUp = nil // p1 caught up
	final, plan := mustSettle(t, final, 100)
	if !slices.Equal(plan, []Change{{Promote, "p1"}}) || len(final.Voters) != 3 {
		t.Fatalf("plan %v, voters %v; want p1 promoted", plan, final.Voters)
	}
}

func TestScaleDownSevenToTwo(t *testing.T) {
	s := State{Self: "p0", Voters: []string{"p0", "p1", "p2", "p3", "p4"}, Learners: []string{"p5", "p6"},
		Alive: pods("p0", "p6"), MaxVoters: 5}
	final, plan := mustSettle(t, s, 100)
	want := []Change{
		// Once there is room, p6 replaces a gone voter before the others are removed (rule 0).
		{Remove, "p1"}, {Promote, "p6"}, {Remove, "p2"}, {Remove, "p3"}, {Remove, "p4"}, {Remove, "p5"},
	}
	if !slices.Equal(plan, want) {
		t.Fatalf("plan = %v\nwant   %v", plan, want)
	}
	if !slices.Equal(final.Voters, []string{"p0", "p6"}) || len(final.Learners) != 0 {
		t.Fatalf("final voters %v learners %v, want p0 and p6 voters", final.Voters, final.Learners)
	}
}

func TestScaleDownMaxVoters(t *testing.T) {
	s := State{Self: "p0", Voters: []string{"p0", "p1", "p2", "p3", "p4"}, MaxVoters: 3,
		Alive: []Pod{pod("p0", "a", ""), pod("p1", "a", ""), pod("p2", "b", ""), pod("p3", "b", ""), pod("p4", "c", "")}}
	final, plan := mustSettle(t, s, 100)
	// p1 and p3 share zones with other voters; p3 (larger id) first, then p1 (a: p0,p1 vs b: p2).
	if want := []Change{{Demote, "p3"}, {Demote, "p1"}}; !slices.Equal(plan, want) {
		t.Fatalf("plan = %v, want %v", plan, want)
	}
	if !slices.Equal(final.Voters, []string{"p0", "p2", "p4"}) {
		t.Fatalf("final voters %v, want one per zone", final.Voters)
	}
}

// TestRollingReplacement replaces every pod but the leader's, one at a time as a StatefulSet
// does: the old pod is deleted, its successor comes up under a new UID.
func TestRollingReplacement(t *testing.T) {
	zones := map[string]string{"web-1": "a", "web-2": "b", "web-3": "c"}
	s := State{Self: "web-0_u0", Voters: []string{"web-0_u0", "web-1_u1", "web-2_u1", "web-3_u1"}, MaxVoters: 5,
		Alive: []Pod{pod("web-0_u0", "a", ""), pod("web-1_u1", "a", ""), pod("web-2_u1", "b", ""), pod("web-3_u1", "c", "")}}
	for i, name := range []string{"web-3", "web-2", "web-1"} {
		for j, p := range s.Alive {
			if p.ID == name+"_u1" {
				s.Alive[j] = pod(name+"_u2", zones[name], "")
			}
		}
		var plan []Change
		s, plan = mustSettle(t, s, 100)
		want := []Change{{Remove, name + "_u1"}, {AddLearner, name + "_u2"}, {Promote, name + "_u2"}}
		if !slices.Equal(plan, want) {
			t.Fatalf("replacement %d: plan = %v, want %v", i+1, plan, want)
		}
	}
	if want := []string{"web-0_u0", "web-1_u2", "web-2_u2", "web-3_u2"}; !slices.Equal(s.Voters, want) || len(s.Learners) != 0 {
		t.Fatalf("final voters %v learners %v, want %v", s.Voters, s.Learners, want)
	}
}

// TestRollingReplacementAllAtOnce has every old pod but the leader's gone and every successor
// up when the planner looks.
func TestRollingReplacementAllAtOnce(t *testing.T) {
	s := State{Self: "web-0_u0", Voters: []string{"web-0_u0", "web-1_u1", "web-2_u1", "web-3_u1"}, MaxVoters: 5,
		Alive: pods("web-0_u0", "web-1_u2", "web-2_u2", "web-3_u2")}
	final, plan := mustSettle(t, s, 100)
	if len(plan) != 9 {
		t.Fatalf("plan = %v, want 3 removals, 3 additions, 3 promotions", plan)
	}
	if want := []string{"web-0_u0", "web-1_u2", "web-2_u2", "web-3_u2"}; !slices.Equal(final.Voters, want) || len(final.Learners) != 0 {
		t.Fatalf("final voters %v learners %v, want %v", final.Voters, final.Learners, want)
	}
}

// randomState draws a state a leader could be in, with the malformed input the planner must
// tolerate: dead members, replaced pods, duplicates, empty ids, a voter listed as learner too,
// unknown zones and nodes, learners that are not caught up.
func randomState(rng *rand.Rand) State {
	n := 1 + rng.IntN(10)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("p%d_u%d", i, rng.IntN(2))
	}
	zones := []string{"", "a", "b", "c"}
	nodes := []string{"", "n1", "n2", "n3", "n4"}
	s := State{Self: ids[0], Voters: []string{ids[0]}, MaxVoters: 1 + rng.IntN(7)}
	for _, id := range ids {
		if rng.IntN(3) > 0 || id == s.Self && rng.IntN(5) > 0 {
			p := pod(id, zones[rng.IntN(len(zones))], nodes[rng.IntN(len(nodes))])
			if rng.IntN(10) == 0 { // replaced under a new uid
				p.ID += "x"
			}
			s.Alive = append(s.Alive, p)
		}
		switch rng.IntN(3) {
		case 0:
			s.Voters = append(s.Voters, id)
		case 1:
			s.Learners = append(s.Learners, id)
		}
		if rng.IntN(20) == 0 {
			s.Learners = append(s.Learners, id) // duplicate, or a voter listed as learner too
		}
	}
	if rng.IntN(10) == 0 {
		s.Alive = append(s.Alive, Pod{Zone: "a"})
	}
	if rng.IntN(10) == 0 && len(s.Alive) > 0 {
		s.Alive = append(s.Alive, s.Alive[rng.IntN(len(s.Alive))])
	}
	if rng.IntN(4) > 0 {
		caughtUp := map[string]bool{}
		for _, p := range s.Alive {
			caughtUp[p.ID] = rng.IntN(3) > 0
		}
		s.CaughtUp = func(id string) bool { return caughtUp[id] }
	}
	rng.Shuffle(len(s.Voters), func(i, j int) { s.Voters[i], s.Voters[j] = s.Voters[j], s.Voters[i] })
	return s
}

// shuffled returns s with its lists in another order.
func shuffled(rng *rand.Rand, s State) State {
	s.Voters, s.Learners, s.Alive = slices.Clone(s.Voters), slices.Clone(s.Learners), slices.Clone(s.Alive)
	rng.Shuffle(len(s.Voters), func(i, j int) { s.Voters[i], s.Voters[j] = s.Voters[j], s.Voters[i] })
	rng.Shuffle(len(s.Learners), func(i, j int) { s.Learners[i], s.Learners[j] = s.Learners[j], s.Learners[i] })
	rng.Shuffle(len(s.Alive), func(i, j int) { s.Alive[i], s.Alive[j] = s.Alive[j], s.Alive[i] })
	return s
}

// TestPlanConverges checks, for random states, that applying Next settles within three steps per
// id, every step changing one member as the rules allow, on the configuration the package doc
// promises; and that the plan does not depend on the order of the inputs. Each seed replays
// exactly.
func TestPlanConverges(t *testing.T) {
	for seed := uint64(1); seed <= 5000; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		s := randomState(rng)

		ids := map[string]bool{}
		for _, id := range slices.Concat(s.Voters, s.Learners) {
			ids[id] = true
		}
		alive := map[string]bool{}
		for _, p := range s.Alive {
			if p.ID != "" {
				ids[p.ID], alive[p.ID] = true, true
			}
		}
		// A voter that is alive keeps its vote unless there are too many; a pod that is not a
		// voter gets one only once caught up. Self is a voter whatever its pod.
		candidates := map[string]bool{s.Self: true}
		for id := range alive {
			if slices.Contains(s.Voters, id) || s.CaughtUp == nil || s.CaughtUp(id) {
				candidates[id] = true
			}
		}

		final, plan, err := settle(s, 3*len(ids))
		if err != nil {
			t.Fatalf("seed %d: %v\nstate %+v", seed, err, s)
		}
		r := roles(final)
		nVoters := 0
		for id, x := range r {
			switch {
			case x == voter && !alive[id] && id != s.Self:
				t.Fatalf("seed %d: voter %s has no live pod; plan %v", seed, id, plan)
			case x == learner && !alive[id]:
				t.Fatalf("seed %d: learner %s has no live pod; plan %v", seed, id, plan)
			case x == voter:
				nVoters++
			}
		}
		for id := range alive {
			if r[id] == notMember {
				t.Fatalf("seed %d: live pod %s is not a member; plan %v", seed, id, plan)
			}
		}
		if r[s.Self] != voter {
			t.Fatalf("seed %d: self is no longer a voter; plan %v", seed, plan)
		}
		// A leader whose own pod is leaving may hold one voter more: its successor.
		maxVoters := s.MaxVoters
		if !alive[s.Self] {
			maxVoters++
		}
		if want := min(maxVoters, len(candidates)); nVoters != want {
			t.Fatalf("seed %d: %d voters %v, want %d (max %d, candidates %v); plan %v",
				seed, nVoters, final.Voters, want, s.MaxVoters, candidates, plan)
		}

		c1, ok1 := Next(s)
		c2, ok2 := Next(shuffled(rng, s))
		if c1 != c2 || ok1 != ok2 {
			t.Fatalf("seed %d: plan depends on input order: %v, %v then %v, %v", seed, c1, ok1, c2, ok2)
		}
	}
}

func TestRollingReplacementPromotesBeforeRemoving(t *testing.T) {
	// Three voters, the new pod n caught up as a learner, the old pod o terminating: n becomes
	// a voter before o leaves, so the cluster never has two voters only.
	s := State{Self: "a", Voters: []string{"a", "b", "o"}, Learners: []string{"n"}, Alive: pods("a", "b", "n"), MaxVoters: 5}
	_, plan := mustSettle(t, s, 10)
	if want := []Change{{Promote, "n"}, {Remove, "o"}}; !slices.Equal(plan, want) {
		t.Fatalf("plan = %v, want %v", plan, want)
	}
	// At MaxVoters there is no room: the gone voter goes first.
	s.MaxVoters = 3
	_, plan = mustSettle(t, s, 10)
	if want := []Change{{Remove, "o"}, {Promote, "n"}}; !slices.Equal(plan, want) {
		t.Fatalf("at MaxVoters: plan = %v, want %v", plan, want)
	}
}

func TestLeavingSoleVoterPromotesASuccessor(t *testing.T) {
	// MaxVoters 1 and the only voter's pod is leaving: a caught-up learner is promoted beyond
	// the limit so that the leader can hand over to it; nothing is demoted meanwhile.
	s := State{Self: "a", Voters: []string{"a"}, Learners: []string{"b"}, Alive: pods("b"), MaxVoters: 1}
	if c, ok := Next(s); !ok || c != (Change{Promote, "b"}) {
		t.Fatalf("Next = %v %v, want promote b", c, ok)
	}
	s.Voters, s.Learners = []string{"a", "b"}, nil
	if c, ok := Next(s); ok {
		t.Fatalf("Next = %v after the promotion, want nothing (a hands over, b removes a)", c)
	}
}
