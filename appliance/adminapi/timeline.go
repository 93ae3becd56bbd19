package adminapi

import (
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/dataplane"
	"github.com/shoal-project/shoal/gossip"
)

// Failover steps, in the order they happen on the node that records them.
const (
	StepSuspected   = "suspected"    // the member went silent: probing started
	StepConfirmed   = "confirmed"    // the member is down (failed or left)
	StepViewChanged = "view_changed" // the view without it took effect
	StepAllocated   = "allocated"    // the allocation for that view was computed
	StepIPRaised    = "ip_raised"    // this node raised the first of the IPs it took over
	StepFirstARP    = "first_arp"    // the first gratuitous ARP / unsolicited NA for it went out
)

// Steps lists the failover steps in order.
var Steps = []string{StepSuspected, StepConfirmed, StepViewChanged, StepAllocated, StepIPRaised, StepFirstARP}

// Timeline outcomes.
const (
	OutcomeOpen      = "open"        // still in progress
	OutcomeComplete  = "complete"    // this node raised IPs and announced them
	OutcomeNoIPsHere = "no-ips-here" // the allocation gave this node nothing of the failed member's
	OutcomeRefuted   = "refuted"     // the suspicion was cleared: no failover
	OutcomeTimedOut  = "timed-out"   // a step never came (e.g. an IP raised but never announced)
)

// Timeline is one failover as this node saw it.
type Timeline struct {
	ID     uint64 `json:"id"`
	Member string `json:"member"`           // the member that went down
	Reason string `json:"reason,omitempty"` // why it was declared down
	// Start is the time of the first step recorded (normally "suspected";
	// a graceful leave or a verdict adopted from a peer starts at
	// "confirmed").
	Start   time.Time      `json:"start"`
	Steps   []TimelineStep `json:"steps"`
	IPs     []string       `json:"ips,omitempty"` // IPs this node raised during it
	Outcome string         `json:"outcome"`
	// TotalMS is the time from Start to the last step.
	TotalMS float64 `json:"total_ms"`
}

// TimelineStep is one step of a timeline.
type TimelineStep struct {
	Step    string    `json:"step"`
	Time    time.Time `json:"time"`
	AfterMS float64   `json:"after_ms"` // since Start
	Detail  string    `json:"detail,omitempty"`
}

func (t *Timeline) has(step string) bool { return t.stepAt(step) != nil }

func (t *Timeline) stepAt(step string) *TimelineStep {
	for i := range t.Steps {
		if t.Steps[i].Step == step {
			return &t.Steps[i]
		}
	}
	return nil
}

func (t *Timeline) add(step string, at time.Time, detail string) {
	if t.has(step) {
		return
	}
	if at.Before(t.Start) {
		at = t.Start // clock steps; keep durations non-negative
	}
	ms := float64(at.Sub(t.Start)) / float64(time.Millisecond)
	t.Steps = append(t.Steps, TimelineStep{Step: step, Time: at, AfterMS: ms, Detail: detail})
	t.TotalMS = max(t.TotalMS, ms)
}

// DefaultTimelines is how many finished timelines a recorder keeps.
const DefaultTimelines = 32

// TimelineRecorder records failover timelines. The agent calls it at each
// step (directly, or through ObserveGossip and ObserveDataplane); it keeps
// the last finished timelines and feeds the failover duration histogram.
// It is safe for concurrent use; the zero value is not usable.
type TimelineRecorder struct {
	mu     sync.Mutex
	keep   int
	nextID uint64
	open   []*Timeline
	done   []Timeline // oldest first, at most keep
	hist   *prometheus.HistogramVec

	// Settle is how long after "allocated" (without an IP raised here) or
	// after "ip_raised" (without an announcement) a timeline is closed.
	Settle time.Duration
	// MaxOpen closes any timeline this long after its start.
	MaxOpen time.Duration
}

