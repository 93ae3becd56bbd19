package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

const port = 8080

// expectPlacement waits until, among the nodes in alive, every traffic IP of
// the cluster is held by exactly the owner `shoal simulate --down down`
// names (nobody when it names none), and, for the IPs in reach, that the
// client's connections are answered by that owner. Nodes outside alive are
// not looked at (a killed agent leaves its addresses in its namespace; a
// cut-off node holds everything it believes is orphaned).
func expectPlacement(t *testing.T, c *e2ekit.Cluster, down, alive []int, reach ...netip.Addr) map[netip.Addr]int {
	t.Helper()
	ctx := deadline(t, wait)
	owners, err := c.Simulate(ctx, down)
	must(t, err)
	res := map[netip.Addr]int{}
	for ip, name := range owners {
		want := []int{}
		if name != "" {
			want = []int{e2ekit.NodeIndex(name)}
		}
		var got []int
		err := harness.Wait(ctx, fmt.Sprintf("%s held by %v among %v", ip, want, alive), func() (bool, error) {
			if err := c.Exited(); err != nil {
				return false, harness.Abort(err)
			}
			var err error
			got, err = c.HoldersAmong(ip, alive)
			return err == nil && slices.Equal(got, want), err
		})
		if err != nil {
			t.Fatalf("%v; last held by %v", err, got)
		}
		if name != "" {
			res[ip] = want[0]
		} else {
			res[ip] = -1
		}
	}
	for _, ip := range reach {
		must(t, c.WaitReach(ctx, netip.AddrPortFrom(ip, port), res[ip]))
	}
	return res
}

// stableHolders checks, for d, that ip stays on exactly want (all nodes).
func stableHolders(t *testing.T, c *e2ekit.Cluster, ip netip.Addr, want []int, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		got, err := c.Net.WhoHas(ip)
		must(t, err)
		if !slices.Equal(got, want) {
			t.Fatalf("%s held by %v, want %v only", ip, got, want)
		}
	}
}

// ensureAgent restarts node i's agent if a failed subtest left it down,
// so the next subtest starts from a full cluster.
func ensureAgent(c *e2ekit.Cluster, i int) {
	if !c.Running(i) {
		_ = c.StartAgent(i)
	}
}

