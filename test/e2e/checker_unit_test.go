package e2e

import (
	"strings"
	"testing"
	"time"
)

// The checker is the judge of every e2e test, so it has tests of its own: synthetic answers
// that must, and must not, be called violations.

type fakeObs struct {
	checker *LeaseChecker
	base    time.Time
	polled  map[int]int
}

func newFakeObs() *fakeObs {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	return &fakeObs{checker: newLeaseChecker(base, func(string, ...any) {}), base: base, polled: map[int]int{}}
}

func (f *fakeObs) at(ms int) time.Time { return f.base.Add(time.Duration(ms) * time.Millisecond) }

// answer records member i's answer to a poll sent at sentMs and received at recvMs. leaseMs < 0
// means no lease claim.
func (f *fakeObs) answer(i int, sentMs, recvMs int, leader string, term uint64, leaseMs int) {
	id := memberID(i)
	a := Answer{Name: leader, Self: id, Term: term, State: "follower"}
	o := Observation{Member: i, ID: id, Incarnation: 1, Source: "direct", Sent: f.at(sentMs), Recv: f.at(recvMs), Code: 503}
	if leader != "" {
		o.Code = 200
	}
	if leaseMs >= 0 {
		a.IsLeader, a.State = true, "leader"
		o.Lease = f.at(leaseMs)
		a.LeaseExpiresAt = o.Lease.Format(time.RFC3339Nano)
	}
	o.Answer = a
	f.checker.Record(o)
}

func (f *fakeObs) expect(t *testing.T, want string) {
	t.Helper()
	v := f.checker.Violations()
	if want == "" {
		if len(v) > 0 {
			t.Fatalf("unexpected violations:\n%s", strings.Join(v, "\n"))
		}
		return
	}
	for _, s := range v {
		if strings.Contains(s, want) {
			return
		}
	}
	t.Fatalf("no violation containing %q; got:\n%s", want, strings.Join(v, "\n"))
}

func TestCheckerOverlappingLeases(t *testing.T) {
	f := newFakeObs()
	f.answer(0, 0, 2, "a", 1, 300)     // a promises [2, 300)
	f.answer(1, 250, 252, "b", 2, 500) // b promises [252, 500): overlaps
	f.expect(t, "overlapping leases")
}

func TestCheckerOverlapFoundInEitherOrder(t *testing.T) {
	f := newFakeObs()
	// b's claim is recorded first although a's certain interval starts earlier.
	f.answer(1, 250, 252, "b", 2, 500)
	f.answer(0, 0, 2, "a", 1, 300)
	f.expect(t, "overlapping leases")
}

func TestCheckerAdjacentLeasesAreFine(t *testing.T) {
	f := newFakeObs()
	f.answer(0, 0, 2, "a", 1, 300)
	f.answer(0, 100, 102, "a", 1, 400) // a renews: [2, 400)
	f.answer(1, 400, 401, "b", 2, 700) // b starts when a's promise ended
	f.expect(t, "")
}

func TestCheckerUncertainClaimTimeIsNoViolation(t *testing.T) {
	f := newFakeObs()
	f.answer(0, 0, 2, "a", 1, 300)
	// b's answer was sent before a's lease ended but received after: b may have made the claim
	// after 300, so this is no certain overlap.
	f.answer(1, 250, 310, "b", 2, 600)
	f.expect(t, "")
}

func TestCheckerExpiredClaim(t *testing.T) {
	f := newFakeObs()
	f.answer(0, 500, 502, "a", 1, 400) // lease ended before the request was sent
	f.expect(t, "expired")
}

func TestCheckerDeadMembersPromiseStands(t *testing.T) {
	f := newFakeObs()
	f.answer(0, 0, 2, "a", 1, 1000) // a promises until 1000, then is killed
	f.answer(1, 600, 601, "b", 2, 900)
	f.expect(t, "overlapping leases")
}

func TestCheckerTwoLeadersInATerm(t *testing.T) {
	f := newFakeObs()
	f.answer(0, 0, 1, "a", 3, 100)
	f.answer(1, 200, 201, "b", 3, 300)
	f.expect(t, "two leaders in term 3")
}

func TestCheckerTermGoesBack(t *testing.T) {
	f := newFakeObs()
	f.answer(0, 0, 1, "", 5, -1)
	f.answer(0, 10, 11, "", 4, -1)
	f.expect(t, "went back")
}

func TestCheckerConcurrentAnswersMayReorderTerms(t *testing.T) {
	f := newFakeObs()
	// Two overlapping requests: the one received later may have been answered first.
	f.answer(0, 0, 20, "", 5, -1)
	f.answer(0, 5, 25, "", 4, -1)
	f.expect(t, "")
}

func TestCheckerContract(t *testing.T) {
	f := newFakeObs()
	o := Observation{Member: 0, ID: "a", Incarnation: 1, Source: "direct", Sent: f.at(0), Recv: f.at(1), Code: 200,
		Answer: Answer{Name: "b", Self: "a", IsLeader: true, Term: 1, State: "leader"}}
	f.checker.Record(o)
	f.expect(t, "isLeader with name")
	f.expect(t, "without a valid leaseExpiresAt")
}

func TestCheckerIndexMustChange(t *testing.T) {
	f := newFakeObs()
	for k, name := range []string{"", "b"} {
		code := 503
		if name != "" {
			code = 200
		}
		f.checker.Record(Observation{Member: 0, ID: "a", Incarnation: 1, Source: "poll", Sent: f.at(10 * k), Recv: f.at(10*k + 1), Code: code,
			Answer: Answer{Name: name, Self: "a", Term: 1, State: "follower", Index: 7}})
	}
	f.expect(t, "index stayed 7")
}

func TestCheckerCompatNamingSelfDuringAnothersLease(t *testing.T) {
	f := newFakeObs()
	f.answer(1, 0, 2, "b", 2, 500)
	f.checker.RecordCompat(Observation{Member: 0, ID: "a", Sent: f.at(100), Recv: f.at(101)}, "a")
	f.expect(t, "GET / on a named a itself")

	f = newFakeObs()
	f.checker.RecordCompat(Observation{Member: 0, ID: "a", Sent: f.at(100), Recv: f.at(101)}, "a")
	f.answer(1, 0, 2, "b", 2, 500) // recorded later, received earlier
	f.expect(t, "GET / on a named a itself")

	f = newFakeObs()
	f.answer(1, 0, 2, "b", 2, 500)
	f.checker.RecordCompat(Observation{Member: 0, ID: "a", Sent: f.at(490), Recv: f.at(510)}, "a") // may be after b's lease
	f.checker.RecordCompat(Observation{Member: 0, ID: "a", Sent: f.at(100), Recv: f.at(101)}, "b")
	f.expect(t, "")
}
