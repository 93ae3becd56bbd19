package chaos

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/test/harness"
)

var (
	t0  = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ipA = netip.MustParseAddr("192.0.2.10")
)

// synth builds samples every 100 ms over dur from a function giving each
// node's state at offset d.
func synth(nodes int, dur time.Duration, f func(d time.Duration, i int) NodeSample) []Sample {
	var out []Sample
	for d := time.Duration(0); d <= dur; d += 100 * time.Millisecond {
		s := Sample{T: t0.Add(d), Nodes: make([]NodeSample, nodes)}
		for i := range nodes {
			s.Nodes[i] = f(d, i)
		}
		out = append(out, s)
	}
	return out
}

func baseInput(samples []Sample, faults []FaultRecord) Input {
	return Input{Nodes: len(samples[0].Nodes), Samples: samples, Faults: faults, Home: map[netip.Addr]int{ipA: 0},
		Group: map[netip.Addr]string{ipA: "web"}, ProbeInterval: 30 * time.Millisecond, Floor: Floor(500 * time.Millisecond),
		CheckWindow: CheckWindow, DoubleBound: DoubleBound, Converged: true, PhaseStart: t0, PhaseEnd: samples[len(samples)-1].T}
}

// holding returns a healthy running node sample holding ips.
func holding(ips ...netip.Addr) NodeSample {
	return NodeSample{Running: true, Reached: true, Known: true, Healthy: true, Held: ips, Goroutines: -1}
}

func fault(kind Kind, nodes []int, inject, heal time.Duration) FaultRecord {
	f := FaultRecord{Spec: Spec{Kind: kind, Nodes: nodes, Hold: heal - inject}, Inject: t0.Add(inject), Heal: t0.Add(heal)}
	if kind == KindPartition {
		f.Spec.Nodes, f.Spec.Other = nodes[:1], nodes[1:]
	}
	f.Settled = f.Heal.Add(Floor(500 * time.Millisecond))
	f.Check = f.Settled.Add(CheckWindow)
	f.End = f.Check
	return f
}

func violations(r *Report) []string {
	var out []string
	for _, v := range r.Violations {
		w := v.What
		if strings.HasPrefix(w, "double-owner") || strings.HasPrefix(w, "no-owner") || strings.HasPrefix(w, "stale-xdp") {
			w, _, _ = strings.Cut(w, " from ")
		}
		out = append(out, w)
	}
	return out
}

func TestAnalyzeSingleHosted(t *testing.T) {
	tests := []struct {
		name   string
		faults []FaultRecord
		state  func(d time.Duration, i int) NodeSample
		want   []string
	}{{
		name: "steady single owner",
		state: func(d time.Duration, i int) NodeSample {
			if i == 0 {
				return holding(ipA)
			}
			return holding()
		},
	}, {
		name: "hand-off overlap within the bound",
		state: func(d time.Duration, i int) NodeSample {
			if i == 0 || (i == 1 && d > 2*time.Second && d < 3500*time.Millisecond) {
				return holding(ipA)
			}
			return holding()
		},
	}, {
		name: "double owner longer than the bound outside faults",
		state: func(d time.Duration, i int) NodeSample {
			if i == 0 || (i == 1 && d > 2*time.Second && d < 5*time.Second) {
				return holding(ipA)
			}
			return holding()
		},
		want: []string{"double-owner 192.0.2.10"},
	}, {
		name:   "split brain during a partition, healed in time",
		faults: []FaultRecord{fault(KindPartition, []int{0, 1, 2}, time.Second, 5*time.Second)},
		state: func(d time.Duration, i int) NodeSample {
			if i == 0 || (i == 1 && d > 2*time.Second && d < 7*time.Second) {
				return holding(ipA)
			}
			return holding()
		},
	}, {
		name:   "split brain outlasting the partition's check deadline",
		faults: []FaultRecord{fault(KindPartition, []int{0, 1, 2}, time.Second, 3*time.Second)},
		state: func(d time.Duration, i int) NodeSample {
			if i == 0 || (i == 1 && d > 2*time.Second && d < 9*time.Second) {
				return holding(ipA)
			}
			return holding()
		},
		want: []string{"double-owner 192.0.2.10"},
	}, {
		name: "no owner in steady state",
		state: func(d time.Duration, i int) NodeSample {
			if i == 0 && (d < 3*time.Second || d > 3300*time.Millisecond) {
				return holding(ipA)
			}
			return holding()
		},
		want: []string{"no-owner 192.0.2.10"},
	}, {
		name:   "no owner while the crashed holder is detected",
		faults: []FaultRecord{fault(KindCrash, []int{0}, 2*time.Second, 5*time.Second)},
		state: func(d time.Duration, i int) NodeSample {
			switch {
			case i == 0 && d >= 2*time.Second && d < 5*time.Second:
				return NodeSample{Held: []netip.Addr{ipA}, Goroutines: -1} // dead agent, stale IP
			case i == 0 && d >= 5*time.Second:
				return holding(ipA)
			case i == 1 && d >= 3*time.Second && d < 6*time.Second:
				return holding(ipA)
			}
			return holding()
		},
	}, {
		name:   "no owner long after the fault settled",
		faults: []FaultRecord{fault(KindCut, []int{0}, time.Second, 2*time.Second)},
		state: func(d time.Duration, i int) NodeSample {
			if i == 0 && (d < time.Second || d > 9*time.Second) {
				return holding(ipA)
			}
			return holding()
		},
		want: []string{"no-owner 192.0.2.10"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Analyze(baseInput(synth(3, 10*time.Second, tc.state), tc.faults))
			if diff := cmp.Diff(tc.want, violations(r)); diff != "" {
				t.Errorf("violations (-want +got):\n%s\n%s", diff, r.Text())
			}
		})
	}
}

