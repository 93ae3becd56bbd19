package chaos

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/test/harness"
)

// FaultRecord is one fault as carried out.
type FaultRecord struct {
	Spec    Spec
	Inject  time.Time // the fault took effect
	Heal    time.Time // it was healed / restored / the agent restarted
	Settled time.Time // Heal + detection floor
	Check   time.Time // Settled + check window: invariants must hold from here
	End     time.Time // next fault's Inject, or the end of the fault phase
	Err     string    // injection or heal error
	// Unavailable is each traffic IP's unavailable time attributed to this
	// fault (failed probe attempts started in [Inject, End) x interval).
	Unavailable map[netip.Addr]time.Duration
}

// MultiGroup is a multi-hosted group the oracle reconstructs bucket
// ownership for.
type MultiGroup struct {
	Name  string
	Plan  *allocate.Plan
	Slots map[string]int
}

// Input is everything the oracle judges: samples, the fault timeline and
// the probes, plus the cluster's layout.
type Input struct {
	Nodes   int
	Samples []Sample
	Faults  []FaultRecord
	// From is the first converged sample: earlier samples (start-up) are
	// not judged. PhaseStart and PhaseEnd bound the fault phase (steady
	// state before and after it is judged too).
	From                 time.Time
	PhaseStart, PhaseEnd time.Time
	// Home is each single-hosted IP's owner with every node up.
	Home map[netip.Addr]int
	// Group of every traffic IP (single and multi).
	Group map[netip.Addr]string
	Multi []MultiGroup
	// Probes are the client's probe results per traffic IP.
	Probes        map[netip.Addr]*harness.Result
	ProbeInterval time.Duration
	Floor         time.Duration // detection floor
	CheckWindow   time.Duration // invariants hold from Settled + CheckWindow
	DoubleBound   time.Duration // longest allowed double-owner window outside faults
	Exits         []Exit
	// Baseline and Final are each node's agent resources after the
	// initial and the final convergence.
	Baseline, Final map[int]Resources
	FDSlack         int
	Events          []events.Event
	// Converged is false when the cluster did not converge after the last
	// fault (ConvergeErr says how).
	Converged   bool
	ConvergeErr string
}

// Window is an interval during which an invariant did not hold.
type Window struct {
	What       string // "double-owner", "no-owner", "stale-xdp"
	Subject    string // traffic IP or multi-hosted group
	Start, End time.Time
	Open       bool  // still open when sampling stopped
	Nodes      []int // holders (double-owner of an IP)
	Buckets    int   // multi: largest number of buckets affected
	Allowed    time.Time
	Fault      string // fault active when it started, if any
	Violation  bool
}

// Duration of the window.
func (w Window) Duration() time.Duration { return w.End.Sub(w.Start) }

// Move is a traffic IP taken over by another node.
type Move struct {
	T     time.Time
	IP    netip.Addr
	From  []int
	To    int
	Fault string // fault active, if any
}

// Violation is one broken invariant.
type Violation struct {
	T    time.Time
	What string
}

// nodeName is the member name of node i.
func nodeName(i int) string { return harness.NodeName(i) }

// judge holds the analysis state.
type judge struct {
	in     Input
	tables map[string][]uint8
	viol   []Violation
}

func (j *judge) violate(t time.Time, format string, args ...any) {
	j.viol = append(j.viol, Violation{T: t, What: fmt.Sprintf(format, args...)})
}

// cutAt reports whether node i's port is cut at t by a cut fault.
func (j *judge) cutAt(i int, t time.Time) bool {
	for _, f := range j.in.Faults {
		if f.Spec.Kind == KindCut && f.Spec.Nodes[0] == i && !t.Before(f.Inject) && t.Before(f.Heal) {
			return true
		}
	}
	return false
}

// up: the agent runs and the node is reachable.
func (j *judge) up(s Sample, i int) bool {
	return s.Nodes[i].Running && !j.cutAt(i, s.T)
}

