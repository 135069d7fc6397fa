package node

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// fuzzStateFile is the state file of member "a" of cluster "c1" holding state (the JSON of the
// term, vote and log) under a valid checksum, so that the fuzzer reaches the state decoder
// instead of stopping at the checksum.
func fuzzStateFile(state []byte) []byte {
	// The checksum covers the state's JSON value as it appears in the file, without the JSON
	// white space around it.
	sum := crc32.Checksum(bytes.Trim(state, " \t\r\n"), castagnoli)
	return fmt.Appendf(nil, `{"version":%d,"cluster":"c1","id":"a","state":%s,"crc32c":%d}`, stateVersion, state, sum)
}

// fuzzSameLog reports whether two logs hold the same snapshot and entries (a nil and an empty
// list are the same).
func fuzzSameLog(a, b raft.LogState) bool {
	if a.Snapshot.Index != b.Snapshot.Index || a.Snapshot.Term != b.Snapshot.Term || !a.Snapshot.Config.Equal(b.Snapshot.Config) ||
		len(a.Entries) != len(b.Entries) {
		return false
	}
	for i, e := range a.Entries {
		o := b.Entries[i]
		if e.Index != o.Index || e.Term != o.Term || e.Type != o.Type || (e.Config == nil) != (o.Config == nil) ||
			e.Config != nil && !e.Config.Equal(*o.Config) {
			return false
		}
	}
	return true
}

// FuzzLoadState feeds the durable state decoder (Storage.Load of the state file in the data
// dir) arbitrary files: as they are (wrap false), or, with wrap set, arbitrary state JSON under
// a valid envelope and checksum of member "a" of cluster "c1". It must never panic. It must
// either refuse the file with a one-line error naming it and return the zero state, or return
// a state within the limits (term at most raft.MaxTerm, a valid log) that Save writes back and
// Load reads back as the same state. The core must then start from that state, or refuse it
// with an error, and run a few ticks without panicking.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"term":3,"vote":"b","log":{"snapshot":{"index":1,"term":0,"config":{"voters":["a","b","c"]}}}}`), true)
	f.Add([]byte(`{"version":1,"cluster":"c1","id":"a","state":{"term":7,"vote":"b"},"crc32c":0}`), false)
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		file := data
		if wrap {
			file = fuzzStateFile(data)
		}
		dir := t.TempDir()
		path := filepath.Join(dir, stateFile)
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenStorage(dir, "c1", "a")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.StoredCluster(); err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("StoredCluster error is not one line: %q", err)
		}
		hs, log, err := s.Load()
		if err != nil {
			if hs != (raft.HardState{}) || !fuzzSameLog(log, raft.LogState{}) {
				t.Fatalf("refused %q (%v) but returned %+v %+v", file, err, hs, log)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, path) {
				t.Fatalf("error for %q is not one line naming the file: %q", file, msg)
			}
			return
		}
		if hs.Term > raft.MaxTerm {
			t.Fatalf("loaded %q as term %d, above the limit", file, hs.Term)
		}
		if err := log.Validate(); err != nil {
			t.Fatalf("loaded %q as an invalid log: %v", file, err)
		}
		if err := s.Save(hs, log); err != nil {
			t.Fatalf("cannot save the state loaded from %q: %v", file, err)
		}
		hs2, log2, err := s.Load()
		if err != nil || hs2 != hs || !fuzzSameLog(log, log2) {
			t.Fatalf("state %+v %+v loaded from %q saves and loads back as %+v %+v, %v", hs, log, file, hs2, log2, err)
		}

		// The member starts from what Load returned (a static member of a, b, c), or refuses
		// it with an error; either way without a panic.
		r, err := raft.New(raft.Config{ID: "a", Cluster: "c1", Voters: []string{"a", "b", "c"}, Log: log, HardState: hs,
			ElectionTicks: 10, HeartbeatTicks: 2, LeaseTicks: raft.MaxLeaseTicks(10, raft.DefaultMaxDrift), AppLeaseTicks: 6,
			Rand: rand.New(rand.NewSource(1))})
		if err != nil {
			if errors.Is(err, raft.ErrInvalidMessage) || strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("New refused the loaded state %+v %+v oddly: %q", hs, log, err)
			}
			return
		}
		for range 40 {
			r.Tick()
			rd := r.Ready()
			if rd.MustPersist {
				if rd.HardState.Term < hs.Term || rd.HardState.Term > raft.MaxTerm {
					t.Fatalf("started from term %d, persists %+v", hs.Term, rd.HardState)
				}
				if err := rd.Log.Validate(); err != nil {
					t.Fatalf("started from %+v, persists an invalid log: %v", log, err)
				}
			}
			for _, m := range rd.Messages {
				if err := m.Validate(); err != nil {
					t.Fatalf("started from %+v %+v, sends an invalid message %+v: %v", hs, log, m, err)
				}
			}
		}
	})
}