// NewTimelineRecorder keeps the last keep finished timelines (<= 0:
// DefaultTimelines).
func NewTimelineRecorder(keep int) *TimelineRecorder {
	if keep <= 0 {
		keep = DefaultTimelines
	}
	return &TimelineRecorder{
		keep: keep, Settle: 5 * time.Second, MaxOpen: 2 * time.Minute,
		hist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_failover_step_seconds",
			Help:    "Time from a member's suspicion (or confirmed failure when unsuspected) to each failover step on this node.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60},
		}, []string{"step"}),
	}
}

// Collector is the failover histogram, for a metrics registry.
func (r *TimelineRecorder) Collector() prometheus.Collector { return r.hist }

func (r *TimelineRecorder) openFor(member string) *Timeline {
	for _, t := range r.open {
		if t.Member == member {
			return t
		}
	}
	return nil
}

func (r *TimelineRecorder) start(member string, at time.Time) *Timeline {
	r.nextID++
	t := &Timeline{ID: r.nextID, Member: member, Start: at, Outcome: OutcomeOpen}
	r.open = append(r.open, t)
	return t
}

// Suspected: member went silent and probing started.
func (r *TimelineRecorder) Suspected(member string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(at)
	if r.openFor(member) == nil {
		r.start(member, at).add(StepSuspected, at, "")
	}
}

// Cleared: the suspicion of member was cleared before it was declared
// down; its open timeline ends as refuted.
func (r *TimelineRecorder) Cleared(member string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(at)
	if t := r.openFor(member); t != nil && !t.has(StepConfirmed) {
		r.closeLocked(t, OutcomeRefuted)
	}
}

// Confirmed: member is down (reason: why, e.g. "no heartbeat" or "left").
// Without an earlier suspicion the timeline starts here.
func (r *TimelineRecorder) Confirmed(member, reason string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(at)
	t := r.openFor(member)
	if t == nil {
		t = r.start(member, at)
	}
	if !t.has(StepConfirmed) {
		t.Reason = reason
		t.add(StepConfirmed, at, reason)
	}
}

// ViewChanged: a new view took effect; it advances every confirmed
// timeline whose member is not in up.
func (r *TimelineRecorder) ViewChanged(epoch uint64, up []string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(at)
	for _, t := range r.open {
		if t.has(StepConfirmed) && !t.has(StepViewChanged) && !slices.Contains(up, t.Member) {
			t.add(StepViewChanged, at, "epoch "+strconv.FormatUint(epoch, 10))
		}
	}
}

// Allocated: the allocation for the current view was computed.
func (r *TimelineRecorder) Allocated(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(at)
	for _, t := range r.open {
		if t.has(StepViewChanged) {
			t.add(StepAllocated, at, "")
		}
	}
}

// IPRaised: this node raised ip (multi-hosted groups: took over buckets,
// ip = any IP of the group). It counts for every timeline that reached
// "allocated" before at.
func (r *TimelineRecorder) IPRaised(ip netip.Addr, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(at)
	s := ip.String()
	for _, t := range r.open {
		a := t.stepAt(StepAllocated)
		if a == nil || at.Before(a.Time) || slices.Contains(t.IPs, s) {
			continue
		}
		t.IPs = append(t.IPs, s)
		t.add(StepIPRaised, at, s)
	}
}

// FirstARP: the first announcement (gratuitous ARP / unsolicited NA) for ip
// went out. It completes every timeline that raised ip.
func (r *TimelineRecorder) FirstARP(ip netip.Addr, at time.Time) {
	r.firstARP(ip, at, "")
}

func (r *TimelineRecorder) firstARP(ip netip.Addr, at time.Time, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(at)
	s := ip.String()
	for _, t := range slices.Clone(r.open) {
		if slices.Contains(t.IPs, s) && !t.has(StepFirstARP) {
			t.add(StepFirstARP, at, joinDetail(s, detail))
			r.closeLocked(t, OutcomeComplete)
		}
	}
}

