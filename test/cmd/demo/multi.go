package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

const echoPort = port + 1

// runMulti is `make demo-multi`: one multi-hosted IP served by three nodes
// at once. It shows the client's connections spread over the nodes, a
// crash moving only the dead node's share, and the node's return, during
// which the long-lived connections the survivors hold keep working, and
// the end of the handover once the survivors' connections there closed.
func runMulti(bin string, keep bool, out io.Writer) (err error) {
	vip := netip.MustParseAddr("192.0.2.20")
	short := netip.AddrPortFrom(vip, port)
	long := netip.AddrPortFrom(vip, echoPort)
	l, err := startLAN(bin, keep, out, "Shoal demo, multi-hosted: three nodes serve one traffic IP at once, each taking its share of the connections.",
		[]shoalrun.Group{{Name: "api", Mode: "multi", IPs: []netip.Addr{vip}}}, true)
	if err != nil {
		return err
	}
	defer l.close(&err)
	c, s := l.c, l.s
	all := c.Agents()
	s.f("started `shoal agent` on node0, node1, node2; each node runs a TCP server on :%d answering its name and an echo server on :%d", port, echoPort)
	wctx, wcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer wcancel()
	if err := c.WaitView(wctx, all, all); err != nil {
		return err
	}
	if err := waitShares(wctx, c, all, all); err != nil {
		return err
	}
	if err := harness.Wait(wctx, "a first answer on "+short.String(), func() (bool, error) {
		_, err := e2ekit.DialName(c.Net.Client(), short, time.Second)
		return err == nil, nil
	}); err != nil {
		return err
	}
	text, err := c.StatusText(wctx, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ shoal status   (on node0)\n%s\n", indent(text))

	failures, attempts := 0, 0
	spread := func() error {
		servers, okN, failed, err := connectMany(c, short, 300)
		if err != nil {
			return err
		}
		failures += failed
		attempts += okN + failed
		s.f("client: %d new connections to %s (one every 2 ms): answered %s; %d failed", okN+failed, short, byNode(servers), failed)
		return nil
	}
	if err := spread(); err != nil {
		return err
	}
	early, err := holdMany(c, long, 30)
	if err != nil {
		return err
	}
	defer closeAll(early)
	s.f("client: 30 long-lived connections to %s: %s", long, byNode(countBy(early)))

	const dead = 2
	crash, err := l.crash(dead)
	if err != nil {
		return err
	}
	survivors := e2ekit.Except(all, dead)
	if err := c.WaitView(wctx, survivors, survivors); err != nil {
		return err
	}
	if err := waitShares(wctx, c, survivors, survivors); err != nil {
		return err
	}
	s.f("node0 and node1 took over %s's share %v after the crash", harness.NodeName(dead), ms(time.Since(crash)))
	if err := spread(); err != nil {
		return err
	}
	ok, broken := pingAll(early, harness.NodeName(dead))
	s.f("long-lived connections: %d of %d held by node0/node1 still echo; %d were on %s (gone with it)", ok, len(early)-broken, broken, harness.NodeName(dead))
	outage, err := holdMany(c, long, 30)
	if err != nil {
		return err
	}
	defer closeAll(outage)
	s.f("client: 30 more long-lived connections during the outage: %s", byNode(countBy(outage)))

	s.f("RECOVER %s: switch port up, agent restarted", harness.NodeName(dead))
	if err := c.Net.RestorePort(dead); err != nil {
		return err
	}
	back := time.Now()
	if err := c.StartAgent(dead); err != nil {
		return err
	}
	if err := c.WaitView(wctx, all, all); err != nil {
		return err
	}
	if err := waitShares(wctx, c, all, all); err != nil {
		return err
	}
	s.f("%s has its share again %v after its agent started", harness.NodeName(dead), ms(time.Since(back)))
	if err := spread(); err != nil {
		return err
	}
	held := append(append([]*e2ekit.Held{}, early...), outage...)
	ok, _ = pingAll(held, harness.NodeName(dead))
	kept := 0
	for _, h := range held {
		if h.Server != harness.NodeName(dead) {
			kept++
		}
	}
	s.f("long-lived connections held by node0/node1 (before the crash and during the outage): %d of %d still echo, %d reset", ok, kept, kept-ok)

	// The handover ends once the survivors hold nothing in the returned
	// node's buckets: they say so when it asks (serf query).
	handover := func() (int, error) {
		st, err := c.StatusAPI(dead)
		if err != nil {
			return 0, err
		}
		for _, g := range st.Multihost.Groups {
			if g.Name == "api" {
				return g.BucketsHandover, nil
			}
		}
		return 0, fmt.Errorf("%s serves no group api", harness.NodeName(dead))
	}
	n, err := handover()
	if err != nil {
		return err
	}
	s.f("%s leaves %d of its buckets' non-SYN packets to their previous owners (handover) while they may hold connections there", harness.NodeName(dead), n)
	closeAll(outage)
	closed := time.Now()
	s.f("client: closed the %d connections opened during the outage", len(outage))
	hctx, hcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer hcancel()
	if err := harness.Wait(hctx, "end of the handover", func() (bool, error) {
		n, err := handover()
		return err == nil && n == 0, nil
	}); err != nil {
		return err
	}
	s.f("%s's handover ended %v later: node0 and node1 confirmed they hold nothing in its buckets", harness.NodeName(dead), ms(time.Since(closed)))
	if ok2, _ := pingAll(early, harness.NodeName(dead)); ok2 != len(early)-countBy(early)[harness.NodeName(dead)] {
		return fmt.Errorf("after the handover: %d of %d long-lived connections from before the crash still echo", ok2, len(early)-countBy(early)[harness.NodeName(dead)])
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "Summary: %d of %d new connections failed; after %s's return %d of %d long-lived connections held by the survivors still worked.\n", failures, attempts, harness.NodeName(dead), ok, kept)
	if ok != kept {
		return fmt.Errorf("%d long-lived connections were reset by the failback", kept-ok)
	}
	return nil
}

// waitShares waits until every node of nodes reports group api shared by
// exactly the members in want.
func waitShares(ctx context.Context, c *e2ekit.Cluster, nodes, want []int) error {
	return harness.Wait(ctx, "multi-hosted tables", func() (bool, error) {
		sts, err := c.Statuses(nodes)
		if err != nil {
			return false, nil
		}
		for _, st := range sts {
			g := st.Group("api")
			if g == nil {
				return false, nil
			}
			for m := range c.Net.Nodes() {
				in := false
				for _, w := range want {
					in = in || w == m
				}
				if (g.Shares[harness.NodeName(m)] > 0) != in {
					return false, nil
				}
			}
		}
		return true, nil
	})
}

// connectMany opens about n short connections (one every 2 ms) and returns
// the answers by node, the successes and the failures.
func connectMany(c *e2ekit.Cluster, ap netip.AddrPort, n int) (map[string]int, int, int, error) {
	const every = 2 * time.Millisecond
	p, err := c.Net.StartProbe(harness.ProbeOptions{Target: ap, Interval: every, Duration: time.Duration(n) * every, ReadServer: true})
	if err != nil {
		return nil, 0, 0, err
	}
	<-p.Done()
	r := p.Stop()
	okN, failed := r.Counts()
	return r.Servers(), okN, failed, nil
}

func holdMany(c *e2ekit.Cluster, ap netip.AddrPort, n int) ([]*e2ekit.Held, error) {
	var out []*e2ekit.Held
	for range n {
		h, err := e2ekit.DialHeld(c.Net.Client(), ap, 2*time.Second)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func closeAll(hs []*e2ekit.Held) {
	for _, h := range hs {
		_ = h.Close()
	}
}

// pingAll pings every connection not on node skip: it returns how many
// echoed and how many were skipped.
func pingAll(hs []*e2ekit.Held, skip string) (ok, skipped int) {
	for _, h := range hs {
		if h.Server == skip {
			skipped++
			continue
		}
		if h.Ping(2*time.Second) == nil {
			ok++
		}
	}
	return ok, skipped
}

func countBy(hs []*e2ekit.Held) map[string]int {
	m := map[string]int{}
	for _, h := range hs {
		m[h.Server]++
	}
	return m
}

func byNode(m map[string]int) string {
	var by []string
	for name, k := range m {
		by = append(by, fmt.Sprintf("%d by %s", k, name))
	}
	sort.Strings(by)
	return strings.Join(by, ", ")
}
