package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// Defaults of Options.
const (
	DefaultDuration      = 5 * time.Minute
	DefaultNodes         = 5
	DefaultInterval      = 500 * time.Millisecond
	DefaultProbeInterval = 30 * time.Millisecond
	DefaultSampleEvery   = 150 * time.Millisecond
	DefaultPrefix        = "shc-"
	// CheckWindow: invariants must hold this long after a fault settled
	// (the "within 2 s of each fault settling").
	CheckWindow = 2 * time.Second
	// DoubleBound is the longest double-owner window allowed outside any
	// fault: the make-before-break hand-off grace (appliance
	// DefaultHandoffGrace, 1 s) plus one heartbeat interval for the peers'
	// views to agree and the dataplane to reconcile, rounded up to 2 s.
	DoubleBound = 2 * time.Second
	// FDSlack is how many more FDs than at the start an agent may hold
	// after the run (transient gossip TCP connections).
	FDSlack = 12
	// MaxDuration keeps the probes under harness.MaxProbeDuration.
	MaxDuration = 12 * time.Minute
	servePort   = 8080
)

// Options configure a chaos run.
type Options struct {
	// Binary is the shoal executable (default "bin/shoal").
	Binary string
	// Seed fixes the fault schedule.
	Seed uint64
	// Duration of the fault phase (default 5 minutes, at most 12).
	Duration time.Duration
	// Nodes is the number of agents (default 5, at least 3).
	Nodes int
	// Kinds are the fault kinds to draw from (default all; kinds the
	// machine or the agent does not support are left out and reported).
	Kinds []Kind
	// Interval is the heartbeat interval written to the cluster config.
	Interval time.Duration
	// ProbeInterval between connection attempts per traffic IP.
	ProbeInterval time.Duration
	// SampleEvery is the oracle's polling period.
	SampleEvery time.Duration
	// Prefix names the namespaces (default "shc-").
	Prefix string
	// Log receives progress lines (default: discarded).
	Log io.Writer
	// KeepDir keeps the run directory (agent logs, configs).
	KeepDir bool
	// Command is recorded in the report.
	Command string
}

