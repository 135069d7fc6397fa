package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

func newTestHTTP(t *testing.T, id string, h Handler, mutate ...func(*HTTPConfig)) *HTTP {
	t.Helper()
	cfg := HTTPConfig{ID: id, Handler: h}
	for _, m := range mutate {
		m(&cfg)
	}
	tr, err := NewHTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func encode(t *testing.T, m raft.Message) string {
	t.Helper()
	b, err := encodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServerStatusCodes(t *testing.T) {
	voteReq := vote("a", "b")
	voteBody := encode(t, voteReq)
	hbReq := heartbeat("a", "b", 4)
	hbBody := encode(t, hbReq)
	tnBody := encode(t, timeoutNow("a", "b"))

	stepErr := func(err error) func(context.Context, raft.Message) (*raft.Message, error) {
		return func(context.Context, raft.Message) (*raft.Message, error) { return nil, err }
	}
	stepResp := func(resp *raft.Message) func(context.Context, raft.Message) (*raft.Message, error) {
		return func(context.Context, raft.Message) (*raft.Message, error) { return resp, nil }
	}
	wrongFrom := respond(voteReq)
	wrongFrom.From = "c"
	invalidResp := respond(voteReq)
	invalidResp.Term = 0

	tests := []struct {
		name        string
		method      string // default POST
		path        string // default /raft/v1/request-vote
		contentType string // default application/json; "-" for none
		body        string
		chunked     bool // no Content-Length, so only MaxBytesReader can catch the size
		step        func(context.Context, raft.Message) (*raft.Message, error)

		code     int
		wantBody *raft.Message // for 200
		stepped  bool          // whether Handler.Step must have been called
	}{
		{name: "vote answered", body: voteBody, step: answer, code: 200, wantBody: respond(voteReq), stepped: true},
		{name: "heartbeat answered", path: "/raft/v1/append-entries", body: hbBody, step: answer, code: 200, wantBody: respond(hbReq), stepped: true},
		{name: "timeout-now has no response", path: "/raft/v1/timeout-now", body: tnBody, step: answer, code: 204, stepped: true},
		{name: "member chose not to answer", body: voteBody, code: 204, stepped: true},
		{name: "content type with charset", contentType: "application/json; charset=utf-8", body: voteBody, step: answer, code: 200, wantBody: respond(voteReq), stepped: true},

		{name: "GET", method: "GET", body: "", code: 405},
		{name: "PUT", method: "PUT", body: voteBody, code: 405},
		{name: "unknown rpc", path: "/raft/v1/install-snapshot", body: voteBody, code: 404},
		{name: "response type is not an rpc", path: "/raft/v1/request-vote-response", body: voteBody, code: 404},
		{name: "other version", path: "/raft/v2/request-vote", body: voteBody, code: 404},
		{name: "extra path segment", path: "/raft/v1/request-vote/x", body: voteBody, code: 404},
		{name: "root", path: "/", body: voteBody, code: 404},
		{name: "GET unknown path", method: "GET", path: "/metrics", code: 404},
		{name: "no content type", contentType: "-", body: voteBody, code: 415},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: voteBody, code: 415},
		{name: "text/plain", contentType: "text/plain", body: voteBody, code: 415},
		{name: "too large", body: `{"type":"request-vote","x":"` + strings.Repeat("y", MaxMessageBytes) + `"}`, code: 413},
		{name: "too large chunked", chunked: true, body: `{"type":"request-vote","x":"` + strings.Repeat("y", MaxMessageBytes) + `"}`, code: 413},
		{name: "exactly at the limit is read", body: voteBody[:len(voteBody)-1] + strings.Repeat(" ", MaxMessageBytes-len(voteBody)) + "}", step: answer, code: 200, wantBody: respond(voteReq), stepped: true},
		{name: "empty body", body: "", code: 400},
		{name: "not json", body: "hello", code: 400},
		{name: "unknown field", body: strings.TrimSuffix(voteBody, "}") + `,"leader":"a"}`, code: 400},
		{name: "trailing data", body: voteBody + `{}`, code: 400},
		{name: "two messages", body: voteBody + voteBody, code: 400},
		{name: "nested junk", body: `{"type":{"a":[[[]]]}}`, code: 400},
		{name: "invalid message", body: `{"type":"request-vote","cluster":"c1","from":"a","to":"b","term":0}`, code: 400},
		{name: "body type differs from path", path: "/raft/v1/append-entries", body: voteBody, code: 400},
		{name: "response posted as a request", body: encode(t, *respond(voteReq)), code: 400},
		{name: "addressed to another member", body: encode(t, vote("a", "c")), code: 421},

		{name: "step: invalid", body: voteBody, step: stepErr(fmt.Errorf("%w: nope", raft.ErrInvalidMessage)), code: 400, stepped: true},
		{name: "step: wrong cluster", body: voteBody, step: stepErr(fmt.Errorf("%w: c9", raft.ErrWrongCluster)), code: 403, stepped: true},
		{name: "step: unknown member", body: voteBody, step: stepErr(fmt.Errorf("%w: a", raft.ErrUnknownMember)), code: 403, stepped: true},
		{name: "step: wrong recipient", body: voteBody, step: stepErr(fmt.Errorf("%w: b", raft.ErrWrongRecipient)), code: 421, stepped: true},
		{name: "step: canceled", body: voteBody, step: stepErr(context.Canceled), code: 503, stepped: true},
		{name: "step: deadline", body: voteBody, step: stepErr(fmt.Errorf("persist: %w", context.DeadlineExceeded)), code: 503, stepped: true},
		{name: "step: other error", body: voteBody, step: stepErr(errors.New("disk full")), code: 503, stepped: true},
		{name: "step: response from someone else", body: voteBody, step: stepResp(wrongFrom), code: 500, stepped: true},
		{name: "step: invalid response", body: voteBody, step: stepResp(invalidResp), code: 500, stepped: true},
		{name: "step: response to timeout-now", path: "/raft/v1/timeout-now", body: tnBody, step: stepResp(respond(voteReq)), code: 500, stepped: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &fakeHandler{step: tt.step}
			obs := &recordingObserver{}
			tr := newTestHTTP(t, "b", h, func(c *HTTPConfig) { c.Observer = obs })

			method, path := tt.method, tt.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/raft/v1/request-vote"
			}
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length from NewRequest
			}
			req := httptest.NewRequest(method, path, body)
			switch tt.contentType {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			tr.Handler().ServeHTTP(rec, req)

			if rec.Code != tt.code {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.code, rec.Body)
			}
			if stepped := h.count() > 0; stepped != tt.stepped {
				t.Errorf("Handler.Step called: %t, want %t", stepped, tt.stepped)
			}
			switch {
			case tt.code == 200:
				got, err := decodeMessage(rec.Body.Bytes())
				if err != nil || !reflect.DeepEqual(got, *tt.wantBody) {
					t.Errorf("reply %s decodes to %+v, %v; want %+v", rec.Body, got, err, *tt.wantBody)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			case tt.code == 204:
				if rec.Body.Len() != 0 {
					t.Errorf("204 with body %q", rec.Body)
				}
			default:
				checkErrorBody(t, rec)
			}
			if tt.code == 405 && rec.Header().Get("Allow") != "POST" {
				t.Errorf("405 without Allow: POST")
			}
			if _, served := obs.snapshot(); len(served) != 1 || !strings.HasSuffix(served[0], fmt.Sprint(" ", tt.code)) {
				t.Errorf("observed %v, want one request with code %d", served, tt.code)
			}
		})
	}
}

