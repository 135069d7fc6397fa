package transport

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

func TestDecodeMessage(t *testing.T) {
	long := strings.Repeat("x", raft.MaxIDLength+1)
	tests := []struct {
		name string
		body string
		want raft.Message // zero: must be refused
		// invalid: refused by Validate (raft.ErrInvalidMessage) rather than as malformed
		invalid bool
	}{
		{name: "vote", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":3,"preVote":true}`,
			want: raft.Message{Type: raft.MsgVote, Cluster: "c1", From: "a", To: "b", Term: 3, PreVote: true}},
		{name: "heartbeat with white space around", body: " \n{\"type\":\"append-entries\",\"cluster\":\"c1\",\"from\":\"a\",\"to\":\"b\",\"term\":2,\"round\":7}\n\t",
			want: raft.Message{Type: raft.MsgAppend, Cluster: "c1", From: "a", To: "b", Term: 2, Round: 7}},
		{name: "explicit zero values", body: `{"type":"timeout-now","cluster":"c1","from":"a","to":"b","term":2,"round":0,"reject":false}`,
			want: raft.Message{Type: raft.MsgTimeoutNow, Cluster: "c1", From: "a", To: "b", Term: 2}},
		{name: "empty", body: ``},
		{name: "only space", body: "  \n"},
		{name: "null", body: `null`},
		{name: "array", body: `[{"type":"request-vote"}]`},
		{name: "string", body: `"request-vote"`},
		{name: "not json", body: `type=request-vote`},
		{name: "truncated", body: `{"type":"request-vote","cluster":"c1"`},
		{name: "unknown field", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":3,"leader":"a"}`},
		{name: "field in other case", body: `{"TYPE":"request-vote","cluster":"c1","from":"a","to":"b","term":3}`},
		{name: "duplicate field", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":3,"term":9}`},
		{name: "trailing object", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":3}{}`},
		{name: "trailing junk", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":3} x`},
		{name: "nested junk", body: `{"type":"request-vote","cluster":{"a":[1,2,{"b":null}]},"from":"a","to":"b","term":3}`},
		{name: "term as string", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":"3"}`},
		{name: "negative term", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":-1}`},
		{name: "fractional term", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":1.5}`},
		{name: "term overflows uint64", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":18446744073709551616}`},
		{name: "term above MaxTerm", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":9007199254740993}`, invalid: true},
		{name: "term zero", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":0}`, invalid: true},
		{name: "unknown type", body: `{"type":"install-snapshot","cluster":"c1","from":"a","to":"b","term":1}`, invalid: true},
		{name: "id too long", body: `{"type":"request-vote","cluster":"c1","from":"` + long + `","to":"b","term":1}`, invalid: true},
		{name: "to self", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"a","term":1}`, invalid: true},
		{name: "reject on request", body: `{"type":"append-entries","cluster":"c1","from":"a","to":"b","term":1,"reject":true}`, invalid: true},
		{name: "over the size limit", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":1,"x":"` + strings.Repeat("y", MaxMessageBytes) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeMessage([]byte(tt.body))
			if !reflect.DeepEqual(tt.want, raft.Message{}) {
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("decode = %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("decode accepted %q as %+v", clip(tt.body, 100), got)
			}
			if !reflect.DeepEqual(got, raft.Message{}) {
				t.Errorf("a refused decode returned %+v", got)
			}
			if isInvalid := errors.Is(err, raft.ErrInvalidMessage); isInvalid != tt.invalid {
				t.Errorf("error %q: wraps ErrInvalidMessage = %t, want %t", err, isInvalid, tt.invalid)
			}
			if !tt.invalid && !errors.Is(err, errMalformed) {
				t.Errorf("error %q does not wrap errMalformed", err)
			}
		})
	}
}

func TestMessageFieldsFollowTheStruct(t *testing.T) {
	// Every field the encoder writes must be accepted back, or a new field in raft.Message
	// would make every member refuse every message.
	for _, m := range []raft.Message{
		{Type: raft.MsgVote, Cluster: "c", From: "a", To: "b", Term: 9, PreVote: true, LastLogIndex: 4, LastLogTerm: 3},
		{Type: raft.MsgAppend, Cluster: "c", From: "a", To: "b", Term: 9, Round: 1, Commit: 4, PrevLogIndex: 3, PrevLogTerm: 2,
			Snapshot: &raft.Snapshot{Index: 3, Term: 2, Config: raft.Configuration{Voters: []string{"a", "b"}, Learners: []string{"c"}}},
			Entries: []raft.Entry{{Index: 4, Term: 9, Type: raft.EntryNoop}, {Index: 5, Term: 9, Type: raft.EntryConfig,
				Config: &raft.Configuration{Voters: []string{"a", "b", "c"}}}}},
		{Type: raft.MsgAppendResp, Cluster: "c", From: "a", To: "b", Term: 9, Round: 1, Index: 5, Reject: true},
	} {
		b, err := encodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMessage(b)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip of %s = %+v, %v", b, got, err)
		}
	}
	for _, f := range []string{"type", "cluster", "from", "to", "term", "preVote", "transfer", "lastLogIndex", "lastLogTerm", "round", "commit", "reject",
		"prevLogIndex", "prevLogTerm", "entries", "snapshot", "index"} {
		if !messageFields[f] {
			t.Errorf("field %q missing from %v", f, messageFields)
		}
	}
}

func TestCheckResponse(t *testing.T) {
	req := heartbeat("a", "b", 5)
	good := *respond(req)
	tests := []struct {
		name   string
		req    raft.Message
		mutate func(*raft.Message)
		ok     bool
	}{
		{name: "answer", req: req, mutate: func(*raft.Message) {}, ok: true},
		{name: "rejection", req: req, mutate: func(m *raft.Message) { m.Reject = true; m.Term = 9 }, ok: true},
		{name: "wrong type", req: req, mutate: func(m *raft.Message) { m.Type = raft.MsgVoteResp }},
		{name: "from someone else", req: req, mutate: func(m *raft.Message) { m.From = "c" }},
		{name: "to someone else", req: req, mutate: func(m *raft.Message) { m.To = "c" }},
		{name: "other cluster", req: req, mutate: func(m *raft.Message) { m.Cluster = "c2" }},
		{name: "other round", req: req, mutate: func(m *raft.Message) { m.Round = 4 }},
		{name: "pre-vote answered as a vote", req: vote("a", "b"), mutate: func(m *raft.Message) { *m = *respond(vote("a", "b")); m.PreVote = false }},
		{name: "request with no response", req: timeoutNow("a", "b"), mutate: func(*raft.Message) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := good
			tt.mutate(&resp)
			err := checkResponse(tt.req, resp)
			if (err == nil) != tt.ok {
				t.Fatalf("checkResponse(%+v, %+v) = %v, want ok=%t", tt.req, resp, err, tt.ok)
			}
			if err != nil && !errors.Is(err, raft.ErrInvalidMessage) {
				t.Errorf("error %v does not wrap ErrInvalidMessage", err)
			}
		})
	}
}

// FuzzDecodeMessage feeds the decoder the server (and the client, and the in-memory network)
// runs on every body a peer sends. It must never panic, and whatever it accepts must be a
// valid message that survives an encode and decode unchanged, so that what a member accepts is
// exactly what it would itself send, and must keep every limit docs/api.md documents
// (fuzzCheckMessageLimits in fuzz_test.go).
func FuzzDecodeMessage(f *testing.F) {
	withLog := raft.Message{Type: raft.MsgAppend, Cluster: cluster, From: "a", To: "b", Term: 9, Round: 1, Commit: 4, PrevLogIndex: 3, PrevLogTerm: 2,
		Snapshot: &raft.Snapshot{Index: 3, Term: 2, Config: raft.Configuration{Voters: []string{"a", "b"}, Learners: []string{"c"}}},
		Config:   &raft.Configuration{Voters: []string{"a", "b", "c"}},
		Entries: []raft.Entry{{Index: 4, Term: 9, Type: raft.EntryNoop}, {Index: 5, Term: 9, Type: raft.EntryConfig,
			Config: &raft.Configuration{Voters: []string{"a", "b", "c"}}}}}
	for _, m := range []raft.Message{vote("a", "b"), heartbeat("a", "b", 1), timeoutNow("a", "b"), *respond(vote("a", "b")), withLog,
		{Type: raft.MsgAppendResp, Cluster: cluster, From: "b", To: "a", Term: 9, Round: 1, Index: 2, Reject: true}} {
		b, err := encodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodeMessage(body)
		if err != nil {
			if !reflect.DeepEqual(m, raft.Message{}) {
				t.Fatalf("refused %q with %v but returned %+v", body, err, m)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid message %+v: %v", m, err)
		}
		fuzzCheckMessageLimits(t, body, m)
		again, err := encodeMessage(m)
		if err != nil {
			t.Fatalf("accepted %+v but cannot encode it: %v", m, err)
		}
		back, err := decodeMessage(again)
		if err != nil {
			t.Fatalf("accepted %q, but refuses its own encoding %s: %v", body, again, err)
		}
		// An empty list and an absent one are the same message (the encoder leaves empty
		// lists out); anything else must survive exactly, and the encoding is a fixed point.
		if !reflect.DeepEqual(fuzzNormalizeMessage(back), fuzzNormalizeMessage(m)) {
			t.Fatalf("round trip changed the message: %+v -> %s -> %+v", m, again, back)
		}
		if twice, err := encodeMessage(back); err != nil || !bytes.Equal(twice, again) {
			t.Fatalf("%q encodes as %s, then as %s (%v)", body, again, twice, err)
		}
	})
}