func TestAnalyzeMoves(t *testing.T) {
	// node0 (home) -> node1 during a loss fault on node0: a false
	// failover; node1 -> node0 afterwards: a failback.
	faults := []FaultRecord{fault(KindLoss, []int{0}, time.Second, 4*time.Second)}
	state := func(d time.Duration, i int) NodeSample {
		switch {
		case i == 0 && (d < 2*time.Second || d >= 6*time.Second):
			return holding(ipA)
		case i == 1 && d >= 2*time.Second && d < 6500*time.Millisecond:
			return holding(ipA)
		}
		return holding()
	}
	r := Analyze(baseInput(synth(3, 10*time.Second, state), faults))
	if len(r.FalseFailovers) != 1 || r.FalseFailovers[0].To != 1 || r.Failbacks != 1 {
		t.Errorf("false failovers %+v, failbacks %d; want one false failover to node1 and one failback\n%s", r.FalseFailovers, r.Failbacks, r.Text())
	}
	// The same move during a crash of node0 is a failover.
	faults = []FaultRecord{fault(KindCrash, []int{0}, time.Second, 4*time.Second)}
	r = Analyze(baseInput(synth(3, 10*time.Second, state), faults))
	if len(r.FalseFailovers) != 0 || r.Failovers != 1 {
		t.Errorf("false failovers %+v, failovers %d; want 0 and 1", r.FalseFailovers, r.Failovers)
	}
}