// activeFault returns the fault whose [Inject, Check] contains t.
func (j *judge) activeFault(t time.Time) *FaultRecord {
	for k := range j.in.Faults {
		f := &j.in.Faults[k]
		if !t.Before(f.Inject) && !t.After(f.Check) {
			return f
		}
	}
	return nil
}

// disrupted reports whether node i is the target of a disruptive fault (or
// in a partition) whose [Inject, Check] contains t.
func (j *judge) disrupted(i int, t time.Time) bool {
	for _, f := range j.in.Faults {
		if !f.Spec.Kind.Disruptive() || t.Before(f.Inject) || t.After(f.Check) {
			continue
		}
		if slices.Contains(f.Spec.Targets(), i) {
			return true
		}
	}
	return false
}

// allowedEnd is the latest acceptable end of a window that started at
// start and ended at end: bound after its start, or the check deadline of
// any fault overlapping it, whichever is later.
func (j *judge) allowedEnd(start, end time.Time, bound time.Duration) time.Time {
	allowed := start.Add(bound)
	for _, f := range j.in.Faults {
		if f.Inject.After(end) || f.Check.Before(start) {
			continue
		}
		if f.Check.After(allowed) {
			allowed = f.Check
		}
	}
	return allowed
}

func faultName(f *FaultRecord) string {
	if f == nil {
		return ""
	}
	return f.Spec.String()
}

// tracker turns per-sample conditions into windows.
type tracker struct {
	cur  *Window
	done []Window
}

func (tr *tracker) observe(t time.Time, bad bool, mk func() Window, upd func(*Window)) {
	switch {
	case bad && tr.cur == nil:
		w := mk()
		w.Start, w.End = t, t
		tr.cur = &w
		upd(tr.cur)
	case bad:
		tr.cur.End = t
		upd(tr.cur)
	case tr.cur != nil:
		tr.cur.End = t
		tr.done = append(tr.done, *tr.cur)
		tr.cur = nil
	}
}

func (tr *tracker) finish(t time.Time) []Window {
	if tr.cur != nil {
		tr.cur.End, tr.cur.Open = t, true
		tr.done = append(tr.done, *tr.cur)
		tr.cur = nil
	}
	return tr.done
}

// Analyze judges the samples and probes against the timeline.
func Analyze(in Input) *Report {
	j := &judge{in: in, tables: map[string][]uint8{}}
	if !in.From.IsZero() {
		k := sort.Search(len(in.Samples), func(k int) bool { return !in.Samples[k].T.Before(in.From) })
		j.in.Samples = in.Samples[k:]
		in.Samples = j.in.Samples
	}
	r := &Report{Floor: in.Floor, CheckWindow: in.CheckWindow, DoubleBound: in.DoubleBound, Samples: len(in.Samples)}
	if len(in.Samples) == 0 {
		j.violate(time.Time{}, "no samples taken")
		r.Violations = j.viol
		return r
	}
	last := in.Samples[len(in.Samples)-1].T
	r.Windows = append(r.Windows, j.singleWindows(last, r)...)
	r.Windows = append(r.Windows, j.multiWindows(last)...)
	r.Windows = append(r.Windows, j.staleXDP(last)...)
	for k := range r.Windows {
		w := &r.Windows[k]
		bound := in.DoubleBound
		if w.What == "stale-xdp" {
			bound = time.Second
		} else if w.What == "no-owner" && w.Buckets == 0 {
			bound = 0 // single-hosted: make-before-break leaves no gap
		}
		w.Allowed = j.allowedEnd(w.Start, w.End, bound)
		if w.End.After(w.Allowed) || (w.Open && w.End.Sub(w.Start) > bound) {
			w.Violation = true
			j.violate(w.Start, "%s %s from %s to %s (%v, allowed until %s)%s", w.What, w.Subject,
				stamp(w.Start), stamp(w.End), w.Duration().Round(time.Millisecond), stamp(w.Allowed), nodesNote(w))
		}
	}
	sort.SliceStable(r.Windows, func(a, b int) bool { return r.Windows[a].Start.Before(r.Windows[b].Start) })
	j.configVersions(r)
	for _, e := range in.Exits {
		j.violate(e.Time, "agent on node%d exited on its own: %s\n%s", e.Node, e.Err, indent(e.LogTail))
	}
	j.resources(r)
	j.downEvents(r)
	if !in.Converged {
		j.violate(last, "cluster did not converge after the last fault: %s", in.ConvergeErr)
	}
	j.unavailability(r)
	sort.SliceStable(j.viol, func(a, b int) bool { return j.viol[a].T.Before(j.viol[b].T) })
	r.Violations = j.viol
	return r
}

