package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Kind names a fault kind.
type Kind string

// Fault kinds.
const (
	KindCrash     Kind = "crash"       // SIGKILL the agent, restart it after Hold
	KindCut       Kind = "cut"         // switch port down for Hold
	KindPartition Kind = "partition"   // Nodes | Other cannot reach each other for Hold
	KindLoss      Kind = "loss"        // Percent% loss each way on a node's port for Hold
	KindFlap      Kind = "flap"        // port down/up cycles (Flaps)
	KindStop      Kind = "cpu-stop"    // SIGSTOP the agent for Hold, then SIGCONT
	KindQuota     Kind = "cpu-quota"   // cgroup CPU quota (Percent% of one CPU) for Hold
	KindConfig    Kind = "config-kill" // SIGKILL the agent Delay after a config apply started, restart after Hold
)

// AllKinds lists every fault kind in schedule order.
var AllKinds = []Kind{KindCrash, KindCut, KindPartition, KindLoss, KindFlap, KindStop, KindQuota, KindConfig}

// Disruptive reports whether a fault of kind k may legitimately move
// traffic IPs away from its targets (the others must not: any failover
// they cause is counted as false).
func (k Kind) Disruptive() bool {
	switch k {
	case KindCrash, KindCut, KindPartition, KindConfig:
		return true
	}
	return false
}

// ParseKinds parses a comma-separated list of kinds ("" or "all" = all).
func ParseKinds(s string) ([]Kind, error) {
	if s == "" || s == "all" {
		return slices.Clone(AllKinds), nil
	}
	var out []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		if !slices.Contains(AllKinds, k) {
			return nil, fmt.Errorf("unknown fault kind %q (kinds: %v)", k, AllKinds)
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// Spec is one drawn fault. Everything in it comes from the seeded random
// source, so the schedule is a pure function of the seed and the enabled
// kinds.
type Spec struct {
	Kind    Kind
	Nodes   []int // targets (partition: side A)
	Other   []int // partition: side B
	Hold    time.Duration
	Percent int             // loss and quota
	Flaps   []time.Duration // flap: down, up, down, up...
	Delay   time.Duration   // config-kill: kill this long after the apply started
	Gap     time.Duration   // quiet time after the check deadline before the next fault
}

func (s Spec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", s.Kind)
	switch s.Kind {
	case KindPartition:
		fmt.Fprintf(&b, " %v|%v", s.Nodes, s.Other)
	default:
		fmt.Fprintf(&b, " node%d", s.Nodes[0])
	}
	switch s.Kind {
	case KindLoss:
		fmt.Fprintf(&b, " %d%%", s.Percent)
	case KindQuota:
		fmt.Fprintf(&b, " %d%% cpu", s.Percent)
	case KindConfig:
		fmt.Fprintf(&b, " kill after %v", s.Delay.Round(time.Millisecond))
	case KindFlap:
		var parts []string
		for _, d := range s.Flaps {
			parts = append(parts, d.Round(time.Millisecond).String())
		}
		fmt.Fprintf(&b, " down/up %s", strings.Join(parts, "/"))
	}
	if s.Kind != KindFlap {
		fmt.Fprintf(&b, " for %v", s.Hold.Round(time.Millisecond))
	}
	return b.String()
}

// Targets are every node the fault acts on.
func (s Spec) Targets() []int { return append(slices.Clone(s.Nodes), s.Other...) }

// Limits bound the drawn parameters; they scale with the heartbeat
// interval where detection matters.
type Limits struct {
	Interval time.Duration // heartbeat interval
}

// Schedule draws fault specs from a seed.
type Schedule struct {
	r     *rand.Rand
	kinds []Kind
	nodes int
	lim   Limits
}

// NewSchedule returns the schedule of seed over kinds for nodes nodes.
func NewSchedule(seed uint64, kinds []Kind, nodes int, lim Limits) *Schedule {
	return &Schedule{r: rand.New(rand.NewPCG(seed, seed^0x5348_4f41_4c21)), kinds: kinds, nodes: nodes, lim: lim}
}

func (s *Schedule) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.r.Int64N(int64(hi-lo)+1))
}

