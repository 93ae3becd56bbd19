package chaos

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/shoal-project/shoal/appliance/events"
)

// KindStats is the unavailability caused by one fault kind. An
// interruption is one (fault, traffic IP) pair with at least
// MinInterruption of unavailable time.
type KindStats struct {
	Kind          Kind
	Faults        int
	Interruptions int
	Total, Mean   time.Duration
	Max           time.Duration
}

// IPStats is one traffic IP's probe record over the whole run.
type IPStats struct {
	IP          netip.Addr
	Group       string
	Attempts    int
	Failed      int
	Unavailable time.Duration // Failed x probe interval
}

// ResourceDelta is one agent's resources at the start and the end.
type ResourceDelta struct {
	Node            int
	Baseline, Final Resources
	// Goroutines: the first and the last count the agent published in
	// its status JSON over the run (-1: never read).
	Goroutines [2]int
}

// Report is the result of a chaos run.
type Report struct {
	Seed     uint64
	Command  string
	Started  time.Time
	Phase    time.Duration // fault phase length
	Elapsed  time.Duration // whole run including setup and teardown
	Nodes    int
	Interval time.Duration // heartbeat interval
	// Floor is the detection floor: a silent member is declared down this
	// long after its last heartbeat (suspicion 1.55 I + probe window 0.4 I).
	Floor          time.Duration
	CheckWindow    time.Duration
	DoubleBound    time.Duration
	Kinds          []KindStats
	Enabled        []Kind
	Disabled       map[Kind]string // kind -> why it was not used
	Faults         []FaultRecord
	IPs            []IPStats
	Windows        []Window
	Failovers      int // take-overs from or onto a node hit by a disruptive fault
	Failbacks      int // take-overs by the IP's home owner
	FalseFailovers []Move
	DownEvents     int            // member-failed events seen
	FalseDown      []events.Event // member-failed about members no disruptive fault hit
	Resources      []ResourceDelta
	// ConfigVersions: node0's config version at the start, the newest
	// version seen anywhere.
	ConfigVersions      [2]uint64
	GoroutinesPublished bool
	Samples             int
	Violations          []Violation
	// AgentLogs are the tails of the agents' logs, kept when the run failed.
	AgentLogs string
}

// OK reports whether the run found no violation.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