// TestSingleHosted (issue 4) runs 3 agents with one single-hosted group of
// an IPv4 and an IPv6 traffic IP and a client on the same LAN.
func TestSingleHosted(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	ips := []netip.Addr{v4, v6}
	c := newCluster(t, e2ekit.Options{
		Nodes: 3, Client: true, ServePort: port,
		Shoal: shoalrun.Options{ClusterName: "e2e-single", Groups: []shoalrun.Group{{Name: "web", IPs: ips}}},
	})
	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))
	home := expectPlacement(t, c, nil, all, ips...)
	t.Logf("all up: %s on %s, %s on %s", v4, harness.NodeName(home[v4]), v6, harness.NodeName(home[v6]))
	backHome := func(t *testing.T) {
		t.Helper()
		must(t, c.WaitView(deadline(t, wait), all, all))
		for _, ip := range ips {
			must(t, c.WaitHolders(deadline(t, wait), ip, []int{home[ip]}))
			must(t, c.WaitReach(deadline(t, wait), netip.AddrPortFrom(ip, port), home[ip]))
		}
	}

	t.Run("owner-sigkill-then-failback", func(t *testing.T) {
		o := home[v4]
		must(t, c.Kill(o))
		t.Cleanup(func() { ensureAgent(c, o) })
		survivors := e2ekit.Except(all, o)
		must(t, c.WaitView(deadline(t, wait), survivors, survivors))
		moved := expectPlacement(t, c, []int{o}, survivors, ips...)
		t.Logf("%s crashed: %s now on %s", harness.NodeName(o), v4, harness.NodeName(moved[v4]))
		must(t, c.StartAgent(o))
		backHome(t)
		stableHolders(t, c, v4, []int{o}, 2*time.Second)
	})

	t.Run("owner-port-cut-then-restore", func(t *testing.T) {
		o := home[v6] // the IPv6 owner this time
		must(t, c.Net.CutPort(o))
		t.Cleanup(func() { _ = c.Net.RestorePort(o) })
		survivors := e2ekit.Except(all, o)
		must(t, c.WaitView(deadline(t, wait), survivors, survivors))
		moved := expectPlacement(t, c, []int{o}, survivors, ips...)
		t.Logf("%s cut off: %s now on %s", harness.NodeName(o), v6, harness.NodeName(moved[v6]))
		must(t, c.Net.RestorePort(o))
		backHome(t)
		stableHolders(t, c, v6, []int{o}, 2*time.Second)
	})

	t.Run("sigterm-handoff", func(t *testing.T) {
		o := home[v4]
		survivors := e2ekit.Except(all, o)
		want, err := c.Simulate(deadline(t, wait), []int{o})
		must(t, err)
		s := e2ekit.NodeIndex(want[v4])
		start := time.Now()
		must(t, c.Stop(o, 5*time.Second))
		t.Cleanup(func() { ensureAgent(c, o) })
		// The stopped node dropped it and a survivor raised it: one holder
		// across all nodes.
		must(t, c.WaitHolders(deadline(t, wait), v4, []int{s}))
		t.Logf("SIGTERM to %s: %s held by %s alone after %v", harness.NodeName(o), v4, harness.NodeName(s), time.Since(start).Round(time.Millisecond))
		must(t, c.WaitReach(deadline(t, wait), netip.AddrPortFrom(v4, port), s))
		// The survivors learnt it from the leave message, not by detection.
		for _, i := range survivors {
			es, err := c.LogEntries(i)
			must(t, err)
			left := slices.ContainsFunc(es, func(e e2ekit.LogEntry) bool {
				return e.Time.After(start) && e.Message == "member left" && e.Member == harness.NodeName(o)
			})
			declared := slices.ContainsFunc(es, func(e e2ekit.LogEntry) bool {
				return e.Time.After(start) && e.Message == "member declared down" && e.Member == harness.NodeName(o)
			})
			if !left || declared {
				t.Errorf("%s after SIGTERM to %s: logged \"member left\" %v, \"member declared down\" %v; want a leave, no detection", harness.NodeName(i), harness.NodeName(o), left, declared)
			}
		}
		must(t, c.StartAgent(o))
		backHome(t)
	})

	t.Run("address-deleted-by-hand", func(t *testing.T) {
		for _, ip := range ips {
			o := home[ip]
			start := time.Now()
			must(t, c.Net.DelAddr(o, ip))
			// The agent may put it back within microseconds (netlink
			// notification), so the proof that it was gone is its log.
			err := harness.Wait(deadline(t, wait), fmt.Sprintf("%s logs restoring %s", harness.NodeName(o), ip), func() (bool, error) {
				es, err := c.LogEntries(o)
				return slices.ContainsFunc(es, func(e e2ekit.LogEntry) bool {
					return e.Time.After(start) && e.Message == "traffic ip removed by something else; restoring" && e.IP == ip.String()
				}), err
			})
			must(t, err)
			must(t, c.WaitHolders(deadline(t, wait), ip, []int{o}))
			must(t, c.WaitReach(deadline(t, wait), netip.AddrPortFrom(ip, port), o))
		}
	})

	// keepalived#166: after a split brain heals, the node that keeps the
	// IP must re-announce it, or clients that learnt the other node's MAC
	// keep sending there.
	t.Run("partition-heal-reannounce", func(t *testing.T) {
		o := home[v4]
		others := e2ekit.Except(all, o)
		must(t, c.Net.Partition([]int{o}, others))
		t.Cleanup(func() { _ = c.Net.Heal() })
		// o hears nobody and keeps v4; the others raise it too. The
		// client (reaching both sides) follows the latest announcement.
		h, err := c.WaitSingleHolderAmong(deadline(t, wait), v4, others)
		must(t, err)
		if has, err := c.Net.HasAddr(o, v4); err != nil || !has {
			t.Fatalf("%s dropped %s while partitioned alone (%v); want it kept", harness.NodeName(o), v4, err)
		}
		must(t, c.WaitReach(deadline(t, wait), netip.AddrPortFrom(v4, port), h))
		nb, ok, err := c.Net.ClientNeigh(v4)
		must(t, err)
		if !ok || nb.Node != h {
			t.Fatalf("client neighbour entry for %s = %+v (found %v); want %s's MAC", v4, nb, ok, harness.NodeName(h))
		}
		// Heal with the client silent: only an announcement from o can
		// correct the client's entry.
		must(t, c.Net.Heal())
		must(t, c.WaitView(deadline(t, 20*time.Second), all, all))
		must(t, c.WaitHolders(deadline(t, wait), v4, []int{o}))
		var last harness.Neigh
		err = harness.Wait(deadline(t, wait), fmt.Sprintf("client neighbour entry for %s -> %s", v4, harness.NodeName(o)), func() (bool, error) {
			nb, ok, err := c.Net.ClientNeigh(v4)
			last = nb
			return ok && nb.Node == o, err
		})
		if err != nil {
			t.Fatalf("%v; last entry %s %v (node %d): the owner did not re-announce after the heal", err, last.MAC, last.State, last.Node)
		}
		must(t, c.WaitReach(deadline(t, wait), netip.AddrPortFrom(v4, port), o))
	})
}
