package raft

import (
	"errors"
	"fmt"
	"slices"
)

// The Raft log of raft-elector holds configuration entries and, at the start of each
// leader's term, a no-op: nothing else. It is compacted to its committed prefix as soon as
// an entry commits, so it is a snapshot (the configuration as of the commit index) plus the
// few entries after it.

// Configuration is the set of members: voters vote and may lead; learners follow the leader
// and know who it is, but never vote, campaign or count toward a quorum.
type Configuration struct {
	Voters   []string `json:"voters"`
	Learners []string `json:"learners,omitempty"`
}

// IsEmpty reports whether the configuration has no member at all: the state of a member that
// has not joined a cluster yet.
func (c Configuration) IsEmpty() bool { return len(c.Voters) == 0 && len(c.Learners) == 0 }

// Clone returns a deep copy.
func (c Configuration) Clone() Configuration {
	return Configuration{Voters: slices.Clone(c.Voters), Learners: slices.Clone(c.Learners)}
}

// Equal reports whether two configurations have the same voters and learners.
func (c Configuration) Equal(o Configuration) bool {
	return slices.Equal(c.Voters, o.Voters) && slices.Equal(c.Learners, o.Learners)
}

func (c Configuration) String() string {
	return fmt.Sprintf("voters=%v learners=%v", c.Voters, c.Learners)
}

// MaxMembers bounds the size of a configuration: five voters and a hundred learners fit
// with room to spare, and a message carrying a few configurations stays well under the
// transport's body limit.
const MaxMembers = 128

// maxMessageMembers bounds the member ids one append-entries carries in its entries, beyond
// its snapshot: the leader sends a long tail in several messages.
const maxMessageMembers = 2 * MaxMembers

// validate checks that every id is well formed and listed once, and that the lists are
// sorted (a configuration is kept sorted so that equal configurations compare equal).
func (c Configuration) validate() error {
	if n := len(c.Voters) + len(c.Learners); n > MaxMembers {
		return fmt.Errorf("configuration has %d members, the limit is %d", n, MaxMembers)
	}
	seen := make(map[string]bool, len(c.Voters)+len(c.Learners))
	for _, list := range [][]string{c.Voters, c.Learners} {
		if !slices.IsSorted(list) {
			return errors.New("configuration lists are not sorted")
		}
		for _, id := range list {
			if id == "" || len(id) > MaxIDLength {
				return fmt.Errorf("member id %q is empty or longer than %d bytes", truncate(id), MaxIDLength)
			}
			if seen[id] {
				return fmt.Errorf("member %q listed twice", truncate(id))
			}
			seen[id] = true
		}
	}
	return nil
}

// newConfiguration builds a sorted configuration from sets.
func newConfiguration(voters, learners map[string]bool) Configuration {
	c := Configuration{Voters: sortedKeys(voters)}
	if len(learners) > 0 {
		c.Learners = sortedKeys(learners)
	}
	return c
}

// EntryType says what a log entry holds.
type EntryType string

const (
	// EntryNoop is appended by every new leader, so that it commits an entry of its own term
	// before it changes the configuration (the fix to single-server changes).
	EntryNoop EntryType = "noop"
	// EntryConfig holds the whole configuration that takes effect when it is appended.
	EntryConfig EntryType = "config"
)

// Entry is one log entry.
type Entry struct {
	Index  uint64         `json:"index"`
	Term   uint64         `json:"term"`
	Type   EntryType      `json:"type"`
	Config *Configuration `json:"config,omitempty"`
}

func (e Entry) validate() error {
	switch e.Type {
	case EntryNoop:
		if e.Config != nil {
			return errors.New("no-op entry carries a configuration")
		}
	case EntryConfig:
		if e.Config == nil {
			return errors.New("configuration entry without a configuration")
		}
		if err := e.Config.validate(); err != nil {
			return err
		}
		if len(e.Config.Voters) == 0 {
			return errors.New("configuration entry without voters")
		}
	default:
		return fmt.Errorf("unknown entry type %q", truncate(string(e.Type)))
	}
	if e.Index == 0 || e.Term == 0 {
		return errors.New("entry index and term must be positive")
	}
	return nil
}

// Snapshot is the compacted, committed prefix of the log: the configuration in force at
// Index, whose entry had Term. A member that never joined a cluster has the zero Snapshot.
type Snapshot struct {
	Index  uint64        `json:"index"`
	Term   uint64        `json:"term"`
	Config Configuration `json:"config"`
}

func (s Snapshot) validate() error {
	if err := s.Config.validate(); err != nil {
		return err
	}
	if s.Index == 0 && !s.Config.IsEmpty() {
		return errors.New("snapshot at index 0 holds a configuration")
	}
	if s.Index > 0 && len(s.Config.Voters) == 0 {
		return errors.New("snapshot without voters")
	}
	if s.Index > MaxTerm || s.Term > MaxTerm {
		return errors.New("snapshot index or term exceeds the limit")
	}
	return nil
}

