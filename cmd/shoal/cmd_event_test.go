package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/appliance/events"
)

// fakeSerfAgent serves the serf event and query endpoints on a unix socket
// the way the agent does, recording what it was asked.
type fakeSerfAgent struct {
	sock    string
	mu      sync.Mutex
	events  []events.UserEventRequest
	queries []events.QueryRequest
}

func newFakeSerfAgent(t *testing.T) *fakeSerfAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "evsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeSerfAgent{sock: filepath.Join(dir, "s")}
	srv, err := appliance.NewAdminServer(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv.HandleJSON("POST "+events.UserEventPath, func(r *http.Request) (any, error) {
		req, err := events.DecodeUserEventRequest(r.Body)
		if err != nil {
			return nil, err
		}
		if req.Name == "too-big" {
			return nil, errors.New("user event \"too-big\": user event exceeds configured limit of 512 bytes")
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.events = append(f.events, req)
		return struct{}{}, nil
	})
	srv.HandleJSON("POST "+events.QueryPath, func(r *http.Request) (any, error) {
		req, err := events.DecodeQueryRequest(r.Body)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.queries = append(f.queries, req)
		return events.NewQueryResponse(map[string][]byte{"b": []byte("load 0.20\n"), "a": []byte("load " + string(req.Payload) + "\n")}), nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func TestEventCommand(t *testing.T) {
	f := newFakeSerfAgent(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
		wantReq  *events.UserEventRequest
	}{
		{"with payload", []string{"event", "--socket", f.sock, "deploy", "v1.2.3"}, 0, "Event 'deploy' dispatched! Coalescing enabled: true\n", "",
			&events.UserEventRequest{Name: "deploy", Payload: []byte("v1.2.3"), Coalesce: true}},
		{"no coalesce, no payload", []string{"event", "--coalesce=false", "--socket", f.sock, "ping"}, 0, "Coalescing enabled: false", "",
			&events.UserEventRequest{Name: "ping"}},
		{"no name", []string{"event", "--socket", f.sock}, 2, "", "which name?", nil},
		{"three args", []string{"event", "--socket", f.sock, "a", "b", "c"}, 2, "", `unexpected argument "c"`, nil},
		{"agent refuses", []string{"event", "--socket", f.sock, "too-big"}, 1, "", "exceeds configured limit", nil},
		{"no agent", []string{"event", "--socket", filepath.Join(t.TempDir(), "none"), "deploy"}, 1, "", "is `shoal agent` running?", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mu.Lock()
			f.events = nil
			f.mu.Unlock()
			code, out, errOut := runCmd(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("shoal %s: code %d, stdout %q, stderr %q; want code %d, stdout containing %q, stderr containing %q",
					strings.Join(tt.args, " "), code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
			var want []events.UserEventRequest
			if tt.wantReq != nil {
				want = []events.UserEventRequest{*tt.wantReq}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if diff := cmp.Diff(want, f.events); diff != "" {
				t.Errorf("requests the agent got (-want +got):\n%s", diff)
			}
		})
	}
}

func TestQueryCommand(t *testing.T) {
	f := newFakeSerfAgent(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
		wantReq  *events.QueryRequest
	}{
		{"text", []string{"query", "--socket", f.sock, "load", "0.50"}, 0,
			"Query 'load' dispatched\nResponse from 'a': load 0.50\nResponse from 'b': load 0.20\nTotal Responses: 2\n", "",
			&events.QueryRequest{Name: "load", Payload: []byte("0.50")}},
		{"json with timeout", []string{"query", "--json", "--timeout", "2s", "--socket", f.sock, "load"}, 0,
			"{\n  \"responses\": [\n    {\n      \"from\": \"a\",\n      \"payload\": \"load \\n\"\n    },", "",
			&events.QueryRequest{Name: "load", TimeoutMS: 2000}},
		{"timeout too long", []string{"query", "--timeout", "1m", "--socket", f.sock, "load"}, 2, "", "must be 0..9s", nil},
		{"no name", []string{"query", "--socket", f.sock}, 2, "", "which name?", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mu.Lock()
			f.queries = nil
			f.mu.Unlock()
			code, out, errOut := runCmd(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("shoal %s: code %d, stdout %q, stderr %q; want code %d, stdout containing %q, stderr containing %q",
					strings.Join(tt.args, " "), code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
			var want []events.QueryRequest
			if tt.wantReq != nil {
				want = []events.QueryRequest{*tt.wantReq}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if diff := cmp.Diff(want, f.queries); diff != "" {
				t.Errorf("requests the agent got (-want +got):\n%s", diff)
			}
		})
	}
}