// checkErrorBody checks the error reply shape: one line of JSON with exactly an "error" string.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	b := rec.Body.Bytes()
	if !bytes.HasSuffix(b, []byte("\n")) || bytes.Count(b, []byte("\n")) != 1 {
		t.Errorf("error body is not one line: %q", b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e struct {
		Error string `json:"error"`
	}
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Errorf("error body %q: %v", b, err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
}

func TestServerHidesInternalErrors(t *testing.T) {
	h := &fakeHandler{step: func(context.Context, raft.Message) (*raft.Message, error) {
		return nil, errors.New("write /var/lib/raft-elector/state: no space left on device")
	}}
	tr := newTestHTTP(t, "b", h)
	req := httptest.NewRequest("POST", "/raft/v1/request-vote", strings.NewReader(encode(t, vote("a", "b"))))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	tr.Handler().ServeHTTP(rec, req)
	if rec.Code != 503 || strings.Contains(rec.Body.String(), "/var/lib") {
		t.Fatalf("status %d body %s: want 503 without the internal error", rec.Code, rec.Body)
	}
}

func TestServerAfterClose(t *testing.T) {
	// A member that has shut down must never be stepped again: Close cancels the calls in
	// flight, waits for them, and refuses the rest.
	started := make(chan struct{})
	h := &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	tr, err := NewHTTP(HTTPConfig{ID: "b", Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	serve := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/raft/v1/request-vote", strings.NewReader(encode(t, vote("a", "b"))))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		tr.Handler().ServeHTTP(rec, req)
		return rec
	}
	inFlight := make(chan *httptest.ResponseRecorder)
	go func() { inFlight <- serve() }()
	<-started
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	// Close returned, so the call in flight has ended.
	if rec := <-inFlight; rec.Code != 503 {
		t.Errorf("request in flight at Close: status %d, want 503", rec.Code)
	}
	if rec := serve(); rec.Code != 503 {
		t.Errorf("request after Close: status %d, want 503", rec.Code)
	}
	if n := h.count(); n != 1 {
		t.Errorf("Step called %d times, want 1", n)
	}
}

func TestNewHTTPConfig(t *testing.T) {
	h := &fakeHandler{}
	for _, cfg := range []HTTPConfig{
		{Handler: h},
		{ID: strings.Repeat("a", raft.MaxIDLength+1), Handler: h},
		{ID: "a"},
		{ID: "a", Handler: h, RPCTimeout: -1},
		{ID: "a", Handler: h, QueueSize: -1},
	} {
		if tr, err := NewHTTP(cfg); err == nil {
			tr.Close()
			t.Errorf("NewHTTP(%+v) accepted", cfg)
		}
	}
	tr, err := NewHTTP(HTTPConfig{ID: "a", Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.rpcTimeout != DefaultRPCTimeout || tr.queueSize != DefaultQueueSize {
		t.Errorf("defaults: timeout %v queue %d", tr.rpcTimeout, tr.queueSize)
	}
}
