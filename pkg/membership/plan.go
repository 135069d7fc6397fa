// Package membership plans changes to the Raft configuration: given the current voters and
// learners and the pods the Kubernetes API reports, Next says which single change to propose
// next so that every live pod becomes a member, at most MaxVoters of them voters, spread over
// zones and nodes.
//
// # What the planner does and does not decide
//
// The planner only proposes. It is pure and deterministic: no I/O, no clock, no randomness,
// ties broken by member id, and the answer does not depend on the order of its inputs. Whether
// a proposed change may be made now is the Raft core's decision, not the planner's: the core
// accepts one configuration change at a time (the previous one committed), only from a leader
// that has committed an entry of its own term and whose lease is still backed by a majority.
// The leader calls Next again with the newest configuration in its log after each change, so a
// change refused or lost is simply planned again.
//
// Every change moves exactly one member by one step (Raft dissertation §4.1, single-server
// changes), so any two successive configurations share a majority. A new pod always joins as a
// learner and becomes a voter only once it is caught up (§4.2.1): a voter that cannot yet
// acknowledge would count in the quorum without helping to reach it.
//
// # Only the API says a member is gone
//
// A voter is removed when its pod is no longer among the pods discovery reports (deleted,
// terminating, finished, or replaced by a pod under a new UID, which is a different member id),
// never because the leader cannot reach it. Reachability is the Raft core's business (CheckQuorum
// and the lease): removing members the leader cannot hear from would let a partition or a slow
// node rewrite the configuration, and the healed cluster would then need repair. A voter that is
// down but whose pod still exists keeps its vote until Kubernetes deletes or replaces the pod.
//
// # The rules
//
// Next applies the first rule that has something to do:
//
//  0. If a voter's pod is gone, first promote a caught-up learner while there are fewer than
//     MaxVoters (as rule 5): a rolling update replaces a voter before it loses one.
//  1. Remove a voter whose pod is gone (smallest id first). A dead voter weighs on the quorum
//     and can never acknowledge, and its id never comes back: a replacement pod has a new UID.
//  2. Remove a learner whose pod is gone (smallest id first).
//  3. Demote a voter while there are more than MaxVoters (see "Spreading").
//  4. Add a live pod that is not a member as a learner (smallest id first).
//  5. Promote a caught-up learner while there are fewer than MaxVoters (see "Spreading").
//
// Self, the leader, is never removed or demoted, even when its own pod is gone: a leader that
// must leave transfers leadership first, and its successor removes it.
//
// # Spreading
//
// Voters are spread over zones and nodes only when a voter is chosen for promotion or demotion.
// The planner never swaps a well-placed learner for a badly placed voter: a swap takes two
// changes and an intermediate configuration for the sake of placement alone, and the next
// promotion or demotion has the same chance to fix it.
//
// A member's crowding is the pair (other voters in its zone, other voters on its node), compared
// zone first. A pod with an empty zone (node) is counted as alone in a zone (node) of its own, so
// it scores 0 there: it ties with a known zone that has no voter, and is preferred over a known
// zone that has one. Promotion picks the caught-up learner with the lowest crowding (ties: the
// smallest id); demotion picks the voter, other than Self, with the highest crowding (ties: the
// largest id).
//
// # Malformed input
//
// Ids listed twice are counted once; an id listed both as voter and learner is a voter. Empty
// ids are ignored everywhere, since no member can have one. When the same id is reported by
// several pods, the first report gives its zone and node. A state the leader cannot be in
// (Self not a voter, MaxVoters below 1) proposes nothing rather than guess.
package membership

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Pod is a live pod that should be a member, as discovery reports it. Node and Zone are only
// used to spread voters; the planner never requires them.
type Pod struct {
	// ID is the member id (pod name and UID, so a replaced pod is a new member).
	ID string
	// Node is the pod's spec.nodeName; empty when not yet scheduled or unknown.
	Node string
	// Zone is the pod's topology.kubernetes.io/zone label; empty when unknown.
	Zone string
}

// ChangeType is the kind of a single configuration change. Each moves one member by one step
// between "not a member", "learner" and "voter", except Remove, which takes a member of either
// kind out: removing a voter directly is still a change of one voter.
type ChangeType uint8

// The changes the planner proposes.
const (
	// AddLearner makes a live pod that is not yet a member a learner. New pods never join as
	// voters: they must catch up first.
	AddLearner ChangeType = iota + 1
	// Promote makes a caught-up learner a voter.
	Promote
	// Demote makes a voter a learner, when there are more voters than wanted.
	Demote
	// Remove takes a member (voter or learner) whose pod is gone out of the configuration.
	Remove
)

var changeTypeNames = [...]string{AddLearner: "add-learner", Promote: "promote", Demote: "demote", Remove: "remove"}

// String returns the name used in logs and metrics: "add-learner", "promote", "demote" or
// "remove".
func (t ChangeType) String() string {
	if t >= AddLearner && int(t) < len(changeTypeNames) {
		return changeTypeNames[t]
	}
	return fmt.Sprintf("ChangeType(%d)", uint8(t))
}

// Change is one configuration change: what to do to which member.
type Change struct {
	Type ChangeType
	ID   string
}

// String returns the change as it appears in logs, e.g. "promote pod-a_uid".
func (c Change) String() string { return c.Type.String() + " " + c.ID }