func nodesNote(w *Window) string {
	if len(w.Nodes) > 0 {
		return fmt.Sprintf(" on nodes %v", w.Nodes)
	}
	if w.Buckets > 0 {
		return fmt.Sprintf(", up to %d buckets", w.Buckets)
	}
	return ""
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    | " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    | ")
}

// singleWindows finds double-owner and no-owner windows of every
// single-hosted IP, and the moves between holders.
func (j *judge) singleWindows(last time.Time, r *Report) []Window {
	var out []Window
	ips := make([]netip.Addr, 0, len(j.in.Home))
	for ip := range j.in.Home {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		var dbl, orph tracker
		var prev []int
		for _, s := range j.in.Samples {
			if slices.ContainsFunc(s.Nodes, func(n NodeSample) bool { return n.NetErr }) {
				continue
			}
			var holders []int
			for i := range s.Nodes {
				if j.up(s, i) && slices.Contains(s.Nodes[i].Held, ip) {
					holders = append(holders, i)
				}
			}
			f := j.activeFault(s.T)
			dbl.observe(s.T, len(holders) >= 2, func() Window {
				return Window{What: "double-owner", Subject: ip.String(), Fault: faultName(f)}
			}, func(w *Window) {
				for _, h := range holders {
					if !slices.Contains(w.Nodes, h) {
						w.Nodes = append(w.Nodes, h)
					}
				}
				slices.Sort(w.Nodes)
			})
			orph.observe(s.T, len(holders) == 0, func() Window {
				return Window{What: "no-owner", Subject: ip.String(), Fault: faultName(f)}
			}, func(*Window) {})
			if len(holders) > 0 {
				if len(prev) > 0 {
					for _, h := range holders {
						if !slices.Contains(prev, h) {
							j.move(r, s.T, ip, prev, h, f)
						}
					}
				}
				prev = holders
			}
		}
		out = append(out, dbl.finish(last)...)
		out = append(out, orph.finish(last)...)
	}
	return out
}

// move classifies a take-over: back to the home owner is a failback; away
// from (or onto) a node hit by a disruptive fault is a failover; anything
// else is a false failover.
func (j *judge) move(r *Report, t time.Time, ip netip.Addr, from []int, to int, f *FaultRecord) {
	m := Move{T: t, IP: ip, From: slices.Clone(from), To: to, Fault: faultName(f)}
	if to == j.in.Home[ip] {
		r.Failbacks++
		return
	}
	if j.disrupted(to, t) {
		r.Failovers++
		return
	}
	for _, a := range from {
		if j.disrupted(a, t) {
			r.Failovers++
			return
		}
	}
	r.FalseFailovers = append(r.FalseFailovers, m)
}

// table returns the bucket table of a multi-hosted group for the alive
// set implied by a node's share table (every alive member owns buckets).
func (j *judge) table(g MultiGroup, shares map[string]int) []uint8 {
	var alive []string
	for m, c := range shares {
		if c > 0 {
			alive = append(alive, m)
		}
	}
	slices.Sort(alive)
	key := g.Name + "|" + strings.Join(alive, ",")
	if t, ok := j.tables[key]; ok {
		return t
	}
	t := g.Plan.Buckets(allocate.AliveOf(alive...))
	j.tables[key] = t
	return t
}

