package harness

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestResultGaps checks gap arithmetic on hand-built attempt records.
func TestResultGaps(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ok := func(ms int) Attempt { return Attempt{Start: at(ms - 1), End: at(ms), OK: true} }
	bad := func(ms int) Attempt { return Attempt{Start: at(ms - 500), End: at(ms), Err: "connect: timeout"} }
	gap := func(s, e int, open bool) Gap { return newGap(at(s), at(e), open) }

	tests := []struct {
		name      string
		attempts  []Attempt
		stop      int
		threshold time.Duration
		wantGaps  []Gap
		wantLong  Gap
		at        int // instant for GapAt
		wantAt    Gap
		from, to  int // window for LongestGapIn
		wantIn    Gap
	}{
		{
			name:      "steady",
			attempts:  []Attempt{ok(5), ok(10), ok(15), ok(20)},
			stop:      22,
			threshold: 10 * time.Millisecond,
			wantLong:  gap(0, 5, false),
			at:        12,
			wantAt:    gap(10, 15, false),
			from:      11, to: 21,
			wantIn: gap(10, 15, false),
		},
		{
			name:      "one outage",
			attempts:  []Attempt{ok(5), ok(10), bad(900), bad(905), ok(1210), ok(1215)},
			stop:      1220,
			threshold: 100 * time.Millisecond,
			wantGaps:  []Gap{gap(10, 1210, false)},
			wantLong:  gap(10, 1210, false),
			at:        11,
			wantAt:    gap(10, 1210, false),
			from:      1211, to: 1220,
			wantIn: gap(1210, 1215, false),
		},
		{
			name:      "never recovers",
			attempts:  []Attempt{ok(5), ok(10), bad(600)},
			stop:      2000,
			threshold: 100 * time.Millisecond,
			wantGaps:  []Gap{gap(10, 2000, true)},
			wantLong:  gap(10, 2000, true),
			at:        1000,
			wantAt:    gap(10, 2000, true),
			from:      0, to: 2000,
			wantIn: gap(10, 2000, true),
		},
		{
			name:      "nothing succeeds",
			attempts:  []Attempt{bad(600), bad(700)},
			stop:      800,
			threshold: 100 * time.Millisecond,
			wantGaps:  []Gap{gap(0, 800, true)},
			wantLong:  gap(0, 800, true),
			at:        10,
			wantAt:    gap(0, 800, true),
			from:      100, to: 200,
			wantIn: gap(0, 800, true),
		},
		{
			name:      "slow start",
			attempts:  []Attempt{bad(500), ok(700), ok(705)},
			stop:      710,
			threshold: 100 * time.Millisecond,
			wantGaps:  []Gap{gap(0, 700, false)},
			wantLong:  gap(0, 700, false),
			at:        701,
			wantAt:    gap(700, 705, false),
			from:      702, to: 703,
			wantIn: gap(700, 705, false),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Result{Started: t0, Stopped: at(tc.stop), Attempts: tc.attempts}
			if diff := cmp.Diff(tc.wantGaps, r.Gaps(tc.threshold)); diff != "" {
				t.Errorf("Gaps(%v) (-want +got):\n%s", tc.threshold, diff)
			}
			if diff := cmp.Diff(tc.wantLong, r.LongestGap()); diff != "" {
				t.Errorf("LongestGap() (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAt, r.GapAt(at(tc.at))); diff != "" {
				t.Errorf("GapAt(+%dms) (-want +got):\n%s", tc.at, diff)
			}
			if diff := cmp.Diff(tc.wantIn, r.LongestGapIn(at(tc.from), at(tc.to))); diff != "" {
				t.Errorf("LongestGapIn(+%dms, +%dms) (-want +got):\n%s", tc.from, tc.to, diff)
			}
		})
	}
}

func TestFirstSuccessAfter(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	r := &Result{Started: t0, Stopped: at(100), Attempts: []Attempt{
		{Start: at(0), End: at(1), OK: true, Server: "node0"},
		{Start: at(5), End: at(50), Err: "connect: timeout"},
		// Started earlier but completed later than the next one.
		{Start: at(10), End: at(40), OK: true, Server: "node1"},
		{Start: at(15), End: at(16), OK: true, Server: "node2"},
	}}
	tests := []struct {
		name   string
		after  int
		want   string
		wantOK bool
	}{
		{"before all", -1, "node0", true},
		{"completion order wins", 1, "node2", true},
		{"late", 16, "node1", true},
		{"none", 40, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, ok := r.FirstSuccessAfter(at(tc.after))
			if ok != tc.wantOK || a.Server != tc.want {
				t.Errorf("FirstSuccessAfter(+%dms) = %q, %v; want %q, %v", tc.after, a.Server, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestAddHost(t *testing.T) {
	tests := []struct {
		base string
		h    uint64
		want string
	}{
		{"10.99.0.0", 1, "10.99.0.1"},
		{"10.99.0.0", 100, "10.99.0.100"},
		{"10.99.0.0", 300, "10.99.1.44"},
		{"fd00:99::", 0x100, "fd00:99::100"},
		{"fd00:99::", 3, "fd00:99::3"},
	}
	for _, tc := range tests {
		t.Run(tc.base, func(t *testing.T) {
			got := addHost(mustAddr(t, tc.base), tc.h).String()
			if got != tc.want {
				t.Errorf("addHost(%s, %d) = %s, want %s", tc.base, tc.h, got, tc.want)
			}
		})
	}
}
