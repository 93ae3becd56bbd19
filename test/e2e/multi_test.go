package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// connectMany opens about n TCP connections from the client to ap (one
// every 2 ms) and returns the answering node names and the failures.
func connectMany(t *testing.T, c *e2ekit.Cluster, ap netip.AddrPort, n int) (map[string]int, []harness.Attempt) {
	t.Helper()
	const every = 2 * time.Millisecond
	p, err := c.Net.StartProbe(harness.ProbeOptions{Target: ap, Interval: every, Duration: time.Duration(n) * every, ReadServer: true})
	must(t, err)
	<-p.Done()
	r := p.Stop()
	var failed []harness.Attempt
	for _, a := range r.Attempts {
		if !a.OK {
			failed = append(failed, a)
		}
	}
	return r.Servers(), failed
}

func accepted(c *e2ekit.Cluster) []int64 {
	var out []int64
	for _, s := range c.Servers {
		out = append(out, s.Accepted())
	}
	return out
}

// checkSpread checks that only the nodes in want answered, each with a
// share of the successes within [lo, hi], that no attempt failed and that
// the servers accepted exactly as many connections as succeeded.
func checkSpread(t *testing.T, c *e2ekit.Cluster, servers map[string]int, failed []harness.Attempt, before []int64, want []int, lo, hi float64) {
	t.Helper()
	total := 0
	for _, k := range servers {
		total += k
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d connections failed (reset or no answer), first: %+v", len(failed), total+len(failed), failed[0])
	}
	for name, k := range servers {
		i := e2ekit.NodeIndex(name)
		if !slices.Contains(want, i) {
			t.Errorf("%d connections answered by %q, want only %v", k, name, e2ekit.Names(want))
			continue
		}
		if got := c.Servers[i].Accepted() - before[i]; got != int64(k) {
			t.Errorf("%s accepted %d connections, the client got %d answers from it", name, got, k)
		}
	}
	for _, i := range want {
		share := float64(servers[harness.NodeName(i)]) / float64(total)
		if share < lo || share > hi {
			t.Errorf("%s answered %.1f%% of %d connections, want %.0f%%..%.0f%%", harness.NodeName(i), 100*share, total, 100*lo, 100*hi)
		}
	}
	t.Logf("%d connections, %d failed, answers %v", total+len(failed), len(failed), servers)
}

// holdMany opens n long-lived connections from the client to ap (the
// nodes' echo servers) and returns them by answering node.
func holdMany(t *testing.T, c *e2ekit.Cluster, ap netip.AddrPort, n int) []*e2ekit.Held {
	t.Helper()
	var out []*e2ekit.Held
	t.Cleanup(func() {
		for _, h := range out {
			_ = h.Close()
		}
	})
	for range n {
		h, err := e2ekit.DialHeld(c.Net.Client(), ap, 2*time.Second)
		must(t, err)
		out = append(out, h)
	}
	return out
}

// pingAll checks that every connection of held not answered by a node in
// skip still carries data; it returns how many were checked by node.
func pingAll(t *testing.T, step string, held []*e2ekit.Held, skip ...string) map[string]int {
	t.Helper()
	by := map[string]int{}
	for _, h := range held {
		if slices.Contains(skip, h.Server) {
			continue
		}
		if err := h.Ping(2 * time.Second); err != nil {
			t.Errorf("%s: long-lived %v", step, err)
			continue
		}
		by[h.Server]++
	}
	return by
}

// waitShares waits until every node of nodes reports group mh with a
// share for each member of want and none for the others, and runs that
// table in its XDP program (the same table digest everywhere, buckets
// owned exactly by the members of want).
func waitShares(t *testing.T, c *e2ekit.Cluster, nodes, want []int) {
	t.Helper()
	must(t, harness.Wait(deadline(t, wait), fmt.Sprintf("tables of %v shared by %v", e2ekit.Names(nodes), e2ekit.Names(want)), func() (bool, error) {
		sts, err := c.Statuses(nodes)
		if err != nil {
			return false, err
		}
		var table uint64
		for i, st := range sts {
			g := st.Group("mh")
			if g == nil {
				return false, fmt.Errorf("%s has no group mh", harness.NodeName(i))
			}
			for m := range 3 {
				if (g.Shares[harness.NodeName(m)] > 0) != slices.Contains(want, m) {
					return false, nil
				}
			}
			// The plan is not the kernel: wait until the node's XDP
			// program runs the table (the same one everywhere).
			applied := false
			for _, mg := range st.Multihost.Groups {
				if mg.Name == "mh" && mg.Table != 0 && (table == 0 || mg.Table == table) &&
					(mg.BucketsOwned > 0) == slices.Contains(want, i) {
					table, applied = mg.Table, true
				}
			}
			if !applied {
				return false, nil
			}
		}
		return true, nil
	}))
}

