package raft

import (
	"errors"
	"fmt"
)

// MessageType names a peer message. The request types are also the RPC names of the HTTP
// transport (POST /raft/v1/<type>); a response travels back in the body of its request's reply.
type MessageType string

const (
	// MsgVote asks for a vote (or, with PreVote set, whether a vote would be granted).
	MsgVote MessageType = "request-vote"
	// MsgVoteResp answers MsgVote.
	MsgVoteResp MessageType = "request-vote-response"
	// MsgAppend is the leader's heartbeat: it asserts leadership for its term and starts a
	// heartbeat round whose acknowledgements renew the leader lease. It will carry
	// configuration entries once membership goes through the log.
	MsgAppend MessageType = "append-entries"
	// MsgAppendResp acknowledges MsgAppend, echoing its round.
	MsgAppendResp MessageType = "append-entries-response"
	// MsgTimeoutNow tells a follower to campaign at once, skipping pre-vote and the followers'
	// leases: the leader has stopped claiming its lease and wants this member to succeed it.
	MsgTimeoutNow MessageType = "timeout-now"
)

// IsRequest reports whether t is sent as its own RPC (as opposed to a response).
func (t MessageType) IsRequest() bool {
	return t == MsgVote || t == MsgAppend || t == MsgTimeoutNow
}

// ResponseType is the type of the response to a request of type t, or "" if t has none.
func (t MessageType) ResponseType() MessageType {
	switch t {
	case MsgVote:
		return MsgVoteResp
	case MsgAppend:
		return MsgAppendResp
	}
	return ""
}

func (t MessageType) valid() bool {
	switch t {
	case MsgVote, MsgVoteResp, MsgAppend, MsgAppendResp, MsgTimeoutNow:
		return true
	}
	return false
}

// Limits on what a peer may send. They bound memory and keep absurd values (a term that would
// overflow, an id of megabytes) out of the state machine.
const (
	// MaxIDLength bounds member and cluster ids: a pod name (253) plus a UID and a separator.
	MaxIDLength = 320
	// MaxTerm is the largest term a member accepts. Terms grow by one per election; a peer
	// that claims a term near the integer limit is broken or hostile.
	MaxTerm = 1 << 53
)

// Message is one peer message. Every message names its cluster, sender and recipient.
//
// The log fields (LastLogIndex, LastLogTerm, Commit) are carried from the start so that the
// membership log can restrict votes to up-to-date candidates without a wire change.
type Message struct {
	Type    MessageType `json:"type"`
	Cluster string      `json:"cluster"`
	From    string      `json:"from"`
	To      string      `json:"to"`
	Term    uint64      `json:"term"`

	// PreVote marks a request-vote (and its response) as the pre-vote phase: the sender
	// asks whether it could win an election at Term without having moved to Term.
	PreVote bool `json:"preVote,omitempty"`
	// Transfer marks a request-vote sent because of timeout-now: voters grant it even while
	// they still follow a leader whose lease has not run out.
	Transfer bool `json:"transfer,omitempty"`
	// LastLogIndex and LastLogTerm describe the candidate's log (request-vote).
	LastLogIndex uint64 `json:"lastLogIndex,omitempty"`
	LastLogTerm  uint64 `json:"lastLogTerm,omitempty"`

	// Round numbers a leader's heartbeat round; the acknowledgement echoes it so the leader
	// can tell which round a majority has acknowledged.
	Round uint64 `json:"round,omitempty"`
	// PrevLogIndex and PrevLogTerm name the entry that Entries follow (append-entries): the
	// recipient accepts Entries only if its log holds that entry (the consistency check).
	PrevLogIndex uint64 `json:"prevLogIndex,omitempty"`
	PrevLogTerm  uint64 `json:"prevLogTerm,omitempty"`
	// Entries are the log entries after PrevLogIndex (append-entries).
	Entries []Entry `json:"entries,omitempty"`
	// Snapshot replaces a recipient's log that lacks entries the leader has compacted; it is
	// the entry at PrevLogIndex (append-entries).
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// Config is the leader's configuration, sent (append-entries) to a member that may not
	// hold it yet: a member whose configuration does not name the leader accepts it only if
	// this names the leader as a voter and the member as a member.
	Config *Configuration `json:"config,omitempty"`
	// Commit is the leader's commit index (append-entries), capped at the last entry sent.
	Commit uint64 `json:"commit,omitempty"`
	// Index is, on an append-entries response, the index up to which the responder's log now
	// matches the leader's; on a rejected one (same term), the index to back up to.
	Index uint64 `json:"index,omitempty"`

	// Reject is set on a response that refuses the request.
	Reject bool `json:"reject,omitempty"`
}

