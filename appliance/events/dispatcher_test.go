package events

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
)

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(Config{Actions: []ActionConfig{{Name: "x", Type: "pager"}}}, "a", zerolog.Nop())
	if err == nil {
		t.Fatal("New with an unknown action type = nil error, want an error")
	}
}

func TestRecent(t *testing.T) {
	d, _ := newTestDispatcher(t, Config{RecentSize: 4})
	if got := d.Recent(0); len(got) != 0 {
		t.Fatalf("Recent(0) on a new dispatcher = %v, want none", got)
	}
	for i := range 6 {
		d.Publish(Event{Type: IPRaised, IP: fmt.Sprintf("192.0.2.%d", i)})
	}
	ips := func(evs []Event) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.IP)
		}
		return out
	}
	tests := []struct {
		n    int
		want []string
	}{
		{0, []string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}},
		{2, []string{"192.0.2.4", "192.0.2.5"}},
		{10, []string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ips(d.Recent(tt.n))); diff != "" {
				t.Errorf("Recent(%d) (-want +got):\n%s", tt.n, diff)
			}
		})
	}
	got := d.Recent(1)[0]
	if got.Node != "a" || got.Severity != SeverityInfo || got.Time.IsZero() || got.Time.Location() != time.UTC {
		t.Errorf("Publish did not fill defaults: %+v", got)
	}
}

func TestSubscribe(t *testing.T) {
	d, _ := newTestDispatcher(t, Config{})
	fast, cancelFast := d.Subscribe()
	slow, cancelSlow := d.Subscribe() // never read
	defer cancelSlow()
	n := subscriberBuffer + 10
	for i := range n {
		d.Publish(Event{Type: ViewChanged, Details: map[string]string{"epoch": strconv.Itoa(i)}})
		got := <-fast
		if got.Details["epoch"] != strconv.Itoa(i) {
			t.Fatalf("subscriber got epoch %q, want %d", got.Details["epoch"], i)
		}
	}
	if s := d.Stats(); s.SubscriberDrops != 10 || s.Published != uint64(n) {
		t.Errorf("Stats() = %+v, want 10 subscriber drops and %d published", s, n)
	}
	if len(slow) != subscriberBuffer {
		t.Errorf("slow subscriber holds %d events, want %d", len(slow), subscriberBuffer)
	}
	cancelFast()
	cancelFast() // idempotent
	if _, ok := <-fast; ok {
		t.Error("channel still open after cancel")
	}
}

// Actions are selected by event type and group.
func TestActionFilters(t *testing.T) {
	d, logs := newTestDispatcher(t, Config{Actions: []ActionConfig{
		{Name: "all", Type: ActionLog},
		{Name: "failures", Type: ActionLog, Events: []Type{MemberFailed, SelftestFailed}},
		{Name: "web", Type: ActionLog, Groups: []string{"web"}},
		{Name: "web-raised", Type: ActionLog, Events: []Type{IPRaised}, Groups: []string{"web"}},
	}})
	d.Publish(Event{Type: MemberFailed, Member: "b"})
	d.Publish(Event{Type: IPRaised, Group: "web", IP: "192.0.2.10"})
	d.Publish(Event{Type: IPDropped, Group: "web", IP: "192.0.2.11"})
	d.Publish(Event{Type: IPRaised, Group: "db", IP: "192.0.2.20"})
	want := map[string]uint64{"all": 4, "failures": 1, "web": 2, "web-raised": 1}
	waitFor(t, 10*time.Second, "log actions", func() bool { return actionStats(d, "all").Runs == 4 })
	// Each action runs its queue in order; give the others the same chance
	// by waiting for their expected counts, then check nothing more ran.
	for name, n := range want {
		waitFor(t, 10*time.Second, name, func() bool { return actionStats(d, name).Runs >= n })
	}
	got := map[string]uint64{}
	for name, s := range d.Stats().Actions {
		got[name] = s.Runs
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("runs per action (-want +got):\n%s", diff)
	}
	var line struct {
		Level, Action, Type, Member string
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		_ = json.Unmarshal([]byte(l), &line)
		if line.Action == "failures" {
			if line.Level != "error" || line.Type != "member-failed" || line.Member != "b" {
				t.Errorf("log action line = %s, want level error, type member-failed, member b", l)
			}
			return
		}
	}
	t.Errorf("no log line from action failures in:\n%s", logs)
}

