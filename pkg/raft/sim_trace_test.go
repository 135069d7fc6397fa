package raft

// The simulator's trace: a compact record of events, the last of which are printed when an
// invariant fails. Records are kept as values and formatted only when printed.

import (
	"fmt"
	"strings"
)

type simTraceKind uint8

const (
	simTraceNote simTraceKind = iota
	simTraceTick
	simTraceDeliver
	simTraceTransfer
)

// simStatusSummary is the part of a Status the trace shows.
type simStatusSummary struct {
	term         uint64
	state        StateType
	lead, vote   string
	now          uint64
	leaseUntil   uint64
	appLease     uint64
	transferring bool
}

func simStatusOf(st Status) simStatusSummary {
	return simStatusSummary{term: st.Term, state: st.State, lead: st.Leader, vote: st.Vote, now: st.Now,
		leaseUntil: st.LeaseUntil, appLease: st.AppLeaseUntil, transferring: st.Transferring}
}

// simStatusChanged reports whether anything but the clock changed between two statuses.
func simStatusChanged(a, b Status) bool {
	return a.Term != b.Term || a.State != b.State || a.Leader != b.Leader || a.Vote != b.Vote ||
		a.LeaseUntil != b.LeaseUntil || a.AppLeaseUntil != b.AppLeaseUntil ||
		a.Transferring != b.Transferring || a.HoldsLease() != b.HoldsLease()
}

func (st simStatusSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s term=%d", st.state, st.term)
	if st.vote != None {
		fmt.Fprintf(&b, " vote=%s", st.vote)
	}
	if st.lead != None {
		fmt.Fprintf(&b, " lead=%s", st.lead)
	}
	fmt.Fprintf(&b, " now=%d", st.now)
	if st.leaseUntil != 0 {
		fmt.Fprintf(&b, " lease<%d app<%d", st.leaseUntil, st.appLease)
	}
	if st.transferring {
		b.WriteString(" transferring")
	}
	return b.String()
}

type simTraceRec struct {
	at     simTime
	member int8 // -1: the whole cluster
	kind   simTraceKind
	msg    Message // deliver
	note   string  // note
	err    error   // transfer
	sent   int
	st     simStatusSummary
}

func simFormatMsg(m Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s->%s term=%d", m.Type, m.From, m.To, m.Term)
	if m.Round != 0 {
		fmt.Fprintf(&b, " round=%d", m.Round)
	}
	if m.PreVote {
		b.WriteString(" pre-vote")
	}
	if m.Transfer {
		b.WriteString(" transfer")
	}
	if m.Reject {
		b.WriteString(" reject")
	}
	return b.String()
}

func (r simTraceRec) String() string {
	who := "--"
	if r.member >= 0 {
		who = fmt.Sprintf("m%d", r.member+1)
	}
	var what string
	switch r.kind {
	case simTraceNote:
		return fmt.Sprintf("%12v %s %s", r.at, who, r.note)
	case simTraceTick:
		what = "tick"
	case simTraceDeliver:
		what = "recv " + simFormatMsg(r.msg)
	case simTraceTransfer:
		what = "TransferLeadership()"
		if r.err != nil {
			what += " = " + r.err.Error()
		}
	}
	s := fmt.Sprintf("%12v %s %-58s => %v", r.at, who, what, r.st)
	if r.sent > 0 {
		s += fmt.Sprintf(" (sends %d)", r.sent)
	}
	return s
}

// simTrace keeps the last records in a ring, and every record when keepAll is set.
type simTrace struct {
	ring    []simTraceRec
	next    int
	full    bool
	keepAll bool
	all     []simTraceRec
}

const simTraceRing = 256

func (t *simTrace) add(r simTraceRec) {
	if t.ring == nil {
		t.ring = make([]simTraceRec, simTraceRing)
	}
	t.ring[t.next] = r
	t.next++
	if t.next == len(t.ring) {
		t.next, t.full = 0, true
	}
	if t.keepAll {
		t.all = append(t.all, r)
	}
}

func (t *simTrace) note(at simTime, member int, note string) {
	t.add(simTraceRec{at: at, member: int8(member), kind: simTraceNote, note: note})
}

// last returns the last n records, oldest first.
func (t *simTrace) last(n int) []simTraceRec {
	var out []simTraceRec
	if t.full {
		out = append(out, t.ring[t.next:]...)
	}
	out = append(out, t.ring[:t.next]...)
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func simFormatTrace(recs []simTraceRec) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString("  ")
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}