func joinDetail(a, b string) string {
	if b == "" {
		return a
	}
	return a + " (" + b + ")"
}

// ObserveGossip feeds a gossip member event: suspected, cleared, failed,
// left and view changes. Other events are ignored.
func (r *TimelineRecorder) ObserveGossip(ev gossip.MemberEvent) {
	at := ev.Time
	if at.IsZero() {
		at = time.Now()
	}
	switch ev.Type {
	case gossip.EventSuspected:
		r.Suspected(ev.Member, at)
	case gossip.EventCleared:
		r.Cleared(ev.Member, at)
	case gossip.EventFailed:
		r.Confirmed(ev.Member, firstNonEmpty(ev.Reason, "failed"), at)
	case gossip.EventLeft:
		r.Confirmed(ev.Member, "left", at)
	case gossip.EventViewChange:
		if ev.View != nil {
			r.ViewChanged(ev.View.Epoch, ev.View.Up, at)
		}
	}
}

// ObserveDataplane feeds the dataplane's status: an address held since
// after a timeline's allocation counts as raised at its Since time, and its
// announcements as the first ARP. Call it on each agent-loop pass after a
// view change; the first ARP time is exact while Announcements is 1 and an
// upper bound (said in the step's detail) when more rounds were seen.
func (r *TimelineRecorder) ObserveDataplane(st dataplane.Status) {
	for _, h := range st.Held {
		ip := h.Prefix.Addr()
		if h.Since.IsZero() {
			continue
		}
		r.IPRaised(ip, h.Since)
		if h.Announcements > 0 && !h.LastAnnounce.IsZero() {
			detail := ""
			if h.Announcements > 1 {
				detail = "upper bound: " + strconv.FormatUint(h.Announcements, 10) + " rounds seen"
			}
			r.firstARP(ip, h.LastAnnounce, detail)
		}
	}
}

// expireLocked closes timelines that will not progress any more.
func (r *TimelineRecorder) expireLocked(now time.Time) {
	for _, t := range slices.Clone(r.open) {
		switch {
		case now.Sub(t.Start) >= r.MaxOpen:
			r.closeLocked(t, OutcomeTimedOut)
		case t.has(StepIPRaised):
			if now.Sub(t.stepAt(StepIPRaised).Time) >= r.Settle {
				r.closeLocked(t, OutcomeTimedOut)
			}
		case t.has(StepAllocated):
			if now.Sub(t.stepAt(StepAllocated).Time) >= r.Settle {
				r.closeLocked(t, OutcomeNoIPsHere)
			}
		}
	}
}

func (r *TimelineRecorder) closeLocked(t *Timeline, outcome string) {
	t.Outcome = outcome
	r.open = slices.DeleteFunc(r.open, func(o *Timeline) bool { return o == t })
	if outcome != OutcomeRefuted {
		for _, s := range t.Steps {
			if s.Step != StepSuspected {
				r.hist.WithLabelValues(s.Step).Observe(s.AfterMS / 1000)
			}
		}
	}
	r.done = append(r.done, *t)
	if len(r.done) > r.keep {
		r.done = slices.Delete(r.done, 0, len(r.done)-r.keep)
	}
}

// Recent returns up to n timelines, newest first: the open ones, then the
// finished ones (n <= 0: all kept).
func (r *TimelineRecorder) Recent(n int) []Timeline {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(time.Now())
	out := make([]Timeline, 0, len(r.open)+len(r.done))
	for i := len(r.open) - 1; i >= 0; i-- {
		out = append(out, cloneTimeline(*r.open[i]))
	}
	for i := len(r.done) - 1; i >= 0; i-- {
		out = append(out, cloneTimeline(r.done[i]))
	}
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

func cloneTimeline(t Timeline) Timeline {
	t.Steps = slices.Clone(t.Steps)
	t.IPs = slices.Clone(t.IPs)
	return t
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