// multiWindows reconstructs each up node's owned buckets from its reported
// share table (the allocation is a pure function of the alive set) and
// finds windows where a bucket has two owners or none.
func (j *judge) multiWindows(last time.Time) []Window {
	var out []Window
	for _, g := range j.in.Multi {
		var dbl, orph tracker
		count := make([]uint8, allocate.NumBuckets)
		for _, s := range j.in.Samples {
			clear(count)
			for i := range s.Nodes {
				ns := s.Nodes[i]
				name := nodeName(i)
				if !j.up(s, i) || !ns.XDP.Attached || !ns.Known || ns.Shares[g.Name][name] == 0 {
					continue
				}
				slot, ok := g.Slots[name]
				if !ok {
					continue
				}
				for b, o := range j.table(g, ns.Shares[g.Name]) {
					if int(o) == slot {
						count[b]++
					}
				}
			}
			var two, none int
			for _, c := range count {
				switch {
				case c == 0:
					none++
				case c > 1:
					two++
				}
			}
			f := j.activeFault(s.T)
			dbl.observe(s.T, two > 0, func() Window {
				return Window{What: "double-owner", Subject: "group " + g.Name, Fault: faultName(f)}
			}, func(w *Window) { w.Buckets = max(w.Buckets, two) })
			orph.observe(s.T, none > 0, func() Window {
				return Window{What: "no-owner", Subject: "group " + g.Name, Fault: faultName(f)}
			}, func(w *Window) { w.Buckets = max(w.Buckets, none) })
		}
		out = append(out, dbl.finish(last)...)
		out = append(out, orph.finish(last)...)
	}
	return out
}

// staleXDP finds an XDP program left attached on a node whose agent is
// not running (the bpf_link dies with the process).
func (j *judge) staleXDP(last time.Time) []Window {
	var out []Window
	for i := range j.in.Nodes {
		var tr tracker
		for _, s := range j.in.Samples {
			ns := s.Nodes[i]
			tr.observe(s.T, !ns.Running && ns.XDP.Attached && !ns.NetErr, func() Window {
				return Window{What: "stale-xdp", Subject: nodeName(i), Fault: faultName(j.activeFault(s.T))}
			}, func(*Window) {})
		}
		out = append(out, tr.finish(last)...)
	}
	return out
}

// configVersions: a node's config version never goes back (restarts
// included), and at the end every node holds the newest version accepted
// anywhere, with the same hash.
func (j *judge) configVersions(r *Report) {
	maxV := make([]uint64, j.in.Nodes)
	reported := make([]uint64, j.in.Nodes) // regression from this version already reported
	var top uint64
	topHash := map[string]bool{}
	for _, s := range j.in.Samples {
		for i, ns := range s.Nodes {
			if !ns.Reached {
				continue
			}
			if ns.CfgVer < maxV[i] && reported[i] != maxV[i] {
				reported[i] = maxV[i]
				j.violate(s.T, "config version on node%d went back from %d to %d", i, maxV[i], ns.CfgVer)
			}
			maxV[i] = max(maxV[i], ns.CfgVer)
			if ns.CfgVer > top {
				top = ns.CfgVer
				clear(topHash)
			}
			if ns.CfgVer == top {
				topHash[ns.CfgHash] = true
			}
		}
	}
	r.ConfigVersions = [2]uint64{j.in.Samples[0].Nodes[0].CfgVer, top}
	if len(topHash) > 1 {
		j.violate(j.in.Samples[len(j.in.Samples)-1].T, "config version %d seen with %d different hashes", top, len(topHash))
	}
	if !j.in.Converged {
		return
	}
	s := j.in.Samples[len(j.in.Samples)-1]
	for i, ns := range s.Nodes {
		if ns.Reached && ns.CfgVer != top {
			j.violate(s.T, "config version %d accepted earlier is lost on node%d (holds %d)", top, i, ns.CfgVer)
		}
	}
}

