package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// TestSelfTestFailure (issue 3): a node whose gateway self-test fails
// reports itself failed in its heartbeats; peers take it out of their view
// (while still hearing it) and it drops its traffic IPs, which move to the
// others. When the gateway answers again it comes back and takes its share.
func TestSelfTestFailure(t *testing.T) {
	ips := []netip.Addr{netip.MustParseAddr("192.0.2.20"), netip.MustParseAddr("192.0.2.21"), netip.MustParseAddr("192.0.2.22")}
	// The gateway is the client namespace (host .100 of the default subnet).
	gw := harness.DefaultSubnet4.Addr().As4()
	gw[3] = 100
	c := newCluster(t, e2ekit.Options{
		Nodes: 3, Client: true,
		Shoal: shoalrun.Options{
			ClusterName: "e2e-selftest",
			Groups:      []shoalrun.Group{{Name: "st", IPs: ips}},
			ExtraTOML:   fmt.Sprintf("[selftest]\ngateway = %q\ninterval = \"500ms\"\ntimeout = \"400ms\"\n", netip.AddrFrom4(gw)),
		},
	})
	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))
	owners, err := c.Simulate(deadline(t, wait), nil)
	must(t, err)
	for _, ip := range ips {
		must(t, c.WaitHolders(deadline(t, wait), ip, []int{e2ekit.NodeIndex(owners[ip])}))
	}

	const bad = 1
	gwRoute := netip.PrefixFrom(netip.AddrFrom4(gw), 32).String()
	if _, err := c.Net.Exec(c.Net.Node(bad), "ip", "route", "add", "blackhole", gwRoute); err != nil {
		t.Fatal(err)
	}
	rest := e2ekit.Except(all, bad)
	// Peers drop it from their view; it drops itself from its own.
	must(t, c.WaitView(deadline(t, wait), rest, rest))
	st, err := c.StatusCLI(deadline(t, wait), bad)
	must(t, err)
	if st.Health.OK || !strings.Contains(strings.Join(st.Health.Reasons, ";"), "gateway") || slices.Contains(st.View.Up, harness.NodeName(bad)) {
		t.Errorf("%s status: health %+v, view up %v; want failed on the gateway and not in its own view", harness.NodeName(bad), st.Health, st.View.Up)
	}
	// Peers still hear it: removed for its health, not for silence.
	peer, err := c.StatusCLI(deadline(t, wait), rest[0])
	must(t, err)
	for _, m := range peer.Members {
		if m.Name == harness.NodeName(bad) && (m.Up || m.Health != "failed") {
			t.Errorf("%s sees %s as up=%v health=%q; want down with health failed", peer.Node, m.Name, m.Up, m.Health)
		}
	}
	// It holds nothing; every IP is on exactly the node simulate says.
	down, err := c.Simulate(deadline(t, wait), []int{bad})
	must(t, err)
	for _, ip := range ips {
		must(t, c.WaitHolders(deadline(t, wait), ip, []int{e2ekit.NodeIndex(down[ip])}))
	}

	if _, err := c.Net.Exec(c.Net.Node(bad), "ip", "route", "del", "blackhole", gwRoute); err != nil {
		t.Fatal(err)
	}
	must(t, c.WaitView(deadline(t, wait), all, all))
	for _, ip := range ips {
		must(t, c.WaitHolders(deadline(t, wait), ip, []int{e2ekit.NodeIndex(owners[ip])}))
	}
}
