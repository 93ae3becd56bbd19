package events

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestDecodeRequests(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		query   bool
		want    any
		wantErr bool
	}{
		{name: "event", body: `{"name":"deploy","payload":"djEuMi4z","coalesce":true}`, want: UserEventRequest{Name: "deploy", Payload: []byte("v1.2.3"), Coalesce: true}},
		{name: "event without name", body: `{"payload":"eA=="}`, wantErr: true},
		{name: "event unknown key", body: `{"name":"x","colour":"red"}`, wantErr: true},
		{name: "event trailing data", body: `{"name":"x"} {}`, wantErr: true},
		{name: "query", query: true, body: `{"name":"load","timeout_ms":2000}`, want: QueryRequest{Name: "load", TimeoutMS: 2000}},
		{name: "query timeout too long", query: true, body: `{"name":"load","timeout_ms":60000}`, wantErr: true},
		{name: "query negative timeout", query: true, body: `{"name":"load","timeout_ms":-1}`, wantErr: true},
		{name: "query not json", query: true, body: `load`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got any
			var err error
			if tt.query {
				got, err = DecodeQueryRequest(strings.NewReader(tt.body))
			} else {
				got, err = DecodeUserEventRequest(strings.NewReader(tt.body))
			}
			if tt.wantErr {
				if !errors.Is(err, ErrBadRequest) {
					t.Errorf("decode %s = %v, want an ErrBadRequest", tt.body, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode %s = %v", tt.body, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decode %s (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

func TestNewQueryResponse(t *testing.T) {
	got := NewQueryResponse(map[string][]byte{"c": []byte("3"), "a": []byte("1"), "b": nil})
	want := QueryResponse{Responses: []QueryAnswer{{From: "a", Payload: []byte("1")}, {From: "b"}, {From: "c", Payload: []byte("3")}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NewQueryResponse (-want +got):\n%s", diff)
	}
	b, _ := json.Marshal(NewQueryResponse(nil))
	if string(b) != `{"responses":[]}` {
		t.Errorf("NewQueryResponse(nil) encodes as %s, want an empty list", b)
	}
}

func FuzzDecodeQueryRequest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "api", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := DecodeQueryRequest(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		if q.Name == "" || q.Timeout() < 0 || q.Timeout() > MaxQueryTimeout {
			t.Fatalf("DecodeQueryRequest(%q) accepted %+v", b, q)
		}
		out, _ := json.Marshal(q)
		again, err := DecodeQueryRequest(strings.NewReader(string(out)))
		if err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if diff := cmp.Diff(q, again, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("round trip (-first +second):\n%s", diff)
		}
	})
}
