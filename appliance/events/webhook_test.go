package events

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWebhook(t *testing.T) {
	tests := []struct {
		name         string
		statuses     []int // answers in order; the last repeats
		retries      int
		hang         bool // the server never answers
		wantRequests int
		wantFailed   uint64
		wantTimedOut uint64
	}{
		{name: "fails twice then succeeds", statuses: []int{500, 503, 204}, retries: 3, wantRequests: 3},
		{name: "retries exhausted", statuses: []int{500}, retries: 2, wantRequests: 3, wantFailed: 1},
		{name: "no retries", statuses: []int{502}, retries: 0, wantRequests: 1, wantFailed: 1},
		{name: "client error is final", statuses: []int{400, 200}, retries: 3, wantRequests: 1, wantFailed: 1},
		{name: "429 is retried", statuses: []int{429, 200}, retries: 3, wantRequests: 2},
		{name: "redirect is a failure", statuses: []int{302}, retries: 3, wantRequests: 1, wantFailed: 1},
		{name: "timeout", hang: true, retries: 0, wantRequests: 1, wantFailed: 1, wantTimedOut: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var bodies [][]byte
			var headers []http.Header
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				n := len(bodies)
				bodies = append(bodies, b)
				headers = append(headers, r.Header.Clone())
				mu.Unlock()
				if tt.hang {
					<-r.Context().Done()
					return
				}
				if tt.statuses[min(n, len(tt.statuses)-1)] == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.statuses[min(n, len(tt.statuses)-1)])
			}))
			t.Cleanup(srv.Close)        // after the dispatcher's Close, which ends blocked requests
			timeout := 20 * time.Second // per attempt
			if tt.hang {
				timeout = 300 * time.Millisecond
			}
			d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{{
				Name: "hook", Type: ActionWebhook, URL: srv.URL + "/hook", Retries: tt.retries, Timeout: timeout,
			}}})
			ev := Event{Type: DuplicateIP, IP: "192.0.2.10", Group: "web", Details: map[string]string{"mac": "02:00:00:00:00:09"}}
			d.Publish(ev)
			waitFor(t, 30*time.Second, "webhook run", func() bool { return actionStats(d, "hook").Runs == 1 })
			s := actionStats(d, "hook")
			if s.Failed != tt.wantFailed || s.TimedOut != tt.wantTimedOut {
				t.Errorf("stats = %+v, want Failed %d, TimedOut %d", s, tt.wantFailed, tt.wantTimedOut)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) != tt.wantRequests {
				t.Fatalf("server got %d requests, want %d", len(bodies), tt.wantRequests)
			}
			want := d.Recent(1)[0]
			for i, b := range bodies {
				var got Event
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatalf("request %d body %q: %v", i, b, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("request %d body (-want +got):\n%s", i, diff)
				}
				if ct, et := headers[i].Get("Content-Type"), headers[i].Get("X-Shoal-Event"); ct != "application/json" || et != "duplicate-ip" {
					t.Errorf("request %d headers Content-Type %q, X-Shoal-Event %q", i, ct, et)
				}
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	for n := range 12 {
		d := webhookBackoffBase << n
		if d > webhookBackoffMax || d <= 0 {
			d = webhookBackoffMax
		}
		for range 50 {
			if got := backoff(webhookBackoffBase, n); got < d/2 || got > d {
				t.Fatalf("backoff(%s, %d) = %s, want in [%s, %s]", webhookBackoffBase, n, got, d/2, d)
			}
		}
	}
}
