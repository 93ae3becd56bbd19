package adminapi

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shoal-project/shoal/dataplane"
	"github.com/shoal-project/shoal/gossip"
)

// stepMS is a step and its offset from the start, in ms.
type stepMS struct {
	Step string
	MS   float64
}

func summary(tl Timeline) (string, string, []stepMS, []string) {
	var s []stepMS
	for _, st := range tl.Steps {
		s = append(s, stepMS{st.Step, st.AfterMS})
	}
	return tl.Member, tl.Outcome, s, tl.IPs
}

func TestTimelineRecorder(t *testing.T) {
	t0 := time.Unix(5000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	a1, a2 := netip.MustParseAddr(ip1), netip.MustParseAddr(ip2)
	type want struct {
		member, outcome string
		steps           []stepMS
		ips             []string
	}
	tests := []struct {
		name string
		feed func(r *TimelineRecorder)
		want []want // newest first
	}{
		{
			name: "complete failover",
			feed: func(r *TimelineRecorder) {
				r.Suspected("c", at(0))
				r.Confirmed("c", "no heartbeat", at(1500))
				r.ViewChanged(7, []string{"a", "b"}, at(1502))
				r.Allocated(at(1505))
				r.IPRaised(a1, at(1520))
				r.IPRaised(a2, at(1530))
				r.FirstARP(a1, at(1540))
			},
			want: []want{{"c", OutcomeComplete, []stepMS{{StepSuspected, 0}, {StepConfirmed, 1500}, {StepViewChanged, 1502},
				{StepAllocated, 1505}, {StepIPRaised, 1520}, {StepFirstARP, 1540}}, []string{ip1, ip2}}},
		},
		{
			name: "suspicion cleared",
			feed: func(r *TimelineRecorder) {
				r.Suspected("c", at(0))
				r.Cleared("c", at(800))
				r.ViewChanged(7, []string{"a", "b"}, at(900)) // not about c any more
			},
			want: []want{{"c", OutcomeRefuted, []stepMS{{StepSuspected, 0}}, nil}},
		},
		{
			name: "graceful leave, another node takes the IPs",
			feed: func(r *TimelineRecorder) {
				r.Confirmed("b", "left", at(0))
				r.ViewChanged(8, []string{"a", "c"}, at(3))
				r.Allocated(at(4))
				r.Suspected("x", at(5004)) // any later call expires it once settled
			},
			want: []want{
				{"x", OutcomeOpen, []stepMS{{StepSuspected, 0}}, nil},
				{"b", OutcomeNoIPsHere, []stepMS{{StepConfirmed, 0}, {StepViewChanged, 3}, {StepAllocated, 4}}, nil},
			},
		},
		{
			name: "view that still has the member does not advance it",
			feed: func(r *TimelineRecorder) {
				r.Suspected("c", at(0))
				r.Confirmed("c", "no heartbeat", at(1000))
				r.ViewChanged(3, []string{"a", "b", "c"}, at(1001))
				r.Allocated(at(1002))
				r.IPRaised(a1, at(1003))
			},
			want: []want{{"c", OutcomeOpen, []stepMS{{StepSuspected, 0}, {StepConfirmed, 1000}}, nil}},
		},
		{
			name: "raised but never announced times out",
			feed: func(r *TimelineRecorder) {
				r.Confirmed("c", "no heartbeat", at(0))
				r.ViewChanged(3, nil, at(1))
				r.Allocated(at(2))
				r.IPRaised(a1, at(3))
				r.Suspected("d", at(6000))
			},
			want: []want{
				{"d", OutcomeOpen, []stepMS{{StepSuspected, 0}}, nil},
				{"c", OutcomeTimedOut, []stepMS{{StepConfirmed, 0}, {StepViewChanged, 1}, {StepAllocated, 2}, {StepIPRaised, 3}}, []string{ip1}},
			},
		},
		{
			name: "two members fail together",
			feed: func(r *TimelineRecorder) {
				r.Suspected("b", at(0))
				r.Suspected("c", at(100))
				r.Confirmed("b", "no heartbeat", at(1000))
				r.Confirmed("c", "no heartbeat", at(1100))
				r.ViewChanged(9, []string{"a"}, at(1101))
				r.Allocated(at(1102))
				r.IPRaised(a1, at(1110))
				r.FirstARP(a1, at(1111))
			},
			want: []want{
				{"c", OutcomeComplete, []stepMS{{StepSuspected, 0}, {StepConfirmed, 1000}, {StepViewChanged, 1001}, {StepAllocated, 1002}, {StepIPRaised, 1010}, {StepFirstARP, 1011}}, []string{ip1}},
				{"b", OutcomeComplete, []stepMS{{StepSuspected, 0}, {StepConfirmed, 1000}, {StepViewChanged, 1101}, {StepAllocated, 1102}, {StepIPRaised, 1110}, {StepFirstARP, 1111}}, []string{ip1}},
			},
		},
		{
			name: "through gossip events and dataplane status",
			feed: func(r *TimelineRecorder) {
				r.ObserveGossip(gossip.MemberEvent{Time: at(0), Type: gossip.EventSuspected, Member: "c"})
				r.ObserveGossip(gossip.MemberEvent{Time: at(1200), Type: gossip.EventFailed, Member: "c", Reason: "no heartbeat for 1.2s"})
				r.ObserveGossip(gossip.MemberEvent{Time: at(1201), Type: gossip.EventViewChange, View: &gossip.View{Epoch: 4, Up: []string{"a", "b"}}})
				r.Allocated(at(1203))
				old := dataplane.HeldAddress{Prefix: netip.MustParsePrefix(ip2 + "/128"), Since: at(-60000), Announcements: 3, LastAnnounce: at(-1000)}
				r.ObserveDataplane(dataplane.Status{Held: []dataplane.HeldAddress{old,
					{Prefix: netip.MustParsePrefix(ip1 + "/32"), Since: at(1250)}}})
				r.ObserveDataplane(dataplane.Status{Held: []dataplane.HeldAddress{old,
					{Prefix: netip.MustParsePrefix(ip1 + "/32"), Since: at(1250), Announcements: 1, LastAnnounce: at(1260)}}})
			},
			want: []want{{"c", OutcomeComplete, []stepMS{{StepSuspected, 0}, {StepConfirmed, 1200}, {StepViewChanged, 1201},
				{StepAllocated, 1203}, {StepIPRaised, 1250}, {StepFirstARP, 1260}}, []string{ip1}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewTimelineRecorder(4)
			r.MaxOpen = 24 * time.Hour // Recent expires with the wall clock; the fixtures are in 1970
			tt.feed(r)
			var got []want
			for _, tl := range recentAt(r) {
				m, o, s, ips := summary(tl)
				got = append(got, want{m, o, s, ips})
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("timelines (-want +got):\n%s", diff)
			}
		})
	}
}

// recentAt lists the timelines without expiring them against the wall
// clock (the fixtures use fixed times).
func recentAt(r *TimelineRecorder) []Timeline {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Timeline
	for i := len(r.open) - 1; i >= 0; i-- {
		out = append(out, cloneTimeline(*r.open[i]))
	}
	for i := len(r.done) - 1; i >= 0; i-- {
		out = append(out, cloneTimeline(r.done[i]))
	}
	return out
}

func TestTimelineRecorderKeepsLastN(t *testing.T) {
	r := NewTimelineRecorder(3)
	now := time.Now()
	for i := range 5 {
		m := string(rune('a' + i))
		r.Suspected(m, now)
		r.Cleared(m, now)
	}
	got := r.Recent(0)
	var members []string
	for _, tl := range got {
		members = append(members, tl.Member)
	}
	if diff := cmp.Diff([]string{"e", "d", "c"}, members); diff != "" {
		t.Errorf("kept timelines (-want +got):\n%s", diff)
	}
	if len(r.Recent(2)) != 2 {
		t.Error("Recent(2) did not limit")
	}
	// Refuted suspicions are not failovers: no histogram samples.
	if n := metricValueOf(t, r, StepConfirmed); n != 0 {
		t.Errorf("histogram has %v samples after refuted suspicions", n)
	}
}

func metricValueOf(t *testing.T, r *TimelineRecorder, step string) float64 {
	t.Helper()
	reg := newPlainRegistry(r)
	v := metricValue(t, reg, "shoal_failover_step_seconds", "step", step)
	return max(v, 0)
}