// TestMultiHosted (issue 5, with agents): 3 agents serve one multi-hosted
// IP; each connection is taken by exactly one node and shares are about
// even. A node dies: new connections all succeed on the survivors and the
// survivors' long-lived connections keep working. It comes back: long-lived
// connections held by the survivors (opened before the crash and during
// the outage, when the returning node's buckets were theirs) all survive
// the failback, and new connections reach all three nodes again.
func TestMultiHosted(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.50")
	ap := netip.AddrPortFrom(vip, port)
	echo := netip.AddrPortFrom(vip, port+1)
	c := newCluster(t, e2ekit.Options{
		Nodes: 3, Client: true, ServePort: port, EchoPort: port + 1,
		Shoal: shoalrun.Options{ClusterName: "e2e-multi", Groups: []shoalrun.Group{{Name: "mh", Mode: "multi", IPs: []netip.Addr{vip}}}},
	})
	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))
	// Multi-hosted addresses sit on lo (the XDP program and the ARP
	// responder do the rest; docs/MULTIHOST.md).
	for _, i := range all {
		must(t, harness.Wait(deadline(t, wait), fmt.Sprintf("%s on lo of %s", vip, harness.NodeName(i)), func() (bool, error) {
			out, err := c.Net.Exec(c.Net.Node(i), "ip", "-o", "addr", "show", "dev", "lo")
			return strings.Contains(string(out), " "+vip.String()+"/"), err
		}))
	}
	// First connections may race the XDP tables being installed: wait for
	// one clean answer before measuring.
	must(t, harness.Wait(deadline(t, wait), "a first answer on "+ap.String(), func() (bool, error) {
		_, err := e2ekit.DialName(c.Net.Client(), ap, time.Second)
		return err == nil, nil
	}))

	before := accepted(c)
	servers, failed := connectMany(t, c, ap, 2000)
	checkSpread(t, c, servers, failed, before, all, 0.20, 0.47)
	early := holdMany(t, c, echo, 60)
	t.Logf("long-lived connections before the crash: %v", pingAll(t, "before the crash", early))

	// node1 dies (agent killed, port cut).
	const dead = 1
	must(t, c.Kill(dead))
	must(t, c.Net.CutPort(dead))
	survivors := e2ekit.Except(all, dead)
	must(t, c.WaitView(deadline(t, wait), survivors, survivors))
	waitShares(t, c, survivors, survivors)
	before = accepted(c)
	servers, failed = connectMany(t, c, ap, 600)
	checkSpread(t, c, servers, failed, before, survivors, 0.30, 0.70)
	pingAll(t, "after the crash", early, harness.NodeName(dead))
	// Connections opened during the outage: about a third of them are in
	// buckets that go back to node1 when it returns.
	outage := holdMany(t, c, echo, 60)
	t.Logf("long-lived connections opened during the outage: %v", pingAll(t, "during the outage", outage))

	// node1 comes back: port up, agent restarted. New connections keep
	// coming meanwhile. The survivors give node1 its buckets when they
	// hear it and node1 takes them at once (its XDP program is attached
	// before its first heartbeat): no bucket has two owners, so no
	// connection is reset; a SYN that arrives in the gap between is lost
	// (a client resends it after 1 s).
	across, err := c.Net.StartProbe(harness.ProbeOptions{Target: ap, Interval: 5 * time.Millisecond, Duration: time.Minute, ReadServer: true})
	must(t, err)
	must(t, c.Net.RestorePort(dead))
	must(t, c.StartAgent(dead))
	must(t, c.WaitView(deadline(t, wait), all, all))
	waitShares(t, c, all, all)
	back := across.Stop()
	var lost []harness.Attempt
	for _, a := range back.Attempts {
		switch {
		case a.OK:
		case strings.Contains(a.Err, "timeout"):
			lost = append(lost, a)
		default:
			t.Errorf("while %s came back: a new connection failed other than by a lost SYN: %+v", harness.NodeName(dead), a)
		}
	}
	gap := time.Duration(0)
	if len(lost) > 0 {
		first, last := lost[0].Start, lost[0].Start
		for _, a := range lost {
			if a.Start.Before(first) {
				first = a.Start
			}
			if a.Start.After(last) {
				last = a.Start
			}
		}
		gap = last.Sub(first)
	}
	t.Logf("while %s came back: %d of %d new connections lost their SYN, over %v; answers %v",
		harness.NodeName(dead), len(lost), len(back.Attempts), gap.Round(time.Millisecond), back.Servers())
	before = accepted(c)
	servers, failed = connectMany(t, c, ap, 600)
	checkSpread(t, c, servers, failed, before, all, 0.20, 0.47)
	kept := pingAll(t, "after the failback", append(early, outage...), harness.NodeName(dead))
	t.Logf("long-lived connections held by the survivors after the failback: %v", kept)
	// The returned node keeps its buckets in handover while the survivors
	// hold connections there; the survivors have none.
	handover := func(i int) int {
		st, err := c.StatusAPI(i)
		must(t, err)
		for _, g := range st.Multihost.Groups {
			if g.Name == "mh" {
				return g.BucketsHandover
			}
		}
		return -1
	}
	full := handover(dead)
	// The operator sees the same in `shoal status`.
	txt, err := c.StatusText(deadline(t, wait), dead)
	must(t, err)
	if !strings.Contains(txt, "Multi-hosted data plane: XDP on eth0 (generic)") || !regexp.MustCompile(`(?m)^mh\s+eth0\s+\d+\s+\d+\s+`+strconv.Itoa(full)+`\s+[0-9a-f]{12}$`).MatchString(txt) {
		t.Errorf("shoal status on %s does not show the XDP attachment and %d buckets in handover:\n%s", harness.NodeName(dead), full, txt)
	}
	for _, i := range all {
		if n := handover(i); (i == dead) != (n > 0) {
			t.Errorf("%s: %d buckets in handover, want some only on %s", harness.NodeName(i), n, harness.NodeName(dead))
		}
	}
	late := holdMany(t, c, echo, 30)
	if got := pingAll(t, "opened after the failback", late); got[harness.NodeName(dead)] == 0 {
		t.Errorf("no long-lived connection opened after the failback reached %s: %v", harness.NodeName(dead), got)
	}

	// The handover ends survivor by survivor: once a survivor has closed
	// its connections in the buckets that went back, it says so (serf tag)
	// and the returned node takes those buckets fully; the other
	// survivor's connections there keep working until it closes them too.
	closeOf := func(node int) {
		for _, h := range outage {
			if h.Server == harness.NodeName(node) {
				_ = h.Close()
			}
		}
	}
	waitHandover := func(what string, ok func(n int) bool) {
		t.Helper()
		start := time.Now()
		must(t, harness.Wait(deadline(t, 20*time.Second), what, func() (bool, error) {
			return ok(handover(dead)), nil
		}))
		t.Logf("%s %.1f s after the connections closed", what, time.Since(start).Seconds())
	}
	first, second := survivors[0], survivors[1]
	closeOf(first)
	waitHandover(fmt.Sprintf("%s's handover from %s over", harness.NodeName(dead), harness.NodeName(first)), func(n int) bool { return n > 0 && n < full })
	var rest []*e2ekit.Held
	for _, h := range outage {
		if h.Server == harness.NodeName(second) {
			rest = append(rest, h)
		}
	}
	t.Logf("handover %d -> %d buckets; %s's outage connections still working: %v", full, handover(dead), harness.NodeName(second), pingAll(t, "after the first release", rest))
	closeOf(second)
	waitHandover(fmt.Sprintf("%s's handover over", harness.NodeName(dead)), func(n int) bool { return n == 0 })
	pingAll(t, "after the handover", append(early, late...), harness.NodeName(dead))
	before = accepted(c)
	servers, failed = connectMany(t, c, ap, 600)
	checkSpread(t, c, servers, failed, before, all, 0.20, 0.47)
}