func ms(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

// Text renders the report for people (and docs/RELIABILITY.md).
func (r *Report) Text() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("Shoal chaos report\n")
	p("  seed %d, fault phase %v, %d nodes, heartbeat interval %v, run took %v\n", r.Seed, r.Phase.Round(time.Second), r.Nodes, r.Interval, r.Elapsed.Round(time.Second))
	if r.Command != "" {
		p("  command: %s\n", r.Command)
	}
	p("  detection floor %v; invariants from heal + floor + %v; double-owner bound %v outside faults\n", r.Floor, r.CheckWindow, r.DoubleBound)
	p("  fault kinds: %v", r.Enabled)
	if len(r.Disabled) > 0 {
		var ds []string
		for k, why := range r.Disabled {
			ds = append(ds, fmt.Sprintf("%s (%s)", k, why))
		}
		sort.Strings(ds)
		p("; disabled: %s", strings.Join(ds, ", "))
	}
	p("\n\n")

	counts := map[Kind]int{}
	for _, f := range r.Faults {
		counts[f.Spec.Kind]++
	}
	p("Faults injected: %d\n", len(r.Faults))
	p("  %-12s %6s %14s %10s %10s %10s %8s\n", "kind", "faults", "interruptions", "mean", "max", "total", "mean/floor")
	for _, k := range r.Kinds {
		ratio := "-"
		if k.Interruptions > 0 && r.Floor > 0 {
			ratio = fmt.Sprintf("%.2f", k.Mean.Seconds()/r.Floor.Seconds())
		}
		p("  %-12s %6d %14d %10s %10s %10s %8s\n", k.Kind, k.Faults, k.Interruptions, ms(k.Mean), ms(k.Max), ms(k.Total), ratio)
	}
	p("  (interruption = a (fault, traffic IP) pair with >= %v unavailable; unavailable = failed probe attempts x probe interval)\n\n", MinInterruption)

	p("Per traffic IP (whole run):\n")
	for _, ip := range r.IPs {
		p("  %-16s %-6s attempts %6d failed %5d unavailable %s\n", ip.IP, ip.Group, ip.Attempts, ip.Failed, ms(ip.Unavailable))
	}
	p("\nTake-overs: %d failovers, %d failbacks, %d false failovers; member-failed events %d, about healthy members %d\n",
		r.Failovers, r.Failbacks, len(r.FalseFailovers), r.DownEvents, len(r.FalseDown))
	for _, m := range r.FalseFailovers {
		p("  false failover %s %s: nodes %v -> node%d (fault: %s)\n", stamp(m.T), m.IP, m.From, m.To, orNone(m.Fault))
	}
	for _, e := range r.FalseDown {
		p("  %s %s declared %s failed (%s)\n", stamp(e.Time), e.Node, e.Member, e.Details["reason"])
	}

	var dbl []Window
	for _, w := range r.Windows {
		if w.What == "double-owner" {
			dbl = append(dbl, w)
		}
	}
	p("\nDouble-owner windows: %d\n", len(dbl))
	for _, w := range dbl {
		p("  %s %-18s %8s%s fault: %s%s\n", stamp(w.Start), w.Subject, ms(w.Duration()), nodesNote(&w), orNone(w.Fault), violMark(w))
	}
	var other []Window
	for _, w := range r.Windows {
		if w.What != "double-owner" {
			other = append(other, w)
		}
	}
	p("No-owner / stale windows: %d\n", len(other))
	for _, w := range other {
		p("  %s %-9s %-18s %8s%s fault: %s%s\n", stamp(w.Start), w.What, w.Subject, ms(w.Duration()), nodesNote(&w), orNone(w.Fault), violMark(w))
	}

	p("\nConfig versions: %d at the start, newest seen %d\n", r.ConfigVersions[0], r.ConfigVersions[1])
	p("\nAgent resources (baseline after convergence -> after the run):\n")
	for _, rd := range r.Resources {
		p("  node%d: fds %d -> %d, goroutines %d -> %d, threads %d -> %d\n", rd.Node, rd.Baseline.FDs, rd.Final.FDs,
			rd.Goroutines[0], rd.Goroutines[1], rd.Baseline.Threads, rd.Final.Threads)
	}
	if !r.GoroutinesPublished {
		p("  (goroutines: not published in the status JSON; not checked)\n")
	}

	p("\nFault timeline:\n")
	for k, f := range r.Faults {
		var un []string
		ips := make([]netip.Addr, 0, len(f.Unavailable))
		for ip := range f.Unavailable {
			ips = append(ips, ip)
		}
		sort.Slice(ips, func(a, b int) bool { return ips[a].Less(ips[b]) })
		for _, ip := range ips {
			if d := f.Unavailable[ip]; d >= MinInterruption {
				un = append(un, fmt.Sprintf("%s %s", ip, ms(d)))
			}
		}
		errNote := ""
		if f.Err != "" {
			errNote = " ERROR: " + f.Err
		}
		p("  %3d %s-%s %-40s %s%s\n", k+1, stamp(f.Inject), stamp(f.Heal), f.Spec, strings.Join(un, ", "), errNote)
	}

	p("\nViolations: %d\n", len(r.Violations))
	for _, v := range r.Violations {
		p("  %s %s\n", stamp(v.T), v.What)
	}
	if r.AgentLogs != "" {
		p("\nAgent logs (tails):\n%s\n", indent(r.AgentLogs))
	}
	if r.OK() {
		p("\nPASS\n")
	} else {
		p("\nFAIL\n")
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func violMark(w Window) string {
	if w.Violation {
		return "  VIOLATION"
	}
	return ""
}