func TestAnalyzeMultiHosted(t *testing.T) {
	plan, err := allocate.Compile(allocate.Group{Name: "mh", Mode: allocate.Multi, Members: []allocate.Member{
		{Name: "node0", Slot: 0}, {Name: "node1", Slot: 1}, {Name: "node2", Slot: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	g := MultiGroup{Name: "mh", Plan: plan, Slots: plan.Slots()}
	shares := func(alive ...string) map[string]map[string]int {
		return map[string]map[string]int{"mh": plan.Allocate(allocate.AliveOf(alive...)).Shares}
	}
	tests := []struct {
		name  string
		state func(d time.Duration, i int) NodeSample
		want  []string
	}{{
		name: "agreeing views partition the buckets",
		state: func(d time.Duration, i int) NodeSample {
			s := holding()
			s.XDP.Attached, s.Shares = true, shares("node0", "node1", "node2")
			return s
		},
	}, {
		name: "node2 misses node1 for 3 s: buckets owned twice",
		state: func(d time.Duration, i int) NodeSample {
			s := holding()
			s.XDP.Attached, s.Shares = true, shares("node0", "node1", "node2")
			if i == 2 && d > 2*time.Second && d < 5*time.Second {
				s.Shares = shares("node0", "node2")
			}
			return s
		},
		want: []string{"double-owner group mh"},
	}, {
		name: "node1 without XDP: its buckets have no owner",
		state: func(d time.Duration, i int) NodeSample {
			s := holding()
			s.XDP.Attached, s.Shares = i != 1 || d < 2*time.Second, shares("node0", "node1", "node2")
			return s
		},
		want: []string{"no-owner group mh"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(synth(3, 10*time.Second, tc.state), nil)
			in.Home, in.Multi = nil, []MultiGroup{g}
			r := Analyze(in)
			if diff := cmp.Diff(tc.want, violations(r)); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAnalyzeAgents(t *testing.T) {
	steady := func(d time.Duration, i int) NodeSample {
		s := holding()
		if i == 0 {
			s = holding(ipA)
		}
		s.CfgVer, s.CfgHash = 2, "aa"
		return s
	}
	tests := []struct {
		name  string
		state func(d time.Duration, i int) NodeSample
		edit  func(*Input)
		want  []string
	}{{
		name:  "clean",
		state: steady,
	}, {
		name:  "agent exited on its own",
		state: steady,
		edit:  func(in *Input) { in.Exits = []Exit{{Node: 1, Time: t0.Add(time.Second), Err: "exit status 2"}} },
		want:  []string{"agent on node1 exited on its own: exit status 2\n"},
	}, {
		name:  "fd leak",
		state: steady,
		edit: func(in *Input) {
			in.FDSlack = 5
			in.Baseline = map[int]Resources{0: {FDs: 30}, 1: {FDs: 30}}
			in.Final = map[int]Resources{0: {FDs: 33}, 1: {FDs: 60}}
		},
		want: []string{"node1 agent holds 60 file descriptors after the run, 30 at the start (slack 5): leak"},
	}, {
		name: "goroutine leak",
		state: func(d time.Duration, i int) NodeSample {
			s := steady(d, i)
			s.Goroutines = 40 // within 2x + 50 of the first sample
			if i == 2 {
				s.Goroutines = 40 + int(d/time.Second)*20 // 240 at the end
			}
			return s
		},
		want: []string{"node2 agent runs 240 goroutines after the run, 40 at the start: leak"},
	}, {
		name: "config version goes back after a restart",
		state: func(d time.Duration, i int) NodeSample {
			s := steady(d, i)
			if i == 2 && d > 5*time.Second {
				s.CfgVer, s.CfgHash = 1, "bb"
			}
			return s
		},
		want: []string{"config version on node2 went back from 2 to 1", "config version 2 accepted earlier is lost on node2 (holds 1)"},
	}, {
		name:  "no convergence",
		state: steady,
		edit:  func(in *Input) { in.Converged, in.ConvergeErr = false, "node1: view [node1]" },
		want:  []string{"cluster did not converge after the last fault: node1: view [node1]"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput(synth(3, 10*time.Second, tc.state), nil)
			if tc.edit != nil {
				tc.edit(&in)
			}
			r := Analyze(in)
			if diff := cmp.Diff(tc.want, violations(r)); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnavailability(t *testing.T) {
	samples := synth(3, 10*time.Second, func(d time.Duration, i int) NodeSample {
		if i == 0 {
			return holding(ipA)
		}
		return holding()
	})
	in := baseInput(samples, []FaultRecord{fault(KindCut, []int{0}, 2*time.Second, 4*time.Second)})
	in.Faults[0].End = t0.Add(9 * time.Second)
	res := &harness.Result{Started: t0, Stopped: t0.Add(10 * time.Second)}
	for d := time.Duration(0); d < 10*time.Second; d += in.ProbeInterval {
		ok := d < 2500*time.Millisecond || d >= 3400*time.Millisecond // 900 ms out
		res.Attempts = append(res.Attempts, harness.Attempt{Start: t0.Add(d), End: t0.Add(d + time.Millisecond), OK: ok})
	}
	in.Probes = map[netip.Addr]*harness.Result{ipA: res}
	r := Analyze(in)
	got := r.Faults[0].Unavailable[ipA]
	if got < 870*time.Millisecond || got > 930*time.Millisecond {
		t.Errorf("unavailable = %v, want ~900ms", got)
	}
	if len(r.Kinds) != 1 || r.Kinds[0].Interruptions != 1 {
		t.Errorf("kind stats %+v, want one cut interruption", r.Kinds)
	}
}

func TestScheduleReproducible(t *testing.T) {
	draw := func(seed uint64) []string {
		s := NewSchedule(seed, AllKinds, 5, Limits{Interval: 500 * time.Millisecond})
		var out []string
		for range 40 {
			out = append(out, s.Next().String())
		}
		return out
	}
	a, b := draw(7), draw(7)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different schedules (-first +second):\n%s", diff)
	}
	if cmp.Equal(a, draw(8)) {
		t.Errorf("seeds 7 and 8 drew the same schedule")
	}
	seen := map[Kind]bool{}
	s := NewSchedule(7, AllKinds, 5, Limits{Interval: 500 * time.Millisecond})
	for range 200 {
		sp := s.Next()
		seen[sp.Kind] = true
		for _, n := range sp.Targets() {
			if n < 0 || n >= 5 {
				t.Fatalf("%s targets node %d", sp, n)
			}
		}
		switch sp.Kind {
		case KindStop:
			// Must resume before the peers' probe window closes.
			if sp.Hold+500*time.Millisecond >= Floor(500*time.Millisecond) {
				t.Errorf("%s: stop too long for the detection floor", sp)
			}
		case KindLoss:
			if sp.Percent < 5 || sp.Percent > 30 {
				t.Errorf("%s: loss outside 5..30%%", sp)
			}
		case KindPartition:
			if len(sp.Nodes) == 0 || len(sp.Other) == 0 || len(sp.Nodes)+len(sp.Other) != 5 {
				t.Errorf("%s: bad sides", sp)
			}
		}
	}
	if len(seen) != len(AllKinds) {
		t.Errorf("200 draws used kinds %v, want all %d", seen, len(AllKinds))
	}
}

func TestParseKinds(t *testing.T) {
	got, err := ParseKinds("crash, cut,crash")
	if err != nil || !cmp.Equal(got, []Kind{KindCrash, KindCut}) {
		t.Errorf("ParseKinds = %v, %v", got, err)
	}
	if _, err := ParseKinds("crash,meteor"); err == nil {
		t.Errorf("ParseKinds(meteor) accepted")
	}
}
