// Command benchdetect measures Shoal's failure detection with real agents
// in network namespaces: 4 nodes on one bridge (memberlist's own suspicion
// timeout would be 24 s at this size, so only Shoal's heartbeat detector
// can be fast), heartbeat interval 500 ms.
//
// Each trial crashes one node (victims rotate) at a random moment: its
// switch port is cut and its agent SIGKILLed (a dead machine). The crash
// instant is taken right after the port went down. The detection time is
// from the crash until EVERY survivor's view excludes the victim, read from
// the survivors' JSON logs ("view changed" lines carry the agent's own
// nanosecond timestamp, taken when the view is computed, on the same clock).
// The admin API is polled every 10 ms as a cross-check (an upper bound).
// Between trials the node comes back (port up, agent restarted) and the
// next trial waits for a full view on all four.
//
// Then a false-removal run: 5 % random loss on every port (so ~10 % of
// heartbeats, which cross two ports, are lost) for a bounded time; any view
// change that removes a member counts as a false removal.
//
//	make bench-detect        # or: go run ./test/cmd/benchdetect -shoal bin/shoal
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

const prefix = "shbd-"

type flags struct {
	shoal    string
	nodes    int
	trials   int
	interval time.Duration
	loss     int
	lossFor  time.Duration
	keep     bool
	verbose  bool
	strict   bool
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("benchdetect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.shoal, "shoal", "bin/shoal", "shoal binary (built by `make build`)")
	fs.IntVar(&f.nodes, "nodes", 4, "cluster size (3..8)")
	fs.IntVar(&f.trials, "trials", 20, "crash trials (>= 1)")
	fs.DurationVar(&f.interval, "interval", 500*time.Millisecond, "heartbeat_interval")
	fs.IntVar(&f.loss, "loss", 5, "random loss percent per port in the false-removal run (0 skips it)")
	fs.DurationVar(&f.lossFor, "loss-for", 60*time.Second, "length of the false-removal run")
	fs.BoolVar(&f.keep, "keep", false, "keep the run directory (configs, agent logs)")
	fs.BoolVar(&f.verbose, "v", false, "print every trial's per-survivor times")
	fs.BoolVar(&f.strict, "strict", false, "exit 1 when a goal is missed")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case f.nodes < 3 || f.nodes > 8:
		return nil, fmt.Errorf("-nodes %d outside 3..8", f.nodes)
	case f.trials < 1:
		return nil, fmt.Errorf("-trials %d below 1", f.trials)
	case f.loss < 0 || f.loss > 50:
		return nil, fmt.Errorf("-loss %d outside 0..50", f.loss)
	case f.lossFor > 10*time.Minute:
		return nil, fmt.Errorf("-loss-for %v above 10m", f.lossFor)
	}
	return f, nil
}

func main() {
	f, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchdetect: %v\n", err)
		os.Exit(2)
	}
	missed, err := run(f, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchdetect: %v\n", err)
		os.Exit(1)
	}
	if missed && f.strict {
		os.Exit(1)
	}
}

// trial is one crash measurement.
type trial struct {
	victim  int
	crash   time.Time
	first   time.Duration         // first survivor's view without the victim (log)
	all     time.Duration         // every survivor's (log)
	polled  time.Duration         // every survivor's, by polling the admin API
	per     map[int]time.Duration // survivor -> its view change (log)
	reasons map[int]string        // survivor -> why it declared the victim down
}

