package e2e

import (
	"fmt"
	"net/netip"
	"slices"
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

// TestMultiHosted (issue 5, smoke test with agents): 3 agents serve one
// multi-hosted IP; each connection is taken by exactly one node, shares
// are about even, and after a node dies new connections all succeed on
// the survivors.
func TestMultiHosted(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.50")
	ap := netip.AddrPortFrom(vip, port)
	c := newCluster(t, e2ekit.Options{
		Nodes: 3, Client: true, ServePort: port,
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

	// node1 dies (agent killed, port cut).
	const dead = 1
	must(t, c.Kill(dead))
	must(t, c.Net.CutPort(dead))
	survivors := e2ekit.Except(all, dead)
	must(t, c.WaitView(deadline(t, wait), survivors, survivors))
	must(t, harness.Wait(deadline(t, wait), "survivors' tables without "+harness.NodeName(dead), func() (bool, error) {
		sts, err := c.Statuses(survivors)
		if err != nil {
			return false, err
		}
		for i, st := range sts {
			g := st.Group("mh")
			if g == nil {
				return false, fmt.Errorf("%s has no group mh", harness.NodeName(i))
			}
			if g.Shares[harness.NodeName(dead)] != 0 {
				return false, nil
			}
		}
		return true, nil
	}))
	before = accepted(c)
	servers, failed = connectMany(t, c, ap, 600)
	checkSpread(t, c, servers, failed, before, survivors, 0.30, 0.70)
}