// The script contract: the SHOAL_* environment (line for line; the shell
// re-orders the environment) and the event as JSON on stdin (byte for byte)
// match testdata/shoal.
func TestScriptContract(t *testing.T) {
	dir := t.TempDir()
	script := `f=` + shellQuote(dir) + `/$SHOAL_EVENT; env | grep '^SHOAL_' | LC_ALL=C sort > "$f.env"; cat > "$f.stdin"; echo done > "$f.done"`
	d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{{Name: "notify", Type: ActionScript, Command: script}}})
	for _, tc := range goldenShoalEvents {
		t.Run(tc.name, func(t *testing.T) {
			d.Publish(tc.ev)
			base := filepath.Join(dir, string(tc.ev.Type))
			waitFor(t, 20*time.Second, "script", func() bool { return fileLines(base+".done") != nil })
			compareScriptOutput(t, base, "shoal/"+tc.name)
		})
	}
}

// A hung script is killed at its timeout, with its children, and never
// delays other actions or later events.
func TestHungScript(t *testing.T) {
	dir := t.TempDir()
	fast := filepath.Join(dir, "fast.log")
	pidFile := filepath.Join(dir, "child.pid")
	d, _ := newTestDispatcher(t, Config{MaxConcurrent: 4, Actions: []ActionConfig{
		// Hangs far longer than the test: proves the others do not wait for it.
		{Name: "hang", Type: ActionScript, Command: "sleep 60", Timeout: 50 * time.Second, Events: []Type{IPRaised}},
		// Hangs with a child in the background; killed after 500 ms.
		{Name: "short", Type: ActionScript, Timeout: 500 * time.Millisecond, Events: []Type{MemberFailed},
			Command: "sleep 60 & echo $! > " + shellQuote(pidFile) + "; wait"},
		{Name: "fast", Type: ActionScript, Command: `echo "$SHOAL_EVENT $SHOAL_IP" >> ` + shellQuote(fast)},
	}})
	d.Publish(Event{Type: IPRaised, IP: "192.0.2.1"})
	d.Publish(Event{Type: IPRaised, IP: "192.0.2.2"})
	d.Publish(Event{Type: MemberFailed, Member: "b"})
	waitFor(t, 20*time.Second, "fast action for all events", func() bool { return len(fileLines(fast)) == 3 })
	want := []string{"ip-raised 192.0.2.1", "ip-raised 192.0.2.2", "member-failed "}
	if diff := cmp.Diff(want, fileLines(fast)); diff != "" {
		t.Errorf("fast action runs (-want +got):\n%s", diff)
	}
	if s := actionStats(d, "hang"); s.Runs != 0 {
		t.Errorf("hang action finished %d runs while its first should still hang", s.Runs)
	}

	waitFor(t, 20*time.Second, "short action timeout", func() bool { return actionStats(d, "short").TimedOut == 1 })
	if s := actionStats(d, "short"); s.Runs != 1 || s.Failed != 1 {
		t.Errorf("short action stats = %+v, want 1 run, 1 failure, 1 timeout", s)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(must(os.ReadFile(pidFile)))))
	if err != nil {
		t.Fatalf("read child pid: %v", err)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("child %d of the killed script to die", pid), func() bool { return !processAlive(pid) })
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// Publish never blocks, even when every action hangs and a subscriber
// never reads; overflow drops the oldest queued events and counts them.
func TestPublishNeverBlocks(t *testing.T) {
	d, _ := newTestDispatcher(t, Config{MaxConcurrent: 1, QueueSize: 16, Actions: []ActionConfig{
		{Name: "hang", Type: ActionScript, Command: "sleep 60", Timeout: 50 * time.Second},
	}})
	_, cancel := d.Subscribe()
	defer cancel()
	const n = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			d.Publish(Event{Type: ViewChanged, Details: map[string]string{"epoch": strconv.Itoa(i)}})
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Publish blocked: 5000 events not published in 30 s")
	}
	s := d.Stats()
	if s.Published != n || s.SubscriberDrops != n-subscriberBuffer {
		t.Errorf("Stats() = %+v, want %d published, %d subscriber drops", s, n, n-subscriberBuffer)
	}
	// The runner took at most one event off its queue before hanging.
	if dropped := s.Actions["hang"].Dropped; dropped < n-16-1 || dropped > n-16 {
		t.Errorf("hang action dropped %d events, want %d or %d", dropped, n-17, n-16)
	}
}