// resources compares each agent's FD count (and goroutines when
// published) after the final convergence with the baseline.
func (j *judge) resources(r *Report) {
	// Goroutines: the first and the last count each agent published.
	first := map[int]int{}
	lastG := map[int]int{}
	for _, s := range j.in.Samples {
		for i, ns := range s.Nodes {
			if ns.Reached && ns.Goroutines >= 0 {
				if _, ok := first[i]; !ok {
					first[i] = ns.Goroutines
				}
				lastG[i] = ns.Goroutines
			}
		}
	}
	r.GoroutinesPublished = len(first) > 0
	for i := range j.in.Nodes {
		b, okb := j.in.Baseline[i]
		f, okf := j.in.Final[i]
		if !okb || !okf {
			continue
		}
		rd := ResourceDelta{Node: i, Baseline: b, Final: f, Goroutines: [2]int{-1, -1}}
		if g0, ok := first[i]; ok {
			rd.Goroutines = [2]int{g0, lastG[i]}
		}
		r.Resources = append(r.Resources, rd)
		if f.FDs > b.FDs+j.in.FDSlack {
			j.violate(j.in.PhaseEnd, "node%d agent holds %d file descriptors after the run, %d at the start (slack %d): leak", i, f.FDs, b.FDs, j.in.FDSlack)
		}
	}
	for i, g0 := range first {
		if g := lastG[i]; g > 2*g0+50 {
			j.violate(j.in.PhaseEnd, "node%d agent runs %d goroutines after the run, %d at the start: leak", i, g, g0)
		}
	}
}

// downEvents counts member-failed events about members no disruptive
// fault hit (false down declarations).
func (j *judge) downEvents(r *Report) {
	for _, e := range j.in.Events {
		if e.Type != events.MemberFailed {
			continue
		}
		var m int
		if _, err := fmt.Sscanf(e.Member, "node%d", &m); err != nil {
			continue
		}
		if e.Time.Before(j.in.PhaseStart) {
			continue
		}
		var observer int
		if _, err := fmt.Sscanf(e.Node, "node%d", &observer); err != nil {
			observer = -1
		}
		r.DownEvents++
		// Justified when the member or the node declaring it was hit by a
		// disruptive fault (a cut-off node loses sight of everyone).
		if !j.disrupted(m, e.Time) && (observer < 0 || !j.disrupted(observer, e.Time)) {
			r.FalseDown = append(r.FalseDown, e)
		}
	}
}

// unavailability attributes failed probe attempts to faults and sums them
// per kind.
func (j *judge) unavailability(r *Report) {
	iv := j.in.ProbeInterval
	kinds := map[Kind]*KindStats{}
	for k := range j.in.Faults {
		f := &j.in.Faults[k]
		f.Unavailable = map[netip.Addr]time.Duration{}
		ks := kinds[f.Spec.Kind]
		if ks == nil {
			ks = &KindStats{Kind: f.Spec.Kind}
			kinds[f.Spec.Kind] = ks
		}
		ks.Faults++
		for ip, res := range j.in.Probes {
			failed := 0
			for _, a := range res.Attempts {
				if !a.OK && !a.Start.Before(f.Inject) && a.Start.Before(f.End) {
					failed++
				}
			}
			d := time.Duration(failed) * iv
			f.Unavailable[ip] = d
			if d >= MinInterruption {
				ks.Interruptions++
				ks.Total += d
				ks.Max = max(ks.Max, d)
			}
		}
	}
	for _, ks := range kinds {
		if ks.Interruptions > 0 {
			ks.Mean = ks.Total / time.Duration(ks.Interruptions)
		}
		r.Kinds = append(r.Kinds, *ks)
	}
	sort.Slice(r.Kinds, func(a, b int) bool {
		return slices.Index(AllKinds, r.Kinds[a].Kind) < slices.Index(AllKinds, r.Kinds[b].Kind)
	})
	for ip, res := range j.in.Probes {
		st := IPStats{IP: ip, Group: j.in.Group[ip]}
		for _, a := range res.Attempts {
			st.Attempts++
			if !a.OK {
				st.Failed++
			}
		}
		st.Unavailable = time.Duration(st.Failed) * iv
		r.IPs = append(r.IPs, st)
	}
	sort.Slice(r.IPs, func(a, b int) bool { return r.IPs[a].IP.Less(r.IPs[b].IP) })
	r.Faults = j.in.Faults
}

// MinInterruption is the unavailable time from which a fault counts as
// having interrupted a traffic IP (below it: probe noise).
const MinInterruption = 100 * time.Millisecond

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("15:04:05.000")
}