// Next draws the next fault.
func (s *Schedule) Next() Spec {
	k := s.kinds[s.r.IntN(len(s.kinds))]
	sp := Spec{Kind: k, Nodes: []int{s.r.IntN(s.nodes)}}
	iv := s.lim.Interval
	switch k {
	case KindCrash, KindCut:
		sp.Hold = s.dur(2*time.Second, 6*time.Second)
	case KindPartition:
		perm := s.r.Perm(s.nodes)
		na := 1 + s.r.IntN(max(1, (s.nodes-1)/2))
		sp.Nodes, sp.Other = perm[:na], perm[na:]
		slices.Sort(sp.Nodes)
		slices.Sort(sp.Other)
		sp.Hold = s.dur(3*time.Second, 8*time.Second)
	case KindLoss:
		sp.Percent = 5 + s.r.IntN(26)
		sp.Hold = s.dur(4*time.Second, 10*time.Second)
	case KindFlap:
		// Each down period stays below the suspicion time minus one
		// interval (the last heartbeat may be an interval old), so a
		// flap must not cause a failover.
		n := 3 + s.r.IntN(4)
		for range n {
			sp.Flaps = append(sp.Flaps, s.dur(iv*3/10, iv*8/10), s.dur(iv*6/5, 3*iv))
		}
		for _, d := range sp.Flaps {
			sp.Hold += d
		}
	case KindStop:
		// Stopped for less than the detection time minus one interval:
		// the process resumes before its peers' probe window closes.
		sp.Hold = s.dur(iv*3/10, iv*8/10)
	case KindQuota:
		sp.Percent = 10
		sp.Hold = s.dur(3*time.Second, 8*time.Second)
	case KindConfig:
		sp.Delay = s.dur(0, 300*time.Millisecond)
		sp.Hold = s.dur(time.Second, 3*time.Second)
	}
	sp.Gap = s.dur(time.Second, 3*time.Second)
	return sp
}

// injector carries out faults on a running cluster.
type injector struct {
	r      *Run
	cg     *cpuCgroups
	config configApplier
}

// inject starts the fault and returns the heal function and the inject
// instant. For self-healing faults (flap, stop) inject blocks until done
// and heal is a no-op.
func (in *injector) inject(ctx context.Context, sp Spec) (time.Time, func() error, error) {
	n, a := in.r.net, in.r.agents
	node := sp.Nodes[0]
	noop := func() error { return nil }
	switch sp.Kind {
	case KindCrash:
		t := time.Now()
		if err := a.Kill(node); err != nil {
			return t, noop, err
		}
		return t, func() error { return a.Start(node) }, nil
	case KindCut:
		if err := n.CutPort(node); err != nil {
			return time.Now(), noop, err
		}
		return time.Now(), func() error { return n.RestorePort(node) }, nil
	case KindPartition:
		if err := n.Partition(sp.Nodes, sp.Other); err != nil {
			return time.Now(), noop, err
		}
		return time.Now(), n.Heal, nil
	case KindLoss:
		if err := n.Loss(node, sp.Percent); err != nil {
			return time.Now(), noop, err
		}
		return time.Now(), func() error { return n.ClearLoss(node) }, nil
	case KindFlap:
		t := time.Now()
		for i, d := range sp.Flaps {
			var err error
			if i%2 == 0 {
				err = n.CutPort(node)
			} else {
				err = n.RestorePort(node)
			}
			if err != nil {
				_ = n.RestorePort(node)
				return t, noop, err
			}
			if !sleepCtx(ctx, d) {
				_ = n.RestorePort(node)
				return t, noop, ctx.Err()
			}
		}
		return t, noop, n.RestorePort(node)
	case KindStop:
		t := time.Now()
		if err := a.Signal(node, syscall.SIGSTOP); err != nil {
			return t, noop, err
		}
		// Always resume, even on cancel: a stopped agent would never exit.
		time.Sleep(sp.Hold)
		return t, noop, a.Signal(node, syscall.SIGCONT)
	case KindQuota:
		pid := a.Pid(node)
		if pid == 0 {
			return time.Now(), noop, fmt.Errorf("cpu quota on node %d: agent not running", node)
		}
		undo, err := in.cg.limit(node, pid, sp.Percent)
		if err != nil {
			return time.Now(), noop, err
		}
		return time.Now(), undo, nil
	case KindConfig:
		if in.config == nil {
			return time.Now(), noop, fmt.Errorf("config-kill: the agent has no config apply")
		}
		t := time.Now()
		if err := in.config.start(ctx, node); err != nil {
			return t, noop, err
		}
		sleepCtx(ctx, sp.Delay)
		if err := a.Kill(node); err != nil {
			return t, noop, err
		}
		return t, func() error { return a.Start(node) }, nil
	}
	return time.Now(), noop, fmt.Errorf("unknown fault kind %q", sp.Kind)
}

// sleepCtx sleeps d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
