package e2e

import (
	"net/netip"
	"testing"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// TestRecipes (issue 4) runs the seed's three fault-tolerance recipes side
// by side on one 5-node cluster and checks every placement against
// `shoal simulate --json` on the same cluster.toml:
//   - active-standby: 1 IP over node0+node1;
//   - active-active: 2 IPs over node0+node1, one each, both on the survivor;
//   - N+M: 3 IPs over 5 nodes with node3, node4 passive: all up, the
//     passives hold nothing; one failure moves exactly one IP, to a passive.
func TestRecipes(t *testing.T) {
	as := netip.MustParseAddr("198.51.100.10")
	aa := []netip.Addr{netip.MustParseAddr("198.51.100.20"), netip.MustParseAddr("198.51.100.21")}
	nm := []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("203.0.113.12")}
	c := newCluster(t, e2ekit.Options{
		Nodes: 5,
		Shoal: shoalrun.Options{ClusterName: "e2e-recipes", Nodes: []int{0, 1, 2, 3, 4}, Groups: []shoalrun.Group{
			{Name: "active-standby", IPs: []netip.Addr{as}, Members: []int{0, 1}},
			{Name: "active-active", IPs: aa, Members: []int{0, 1}},
			{Name: "n-plus-m", IPs: nm, Members: []int{0, 1, 2, 3, 4}, Passive: []int{3, 4}},
		}},
	})
	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))
	home := expectPlacement(t, c, nil, all)

	// All up: active-active spreads, N+M keeps the passives idle.
	if home[aa[0]] == home[aa[1]] {
		t.Errorf("active-active: both IPs on %s, want one each", harness.NodeName(home[aa[0]]))
	}
	for _, ip := range nm {
		if home[ip] == 3 || home[ip] == 4 {
			t.Errorf("N+M all up: %s on passive %s", ip, harness.NodeName(home[ip]))
		}
	}

	// Crash the active of active-standby (agent killed and port cut: a
	// dead machine). It is also an active N+M member and holds one
	// active-active IP.
	x := home[as]
	must(t, c.Kill(x))
	must(t, c.Net.CutPort(x))
	survivors := e2ekit.Except(all, x)
	must(t, c.WaitView(deadline(t, wait), survivors, survivors))
	moved := expectPlacement(t, c, []int{x}, survivors)

	standby := e2ekit.Except([]int{0, 1}, x)[0]
	if moved[as] != standby {
		t.Errorf("active-standby: %s on %s after %s failed, want the standby %s", as, harness.NodeName(moved[as]), harness.NodeName(x), harness.NodeName(standby))
	}
	for _, ip := range aa {
		if moved[ip] != standby {
			t.Errorf("active-active: %s on %s after %s failed, want the survivor %s (holding both)", ip, harness.NodeName(moved[ip]), harness.NodeName(x), harness.NodeName(standby))
		}
	}
	var changed []netip.Addr
	for _, ip := range nm {
		if moved[ip] != home[ip] {
			changed = append(changed, ip)
			if moved[ip] != 3 && moved[ip] != 4 {
				t.Errorf("N+M: %s moved %s -> %s, want a passive node", ip, harness.NodeName(home[ip]), harness.NodeName(moved[ip]))
			}
		}
	}
	if len(changed) != 1 || home[changed[0]] != x {
		t.Errorf("N+M: moved %v after %s failed; want exactly the one IP it held", changed, harness.NodeName(x))
	}

	// It comes back (port up, agent restarted, as after a reboot: its
	// kernel forgot the addresses): everything returns home.
	for _, ip := range append(append([]netip.Addr{as}, aa...), nm...) {
		must(t, c.Net.DelAddr(x, ip))
	}
	must(t, c.Net.RestorePort(x))
	must(t, c.StartAgent(x))
	must(t, c.WaitView(deadline(t, wait), all, all))
	back := expectPlacement(t, c, nil, all)
	for ip, i := range home {
		if back[ip] != i {
			t.Errorf("after recovery %s on %s, want back on %s", ip, harness.NodeName(back[ip]), harness.NodeName(i))
		}
	}
}
