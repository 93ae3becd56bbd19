package adminapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shoal-project/shoal/appliance/events"
)

func TestEndpoints(t *testing.T) {
	src := &fakeSource{
		status:  clusterStatus("a", names, map[string]string{ip1: "a", ip2: "b"}, []string{ip1}, 2),
		explain: map[string]string{ip1: "why a"},
	}
	for i := range 5 {
		src.events = append(src.events, events.Event{Time: time.Unix(int64(i), 0).UTC(), Type: events.IPRaised, Node: "a", IP: ip1})
	}
	s := newTestServer(t, src, Options{Users: []User{{Name: "root", TokenHash: HashToken("t"), Role: RoleAdmin}}})
	s.Timelines().Confirmed("c", "left", time.Now())
	auth := func(r *http.Request) { r.Header.Set("Authorization", "Bearer t") }
	tests := []struct {
		method, path string
		wantCode     int
		wantType     string
		check        func(t *testing.T, body []byte)
	}{
		{"GET", "/api/v1/status", 200, "application/json", func(t *testing.T, b []byte) {
			st, err := DecodeNodeStatus(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(src.status, st); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		}},
		{"GET", "/api/v1/events?n=2", 200, "application/json", func(t *testing.T, b []byte) {
			var evs []events.Event
			if err := json.Unmarshal(b, &evs); err != nil {
				t.Fatal(err)
			}
			if len(evs) != 2 || evs[1].Time.Unix() != 4 {
				t.Errorf("events?n=2 = %+v, want the last two, oldest first", evs)
			}
		}},
		{"GET", "/api/v1/events", 200, "application/json", func(t *testing.T, b []byte) {
			var evs []events.Event
			_ = json.Unmarshal(b, &evs)
			if len(evs) != 5 {
				t.Errorf("events = %d, want 5", len(evs))
			}
		}},
		{"GET", "/api/v1/events?n=abc", 400, "application/json", nil},
		{"GET", "/api/v1/events?n=-1", 400, "application/json", nil},
		{"GET", "/api/v1/explain?ip=" + ip1, 200, "application/json", func(t *testing.T, b []byte) {
			if !strings.Contains(string(b), `"text":"why a"`) {
				t.Errorf("explain = %s", b)
			}
		}},
		{"GET", "/api/v1/explain?ip=192.0.2.99", 404, "application/json", func(t *testing.T, b []byte) {
			if !strings.Contains(string(b), "not a traffic IP") {
				t.Errorf("explain error = %s", b)
			}
		}},
		{"GET", "/api/v1/explain?ip=banana", 400, "application/json", nil},
		{"GET", "/api/v1/timeline", 200, "application/json", func(t *testing.T, b []byte) {
			var tl []Timeline
			if err := json.Unmarshal(b, &tl); err != nil {
				t.Fatal(err)
			}
			if len(tl) != 1 || tl[0].Member != "c" || tl[0].Steps[0].Step != StepConfirmed {
				t.Errorf("timeline = %+v", tl)
			}
		}},
		{"GET", "/api/v1/cluster", 200, "application/json", func(t *testing.T, b []byte) {
			var v ClusterView
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			if v.GatheredBy != "a" || len(v.Members) != 3 || len(v.IPs) != 2 {
				t.Errorf("cluster = %+v", v)
			}
		}},
		{"GET", "/", 200, "text/html; charset=utf-8", func(t *testing.T, b []byte) {
			if !strings.Contains(string(b), "<title>Shoal cluster</title>") {
				t.Error("page is not the status page")
			}
		}},
		{"GET", "/nope", 404, "", nil},
		{"POST", "/api/v1/status", 405, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := do(s.Handler(), tt.method, tt.path, auth)
			if w.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tt.wantCode, w.Body.String())
			}
			if tt.wantType != "" && w.Header().Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type %q, want %q", w.Header().Get("Content-Type"), tt.wantType)
			}
			if w.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no nosniff header")
			}
			if tt.check != nil {
				tt.check(t, w.Body.Bytes())
			}
		})
	}
}

// The page's Content-Security-Policy allows its own inline script and
// style by hash and nothing else.
func TestPageCSP(t *testing.T) {
	s := newTestServer(t, &fakeSource{}, Options{Users: []User{{Name: "r", TokenHash: HashToken("t"), Role: RoleReadOnly}}})
	w := do(s.Handler(), "GET", "/", func(r *http.Request) { r.Header.Set("Authorization", "Bearer t") })
	csp := w.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'sha256-", "style-src 'sha256-", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Count(csp, "'sha256-") != 2 {
		t.Errorf("CSP %q: want exactly one script and one style hash", csp)
	}
	for _, ext := range []string{"http://", "https://", "src=\"//"} {
		if strings.Contains(string(page), ext) {
			t.Errorf("page refers to an external asset (%q)", ext)
		}
	}
}

// /api/v1/stream sends events as Server-Sent Events as they are published.
func TestStream(t *testing.T) {
	src := &fakeSource{status: clusterStatus("a", names, nil, nil, 1)}
	s := newTestServer(t, src, Options{Users: []User{{Name: "r", TokenHash: HashToken("t"), Role: RoleReadOnly}}})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	// The handler subscribed before answering; publish until we read it
	// (the first retry line proves the subscription is in place).
	if !sc.Scan() || sc.Text() != "retry: 2000" {
		t.Fatalf("first line %q", sc.Text())
	}
	src.publish(events.Event{Type: events.MemberFailed, Node: "a", Member: "c", Time: time.Unix(7, 0).UTC()})
	var lines []string
	for sc.Scan() && len(lines) < 3 {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
		if strings.HasPrefix(sc.Text(), "data: ") {
			break
		}
	}
	if len(lines) != 2 || lines[0] != "event: event" || !strings.Contains(lines[1], `"type":"member-failed"`) {
		t.Fatalf("stream lines = %q", lines)
	}
	cancel()
}

// Explain errors map to HTTP statuses.
func TestErrorStatus(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{notTrafficIP{netip.MustParseAddr(ip1)}, 404},
		{ErrNotFound, 404},
		{context.Canceled, 500},
	} {
		if got := errorStatus(tt.err); got != tt.want {
			t.Errorf("errorStatus(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
