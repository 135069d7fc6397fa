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
	// Commit is the leader's commit index (append-entries).
	Commit uint64 `json:"commit,omitempty"`

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
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