// LogState is the durable log: persisted with the term and vote, before any message that
// depends on it is sent.
type LogState struct {
	Snapshot Snapshot `json:"snapshot"`
	Entries  []Entry  `json:"entries,omitempty"`
}

// Validate checks a loaded or received log: a valid snapshot followed by contiguous,
// valid entries whose terms never decrease.
func (l LogState) Validate() error {
	if err := l.Snapshot.validate(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if len(l.Entries) > MaxLogEntries {
		return fmt.Errorf("log has %d entries, the limit is %d", len(l.Entries), MaxLogEntries)
	}
	return validateRun(l.Snapshot.Index, l.Snapshot.Term, l.Entries)
}

// validateRun checks entries that follow (prevIndex, prevTerm).
func validateRun(prevIndex, prevTerm uint64, ents []Entry) error {
	for i, e := range ents {
		if err := e.validate(); err != nil {
			return fmt.Errorf("entry %d: %w", prevIndex+uint64(i)+1, err)
		}
		if e.Index != prevIndex+uint64(i)+1 {
			return fmt.Errorf("entry %d has index %d: entries are not contiguous", prevIndex+uint64(i)+1, e.Index)
		}
		if e.Index > MaxTerm {
			return fmt.Errorf("entry index %d exceeds the limit %d", e.Index, uint64(MaxTerm))
		}
		if e.Term < prevTerm {
			return fmt.Errorf("entry %d has term %d below the term %d before it", e.Index, e.Term, prevTerm)
		}
		prevTerm = e.Term
	}
	return nil
}

// MaxLogEntries bounds the uncompacted tail of a log, and the entries one message carries.
// The tail only holds entries not yet committed: a no-op per term and a configuration.
const MaxLogEntries = 256

// raftLog is the in-memory log.
type raftLog struct {
	snap   Snapshot
	ents   []Entry // ents[i].Index == snap.Index+1+i
	commit uint64  // >= snap.Index
}

func (l *raftLog) lastIndex() uint64 { return l.snap.Index + uint64(len(l.ents)) }

func (l *raftLog) lastTerm() uint64 {
	if len(l.ents) > 0 {
		return l.ents[len(l.ents)-1].Term
	}
	return l.snap.Term
}

// term returns the term of the entry at i, if the log holds it (the snapshot's index
// included).
func (l *raftLog) term(i uint64) (uint64, bool) {
	switch {
	case i == l.snap.Index:
		return l.snap.Term, true
	case i < l.snap.Index || i > l.lastIndex():
		return 0, false
	}
	return l.ents[i-l.snap.Index-1].Term, true
}

// matches reports whether the log holds an entry at index i with term t. Entries compacted
// into the snapshot are committed, and every leader's log holds the committed entries, so an
// index below the snapshot always matches.
func (l *raftLog) matches(i, t uint64) bool {
	if i < l.snap.Index {
		return true
	}
	got, ok := l.term(i)
	return ok && got == t
}

// config returns the newest configuration in the log and the index of its entry (the
// snapshot's index if no entry holds one).
func (l *raftLog) config() (Configuration, uint64) {
	for i := len(l.ents) - 1; i >= 0; i-- {
		if l.ents[i].Type == EntryConfig {
			return *l.ents[i].Config, l.ents[i].Index
		}
	}
	return l.snap.Config, l.snap.Index
}

// configAt returns the configuration in force at index i (snap.Index <= i <= lastIndex).
func (l *raftLog) configAt(i uint64) Configuration {
	for j := int(i-l.snap.Index) - 1; j >= 0; j-- {
		if l.ents[j].Type == EntryConfig {
			return *l.ents[j].Config
		}
	}
	return l.snap.Config
}

// entriesFrom returns up to MaxLogEntries entries from index i (> snap.Index).
func (l *raftLog) entriesFrom(i uint64) []Entry {
	if i > l.lastIndex() {
		return nil
	}
	ents := l.ents[i-l.snap.Index-1:]
	if len(ents) > MaxLogEntries {
		ents = ents[:MaxLogEntries]
	}
	ids := 0
	for k, e := range ents {
		if e.Config != nil {
			ids += len(e.Config.Voters) + len(e.Config.Learners)
		}
		if ids > maxMessageMembers && k > 0 {
			ents = ents[:k]
			break
		}
	}
	return slices.Clone(ents)
}

// append adds entries after prev, truncating any conflicting suffix. It refuses to truncate
// a committed entry: that would be a protocol violation by the sender.
func (l *raftLog) append(ents []Entry) (changed bool, err error) {
	for _, e := range ents {
		if e.Index <= l.snap.Index {
			continue // compacted: committed, and so the same in every leader's log
		}
		if t, ok := l.term(e.Index); ok {
			if t == e.Term {
				continue
			}
			if e.Index <= l.commit {
				return changed, fmt.Errorf("entry %d of term %d conflicts with a committed entry of term %d", e.Index, e.Term, t)
			}
			l.ents = l.ents[:e.Index-l.snap.Index-1]
		}
		if e.Index != l.lastIndex()+1 {
			return changed, fmt.Errorf("entry %d does not follow the last index %d", e.Index, l.lastIndex())
		}
		if len(l.ents) >= MaxLogEntries {
			return changed, fmt.Errorf("log tail is full (%d entries)", MaxLogEntries)
		}
		e.Config = cloneConfig(e.Config)
		l.ents = append(l.ents, e)
		changed = true
	}
	return changed, nil
}

func cloneConfig(c *Configuration) *Configuration {
	if c == nil {
		return nil
	}
	cc := c.Clone()
	return &cc
}

// commitTo advances the commit index and compacts the log to it.
func (l *raftLog) commitTo(i uint64) bool {
	if i <= l.commit {
		return false
	}
	if i > l.lastIndex() {
		i = l.lastIndex()
	}
	l.commit = i
	t, _ := l.term(i)
	cfg := l.configAt(i)
	l.ents = slices.Clone(l.ents[i-l.snap.Index:])
	l.snap = Snapshot{Index: i, Term: t, Config: cfg}
	return true
}

// restore replaces the log with a snapshot newer than the commit index, keeping the entries
// after it if the log agrees with it.
func (l *raftLog) restore(s Snapshot) {
	if l.matches(s.Index, s.Term) && s.Index <= l.lastIndex() && s.Index >= l.snap.Index {
		l.commitTo(s.Index)
		return
	}
	l.snap = Snapshot{Index: s.Index, Term: s.Term, Config: s.Config.Clone()}
	l.ents = nil
	l.commit = s.Index
}

func (l *raftLog) state() LogState {
	ents := make([]Entry, len(l.ents))
	for i, e := range l.ents {
		e.Config = cloneConfig(e.Config)
		ents[i] = e
	}
	return LogState{Snapshot: Snapshot{Index: l.snap.Index, Term: l.snap.Term, Config: l.snap.Config.Clone()}, Entries: ents}
}

// ConfChangeType is the kind of a single-member configuration change.
type ConfChangeType string

const (
	// ConfAddLearner adds a new member as a learner.
	ConfAddLearner ConfChangeType = "add-learner"
	// ConfPromote makes a learner a voter.
	ConfPromote ConfChangeType = "promote"
	// ConfDemote makes a voter (not the leader) a learner.
	ConfDemote ConfChangeType = "demote"
	// ConfRemove removes a member (not the leader).
	ConfRemove ConfChangeType = "remove"
)

// ConfChange is one single-member change of the configuration.
type ConfChange struct {
	Type ConfChangeType
	ID   string
}

func (cc ConfChange) String() string { return string(cc.Type) + " " + cc.ID }

// Errors of configuration changes.
var (
	// ErrConfChangePending: the previous change is not committed yet. Retry later.
	ErrConfChangePending = errors.New("a configuration change is pending")
	// ErrNotReadyForConfChange: the leader has not yet committed an entry of its own term, or
	// its lease rests on members the change would take away. Retry later.
	ErrNotReadyForConfChange = errors.New("leader not ready for a configuration change")
	// ErrInvalidConfChange: the change does not apply to the configuration.
	ErrInvalidConfChange = errors.New("invalid configuration change")
)

// apply returns the configuration after cc, or an error if cc does not apply.
func (cc ConfChange) apply(c Configuration, self string) (Configuration, error) {
	voters, learners := map[string]bool{}, map[string]bool{}
	for _, id := range c.Voters {
		voters[id] = true
	}
	for _, id := range c.Learners {
		learners[id] = true
	}
	bad := func(why string) (Configuration, error) {
		return Configuration{}, fmt.Errorf("%w: %s %q: %s", ErrInvalidConfChange, cc.Type, truncate(cc.ID), why)
	}
	if cc.ID == "" || len(cc.ID) > MaxIDLength {
		return bad("bad member id")
	}
	switch cc.Type {
	case ConfAddLearner:
		if voters[cc.ID] || learners[cc.ID] {
			return bad("already a member")
		}
		if len(voters)+len(learners) >= MaxMembers {
			return bad("the configuration is full")
		}
		learners[cc.ID] = true
	case ConfPromote:
		if !learners[cc.ID] {
			return bad("not a learner")
		}
		delete(learners, cc.ID)
		voters[cc.ID] = true
	case ConfDemote:
		if !voters[cc.ID] {
			return bad("not a voter")
		}
		if cc.ID == self {
			return bad("the leader cannot demote itself; transfer leadership first")
		}
		delete(voters, cc.ID)
		learners[cc.ID] = true
	case ConfRemove:
		if !voters[cc.ID] && !learners[cc.ID] {
			return bad("not a member")
		}
		if cc.ID == self {
			return bad("the leader cannot remove itself; transfer leadership first")
		}
		delete(voters, cc.ID)
		delete(learners, cc.ID)
	default:
		return bad("unknown change type")
	}
	return newConfiguration(voters, learners), nil
}

// Clone returns a deep copy.
func (s Snapshot) Clone() Snapshot {
	return Snapshot{Index: s.Index, Term: s.Term, Config: s.Config.Clone()}
}
