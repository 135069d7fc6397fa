package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// stateFile is the name of the durable state file in the data dir.
const stateFile = "raft-state.json"

// stateVersion is the format of the state file. Version 1 held the term and vote only; it is
// read as a member with an empty log. A file of any other version is refused.
const stateVersion = 2

// persistent is the checksummed content of the state file: the term, the vote and the log.
type persistent struct {
	raft.HardState
	Log raft.LogState `json:"log"`
}

// onDisk is the state file's content. The checksum covers the encoded state, so a torn or
// edited file is detected instead of silently resetting the vote.
type onDisk struct {
	Version  int             `json:"version"`
	Cluster  string          `json:"cluster"`
	ID       string          `json:"id"`
	State    json.RawMessage `json:"state"`
	Checksum uint32          `json:"crc32c"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Storage keeps a member's durable state (term, vote and log) in a directory. Save is atomic and
// durable: it writes a temporary file, fsyncs it, renames it over the old one and fsyncs the
// directory, so a crash leaves either the old or the new state, never a mix.
type Storage struct {
	dir     string
	cluster string
	id      string
	lock    *os.File
}

// OpenStorage opens (creating if needed) the data dir and takes an exclusive lock on it, so two
// processes can never share one member's vote.
func OpenStorage(dir, cluster, id string) (*Storage, error) {
	if dir == "" {
		return nil, errors.New("data dir is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock in data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("data dir %s is in use by another raft-elector process: %w", dir, err)
	}
	return &Storage{dir: dir, cluster: cluster, id: id, lock: lock}, nil
}

// Close releases the data dir lock.
func (s *Storage) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	return err
}

// Load returns the persisted state, or the zero state if none was ever saved. A file that
// cannot be read, fails its checksum, or belongs to another member or cluster is an error:
// resetting it would let this member vote twice in one term.
func (s *Storage) Load() (raft.HardState, raft.LogState, error) {
	d, err := s.read()
	if err != nil || d == nil {
		return raft.HardState{}, raft.LogState{}, err
	}
	path := filepath.Join(s.dir, stateFile)
	if d.ID != s.id || d.Cluster != s.cluster {
		return raft.HardState{}, raft.LogState{}, fmt.Errorf("state file %s belongs to member %q of cluster %q, not member %q of cluster %q; use a data dir of this member",
			path, d.ID, d.Cluster, s.id, s.cluster)
	}
	var p persistent
	if err := json.Unmarshal(d.State, &p); err != nil {
		return raft.HardState{}, raft.LogState{}, fmt.Errorf("state file %s is corrupt: %w", path, err)
	}
	if p.Term > raft.MaxTerm {
		return raft.HardState{}, raft.LogState{}, fmt.Errorf("state file %s holds term %d, above the limit", path, p.Term)
	}
	if err := p.Log.Validate(); err != nil {
		return raft.HardState{}, raft.LogState{}, fmt.Errorf("state file %s holds an invalid log: %w", path, err)
	}
	return p.HardState, p.Log, nil
}

// StoredTerm returns the term of this member's state in the data dir, whatever its cluster,
// or 0 if there is none or it cannot be read (Load reports why). A member that does not know
// its cluster yet reports it, so that the term it tells the application never goes back:
// every later term of the same cluster is at least this one, and a new cluster generation
// starts its terms above every term of the ones before.
func (s *Storage) StoredTerm() uint64 {
	d, err := s.read()
	if err != nil || d == nil || d.ID != s.id {
		return 0
	}
	var p persistent
	if json.Unmarshal(d.State, &p) != nil || p.Term > raft.MaxTerm {
		return 0
	}
	return p.Term
}

// StoredCluster returns the cluster id of the state in the data dir, or "" if there is none.
// A Kubernetes member uses it when the API server cannot tell it which cluster it is in.
func (s *Storage) StoredCluster() (string, error) {
	d, err := s.read()
	if err != nil || d == nil {
		return "", err
	}
	return d.Cluster, nil
}

// Discard removes the persisted state of a cluster that no longer exists (it was replaced by
// a recovery), so that this member can join the new one. The state of s.cluster is kept.
func (s *Storage) Discard(cluster string) error {
	d, err := s.read()
	if err != nil || d == nil || d.Cluster != cluster || cluster == s.cluster {
		return err
	}
	if err := os.Remove(filepath.Join(s.dir, stateFile)); err != nil {
		return fmt.Errorf("discard the state of cluster %q: %w", cluster, err)
	}
	return syncDir(s.dir)
}

// intentFile records the cluster id this member is about to create (or take over) as its
// bootstrapper, before the write to the API: see Intent.
const intentFile = "bootstrap-intent"

// SetIntent durably records that this member is about to bootstrap cluster.
func (s *Storage) SetIntent(cluster string) error {
	if err := writeFileSync(filepath.Join(s.dir, intentFile), []byte(cluster)); err != nil {
		return fmt.Errorf("record the bootstrap intent: %w", err)
	}
	return nil
}

// Intent returns the cluster id of the last SetIntent not yet cleared, or "". A member that
// finds the object naming it the bootstrapper of that cluster, and no state for it, crashed
// between claiming the object and saving the first configuration: it bootstraps again. One
// without the intent (its data dir was lost) must not.
func (s *Storage) Intent() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, intentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the bootstrap intent: %w", err)
	}
	return string(b), nil
}

// ClearIntent removes the intent once the first configuration is saved (or the claim lost).
func (s *Storage) ClearIntent() error {
	err := os.Remove(filepath.Join(s.dir, intentFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear the bootstrap intent: %w", err)
	}
	return syncDir(s.dir)
}

// writeFileSync replaces path atomically and durably: it writes a temporary file, fsyncs it,
// renames it over path and fsyncs the directory, so a crash leaves the old or the new content.
func writeFileSync(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// SetCluster changes the cluster whose state this storage loads and saves.
func (s *Storage) SetCluster(cluster string) { s.cluster = cluster }

// read returns the checked content of the state file, or nil if there is none.
func (s *Storage) read() (*onDisk, error) {
	path := filepath.Join(s.dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", path, err)
	}
	var d onDisk
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (%v); move it away only if this member's pod is new", path, err)
	}
	if d.Version != stateVersion && d.Version != 1 {
		return nil, fmt.Errorf("state file %s has version %d, this build reads versions 1 and %d", path, d.Version, stateVersion)
	}
	if crc32.Checksum(d.State, castagnoli) != d.Checksum {
		return nil, fmt.Errorf("state file %s fails its checksum; it is corrupt", path)
	}
	return &d, nil
}

// Save durably replaces the persisted state.
func (s *Storage) Save(hs raft.HardState, log raft.LogState) error {
	state, err := json.Marshal(persistent{HardState: hs, Log: log})
	if err != nil {
		return err
	}
	b, err := json.Marshal(onDisk{Version: stateVersion, Cluster: s.cluster, ID: s.id, State: state,
		Checksum: crc32.Checksum(state, castagnoli)})
	if err != nil {
		return err
	}
	if err := writeFileSync(filepath.Join(s.dir, stateFile), b); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func syncDir(path string) error {
	dir, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open dir: %w", err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("fsync dir: %w", err)
	}
	return nil
}
