// Command benchfailover measures traffic-IP failover and failback gaps of
// keepalived (VRRPv3, advert_int 0.5) and of the Shoal agent on the same
// network-namespace topology: 3 nodes and a client on one bridge, one
// traffic IP held by one node, a crash simulated by cutting the holder's
// switch port, and a client probing TCP connect to IP:port every 5 ms.
// Trials of the two peers alternate. It needs root and prints a table of
// p50/p99/mean per peer, the Shoal/keepalived ratios and the goals.
//
//	make bench-failover            # or: go run ./test/cmd/benchfailover -trials 20
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
	"github.com/shoal-project/shoal/test/keepalived"
)

const prefix = "shb-"

type flags struct {
	trials        int
	peers         string
	shoalBin      string
	vip           string
	port          int
	interval      time.Duration
	timeout       time.Duration
	settle        time.Duration
	phaseTimeout  time.Duration
	failbackWait  time.Duration
	shoalStable   time.Duration
	maxTime       time.Duration
	advert        time.Duration
	jitter        time.Duration
	heartbeat     string
	monitorTO     string
	failbackDelay string
	out           string
	keep          bool
	verbose       bool
	strict        bool
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("benchfailover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.trials, "trials", 20, "trials per peer (>= 1)")
	fs.StringVar(&f.peers, "peers", "keepalived,shoal", "comma-separated peers to run: keepalived, shoal")
	fs.StringVar(&f.shoalBin, "shoal", "bin/shoal", "shoal binary (built by `make build`)")
	fs.StringVar(&f.vip, "vip", "192.0.2.10", "traffic IP")
	fs.IntVar(&f.port, "port", 8080, "TCP port the node servers listen on")
	fs.DurationVar(&f.interval, "interval", 5*time.Millisecond, "probe connect interval")
	fs.DurationVar(&f.timeout, "attempt-timeout", 500*time.Millisecond, "per-connect timeout (keep below 1s, the SYN retransmission time)")
	fs.DurationVar(&f.settle, "settle", time.Second, "steady traffic kept after failover before restoring the port, and after failback")
	fs.DurationVar(&f.phaseTimeout, "phase-timeout", 20*time.Second, "bound on startup, failover and keepalived failback")
	fs.DurationVar(&f.failbackWait, "shoal-failback-wait", 8*time.Second, "how long to wait for Shoal to move the IP back to the recovered node")
	fs.DurationVar(&f.shoalStable, "shoal-stable", 2*time.Second, "the IP must stay on one node this long before a Shoal trial starts")
	fs.DurationVar(&f.maxTime, "max-time", 15*time.Minute, "stop starting trials after this much time")
	fs.DurationVar(&f.jitter, "cut-jitter", 500*time.Millisecond, "random extra wait before the cut, so it falls at a random phase of the heartbeat/advert cycle")
	fs.DurationVar(&f.advert, "advert", 500*time.Millisecond, "keepalived advert_int")
	fs.StringVar(&f.heartbeat, "shoal-heartbeat", "500ms", "Shoal [cluster] heartbeat_interval (empty: agent default)")
	fs.StringVar(&f.monitorTO, "shoal-monitor-timeout", "", "Shoal [cluster] monitor_timeout (empty: agent default)")
	fs.StringVar(&f.failbackDelay, "shoal-failback-delay", "", "Shoal group failback_delay (empty: default)")
	fs.StringVar(&f.out, "out", "", "write every trial as JSON to this file")
	fs.BoolVar(&f.keep, "keep", false, "keep the run directory (configs and process logs)")
	fs.BoolVar(&f.verbose, "v", false, "print process log tails of failed trials")
	fs.BoolVar(&f.strict, "strict", false, "exit 1 when a goal is missed")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.trials < 1 {
		return nil, fmt.Errorf("-trials %d: need at least 1", f.trials)
	}
	if f.timeout >= time.Second {
		return nil, fmt.Errorf("-attempt-timeout %v: must be below 1s", f.timeout)
	}
	return f, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// trial is one failover + failback measurement.
type trial struct {
	Peer     string        `json:"peer"`
	Index    int           `json:"index"`
	Owner    int           `json:"owner"`       // node holding the IP before the cut
	Takeover string        `json:"takeover"`    // server answering first after the cut
	Failover time.Duration `json:"failover_ns"` // gap containing the cut
	// Failback is the longest interval without a successful connect
	// within switchWindow of the switch: the first connect answered by
	// Owner after the restore. The same window for every peer, so a peer
	// that takes longer to move the IP back is not charged for the probe
	// jitter of the longer wait (that is FailbackPhase).
	Failback time.Duration `json:"failback_ns"`
	// FailbackSwitch is the interruption at the switch itself: from the
	// last successful connect before the first one Owner answered to that
	// one. With make-before-break it is one probe interval.
	FailbackSwitch time.Duration `json:"failback_switch_ns"`
	// FailbackPhase is the longest interval without success from the
	// restore to the end of the trial (the pre-2026-11-22 measure).
	FailbackPhase time.Duration `json:"failback_phase_ns"`
	// FailbackFailed counts connects that failed from the restore on.
	FailbackFailed int `json:"failback_failed"`
	// Baseline is the longest interval without success in the
	// 2*switchWindow of steady traffic before the cut: the probe's jitter
	// floor.
	Baseline   time.Duration `json:"baseline_ns"`
	FailedBack bool          `json:"failed_back"` // the IP returned to Owner
	// AfterCut counts answers per server between the cut and the restore
	// (more than one server means the traffic IP flapped).
	AfterCut map[string]int `json:"after_cut"`
	Err      string         `json:"error,omitempty"`
}

// peer is one implementation under test.
type peer interface {
	Name() string
	// Start starts the daemons and returns the node holding the IP once
	// the cluster is settled.
	Start(ctx context.Context) (owner int, err error)
	// Exited reports daemons that died.
	Exited() error
	// Stop ends the daemons (fast; the harness cleans addresses after).
	Stop()
	// MustFailBack says a missing failback is an error (keepalived with
	// preemption) rather than a measured outcome.
	MustFailBack() bool
	// Logs returns log tails for diagnostics.
	Logs() string
}

type env struct {
	f   *flags
	n   *harness.Net
	vip netip.Addr
	out io.Writer
}

func run(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "benchfailover:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "benchfailover: needs root (network namespaces)")
		return 1
	}
	vip, err := netip.ParseAddr(f.vip)
	if err != nil {
		fmt.Fprintln(stderr, "benchfailover: -vip:", err)
		return 2
	}
	if removed, err := harness.CleanupStale(prefix); err != nil {
		fmt.Fprintln(stderr, "benchfailover: cleanup of stale namespaces:", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(stdout, "removed stale namespaces: %v\n", removed)
	}

	// The first interrupt ends the current trial and prints what was
	// measured; a second one tears down at once.
	ctx, stopNotify := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stopNotify()
	n, err := harness.New(ctx, harness.Options{Nodes: 3, Client: true, Prefix: prefix, KeepDir: f.keep})
	if err != nil {
		fmt.Fprintln(stderr, "benchfailover:", err)
		return 1
	}
	go func() {
		// Ends when ctx does (an interrupt, or stopNotify on return).
		<-ctx.Done()
		stopNotify()
		n.CloseOnSignal()
	}()
	defer func() {
		if err := n.Close(); err != nil {
			fmt.Fprintln(stderr, "benchfailover: teardown:", err)
		}
		if f.keep {
			fmt.Fprintf(stdout, "run directory kept: %s\n", n.Dir())
		}
	}()
	if _, err := n.ServeAll(f.port); err != nil {
		fmt.Fprintln(stderr, "benchfailover:", err)
		return 1
	}
	e := &env{f: f, n: n, vip: vip, out: stdout}

	// Preflight: a missing peer is reported by name and the other still runs.
	var peers []peer
	unavailable := map[string]string{}
	for _, name := range strings.Split(f.peers, ",") {
		switch strings.TrimSpace(name) {
		case "keepalived":
			if err := keepalived.Available(""); err != nil {
				unavailable["keepalived"] = err.Error()
				continue
			}
			peers = append(peers, &keepalivedPeer{e: e})
		case "shoal":
			if err := shoalrun.CheckBinary(f.shoalBin); err != nil {
				unavailable["shoal"] = err.Error()
				continue
			}
			peers = append(peers, &shoalPeer{e: e})
		case "":
		default:
			fmt.Fprintf(stderr, "benchfailover: unknown peer %q\n", name)
			return 2
		}
	}
	for name, why := range unavailable {
		fmt.Fprintf(stdout, "*** %s SIDE NOT RUN: %s\n", strings.ToUpper(name), why)
	}
	if len(peers) == 0 {
		fmt.Fprintln(stderr, "benchfailover: no peer can run")
		return 1
	}

	// Measured on a loaded 2-core machine: ~7.5 s per keepalived trial,
	// ~11 s per Shoal trial (startup hold plus -shoal-stable).
	var est time.Duration
	for _, p := range peers {
		per := 8 * time.Second
		if p.Name() == "shoal" {
			per = 12*time.Second + f.shoalStable - 2*time.Second
		}
		est += time.Duration(f.trials) * per
	}
	fmt.Fprintf(stdout, "topology %s: 3 nodes + client, traffic IP %s:%d, probe every %v\n", n.Name(), vip, f.port, f.interval)
	fmt.Fprintf(stdout, "running %d trials x %v, alternating; estimated %v (bounded by -max-time %v)\n",
		f.trials, peerNames(peers), est.Round(time.Second), f.maxTime)

	start := time.Now()
	var trials []trial
	failures := map[string]int{}
	disabled := map[string]string{}
	for i := 0; i < f.trials; i++ {
		order := append([]peer(nil), peers...)
		if i%2 == 1 {
			for a, b := 0, len(order)-1; a < b; a, b = a+1, b-1 {
				order[a], order[b] = order[b], order[a]
			}
		}
		for _, p := range order {
			if _, off := disabled[p.Name()]; off {
				continue
			}
			if ctx.Err() != nil {
				fmt.Fprintf(stdout, "interrupted: stopping after %d trials\n", len(trials))
				i = f.trials
				break
			}
			if time.Since(start) > f.maxTime {
				fmt.Fprintf(stdout, "-max-time %v reached: stopping after %d trials\n", f.maxTime, len(trials))
				i = f.trials
				break
			}
			t := e.runTrial(ctx, p, i)
			if ctx.Err() != nil {
				continue // interrupted mid-trial: not a measurement
			}
			trials = append(trials, t)
			printTrial(stdout, t)
			if t.Err != "" {
				failures[p.Name()]++
				if f.verbose {
					fmt.Fprintln(stdout, p.Logs())
				}
				if failures[p.Name()] >= 3 {
					disabled[p.Name()] = t.Err
					fmt.Fprintf(stdout, "*** %s SIDE FAILED (%d failed trials), last error: %s\n%s\n", strings.ToUpper(p.Name()), failures[p.Name()], t.Err, p.Logs())
				}
			} else {
				failures[p.Name()] = 0
			}
		}
	}
	fmt.Fprintf(stdout, "\n%d trials in %v\n\n", len(trials), time.Since(start).Round(time.Second))
	goalsMet := report(stdout, trials)
	for name, why := range unavailable {
		fmt.Fprintf(stdout, "*** %s SIDE NOT RUN: %s\n", strings.ToUpper(name), why)
	}
	for name, why := range disabled {
		fmt.Fprintf(stdout, "*** %s SIDE FAILED: %s\n", strings.ToUpper(name), firstLine(why))
	}
	if f.out != "" {
		data, _ := json.MarshalIndent(trials, "", "  ")
		if err := os.WriteFile(f.out, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintln(stderr, "benchfailover:", err)
			return 1
		}
		fmt.Fprintf(stdout, "trials written to %s\n", f.out)
	}
	if ctx.Err() != nil {
		return 130
	}
	if len(unavailable) > 0 || len(disabled) > 0 {
		return 1
	}
	if f.strict && !goalsMet {
		return 1
	}
	return 0
}

func peerNames(ps []peer) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Name())
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func printTrial(w io.Writer, t trial) {
	if t.Err != "" {
		fmt.Fprintf(w, "%-10s #%-3d FAILED: %s\n", t.Peer, t.Index, firstLine(t.Err))
		return
	}
	back := "moved back"
	if !t.FailedBack {
		back = "stayed"
	}
	flap := ""
	if len(t.AfterCut) > 1 {
		flap = fmt.Sprintf("  FLAP: answers after cut %v", t.AfterCut)
	}
	fmt.Fprintf(w, "%-10s #%-3d owner node%d -> %s  failover %7.3fs  failback %7.4fs (at the switch %.4fs, phase %.3fs, %d failed connects; %s)  baseline %.4fs%s\n",
		t.Peer, t.Index, t.Owner, t.Takeover, t.Failover.Seconds(), t.Failback.Seconds(), t.FailbackSwitch.Seconds(), t.FailbackPhase.Seconds(), t.FailbackFailed, back, t.Baseline.Seconds(), flap)
}

// reset returns the topology to a clean state between trials.
func (e *env) reset() error {
	var errs []error
	for i := range e.n.Nodes() {
		errs = append(errs, e.n.RestorePort(i), e.n.DelAddr(i, e.vip))
	}
	errs = append(errs, e.n.FlushClientNeigh())
	return errors.Join(errs...)
}

// switchWindow bounds the failback measure on each side of the switch.
const switchWindow = time.Second

// runTrial starts the peer, waits for steady traffic, cuts the holder's
// port, waits for traffic to resume, restores the port and waits for the
// failback, then computes the gaps from the probe record.
func (e *env) runTrial(ctx context.Context, p peer, idx int) (t trial) {
	t = trial{Peer: p.Name(), Index: idx, Owner: -1}
	fail := func(format string, a ...any) trial {
		t.Err = fmt.Sprintf(format, a...)
		return t
	}
	if err := e.reset(); err != nil {
		return fail("reset: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, e.f.phaseTimeout+e.f.shoalStable)
	owner, err := p.Start(sctx)
	cancel()
	defer p.Stop()
	if err != nil {
		return fail("start: %v", err)
	}
	t.Owner = owner

	probe, err := e.n.StartProbe(harness.ProbeOptions{
		Target: netip.AddrPortFrom(e.vip, uint16(e.f.port)), Interval: e.f.interval, Timeout: e.f.timeout,
		Duration: 2*e.f.phaseTimeout + e.f.failbackWait + 4*e.f.settle + 10*time.Second, ReadServer: true,
	})
	if err != nil {
		return fail("probe: %v", err)
	}
	defer probe.Stop()
	phase := func(what string, d time.Duration, cond func() (bool, error)) error {
		pctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return harness.Wait(pctx, what, func() (bool, error) {
			if err := p.Exited(); err != nil {
				return false, harness.Abort(err)
			}
			return cond()
		})
	}
	// Steady traffic first: settle/4 of answers without a 50 ms hole.
	warm := time.Now()
	if err := phase("steady traffic before the cut", e.f.phaseTimeout, func() (bool, error) {
		first, ok := probe.FirstSuccessAfter(warm)
		if !ok || time.Since(first) < max(e.f.settle/4, 2*switchWindow) { // long enough for the baseline
			return false, nil
		}
		now := time.Now()
		return probe.Result().LongestGapIn(now.Add(-e.f.settle/4), now).Duration < 50*time.Millisecond, nil
	}); err != nil {
		return fail("%v", err)
	}

	steady := time.Now()
	if e.f.jitter > 0 {
		j := time.Now().Add(rand.N(e.f.jitter))
		if err := phase("cut jitter", e.f.jitter+time.Second, func() (bool, error) { return !time.Now().Before(j), nil }); err != nil {
			return fail("%v", err)
		}
	}
	if err := e.n.CutPort(owner); err != nil {
		return fail("%v", err)
	}
	cut := time.Now()
	// Traffic is back when a connect *started* after the cut succeeds: one
	// started before may complete just after it (answered in flight by the
	// old owner) and would start the settle period too early.
	var resumed time.Time
	if err := phase("traffic after the cut", e.f.phaseTimeout, func() (bool, error) {
		for _, a := range probe.Result().Attempts {
			if a.OK && a.Start.After(cut) {
				resumed = a.End
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return fail("no failover: %v", err)
	}
	if err := phase("settle after failover", e.f.phaseTimeout, func() (bool, error) {
		return time.Since(resumed) >= e.f.settle, nil
	}); err != nil {
		return fail("%v", err)
	}

	if err := e.n.RestorePort(owner); err != nil {
		return fail("%v", err)
	}
	restore := time.Now()
	wait := e.f.failbackWait
	if p.MustFailBack() {
		wait = e.f.phaseTimeout
	}
	var back time.Time
	fbctx, cancel := context.WithTimeout(ctx, wait)
	err = harness.WaitEvery(fbctx, "failback", 100*time.Millisecond, func() (bool, error) {
		if err := p.Exited(); err != nil {
			return false, harness.Abort(err)
		}
		h, err := e.n.WhoHas(e.vip)
		return err == nil && len(h) == 1 && h[0] == owner, err
	})
	cancel()
	switch {
	case err == nil:
		t.FailedBack = true
		back = time.Now()
	case p.MustFailBack() || p.Exited() != nil:
		return fail("no failback: %v", err)
	default:
		back = time.Now()
	}
	if err := phase("steady traffic after failback", e.f.phaseTimeout, func() (bool, error) {
		first, ok := probe.FirstSuccessAfter(back)
		return ok && time.Since(first) >= e.f.settle, nil
	}); err != nil {
		return fail("%v", err)
	}
	r := probe.Stop()

	g := r.GapAt(cut)
	if g.Open {
		return fail("failover gap never closed")
	}
	t.Failover = g.Duration
	if a, ok := r.FirstSuccessAfter(cut); ok {
		t.Takeover = a.Server
	}
	t.Baseline = r.LongestGapIn(steady.Add(-2*switchWindow), steady).Duration
	t.FailbackPhase = r.LongestGapIn(restore, r.Stopped).Duration
	t.Failback = t.FailbackPhase
	var sw time.Time
	for _, a := range r.Attempts {
		if a.OK && a.Server == harness.NodeName(owner) && a.End.After(restore) && (sw.IsZero() || a.End.Before(sw)) {
			sw = a.End
		}
		if !a.OK && a.End.After(restore) {
			t.FailbackFailed++
			if os.Getenv("BENCH_DEBUG") != "" {
				fmt.Fprintf(os.Stderr, "failed connect %s: start +%v end +%v after restore: %s\n", t.Peer, a.Start.Sub(restore), a.End.Sub(restore), a.Err)
			}
		}
	}
	if os.Getenv("BENCH_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "%s cut at %.6f restore at %.6f, switch at +%v after restore\n", t.Peer, float64(cut.UnixNano())/1e9, float64(restore.UnixNano())/1e9, sw.Sub(restore))
	}
	if !sw.IsZero() {
		// Not before the restore: when the cut node kept the IP and
		// answers at once, sw-1s would reach back into the failover.
		from := sw.Add(-switchWindow)
		if from.Before(restore) {
			from = restore
		}
		g := r.LongestGapIn(from, sw.Add(switchWindow))
		t.Failback = g.Duration
		var before time.Time
		for _, a := range r.Attempts {
			if a.OK && a.End.Before(sw) && a.End.After(before) {
				before = a.End
			}
		}
		if !before.IsZero() {
			t.FailbackSwitch = sw.Sub(before)
		}
		if os.Getenv("BENCH_DEBUG") != "" {
			// Where the longest gap lies, and the slowest connects
			// around the switch.
			var slow []string
			for _, a := range r.Attempts {
				if a.OK && a.End.After(sw.Add(-20*time.Millisecond)) && a.End.Before(sw.Add(20*time.Millisecond)) {
					slow = append(slow, fmt.Sprintf("%+.1f:%.1fms:%s", float64(a.End.Sub(sw).Microseconds())/1000, float64(a.End.Sub(a.Start).Microseconds())/1000, a.Server))
				}
			}
			fmt.Fprintf(os.Stderr, "%s failback gap %.1fms at %+.1fms from switch (%s); connects ending within 20ms of the switch (end:duration:server) %v\n",
				t.Peer, float64(g.Duration.Microseconds())/1000, float64(g.Start.Sub(sw).Microseconds())/1000, g.Start.UTC().Format("15:04:05.000"), slow)
		}
		if os.Getenv("BENCH_DEBUG") != "" && g.Duration > 15*time.Millisecond {
			fmt.Fprintf(os.Stderr, "long failback gap %v from %.6f (switch %+v):\n", g.Duration, float64(g.Start.UnixNano())/1e9, g.Start.Sub(sw))
			for _, a := range r.Attempts {
				if a.End.After(g.Start.Add(-20*time.Millisecond)) && a.Start.Before(g.End.Add(20*time.Millisecond)) {
					fmt.Fprintf(os.Stderr, "  attempt start %+v end %+v ok %v server %q %s\n", a.Start.Sub(g.Start), a.End.Sub(g.Start), a.OK, a.Server, a.Err)
				}
			}
		}
	}
	t.AfterCut = map[string]int{}
	for _, a := range r.Attempts {
		if a.OK && a.End.After(cut) && a.End.Before(restore) {
			t.AfterCut[a.Server]++
		}
	}
	return t
}

// keepalivedPeer runs keepalived on nodes 0, 1, 2 (node0 highest priority).
type keepalivedPeer struct {
	e *env
	c *keepalived.Cluster
}

func (k *keepalivedPeer) Name() string       { return "keepalived" }
func (k *keepalivedPeer) MustFailBack() bool { return true }

func (k *keepalivedPeer) Start(ctx context.Context) (int, error) {
	// node1 takes over ~20 ms after the master-down interval (skew of
	// priority 240); node2 (140) waits ~200 ms longer, so the two backups
	// never race to master, which would let the client learn the wrong MAC.
	c, err := keepalived.Start(k.e.n, keepalived.Options{
		VIPs: []netip.Addr{k.e.vip}, AdvertInt: k.e.f.advert, Priorities: []int{250, 240, 140},
	}, []int{0, 1, 2})
	if err != nil {
		return -1, err
	}
	k.c = c
	if err := c.WaitMaster(ctx, 0); err != nil {
		return -1, err
	}
	return 0, nil
}

func (k *keepalivedPeer) Exited() error {
	if k.c == nil {
		return nil
	}
	return k.c.Exited()
}

func (k *keepalivedPeer) Stop() {
	if k.c != nil {
		_ = k.c.Kill()
		k.c = nil
	}
}

func (k *keepalivedPeer) Logs() string {
	return logTails(k.e.n, "keepalived")
}

// shoalPeer runs the Shoal agent on nodes 0, 1, 2 with one single-hosted
// group holding the traffic IP.
type shoalPeer struct {
	e *env
	c *shoalrun.Cluster
}

func (s *shoalPeer) Name() string       { return "shoal" }
func (s *shoalPeer) MustFailBack() bool { return false }

func (s *shoalPeer) Start(ctx context.Context) (int, error) {
	f := s.e.f
	c, err := shoalrun.Start(s.e.n, shoalrun.Options{
		Binary:            f.shoalBin,
		HeartbeatInterval: f.heartbeat,
		MonitorTimeout:    f.monitorTO,
		Groups: []shoalrun.Group{{
			Name: "bench", Mode: "single", IPs: []netip.Addr{s.e.vip}, FailbackDelay: f.failbackDelay,
		}},
	})
	if err != nil {
		return -1, err
	}
	s.c = c
	// The IP must sit on one node and stay there (a node that starts first
	// may hold it alone until it sees its peers).
	owner, since := -1, time.Time{}
	err = harness.WaitEvery(ctx, fmt.Sprintf("%s on one node for %v", s.e.vip, f.shoalStable), 100*time.Millisecond, func() (bool, error) {
		if err := c.Exited(); err != nil {
			return false, harness.Abort(err)
		}
		h, err := s.e.n.WhoHas(s.e.vip)
		if err != nil {
			return false, err
		}
		if len(h) != 1 {
			owner = -1
			return false, nil
		}
		if h[0] != owner {
			owner, since = h[0], time.Now()
		}
		return time.Since(since) >= f.shoalStable, nil
	})
	if err != nil {
		return -1, err
	}
	return owner, nil
}

func (s *shoalPeer) Exited() error {
	if s.c == nil {
		return nil
	}
	return s.c.Exited()
}

func (s *shoalPeer) Stop() {
	if s.c != nil {
		_ = s.c.Stop(2 * time.Second)
		s.c = nil
	}
}

func (s *shoalPeer) Logs() string { return logTails(s.e.n, "shoal") }

// logTails returns the last lines of the process logs whose name starts
// with prefix.
func logTails(n *harness.Net, prefix string) string {
	var b strings.Builder
	entries, _ := os.ReadDir(n.Dir())
	for _, ent := range entries {
		if strings.HasPrefix(ent.Name(), prefix) && strings.HasSuffix(ent.Name(), ".log") {
			data, _ := os.ReadFile(n.Dir() + "/" + ent.Name())
			fmt.Fprintf(&b, "--- %s (tail)\n%s\n", ent.Name(), shoalrun.Tail(string(data), 1500))
		}
	}
	return b.String()
}

// stats summarises durations.
type stats struct {
	n                    int
	p50, p99, mean, maxD time.Duration
}

func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	rank := func(p float64) time.Duration { // nearest rank
		k := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(0, min(k, len(s)-1))]
	}
	return stats{n: len(s), p50: rank(50), p99: rank(99), mean: sum / time.Duration(len(s)), maxD: s[len(s)-1]}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.4f", d.Seconds()) }

// report prints the table, ratios and goals; it returns whether every goal
// that could be evaluated was met (false when Shoal has no data).
func report(w io.Writer, trials []trial) bool {
	fo := map[string][]time.Duration{}
	fb := map[string][]time.Duration{}
	fbPhase := map[string][]time.Duration{}
	fbSwitch := map[string][]time.Duration{}
	base := map[string][]time.Duration{}
	fbFailed := map[string]int{}
	moved := map[string]int{}
	failed := map[string]int{}
	for _, t := range trials {
		if t.Err != "" {
			failed[t.Peer]++
			continue
		}
		fo[t.Peer] = append(fo[t.Peer], t.Failover)
		fb[t.Peer] = append(fb[t.Peer], t.Failback)
		fbPhase[t.Peer] = append(fbPhase[t.Peer], t.FailbackPhase)
		if t.FailbackSwitch > 0 {
			fbSwitch[t.Peer] = append(fbSwitch[t.Peer], t.FailbackSwitch)
		}
		base[t.Peer] = append(base[t.Peer], t.Baseline)
		fbFailed[t.Peer] += t.FailbackFailed
		if t.FailedBack {
			moved[t.Peer]++
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "peer\tmeasure\tn\tp50 s\tp99 s\tmean s\tmax s\tfailed trials\tIP moved back\t")
	sum := map[string][3]stats{}
	for _, peer := range []string{"keepalived", "shoal"} {
		if len(fo[peer]) == 0 && failed[peer] == 0 {
			continue
		}
		a, b, e := summarize(fo[peer]), summarize(fb[peer]), summarize(fbSwitch[peer])
		sum[peer] = [3]stats{a, b, e}
		fmt.Fprintf(tw, "%s\tfailover\t%d\t%s\t%s\t%s\t%s\t%d\t%d/%d\t\n", peer, a.n, secs(a.p50), secs(a.p99), secs(a.mean), secs(a.maxD), failed[peer], moved[peer], a.n)
		fmt.Fprintf(tw, "%s\tfailback (switch +-%s)\t%d\t%s\t%s\t%s\t%s\t\t\t\n", peer, switchWindow, b.n, secs(b.p50), secs(b.p99), secs(b.mean), secs(b.maxD))
		fmt.Fprintf(tw, "%s\tfailback at the switch\t%d\t%s\t%s\t%s\t%s\t\t\t\n", peer, e.n, secs(e.p50), secs(e.p99), secs(e.mean), secs(e.maxD))
		c, d := summarize(fbPhase[peer]), summarize(base[peer])
		fmt.Fprintf(tw, "%s\tfailback phase (%d failed connects)\t%d\t%s\t%s\t%s\t%s\t\t\t\n", peer, fbFailed[peer], c.n, secs(c.p50), secs(c.p99), secs(c.mean), secs(c.maxD))
		fmt.Fprintf(tw, "%s\tsteady baseline (%s)\t%d\t%s\t%s\t%s\t%s\t\t\t\n", peer, 2*switchWindow, d.n, secs(d.p50), secs(d.p99), secs(d.mean), secs(d.maxD))
	}
	tw.Flush()
	k, kok := sum["keepalived"]
	s, sok := sum["shoal"]
	ratio := func(a, b time.Duration) string {
		if b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", float64(a)/float64(b))
	}
	if kok && sok && k[0].n > 0 && s[0].n > 0 {
		fmt.Fprintf(w, "\nratio shoal/keepalived: failover p50 %s, mean %s; failback p50 %s, mean %s\n",
			ratio(s[0].p50, k[0].p50), ratio(s[0].mean, k[0].mean), ratio(s[1].p50, k[1].p50), ratio(s[1].mean, k[1].mean))
		fmt.Fprintf(w, "ratio shoal/keepalived at the switch: failback p50 %s, mean %s\n", ratio(s[2].p50, k[2].p50), ratio(s[2].mean, k[2].mean))
	}
	fmt.Fprintln(w, "\ngoals:")
	met := true
	goal := func(name string, ok, known bool, detail string) {
		status := "PASS"
		switch {
		case !known:
			status, met = "N/A ", false
		case !ok:
			status, met = "FAIL", false
		}
		fmt.Fprintf(w, "  [%s] %s (%s)\n", status, name, detail)
	}
	haveS := sok && s[0].n > 0
	haveK := kok && k[0].n > 0
	goal("Shoal failover p50 <= 1.0 s", haveS && s[0].p50 <= time.Second, haveS, "shoal p50 "+secs(s[0].p50)+" s")
	goal("Shoal failover p50 <= 0.65 x keepalived p50", haveS && haveK && float64(s[0].p50) <= 0.65*float64(k[0].p50), haveS && haveK,
		"ratio "+ratio(s[0].p50, k[0].p50))
	goal("Shoal failback gap p50 <= keepalived failback p50 (longest gap, switch +-1s)", haveS && haveK && s[1].p50 <= k[1].p50, haveS && haveK,
		"shoal "+secs(s[1].p50)+" s vs keepalived "+secs(k[1].p50)+" s")
	goal("Shoal failback gap p50 <= keepalived failback p50 (at the switch)", haveS && haveK && s[2].n > 0 && k[2].n > 0 && s[2].p50 <= k[2].p50, haveS && haveK,
		"shoal "+secs(s[2].p50)+" s vs keepalived "+secs(k[2].p50)+" s")
	return met
}