// TestMultiHostedLinkFlap: a node's switch port goes down for a few seconds
// with its agent running, then comes back. While it returns, the
// long-lived connections the others took during the outage carry data
// every 20 ms and none fails (the returning node must not pass their
// packets to its stack, which would reset them); afterwards every
// long-lived connection works, including the returning node's own from
// before the outage.
func TestMultiHostedLinkFlap(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.51")
	echo := netip.AddrPortFrom(vip, port+1)
	c := newCluster(t, e2ekit.Options{
		Nodes: 3, Client: true, EchoPort: port + 1,
		Shoal: shoalrun.Options{ClusterName: "e2e-flap", Groups: []shoalrun.Group{{Name: "mh", Mode: "multi", IPs: []netip.Addr{vip}}}},
	})
	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))
	waitShares(t, c, all, all)
	must(t, harness.Wait(deadline(t, wait), "a first answer on "+echo.String(), func() (bool, error) {
		h, err := e2ekit.DialHeld(c.Net.Client(), echo, time.Second)
		if err == nil {
			_ = h.Close()
		}
		return err == nil, nil
	}))
	early := holdMany(t, c, echo, 30)
	t.Logf("long-lived connections before the flap: %v", pingAll(t, "before the flap", early))

	const flapped = 1
	must(t, c.Net.CutPort(flapped))
	others := e2ekit.Except(all, flapped)
	must(t, c.WaitView(deadline(t, wait), others, others))
	waitShares(t, c, others, others)
	outage := holdMany(t, c, echo, 60)
	t.Logf("long-lived connections opened during the outage: %v", pingAll(t, "during the outage", outage))

	// Keep the outage connections busy while the port comes back.
	stop := make(chan struct{})
	fails := make(chan []error, 1)
	go func() {
		var errs []error
		defer func() { fails <- errs }()
		for {
			for _, h := range outage {
				if err := h.Ping(time.Second); err != nil {
					errs = append(errs, err)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	must(t, c.Net.RestorePort(flapped))
	must(t, c.WaitView(deadline(t, wait), all, all))
	waitShares(t, c, all, all)
	time.Sleep(2 * time.Second)
	close(stop)
	for _, err := range <-fails {
		t.Errorf("while %s returned: long-lived %v", harness.NodeName(flapped), err)
	}
	t.Logf("after the flap: %v before it, %v during it", pingAll(t, "after the flap", early), pingAll(t, "after the flap", outage))
}