// ErrInvalidMessage is wrapped by every error Validate returns.
var ErrInvalidMessage = errors.New("invalid message")

// Validate checks the shape of a message received from a peer: known type, ids present and of
// bounded length, a term within range, and fields that belong to its type. It does not check
// the message against any member's state.
func (m *Message) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
	}
	if !m.Type.valid() {
		return bad("unknown type %q", truncate(string(m.Type)))
	}
	for _, f := range []struct{ name, v string }{{"cluster", m.Cluster}, {"from", m.From}, {"to", m.To}} {
		if f.v == "" {
			return bad("%s is empty", f.name)
		}
		if len(f.v) > MaxIDLength {
			return bad("%s is %d bytes, the limit is %d", f.name, len(f.v), MaxIDLength)
		}
	}
	if m.From == m.To {
		return bad("from and to are both %q", truncate(m.From))
	}
	// A member that never saw a term (term 0) may refuse a request; anything else has a term.
	if m.Term == 0 && (m.Type.IsRequest() || !m.Reject) {
		return bad("term is 0")
	}
	if m.Term > MaxTerm {
		return bad("term %d exceeds the limit %d", m.Term, uint64(MaxTerm))
	}
	if m.LastLogTerm > m.Term && m.Type == MsgVote {
		return bad("last log term %d is above the term %d", m.LastLogTerm, m.Term)
	}
	if (m.PreVote || m.Transfer) && m.Type != MsgVote && m.Type != MsgVoteResp {
		return bad("preVote/transfer set on %s", m.Type)
	}
	if m.PreVote && m.Transfer {
		return bad("preVote and transfer both set")
	}
	if m.Reject && m.Type.IsRequest() {
		return bad("reject set on request %s", m.Type)
	}
	if m.Type != MsgAppend && (m.PrevLogIndex != 0 || m.PrevLogTerm != 0 || len(m.Entries) != 0 || m.Snapshot != nil || m.Commit != 0 || m.Config != nil) {
		return bad("log fields set on %s", m.Type)
	}
	if m.Type != MsgAppendResp && m.Index != 0 {
		return bad("index set on %s", m.Type)
	}
	if m.Type != MsgVote && (m.LastLogIndex != 0 || m.LastLogTerm != 0) {
		return bad("last log fields set on %s", m.Type)
	}
	for _, v := range []uint64{m.LastLogIndex, m.PrevLogIndex, m.PrevLogTerm, m.Commit, m.Index, m.Round} {
		if v > MaxTerm {
			return bad("index, term or round %d exceeds the limit %d", v, uint64(MaxTerm))
		}
	}
	if m.Type == MsgAppend {
		if m.PrevLogTerm > m.Term {
			return bad("previous log term %d is above the term %d", m.PrevLogTerm, m.Term)
		}
		if len(m.Entries) > MaxLogEntries {
			return bad("%d entries, the limit is %d", len(m.Entries), MaxLogEntries)
		}
		ids := 0
		for _, e := range m.Entries {
			if e.Config != nil {
				ids += len(e.Config.Voters) + len(e.Config.Learners)
			}
		}
		if ids > maxMessageMembers+MaxMembers {
			return bad("entries name %d members, the limit is %d", ids, maxMessageMembers+MaxMembers)
		}
		if m.Snapshot != nil {
			if err := m.Snapshot.validate(); err != nil {
				return bad("snapshot: %v", err)
			}
			if m.Snapshot.Index == 0 || m.Snapshot.Index != m.PrevLogIndex || m.Snapshot.Term != m.PrevLogTerm {
				return bad("snapshot (%d, %d) is not the previous entry (%d, %d)", m.Snapshot.Index, m.Snapshot.Term, m.PrevLogIndex, m.PrevLogTerm)
			}
		}
		if m.Config != nil {
			if err := m.Config.validate(); err != nil {
				return bad("config: %v", err)
			}
		}
		if err := validateRun(m.PrevLogIndex, m.PrevLogTerm, m.Entries); err != nil {
			return bad("%v", err)
		}
		if m.PrevLogIndex == 0 && len(m.Entries) > 0 && m.Entries[0].Type != EntryConfig {
			// Index 1 holds the configuration the cluster was bootstrapped with; a member
			// that committed a log starting otherwise would hold a snapshot without voters,
			// which it could not load again.
			return bad("entries from index 1 do not start with a configuration")
		}
		if n := len(m.Entries); n > 0 && m.Entries[n-1].Term > m.Term {
			return bad("entry term %d is above the term %d", m.Entries[n-1].Term, m.Term)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