func run(f *flags, out io.Writer) (bool, error) {
	if os.Geteuid() != 0 {
		return false, errors.New("needs root: creates network namespaces and runs agents in them")
	}
	if _, err := harness.CleanupStale(prefix); err != nil {
		fmt.Fprintf(out, "warning: cleanup of stale namespaces: %v\n", err)
	}
	perTrial := f.interval + 2*time.Second
	est := time.Duration(f.trials)*perTrial + f.lossFor + 10*time.Second
	fmt.Fprintf(out, "benchdetect: %d nodes, heartbeat %v, %d crash trials, then %v at %d%% loss per port; estimated %v\n",
		f.nodes, f.interval, f.trials, f.lossFor, f.loss, est.Round(10*time.Second))
	ips := make([]netip.Addr, f.nodes)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, err := e2ekit.New(ctx, e2ekit.Options{
		Prefix: prefix, Nodes: f.nodes, Binary: f.shoal, KeepDir: f.keep,
		Shoal: shoalrun.Options{ClusterName: "benchdetect", HeartbeatInterval: f.interval.String(),
			Groups: []shoalrun.Group{{Name: "bd", IPs: ips}}},
	})
	cancel()
	if err != nil {
		return false, err
	}
	stop := c.Net.CloseOnSignal()
	defer func() {
		stop()
		if f.keep {
			fmt.Fprintf(out, "kept %s\n", c.Net.Dir())
		}
		_ = c.Close()
	}()
	all := c.Agents()
	if err := waitView(c, all); err != nil {
		return false, err
	}

	var trials []trial
	for k := range f.trials {
		victim := k % f.nodes
		tr, err := crashTrial(c, all, victim, f.interval)
		if err != nil {
			var b strings.Builder
			c.DumpLogs(&b, 4000)
			return false, fmt.Errorf("trial %d (crash %s): %w\n%s", k+1, harness.NodeName(victim), err, b.String())
		}
		trials = append(trials, tr)
		if f.verbose {
			var per []string
			for _, s := range e2ekit.Except(all, victim) {
				per = append(per, fmt.Sprintf("%s %v (%s)", harness.NodeName(s), ms(tr.per[s]), tr.reasons[s]))
			}
			fmt.Fprintf(out, "trial %2d: crash %s: all %v, first %v, polled %v; %s\n", k+1, harness.NodeName(victim), ms(tr.all), ms(tr.first), ms(tr.polled), strings.Join(per, ", "))
		} else {
			fmt.Fprintf(out, "trial %2d: crash %s: every survivor's view excluded it after %v\n", k+1, harness.NodeName(victim), ms(tr.all))
		}
		if err := restore(c, all, victim); err != nil {
			return false, fmt.Errorf("trial %d: restore %s: %w", k+1, harness.NodeName(victim), err)
		}
	}
	missed := report(out, f, trials)

	if f.loss > 0 && f.lossFor > 0 {
		removals, polls, err := lossRun(c, all, f.loss, f.lossFor, out)
		if err != nil {
			return missed, err
		}
		verdict := "goal 0: met"
		if removals > 0 {
			verdict = "goal 0: MISSED"
			missed = true
		}
		fmt.Fprintf(out, "\nfalse removals under %d%% loss per port for %v: %d (%d view polls of %d nodes; %s)\n", f.loss, f.lossFor, removals, polls, len(all), verdict)
	}
	return missed, nil
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func waitView(c *e2ekit.Cluster, all []int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.WaitView(ctx, all, all)
}

// crashTrial crashes victim at a random moment and measures detection.
func crashTrial(c *e2ekit.Cluster, all []int, victim int, interval time.Duration) (trial, error) {
	survivors := e2ekit.Except(all, victim)
	// A random phase relative to the victim's heartbeats.
	time.Sleep(time.Duration(rand.Int64N(int64(interval))))
	if err := c.Net.CutPort(victim); err != nil {
		return trial{}, err
	}
	tr := trial{victim: victim, crash: time.Now(), per: map[int]time.Duration{}, reasons: map[int]string{}}
	if err := c.Kill(victim); err != nil {
		return tr, err
	}
	// Poll every survivor's admin API until all views exclude the victim.
	name := harness.NodeName(victim)
	deadline := time.Now().Add(15 * time.Second)
	for {
		sts, err := c.Statuses(survivors)
		if err == nil {
			done := true
			for _, st := range sts {
				if slices.Contains(st.View.Up, name) {
					done = false
				}
			}
			if done {
				tr.polled = time.Since(tr.crash)
				break
			}
		}
		if time.Now().After(deadline) {
			return tr, fmt.Errorf("survivors still see %s after 15 s (last error %v)", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The precise figure: the survivors' own log timestamps.
	for _, s := range survivors {
		es, err := c.LogEntries(s)
		if err != nil {
			return tr, err
		}
		found := false
		for _, e := range es {
			if !e.Time.After(tr.crash) {
				continue
			}
			if e.Message == "member declared down" && e.Member == name && tr.reasons[s] == "" {
				tr.reasons[s] = e.Reason
			}
			if !found && e.Message == "view changed" && !slices.Contains(e.Up, name) {
				tr.per[s] = e.Time.Sub(tr.crash)
				found = true
			}
		}
		if !found {
			return tr, fmt.Errorf("%s's log has no view change without %s after the crash", harness.NodeName(s), name)
		}
	}
	tr.first = time.Duration(math.MaxInt64)
	for _, d := range tr.per {
		tr.first = min(tr.first, d)
		tr.all = max(tr.all, d)
	}
	return tr, nil
}

// restore brings the victim back as after a reboot (its kernel forgot the
// traffic IPs, port up, agent restarted) and waits for a full view.
func restore(c *e2ekit.Cluster, all []int, victim int) error {
	addrs, err := c.Net.Addrs(victim)
	if err != nil {
		return err
	}
	own := c.Net.NodeAddr4(victim).Addr()
	for _, p := range addrs {
		if p.Addr().Is4() && p.Addr() != own {
			if err := c.Net.DelAddr(victim, p.Addr()); err != nil {
				return err
			}
		}
	}
	if err := c.Net.RestorePort(victim); err != nil {
		return err
	}
	if err := c.StartAgent(victim); err != nil {
		return err
	}
	if err := waitView(c, all); err != nil {
		return err
	}
	// Let the new agent's heartbeats settle before the next crash.
	time.Sleep(time.Second)
	return nil
}

// percentile returns the nearest-rank percentile p (0..100) of sorted ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(ds)))) - 1
	return ds[max(0, min(k, len(ds)-1))]
}

func report(out io.Writer, f *flags, trials []trial) (missed bool) {
	col := func(get func(trial) time.Duration) []time.Duration {
		var ds []time.Duration
		for _, t := range trials {
			ds = append(ds, get(t))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds
	}
	mean := func(ds []time.Duration) time.Duration {
		var s time.Duration
		for _, d := range ds {
			s += d
		}
		return s / time.Duration(len(ds))
	}
	reasons := map[string]int{}
	for _, t := range trials {
		for _, r := range t.reasons {
			if strings.HasPrefix(r, "verdict from") {
				r = "verdict from a peer"
			}
			reasons[r]++
		}
	}
	I := f.interval
	suspect := I*3/2 + I/20 // gossip/config.go newTimings
	window := I * 2 / 5
	tick := max(I/20, time.Millisecond)
	fmt.Fprintf(out, "\nDetection: crash (port cut + SIGKILL) -> view without the node, %d nodes, heartbeat %v, n = %d\n", f.nodes, I, len(trials))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tp50\tp99\tmax\tmean\tn")
	for _, row := range []struct {
		name string
		ds   []time.Duration
	}{
		{"every survivor (logs)", col(func(t trial) time.Duration { return t.all })},
		{"first survivor (logs)", col(func(t trial) time.Duration { return t.first })},
		{"every survivor (API poll, 10 ms)", col(func(t trial) time.Duration { return t.polled })},
	} {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", row.name, ms(percentile(row.ds, 50)), ms(percentile(row.ds, 99)), ms(row.ds[len(row.ds)-1]), ms(mean(row.ds)), len(row.ds))
	}
	_ = tw.Flush()
	var rs []string
	for r, k := range reasons {
		rs = append(rs, fmt.Sprintf("%s: %d", r, k))
	}
	sort.Strings(rs)
	fmt.Fprintf(out, "how survivors decided: %s\n", strings.Join(rs, ", "))
	all := col(func(t trial) time.Duration { return t.all })
	p50, p99 := percentile(all, 50), percentile(all, 99)
	fmt.Fprintf(out, "theoretical floor: suspicion after %v of silence (1.5 intervals + 5%% margin), then a %v probe window;\n"+
		"  a crash at a uniform phase after the last heartbeat gives %v .. %v (median %v), plus up to 2 detector ticks (%v each)\n",
		suspect, window, suspect+window-I, suspect+window, suspect+window-I/2, tick)
	goal := func(name string, got, want time.Duration) {
		v := "met"
		if got > want {
			v = "MISSED"
			missed = true
		}
		fmt.Fprintf(out, "goal %s <= %v: %v (%s)\n", name, want, ms(got), v)
	}
	goal("p50", p50, 900*time.Millisecond)
	goal("p99", p99, 1200*time.Millisecond)
	if len(all) < 100 {
		fmt.Fprintf(out, "(nearest-rank percentiles: with n = %d, p99 is the maximum)\n", len(all))
	}
	return missed
}

// lossRun applies loss on every port for d and counts false removals: view
// changes (in any node's log) that drop a member, and polls where a node's
// view lacks a member.
func lossRun(c *e2ekit.Cluster, all []int, percent int, d time.Duration, out io.Writer) (removals, polls int, err error) {
	if err := waitView(c, all); err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(out, "\nfalse-removal run: %d%% loss on every port for %v ...\n", percent, d)
	start := time.Now()
	for _, i := range all {
		if err := c.Net.Loss(i, percent); err != nil {
			return 0, 0, err
		}
	}
	defer func() {
		for _, i := range all {
			_ = c.Net.ClearLoss(i)
		}
	}()
	before, err := c.Statuses(all)
	if err != nil {
		return 0, 0, err
	}
	want := e2ekit.Names(all)
	badPolls := 0
	for time.Since(start) < d {
		sts, err := c.Statuses(all)
		if err != nil {
			return 0, polls, err
		}
		polls++
		for _, st := range sts {
			if !slices.Equal(st.View.Up, want) {
				badPolls++
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	end := time.Now()
	after, err := c.Statuses(all)
	if err != nil {
		return 0, polls, err
	}
	var suspicions, viewChanges, stalls uint64
	for _, i := range all {
		suspicions += after[i].Heartbeats.Suspicions - before[i].Heartbeats.Suspicions
		viewChanges += after[i].Heartbeats.ViewChanges - before[i].Heartbeats.ViewChanges
		stalls += after[i].Heartbeats.Stalls - before[i].Heartbeats.Stalls
	}
	fmt.Fprintf(out, "  detector counters over the run (all nodes): %d suspicions (cleared by probes), %d view changes, %d own stalls forgiven\n", suspicions, viewChanges, stalls)
	for _, i := range all {
		es, err := c.LogEntries(i)
		if err != nil {
			return 0, polls, err
		}
		for _, e := range es {
			if e.Time.Before(start) || e.Time.After(end) {
				continue
			}
			switch e.Message {
			case "view changed":
				if len(e.Up) < len(all) {
					removals++
					fmt.Fprintf(out, "  %s at +%v: view changed to %v\n", harness.NodeName(i), e.Time.Sub(start).Round(time.Millisecond), e.Up)
				}
			case "member declared down":
				fmt.Fprintf(out, "  %s at +%v: declared %s down (%s)\n", harness.NodeName(i), e.Time.Sub(start).Round(time.Millisecond), e.Member, e.Reason)
			}
		}
	}
	if removals == 0 && (badPolls > 0 || viewChanges > 0) {
		removals = max(badPolls, int(viewChanges)) // seen by polling or counters only
	}
	return removals, polls, nil
}