// State is everything the planner looks at. Next does not modify it.
type State struct {
	// Voters and Learners are the current configuration: the newest one in the leader's log,
	// committed or not, since that is the one the next change is made to.
	Voters, Learners []string
	// Self is the leader's id. The plan never removes or demotes it, and proposes nothing if it
	// is not a voter (a leader always is).
	Self string
	// Alive are the pods discovery reports: the members that should exist. A member missing
	// here is removed; a pod here that is not a member is added.
	Alive []Pod
	// MaxVoters is how many voters the cluster should have at most, at least 1. The rest of the
	// live pods are learners: they know the leader but do not slow down the quorum.
	MaxVoters int
	// CaughtUp reports whether a learner has acknowledged the leader recently and holds the
	// leader's whole log; only such learners are promoted, so that a new voter can count
	// towards the quorum from the moment it is one. It is asked about learners only. nil means
	// every learner is caught up.
	CaughtUp func(id string) bool
}

// Next returns the next single change to propose, or ok=false when the configuration is where
// it should be (or the state is one a leader cannot be in). The rules and their order are in
// the package doc.
func Next(s State) (c Change, ok bool) {
	voters := idSet(s.Voters)
	if s.MaxVoters < 1 || !voters[s.Self] {
		return Change{}, false
	}
	learners := idSet(s.Learners)
	for id := range voters {
		delete(learners, id) // listed as both: a voter
	}
	alive := make(map[string]Pod, len(s.Alive))
	for _, p := range s.Alive {
		if _, seen := alive[p.ID]; p.ID != "" && !seen {
			alive[p.ID] = p
		}
	}
	gone := func(id string) bool {
		_, ok := alive[id]
		return !ok && id != s.Self
	}

	voterPods := make([]Pod, 0, len(voters))
	for _, id := range sortedIDs(voters) {
		p, ok := alive[id]
		if !ok {
			p = Pod{ID: id} // gone (or Self without a live pod): placement unknown
		}
		voterPods = append(voterPods, p)
	}
	// A leader whose own pod is leaving counts as one voter too many: it may promote a
	// successor beyond MaxVoters (even with MaxVoters 1), and hand over to it.
	_, selfAlive := alive[s.Self]
	maxVoters := s.MaxVoters
	if !selfAlive && maxVoters < math.MaxInt { // no room beyond MaxInt: it would wrap around
		maxVoters++
	}
	promote := func() (Change, bool) {
		if len(voters) >= maxVoters {
			return Change{}, false
		}
		var best Pod
		var bestCrowding crowding
		for _, id := range sortedIDs(learners) { // ascending, so a tie keeps the smaller id
			l, live := alive[id]
			if !live || s.CaughtUp != nil && !s.CaughtUp(id) {
				continue
			}
			if c := crowdingOf(l, voterPods); best.ID == "" || c.compare(bestCrowding) < 0 {
				best, bestCrowding = l, c
			}
		}
		if best.ID == "" {
			return Change{}, false
		}
		return Change{Type: Promote, ID: best.ID}, true
	}

	// Rule 0: while there is room, a caught-up learner is promoted before a gone voter is
	// removed. In a rolling update the old pod's voter is replaced by the new pod's before it
	// leaves, so the cluster never runs with one voter fewer than it had.
	if _, anyGone := smallest(voters, gone); anyGone || !selfAlive {
		if c, ok := promote(); ok {
			return c, true
		}
	}

	// Rules 1 and 2: members whose pods are gone, voters first.
	if id, ok := smallest(voters, gone); ok {
		return Change{Type: Remove, ID: id}, true
	}
	if id, ok := smallest(learners, gone); ok {
		return Change{Type: Remove, ID: id}, true
	}

	// Rule 3: too many voters.
	if len(voters) > maxVoters {
		var worst Pod
		var worstCrowding crowding
		for _, v := range voterPods { // ascending, so a later tie is a larger id
			if v.ID == s.Self {
				continue
			}
			if c := crowdingOf(v, voterPods); worst.ID == "" || c.compare(worstCrowding) >= 0 {
				worst, worstCrowding = v, c
			}
		}
		// Self is a voter and MaxVoters >= 1, so more than MaxVoters voters means another one.
		return Change{Type: Demote, ID: worst.ID}, true
	}

	// Rule 4: live pods that are not members.
	if id, ok := smallest(alive, func(id string) bool { return !voters[id] && !learners[id] }); ok {
		return Change{Type: AddLearner, ID: id}, true
	}

	// Rule 5: too few voters.
	return promote()
}

// crowding measures how badly a member would spread the voters: how many other voters share
// its zone, then its node. Lower is better placed.
type crowding struct{ zone, node int }

func (c crowding) compare(o crowding) int {
	return cmp.Or(cmp.Compare(c.zone, o.zone), cmp.Compare(c.node, o.node))
}

// crowdingOf counts the voters other than p itself in p's zone and on p's node. An empty zone
// or node is one of its own, shared with nobody.
func crowdingOf(p Pod, voters []Pod) crowding {
	var c crowding
	for _, v := range voters {
		if v.ID == p.ID {
			continue
		}
		if p.Zone != "" && v.Zone == p.Zone {
			c.zone++
		}
		if p.Node != "" && v.Node == p.Node {
			c.node++
		}
	}
	return c
}

// idSet returns the non-empty ids as a set.
func idSet(ids []string) map[string]bool {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id != "" {
			set[id] = true
		}
	}
	return set
}

// smallest returns the smallest key of set for which match holds.
func smallest[V any](set map[string]V, match func(id string) bool) (string, bool) {
	found, ok := "", false
	for id := range set {
		if match(id) && (!ok || id < found) {
			found, ok = id, true
		}
	}
	return found, ok
}

func sortedIDs(set map[string]bool) []string {
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
