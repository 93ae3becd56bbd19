// Command demo shows Shoal keeping a traffic IP reachable: it builds a small
// LAN in network namespaces (a switch, three nodes, a client), starts the
// agent (bin/shoal) on each node with one group of three traffic IPs,
// prints `shoal status`, makes the client connect to one IP every 5 ms,
// crashes the node holding it, shows the IP moving and the client's gap,
// brings the node back and shows the failback. Everything it creates is
// removed at the end, also on Ctrl-C. Needs root. With -multi it shows a
// multi-hosted traffic IP instead (multi.go).
//
//	make demo        # builds bin/shoal, then: go run ./test/cmd/demo
//	make demo-multi  # go run ./test/cmd/demo -multi
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

const (
	prefix = "shdm-"
	port   = 8080
)

func main() {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	bin := fs.String("shoal", "bin/shoal", "shoal binary (built by `make build`)")
	keep := fs.Bool("keep", false, "keep the run directory (configs and agent logs) for a look afterwards")
	multi := fs.Bool("multi", false, "show a multi-hosted traffic IP instead (make demo-multi)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	demo := run
	if *multi {
		demo = runMulti
	}
	if err := demo(*bin, *keep, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

// say prints one step with the time since the demo started.
type say struct {
	w     io.Writer
	start time.Time
}

func (s say) f(format string, args ...any) {
	fmt.Fprintf(s.w, "[%5.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// lan is the demos' network and agents.
type lan struct {
	c    *e2ekit.Cluster
	s    say
	keep bool
	out  io.Writer
	stop func()
}

// startLAN checks the environment, builds the LAN (a switch, three nodes, a
// client) and starts the agents with groups; echo also starts the echo
// servers. The caller defers l.close(&err).
func startLAN(bin string, keep bool, out io.Writer, intro string, groups []shoalrun.Group, echo bool) (*lan, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (it creates network namespaces): run it with sudo")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w (run `make build` first, or `make demo`, which builds it)", err)
	}
	if _, err := harness.CleanupStale(prefix); err != nil {
		fmt.Fprintf(out, "note: could not remove namespaces of an earlier crashed demo: %v\n", err)
	}
	s := say{w: out, start: time.Now()}
	fmt.Fprintln(out, intro)
	s.f("building the LAN in network namespaces: a switch, node0..node2 (10.99.0.1-3), a client (10.99.0.100)")
	opts := e2ekit.Options{
		Prefix: prefix, Nodes: 3, Client: true, Binary: bin, ServePort: port, ConsoleLogs: true, KeepDir: keep,
		Shoal: shoalrun.Options{ClusterName: "demo", HeartbeatInterval: "500ms", Groups: groups},
	}
	if echo {
		opts.EchoPort = echoPort
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := e2ekit.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	// Ctrl-C tears everything down.
	return &lan{c: c, s: s, keep: keep, out: out, stop: c.Net.CloseOnSignal()}, nil
}

// crash cuts node i's switch port and kills its agent; it returns when the
// crash began.
func (l *lan) crash(i int) (time.Time, error) {
	l.s.f("CRASH %s: its switch port is cut and its agent gets SIGKILL", harness.NodeName(i))
	if err := l.c.Net.CutPort(i); err != nil {
		return time.Time{}, err
	}
	at := time.Now()
	return at, l.c.Kill(i)
}

// close tears the LAN down, printing the agents' logs when *err is set.
func (l *lan) close(err *error) {
	l.stop()
	if *err != nil {
		var b strings.Builder
		l.c.DumpLogs(&b, 2500)
		fmt.Fprint(l.out, b.String())
	}
	l.s.f("cleaning up (agents, namespaces, switch)")
	if l.keep {
		fmt.Fprintf(l.out, "kept configs and agent logs in %s\n", l.c.Net.Dir())
	}
	if cerr := l.c.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}

func run(bin string, keep bool, out io.Writer) (err error) {
	ips := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12")}
	target := ips[0]
	l, err := startLAN(bin, keep, out, "Shoal demo: three nodes keep three traffic IPs reachable for a client on the same LAN.",
		[]shoalrun.Group{{Name: "web", IPs: ips}}, false)
	if err != nil {
		return err
	}
	defer l.close(&err)
	c, s := l.c, l.s
	all := c.Agents()
	s.f("started `shoal agent` on node0, node1, node2 (each node also runs a tiny TCP server on :%d answering its name)", port)
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := c.WaitView(wctx, all, all); err != nil {
		return err
	}
	st, err := c.StatusAPI(0)
	if err != nil {
		return err
	}
	s.f("cluster formed: every node sees %s up (view epoch %d, digest %s)", strings.Join(st.View.Up, ","), st.View.Epoch, st.View.Digest)
	holders := map[netip.Addr]int{}
	for _, ip := range ips {
		h, err := c.WaitSingleHolderAmong(wctx, ip, all)
		if err != nil {
			return err
		}
		holders[ip] = h
	}
	text, err := c.StatusText(wctx, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ shoal status   (on node0)\n%s\n", indent(text))
	owner := holders[target]
	ap := netip.AddrPortFrom(target, port)

	p, err := c.Net.StartProbe(harness.ProbeOptions{Target: ap, Interval: 5 * time.Millisecond, Duration: 40 * time.Second, ReadServer: true})
	if err != nil {
		return err
	}
	s.f("client: TCP connect to %s every 5 ms", ap)
	probeStart := time.Now()
	if err := harness.Wait(wctx, "a second of steady client traffic", func() (bool, error) {
		return time.Since(probeStart) > 1500*time.Millisecond && p.SuccessesSince(time.Now().Add(-time.Second)) >= 50, nil
	}); err != nil {
		return err
	}
	recent := map[string]int{}
	since := time.Now().Add(-time.Second)
	for _, a := range p.Result().Attempts {
		if a.OK && a.End.After(since) {
			recent[a.Server]++
		}
	}
	s.f("client: connections answered in the last second: %s", byNode(recent))

	crash, err := l.crash(owner)
	if err != nil {
		return err
	}
	survivors := e2ekit.Except(all, owner)
	fctx, fcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer fcancel()
	var answered time.Time
	if err := harness.Wait(fctx, "the client answered again", func() (bool, error) {
		var ok bool
		answered, ok = p.FirstSuccessAfter(crash)
		return ok, nil
	}); err != nil {
		return err
	}
	newOwner, err := c.WaitSingleHolderAmong(fctx, target, survivors)
	if err != nil {
		return err
	}
	if err := c.WaitView(fctx, survivors, survivors); err != nil {
		return err
	}
	r := p.Result()
	gap := r.GapAt(crash)
	first, _ := r.FirstSuccessAfter(crash)
	s.f("%s moved to %s; the client is answered by %s again %v after the crash", target, harness.NodeName(newOwner), first.Server, ms(answered.Sub(crash)))
	s.f("client gap: %v without a successful connection (from its last answer by %s to its first by %s)", ms(gap.Duration), harness.NodeName(owner), first.Server)
	if st, err := c.StatusAPI(survivors[0]); err == nil {
		s.f("%s's view now: %s up (epoch %d)", harness.NodeName(survivors[0]), strings.Join(st.View.Up, ","), st.View.Epoch)
	}
	for _, ip := range ips {
		h, err := c.WaitSingleHolderAmong(fctx, ip, survivors)
		if err != nil {
			return err
		}
		s.f("  %s on %s", ip, harness.NodeName(h))
	}
	time.Sleep(time.Second)

	// Recovery: as after a reboot (the kernel forgot the addresses), port
	// up, agent started.
	s.f("RECOVER %s: reboot (its addresses are gone), switch port up, agent restarted", harness.NodeName(owner))
	for _, ip := range ips {
		if err := c.Net.DelAddr(owner, ip); err != nil {
			return err
		}
	}
	if err := c.Net.RestorePort(owner); err != nil {
		return err
	}
	back := time.Now()
	if err := c.StartAgent(owner); err != nil {
		return err
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer bcancel()
	if err := c.WaitView(bctx, all, all); err != nil {
		return err
	}
	if err := c.WaitHolders(bctx, target, []int{owner}); err != nil {
		return err
	}
	var home time.Time
	if err := harness.Wait(bctx, "the client answered by the recovered node", func() (bool, error) {
		for _, a := range p.Result().Attempts {
			if a.OK && a.Start.After(back) && a.Server == harness.NodeName(owner) {
				home = a.End
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	time.Sleep(time.Second)
	r = p.Stop()
	fb := r.LongestGapIn(back, time.Now())
	s.f("%s is back on %s (failback); the client reached it %v after the agent started", target, harness.NodeName(owner), ms(home.Sub(back)))
	s.f("client gap during failback: %v (the old holder keeps the IP until the new one has announced it)", ms(fb.Duration))
	okN, failN := r.Counts()
	inGap := 0
	for _, a := range r.Attempts {
		if !a.OK && !a.Start.Before(gap.Start.Add(-harness.DefaultProbeTimeout)) && !a.Start.After(gap.End) {
			inGap++
		}
	}
	s.f("client total: %d connections answered, %d failed (%d of them during the crash gap)", okN, failN, inGap)
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Summary: failover gap %v after a crash, failback gap %v.\n", ms(gap.Duration), ms(fb.Duration))
	return nil
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
