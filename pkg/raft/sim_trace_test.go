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
	simTraceConfChange
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
	commit, last uint64
	configIndex  uint64
	// config is shown only when it changed (newConfig), to keep lines short.
	config    Configuration
	newConfig bool
}

// simStatusOf summarizes st; prev is the member's status before the event.
func simStatusOf(st, prev Status) simStatusSummary {
	return simStatusSummary{term: st.Term, state: st.State, lead: st.Leader, vote: st.Vote, now: st.Now,
		leaseUntil: st.LeaseUntil, appLease: st.AppLeaseUntil, transferring: st.Transferring,
		commit: st.Commit, last: st.LastIndex, configIndex: st.ConfigIndex, config: st.Config,
		newConfig: st.ConfigIndex != prev.ConfigIndex || !st.Config.Equal(prev.Config)}
}

// simStatusChanged reports whether anything but the clock changed between two statuses.
func simStatusChanged(a, b Status) bool {
	return a.Term != b.Term || a.State != b.State || a.Leader != b.Leader || a.Vote != b.Vote ||
		a.LeaseUntil != b.LeaseUntil || a.AppLeaseUntil != b.AppLeaseUntil ||
		a.Transferring != b.Transferring || a.HoldsLease() != b.HoldsLease() ||
		a.Commit != b.Commit || a.LastIndex != b.LastIndex || a.ConfigIndex != b.ConfigIndex
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
	fmt.Fprintf(&b, " log=%d/%d cfg@%d", st.commit, st.last, st.configIndex)
	if st.newConfig {
		b.WriteString(simFormatConfig(st.config))
	}
	return b.String()
}

// simFormatConfig formats a configuration compactly: {v:m1,m2 l:m3}.
func simFormatConfig(c Configuration) string {
	s := "{v:" + strings.Join(c.Voters, ",")
	if len(c.Learners) > 0 {
		s += " l:" + strings.Join(c.Learners, ",")
	}
	return s + "}"
}

func simFormatEntry(e Entry) string {
	s := fmt.Sprintf("%d/%d %s", e.Index, e.Term, e.Type)
	if e.Config != nil {
		s += simFormatConfig(*e.Config)
	}
	return s
}

// simFormatLog formats a log as snapshot index/term{config} followed by its entries.
func simFormatLog(l LogState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%d/%d%s", l.Snapshot.Index, l.Snapshot.Term, simFormatConfig(l.Snapshot.Config))
	for _, e := range l.Entries {
		b.WriteString(" " + simFormatEntry(e))
	}
	b.WriteString("]")
	return b.String()
}

type simTraceRec struct {
	at     simTime
	member int8 // -1: the whole cluster
	kind   simTraceKind
	msg    Message    // deliver
	note   string     // note
	err    error      // transfer, configuration change
	cc     ConfChange // configuration change
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
	switch m.Type {
	case MsgVote:
		fmt.Fprintf(&b, " last=%d/%d", m.LastLogIndex, m.LastLogTerm)
	case MsgAppend:
		if m.Snapshot != nil {
			fmt.Fprintf(&b, " snap=%d/%d%s", m.Snapshot.Index, m.Snapshot.Term, simFormatConfig(m.Snapshot.Config))
		}
		fmt.Fprintf(&b, " prev=%d/%d", m.PrevLogIndex, m.PrevLogTerm)
		for _, e := range m.Entries {
			b.WriteString(" " + simFormatEntry(e))
		}
		fmt.Fprintf(&b, " commit=%d", m.Commit)
	case MsgAppendResp:
		fmt.Fprintf(&b, " index=%d", m.Index)
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
	case simTraceConfChange:
		what = fmt.Sprintf("ProposeConfChange(%v)", r.cc)
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
