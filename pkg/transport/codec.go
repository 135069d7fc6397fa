package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// errMalformed is wrapped by decoding errors that are not about the message's content
// (those wrap raft.ErrInvalidMessage).
var errMalformed = errors.New("malformed message")

// messageFields is the set of JSON keys of raft.Message, read from its struct tags so that it
// follows the message as fields are added.
var messageFields = func() map[string]bool {
	fields := map[string]bool{}
	t := reflect.TypeFor[raft.Message]()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = true
		}
	}
	return fields
}()

// decodeMessage is the one parser for messages from peers: requests on the server, responses
// on the client, and both in memory. It accepts exactly one JSON object whose keys are fields
// of raft.Message spelled exactly (encoding/json would match "TERM" to "term" and let a
// duplicate key silently override the first, and a strict parser leaves no two readings of one
// body), followed by nothing but white space, and the message must pass Validate.
func decodeMessage(body []byte) (raft.Message, error) {
	if len(body) == 0 {
		return raft.Message{}, fmt.Errorf("%w: empty body", errMalformed)
	}
	if len(body) > MaxMessageBytes {
		return raft.Message{}, fmt.Errorf("%w: %d bytes, the limit is %d", errMalformed, len(body), MaxMessageBytes)
	}
	if err := checkKeys(body); err != nil {
		return raft.Message{}, err
	}
	var m raft.Message
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return raft.Message{}, fmt.Errorf("%w: %s", errMalformed, clip(err.Error(), 200))
	}
	if _, err := dec.Token(); err != io.EOF {
		return raft.Message{}, fmt.Errorf("%w: data after the message", errMalformed)
	}
	if err := m.Validate(); err != nil {
		return raft.Message{}, err
	}
	return m, nil
}

// checkKeys checks that body is a JSON object whose keys are exact, distinct field names of
// raft.Message. Values and what follows the object are left to the full decode.
func checkKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %s", errMalformed, clip(err.Error(), 200))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: not a JSON object", errMalformed)
	}
	seen := make(map[string]bool, len(messageFields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %s", errMalformed, clip(err.Error(), 200))
		}
		key, _ := tok.(string)
		if !messageFields[key] {
			return fmt.Errorf("%w: unknown field %q", errMalformed, clip(key, 64))
		}
		if seen[key] {
			return fmt.Errorf("%w: field %q appears twice", errMalformed, key)
		}
		seen[key] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return fmt.Errorf("%w: %s", errMalformed, clip(err.Error(), 200))
		}
	}
	return nil
}

// encodeMessage is the one encoder, the inverse of decodeMessage.
func encodeMessage(m raft.Message) ([]byte, error) {
	return json.Marshal(m)
}

// checkOutbound decides whether Send may send m from member self.
func checkOutbound(self string, m raft.Message) (DropReason, error) {
	if !m.Type.IsRequest() {
		return DropNotRequest, fmt.Errorf("%s is not a request: responses travel in the reply to their request", clip(string(m.Type), 64))
	}
	if m.From != self {
		return DropInvalid, fmt.Errorf("message from %q given to the transport of %q", clip(m.From, 64), self)
	}
	if err := m.Validate(); err != nil {
		return DropInvalid, err
	}
	return "", nil
}

// checkResponse checks that resp, already validated, answers req. The core checks cluster,
// recipient and membership again; what only the transport can check is that a reply belongs
// to the request it came back for, so a confused or hostile peer cannot, say, answer a
// pre-vote with a real vote or acknowledge a heartbeat round it was never sent.
func checkResponse(req, resp raft.Message) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: response to %s: %s", raft.ErrInvalidMessage, req.Type, fmt.Sprintf(format, args...))
	}
	want := req.Type.ResponseType()
	switch {
	case want == "":
		return bad("the request has no response, got %s", resp.Type)
	case resp.Type != want:
		return bad("type is %s, want %s", resp.Type, want)
	case resp.From != req.To:
		return bad("from %q, but the request went to %q", clip(resp.From, 64), req.To)
	case resp.To != req.From:
		return bad("addressed to %q, but the request came from %q", clip(resp.To, 64), req.From)
	case resp.Cluster != req.Cluster:
		return bad("cluster %q, want %q", clip(resp.Cluster, 64), req.Cluster)
	case resp.Round != req.Round:
		return bad("round %d, the request's was %d", resp.Round, req.Round)
	case resp.PreVote != req.PreVote:
		return bad("preVote %t, the request's was %t", resp.PreVote, req.PreVote)
	}
	return nil
}