func (o *Options) defaults() error {
	if o.Binary == "" {
		o.Binary = "bin/shoal"
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Duration > MaxDuration {
		return fmt.Errorf("chaos: duration %v above %v", o.Duration, MaxDuration)
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Nodes < 3 || o.Nodes > 8 {
		return fmt.Errorf("chaos: %d nodes outside 3..8", o.Nodes)
	}
	if len(o.Kinds) == 0 {
		o.Kinds = slices.Clone(AllKinds)
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.SampleEvery == 0 {
		o.SampleEvery = DefaultSampleEvery
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// Floor is the detection floor for a heartbeat interval: a member that
// falls silent is suspected 1.55 I after its last heartbeat and declared
// down when the 0.4 I probe window closes, 1.95 I in all (docs/PROTOCOL.md,
// gossip's detector timings).
func Floor(interval time.Duration) time.Duration { return interval * 39 / 20 }

// Groups returns the traffic IP groups of a run on n nodes: a single-hosted
// group on every node (three IPv4 and one IPv6 address), a single-hosted
// group on the last three nodes with a passive member, and a multi-hosted
// group on every node.
func Groups(n int) []shoalrun.Group {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return []shoalrun.Group{
		{Name: "web", Mode: "single", Members: all, IPs: []netip.Addr{
			netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"),
			netip.MustParseAddr("192.0.2.12"), netip.MustParseAddr("2001:db8::10")}},
		{Name: "api", Mode: "single", Members: all[n-3:], Passive: all[n-1:], IPs: []netip.Addr{
			netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11")}},
		{Name: "mh", Mode: "multi", Members: all, IPs: []netip.Addr{netip.MustParseAddr("203.0.113.10")}},
	}
}

// Run is one chaos run in progress.
type Run struct {
	opts   Options
	net    *harness.Net
	agents *Agents
	cfg    *config.Cluster
	plans  []*allocate.Plan
	obs    *observer
	home   map[netip.Addr]int
	group  map[netip.Addr]string
	multi  []MultiGroup
	start  time.Time
}

func (r *Run) logf(format string, args ...any) {
	fmt.Fprintf(r.opts.Log, "[%7.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

// Execute performs a chaos run and returns its report. An error means the
// run could not be carried out (setup, cancel); invariant violations are
// in the report (Report.OK).
func Execute(ctx context.Context, opts Options) (rep *Report, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	r := &Run{opts: opts, start: time.Now(), home: map[netip.Addr]int{}, group: map[netip.Addr]string{}}
	if _, err := harness.CleanupStale(opts.Prefix); err != nil {
		r.logf("cleanup of stale namespaces: %v", err)
	}
	r.net, err = harness.New(ctx, harness.Options{Nodes: opts.Nodes, Client: true, Prefix: opts.Prefix, KeepDir: opts.KeepDir})
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	defer func() {
		if cerr := r.net.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("chaos: teardown: %w", cerr)
		}
	}()
	r.logf("topology %s in %s", r.net.Name(), r.net.Dir())
	// Every field RenderCluster reads is set explicitly: the config-kill
	// fault renders new versions from these options.
	var all []int
	for i := range opts.Nodes {
		all = append(all, i)
	}
	sopts := shoalrun.Options{Binary: opts.Binary, ClusterName: "chaos", Nodes: all, Groups: Groups(opts.Nodes),
		HeartbeatInterval: opts.Interval.String()}
	r.agents, err = NewAgents(r.net, sopts, nil)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	sopts.Binary = r.agents.bin
	defer func() { _ = r.agents.StopAll(2 * time.Second) }()
	if err := r.layout(); err != nil {
		return nil, err
	}

	inj := &injector{r: r}
	disabled := map[Kind]string{}
	kinds := slices.Clone(opts.Kinds)
	if slices.Contains(kinds, KindQuota) {
		if inj.cg, err = newCPUCgroups(r.net.Name()); err != nil {
			disabled[KindQuota] = err.Error()
		} else {
			defer inj.cg.cleanup()
		}
	}

	if _, err := r.net.ServeAll(servePort); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	for i := range opts.Nodes {
		if err := r.agents.Start(i); err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
	}
	r.obs, err = newObserver(r.agents, r.net, r.cfg, opts.SampleEvery)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	defer r.obs.close()
	octx, ostop := context.WithCancel(context.Background())
	odone := make(chan struct{})
	go func() { defer close(odone); r.obs.run(octx) }()
	stopObserver := func() {
		ostop()
		<-odone
	}
	defer stopObserver()

	from, err := r.waitConverged(ctx, 60*time.Second)
	if err != nil {
		return nil, fmt.Errorf("chaos: initial convergence: %w\n%s", err, r.logTails())
	}
	if slices.Contains(kinds, KindConfig) {
		if err := detectConfigApply(ctx, r.agents, 0); err != nil {
			disabled[KindConfig] = "agent has no config API: " + err.Error()
		} else {
			inj.config = &socketApplier{r: r, opts: sopts}
		}
	}
	kinds = slices.DeleteFunc(kinds, func(k Kind) bool { _, off := disabled[k]; return off })
	if len(kinds) == 0 {
		return nil, errors.New("chaos: no usable fault kind")
	}
	r.logf("cluster converged; probing %d traffic IPs every %v", len(r.group), opts.ProbeInterval)
	probes := map[netip.Addr]*harness.Probe{}
	for ip := range r.group {
		p, err := r.net.StartProbe(harness.ProbeOptions{Target: netip.AddrPortFrom(ip, servePort),
			Interval: opts.ProbeInterval, Duration: min(opts.Duration+3*time.Minute, harness.MaxProbeDuration)})
		if err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
		probes[ip] = p
	}
	if !sleepCtx(ctx, 2*time.Second) {
		return nil, ctx.Err()
	}
	baseline := r.resources(ctx)

	phaseStart := time.Now()
	deadline := phaseStart.Add(opts.Duration)
	sched := NewSchedule(opts.Seed, kinds, opts.Nodes, Limits{Interval: opts.Interval})
	floor := Floor(opts.Interval)
	var faults []FaultRecord
	for time.Now().Before(deadline) && ctx.Err() == nil {
		sp := sched.Next()
		if time.Now().Add(sp.Hold + floor + CheckWindow).After(deadline) {
			break // it would not settle within the phase
		}
		rec := r.runFault(ctx, inj, sp, floor)
		if len(faults) > 0 {
			faults[len(faults)-1].End = rec.Inject
		}
		faults = append(faults, rec)
		if rec.Err != "" {
			r.logf("fault %d %s: %s", len(faults), sp, rec.Err)
		}
		if !sleepUntil(ctx, rec.Check.Add(sp.Gap)) {
			break
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("chaos: %w", ctx.Err())
	}
	phaseEnd := time.Now()
	r.logf("fault phase over: %d faults; waiting for the final convergence", len(faults))
	convAt, convErr := r.waitConverged(ctx, 30*time.Second)
	if len(faults) > 0 {
		faults[len(faults)-1].End = time.Now()
	}
	// Let transient connections close before counting FDs.
	sleepCtx(ctx, 2*time.Second)
	final := r.resources(ctx)
	r.obs.collectEvents(ctx)
	stopObserver()
	results := map[netip.Addr]*harness.Result{}
	for ip, p := range probes {
		results[ip] = p.Stop()
	}
	in := Input{Nodes: opts.Nodes, Samples: r.obs.Samples(), Faults: faults, From: from, PhaseStart: phaseStart, PhaseEnd: phaseEnd,
		Home: r.home, Group: r.group, Multi: r.multi, Probes: results, ProbeInterval: opts.ProbeInterval,
		Floor: floor, CheckWindow: CheckWindow, DoubleBound: DoubleBound, Exits: r.agents.Exits(),
		Baseline: baseline, Final: final, FDSlack: FDSlack, Events: r.obs.Events(), Converged: convErr == nil}
	if convErr != nil {
		in.ConvergeErr = convErr.Error()
	} else {
		r.logf("converged %v after the fault phase", convAt.Sub(phaseEnd).Round(time.Millisecond))
	}
	rep = Analyze(in)
	rep.Seed, rep.Command, rep.Started, rep.Phase = opts.Seed, opts.Command, r.start, phaseEnd.Sub(phaseStart)
	rep.Nodes, rep.Interval, rep.Enabled, rep.Disabled = opts.Nodes, opts.Interval, kinds, disabled
	if !rep.OK() {
		rep.AgentLogs = r.logTails()
	}
	rep.Elapsed = time.Since(r.start)
	return rep, nil
}

// runFault injects one fault, holds it and heals it.
func (r *Run) runFault(ctx context.Context, inj *injector, sp Spec, floor time.Duration) FaultRecord {
	rec := FaultRecord{Spec: sp}
	r.logf("fault: %s", sp)
	t, heal, err := inj.inject(ctx, sp)
	rec.Inject = t
	if err != nil {
		rec.Err = err.Error()
	}
	switch sp.Kind {
	case KindFlap, KindStop:
		// Self-healing: inject returned after the last step.
	default:
		// Hold even when ctx ends (the heal must run).
		select {
		case <-ctx.Done():
		case <-time.After(sp.Hold):
		}
	}
	if herr := heal(); herr != nil {
		rec.Err = fmt.Sprint(rec.Err, " heal: ", herr)
	}
	rec.Heal = time.Now()
	rec.Settled = rec.Heal.Add(floor)
	rec.Check = rec.Settled.Add(CheckWindow)
	rec.End = rec.Check
	return rec
}

func sleepUntil(ctx context.Context, t time.Time) bool { return sleepCtx(ctx, time.Until(t)) }

// layout loads the generated cluster config and derives what the oracle
// needs: each single-hosted IP's home owner and the multi-hosted plans.
func (r *Run) layout() error {
	cfg, err := config.Load(r.agents.Files.Cluster)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	plans, err := appliance.AllocPlans(cfg)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	r.cfg, r.plans = cfg, plans
	all := allocate.Alive{}
	for i := range r.opts.Nodes {
		all[nodeName(i)] = true
	}
	for gi, g := range cfg.Groups {
		for _, ip := range g.IPs {
			r.group[ip] = g.Name
		}
		if g.Mode == config.ModeMulti {
			r.multi = append(r.multi, MultiGroup{Name: g.Name, Plan: plans[gi], Slots: plans[gi].Slots()})
			continue
		}
		owners := plans[gi].Owners(all)
		for k, ip := range g.IPs {
			var idx int
			if _, err := fmt.Sscanf(owners[k], "node%d", &idx); err != nil {
				return fmt.Errorf("chaos: owner %q of %s: %w", owners[k], ip, err)
			}
			r.home[ip] = idx
		}
	}
	return nil
}

// converged checks the settled state on one sample: every agent runs,
// is healthy and sees every node up with the same view and config; every
// single-hosted IP is on its home owner only; every node serves its share
// of each multi-hosted group with XDP attached.
func (r *Run) converged(s Sample) error {
	var digest, hash string
	for i, ns := range s.Nodes {
		switch {
		case !ns.Running:
			return fmt.Errorf("node%d: agent not running", i)
		case ns.NetErr:
			return fmt.Errorf("node%d: namespace unreadable", i)
		case !ns.Reached:
			return fmt.Errorf("node%d: status unreachable", i)
		case !ns.Healthy:
			return fmt.Errorf("node%d: self-tests failing", i)
		case len(ns.Up) != r.opts.Nodes:
			return fmt.Errorf("node%d: view %v", i, ns.Up)
		}
		if i == 0 {
			digest, hash = ns.Digest, ns.CfgHash
		} else if ns.Digest != digest {
			return fmt.Errorf("node%d: view digest %s, node0 %s", i, ns.Digest, digest)
		} else if ns.CfgHash != hash {
			return fmt.Errorf("node%d: config hash %s, node0 %s", i, ns.CfgHash, hash)
		}
		for _, g := range r.multi {
			if !ns.XDP.Attached {
				return fmt.Errorf("node%d: no XDP program", i)
			}
			if ns.Shares[g.Name][nodeName(i)] == 0 {
				return fmt.Errorf("node%d: owns no bucket of %s", i, g.Name)
			}
		}
	}
	for ip, home := range r.home {
		var holders []int
		for i, ns := range s.Nodes {
			if slices.Contains(ns.Held, ip) {
				holders = append(holders, i)
			}
		}
		if len(holders) != 1 || holders[0] != home {
			return fmt.Errorf("%s held by %v, home node%d", ip, holders, home)
		}
	}
	return nil
}

// waitConverged waits for a sample taken after the call that passes
// converged; it returns that sample's time.
func (r *Run) waitConverged(ctx context.Context, timeout time.Duration) (time.Time, error) {
	from := time.Now()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var at time.Time
	var last error
	err := harness.WaitEvery(wctx, "cluster convergence", r.opts.SampleEvery, func() (bool, error) {
		ss := r.obs.Samples()
		if len(ss) == 0 || ss[len(ss)-1].T.Before(from) {
			return false, nil
		}
		s := ss[len(ss)-1]
		if last = r.converged(s); last != nil {
			return false, nil
		}
		at = s.T
		return true, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("%w (last: %v)", err, last)
	}
	return at, nil
}

// resources reads each running agent's FD and thread counts, the
// minimum over a few reads (transient connections come and go).
func (r *Run) resources(ctx context.Context) map[int]Resources {
	out := map[int]Resources{}
	for k := range 5 {
		if k > 0 && !sleepCtx(ctx, 300*time.Millisecond) {
			break
		}
		for i := range r.opts.Nodes {
			pid := r.agents.Pid(i)
			if pid == 0 {
				continue
			}
			res, err := ProcResources(pid)
			if err != nil {
				continue
			}
			if old, ok := out[i]; ok {
				res.FDs, res.Threads = min(res.FDs, old.FDs), min(res.Threads, old.Threads)
			}
			out[i] = res
		}
	}
	return out
}

// logTails returns the end of every agent's log.
func (r *Run) logTails() string {
	var s string
	for i := range r.opts.Nodes {
		s += fmt.Sprintf("--- node%d ---\n%s\n", i, shoalrun.Tail(r.agents.Logs(i), 1500))
	}
	return s
}