// At most MaxConcurrent actions run at once; the others wait for a slot.
func TestConcurrencyLimit(t *testing.T) {
	var mu sync.Mutex
	inflight, maxInflight := 0, 0
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body: only then does the server notice a client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		inflight++
		maxInflight = max(maxInflight, inflight)
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		mu.Lock()
		inflight--
		mu.Unlock()
	}))
	t.Cleanup(srv.Close) // after the dispatcher's Close, which ends blocked requests
	var actions []ActionConfig
	for i := range 5 {
		actions = append(actions, ActionConfig{Name: fmt.Sprintf("hook%d", i), Type: ActionWebhook, URL: srv.URL, Timeout: 50 * time.Second})
	}
	d, _ := newTestDispatcher(t, Config{MaxConcurrent: 2, Actions: actions})
	d.Publish(Event{Type: MemberJoined, Member: "c"})
	waitFor(t, 20*time.Second, "2 running and 3 waiting", func() bool {
		s := d.Stats()
		mu.Lock()
		defer mu.Unlock()
		return s.Running == 2 && s.Waiting == 3 && inflight == 2
	})
	mu.Lock()
	if maxInflight != 2 {
		t.Errorf("max concurrent webhook requests = %d, want 2", maxInflight)
	}
	mu.Unlock()
	close(release)
	waitFor(t, 20*time.Second, "all webhooks", func() bool {
		for _, a := range actions {
			if actionStats(d, a.Name).Runs != 1 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	if maxInflight > 2 {
		t.Errorf("max concurrent webhook requests = %d, want at most 2", maxInflight)
	}
}

// Reconfigure keeps unchanged actions and their counters, starts new ones
// and stops removed ones.
func TestReconfigure(t *testing.T) {
	d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{{Name: "keep", Type: ActionLog}, {Name: "gone", Type: ActionLog}}})
	d.Publish(Event{Type: MemberJoined})
	waitFor(t, 10*time.Second, "first runs", func() bool {
		return actionStats(d, "keep").Runs == 1 && actionStats(d, "gone").Runs == 1
	})
	if err := d.Reconfigure(Config{Actions: []ActionConfig{{Name: "keep", Type: ActionLog}, {Name: "new", Type: ActionLog}}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Reconfigure(Config{MaxConcurrent: -1}); err == nil {
		t.Error("Reconfigure with max_concurrent -1 = nil error, want an error")
	}
	d.Publish(Event{Type: MemberJoined})
	waitFor(t, 10*time.Second, "second runs", func() bool {
		return actionStats(d, "keep").Runs == 2 && actionStats(d, "new").Runs == 1
	})
	if s := actionStats(d, "gone"); s.Runs != 1 {
		t.Errorf("removed action ran %d times, want 1", s.Runs)
	}
	d.Close()
	if err := d.Reconfigure(Config{}); err == nil {
		t.Error("Reconfigure after Close = nil error, want ErrClosed")
	}
	d.Publish(Event{Type: MemberJoined}) // must not panic or block
}

// A script that exits 0 but leaves a background child holding its output
// open succeeds (after the 1 s wait delay) instead of hanging or failing.
func TestScriptBackgroundChild(t *testing.T) {
	d, _ := newTestDispatcher(t, Config{Actions: []ActionConfig{
		{Name: "bg", Type: ActionScript, Command: "sleep 3 & echo started"},
	}})
	d.Publish(Event{Type: ConfigApplied})
	waitFor(t, 20*time.Second, "script run", func() bool { return actionStats(d, "bg").Runs == 1 })
	if s := actionStats(d, "bg"); s.Failed != 0 {
		t.Errorf("stats = %+v, want no failure", s)
	}
}
