package multihost

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"github.com/shoal-project/shoal/bpf"
	"github.com/shoal-project/shoal/dataplane"
	"github.com/vishvananda/netns"
)

type cluster struct {
	tp       *topo
	nodeNS   []netns.NsHandle
	clientNS netns.NsHandle
	mgrs     []*Manager
	srvs     []*server
	names    []string
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	tp := newTopo(t, n)
	cl := &cluster{tp: tp, clientNS: tp.ns(t, tp.client)}
	for i, name := range tp.nodes {
		h := tp.ns(t, name)
		cl.nodeNS = append(cl.nodeNS, h)
		m, err := New(Config{Mode: bpf.ModeGeneric, NetNS: h, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatalf("New() in %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := m.Close(); err != nil {
				t.Errorf("Close() in %s: %v", name, err)
			}
		})
		cl.mgrs = append(cl.mgrs, m)
		node := string(rune('A' + i))
		cl.names = append(cl.names, node)
		cl.srvs = append(cl.srvs, startServer(t, h, node))
	}
	return cl
}

// apply gives every alive node its table for alive (prev = owners for
// prevAlive, nil for no previous view).
func (cl *cluster) apply(t *testing.T, alive, prevAlive []bool) []uint8 {
	t.Helper()
	owners := permOwners(alive)
	var prev []uint8
	if prevAlive != nil {
		prev = permOwners(prevAlive)
	}
	for i, m := range cl.mgrs {
		if !alive[i] {
			continue
		}
		if err := m.Apply([]dataplane.MultiGroup{multiGroup(uint8(i), owners, prev, alive)}); err != nil {
			t.Fatalf("Apply() on %s: %v", cl.names[i], err)
		}
	}
	return owners
}

func (cl *cluster) setLink(t *testing.T, i int, up bool) {
	state := "down"
	if up {
		state = "up"
	}
	sh(t, "-n", cl.tp.nodes[i], "link", "set", "eth0", state)
}

// predict returns the node whose bucket a connection falls into.
func (cl *cluster) predict(owners []uint8, cc *clientConn, vip netip.Addr) string {
	la := netip.MustParseAddrPort(cc.c.LocalAddr().String())
	b := bpf.Bucket(la.Addr(), vip, la.Port(), testPort, testSeed, false)
	if owners[b] == dataplane.NoOwner {
		return "none"
	}
	return cl.names[owners[b]]
}

// open opens n connections from local to vip and checks each was accepted
// by exactly the predicted node and by no other.
func (cl *cluster) open(t *testing.T, n int, local, vip netip.Addr, owners []uint8) ([]*clientConn, map[string]int) {
	t.Helper()
	var conns []*clientConn
	shares := map[string]int{}
	bad := 0
	for i := 0; i < n; i++ {
		cc, err := dial(cl.clientNS, local, vip)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, vip, err)
		}
		conns = append(conns, cc)
		shares[cc.node]++
		want := cl.predict(owners, cc, vip)
		accepts := 0
		for _, s := range cl.srvs {
			accepts += s.accepted(cc.c.LocalAddr().String())
		}
		if cc.node != want || accepts != 1 {
			bad++
			if bad <= 5 {
				t.Errorf("connection %s: answered by %s after %d accepts, want %s and 1 accept", cc.c.LocalAddr(), cc.node, accepts, want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d connections not accepted exactly once by the predicted node", bad, n)
	}
	return conns, shares
}

// check sends data on every connection and expects the same node to answer.
func check(t *testing.T, step string, conns []*clientConn) {
	t.Helper()
	failed := 0
	for _, cc := range conns {
		node, err := cc.ping()
		if err != nil || node != cc.node {
			failed++
			if failed <= 5 {
				t.Errorf("%s: connection %s held by %s: got %q, %v", step, cc.c.LocalAddr(), cc.node, node, err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%s: %d of %d established connections broken", step, failed, len(conns))
	}
}

func closeAll(conns []*clientConn) {
	for _, cc := range conns {
		cc.c.Close()
	}
}

func clientAddr(phase int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s%d", bridgeNet, 100+phase))
}

func without(conns []*clientConn, node string) (kept, dropped []*clientConn) {
	for _, cc := range conns {
		if cc.node == node {
			dropped = append(dropped, cc)
		} else {
			kept = append(kept, cc)
		}
	}
	return kept, dropped
}

// TestMultiHosted runs real TCP through a switch to a multi-hosted IP served
// by in-process Managers in node namespaces.
func TestMultiHosted(t *testing.T) {
	requireRoot(t)
	cl := newCluster(t, 4)

	// Three alive nodes (D's link down): 1000 connections, each accepted
	// by exactly its predicted owner, shares even within 5 standard
	// deviations of a binomial(1000, 1/3) (about +-7.5 %; the +-3 % target
	// needs ~10^4 connections).
	alive := []bool{true, true, true, false}
	cl.setLink(t, 3, false)
	owners := cl.apply(t, alive, nil)
	const n = 1000
	conns, shares := cl.open(t, n, clientAddr(0), testVIP4, owners)
	sigma := math.Sqrt(n * (1.0 / 3) * (2.0 / 3))
	for _, node := range []string{"A", "B", "C"} {
		if d := math.Abs(float64(shares[node]) - n/3.0); d > 5*sigma {
			t.Errorf("node %s got %d of %d connections, more than 5 sigma (%.0f) from even", node, shares[node], n, 5*sigma)
		}
	}
	t.Logf("shares of %d connections: %v", n, shares)
	check(t, "after opening", conns)

	// IPv6: neighbour solicitation answered with the 33:33 MAC.
	v6, _ := cl.open(t, 30, netip.MustParseAddr("2001:db8:1::100"), testVIP6, owners)
	check(t, "ipv6", v6)
	closeAll(v6)
	closeAll(conns)

	st, err := cl.mgrs[0].Status()
	if err != nil {
		t.Fatalf("Status() = %v", err)
	}
	if len(st.Groups) != 1 || st.Groups[0].BucketsOwned != dataplane.NumBuckets/3 {
		t.Errorf("Status().Groups = %+v, want one group owning %d buckets", st.Groups, dataplane.NumBuckets/3)
	}
	if st.Counters.PassedOwner == 0 || st.Counters.DroppedNotOwner == 0 || st.ARPReplies == 0 {
		t.Errorf("Status() counters = %+v arp replies %d, want passed, dropped and replies", st.Counters, st.ARPReplies)
	}

	// The seed's worked example with four nodes.
	all := []bool{true, true, true, true}
	cl.setLink(t, 3, true)
	owners = cl.apply(t, all, nil)
	est, _ := cl.open(t, 200, clientAddr(1), testVIP4, owners)
	check(t, "four nodes", est)

	t.Log("1. D fails: its quarter goes to A, B and C")
	abc := []bool{true, true, true, false}
	cl.setLink(t, 3, false)
	cl.srvs[3].crash()
	owners = cl.apply(t, abc, all)
	est, lost := without(est, "D")
	closeAll(lost)
	check(t, "D failed", est)
	more, _ := cl.open(t, 100, clientAddr(2), testVIP4, owners)
	est = append(est, more...)

	t.Log("2. C fails: its share goes to A and B")
	ab := []bool{true, true, false, false}
	cl.setLink(t, 2, false)
	cl.srvs[2].crash()
	cl.apply(t, ab, abc)
	est, lost = without(est, "C")
	closeAll(lost)
	check(t, "C failed", est)

	t.Log("3. D recovers: takes back a third from A and B; their connections stay")
	abd := []bool{true, true, false, true}
	cl.srvs[3] = startServer(t, cl.nodeNS[3], "D")
	cl.setLink(t, 3, true)
	before := [2]bpf.Counters{}
	for i := range 2 {
		s, _ := cl.mgrs[i].Status()
		before[i] = s.Counters
	}
	owners = cl.apply(t, abd, ab)
	check(t, "D recovered", est)
	if g := tableOf(t, cl.mgrs[0]); g.Table != ownersDigest(owners) || g.BucketsHeld == 0 {
		t.Errorf("after D recovered: A reports table %x with %d buckets held elsewhere, want %x and some", g.Table, g.BucketsHeld, ownersDigest(owners))
	}
	fresh, shares := cl.open(t, 150, clientAddr(3), testVIP4, owners)
	if shares["D"] == 0 {
		t.Errorf("no new connection reached recovered D: %v", shares)
	}
	check(t, "D recovered, later", est)
	check(t, "new connections", fresh)
	for i := range 2 {
		s, _ := cl.mgrs[i].Status()
		if s.Counters.PassedSocket == before[i].PassedSocket {
			t.Errorf("node %s kept its handed-over connections without passing by socket: %+v", cl.names[i], s.Counters)
		}
	}

	t.Log("4. A and B prune: buckets that moved to D stay held while their connections live, then are forgotten")
	for i := range 2 {
		if err := cl.mgrs[i].Prune(); err != nil {
			t.Fatalf("Prune() on %s: %v", cl.names[i], err)
		}
		if h := heldBuckets(t, cl.mgrs[i]); h == 0 || h > dataplane.NumBuckets/4 {
			t.Errorf("node %s holds %d buckets owned elsewhere after a prune, want its moved connections' (1..%d)", cl.names[i], h, dataplane.NumBuckets/4)
		}
	}
	check(t, "D recovered, after prune", est)
	closeAll(est)
	closeAll(fresh)
	deadline := time.Now().Add(5 * time.Second)
	for i := range 2 {
		for {
			if err := cl.mgrs[i].Prune(); err != nil {
				t.Fatalf("Prune() on %s: %v", cl.names[i], err)
			}
			h := heldBuckets(t, cl.mgrs[i])
			if h == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("node %s still holds %d buckets owned elsewhere 5 s after its connections closed", cl.names[i], h)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func tableOf(t *testing.T, m *Manager) GroupStatus {
	t.Helper()
	st, err := m.Status()
	if err != nil || len(st.Groups) != 1 {
		t.Fatalf("Status() = %+v, %v", st.Groups, err)
	}
	return st.Groups[0]
}

func heldBuckets(t *testing.T, m *Manager) int {
	t.Helper()
	st, err := m.Status()
	if err != nil || len(st.Groups) != 1 {
		t.Fatalf("Status() = %+v, %v", st.Groups, err)
	}
	return st.Groups[0].BucketsHeld
}

func TestMulticastMAC(t *testing.T) {
	cases := []struct {
		group string
		mac   string
	}{
		{"239.77.83.1", "01:00:5e:4d:53:01"},
		{"224.0.0.251", "01:00:5e:00:00:fb"},
		{"239.255.255.250", "01:00:5e:7f:ff:fa"},
	}
	for _, tc := range cases {
		t.Run(tc.group, func(t *testing.T) {
			mac := MulticastMAC(netip.MustParseAddr(tc.group))
			if diff := cmp.Diff(tc.mac, mac.String()); diff != "" {
				t.Errorf("MulticastMAC(%s) (-want +got):\n%s", tc.group, diff)
			}
		})
	}
	if got := IGMPGroup(MulticastMAC(testGroup)); got != testGroup {
		t.Errorf("IGMPGroup(MulticastMAC(%s)) = %s, want the group back", testGroup, got)
	}
	if diff := cmp.Diff("33:33:5e:4d:53:01", IPv6MulticastMAC(MulticastMAC(testGroup)).String()); diff != "" {
		t.Errorf("IPv6MulticastMAC (-want +got):\n%s", diff)
	}
	if got := MulticastMAC(netip.MustParseAddr("2001:db8::1")); got != nil {
		t.Errorf("MulticastMAC(ipv6) = %s, want nil", got)
	}
}

func TestPermOwnersBalanced(t *testing.T) {
	for _, alive := range [][]bool{{true, true, true, true}, {true, true, true}, {true, false, true, true}} {
		owners := permOwners(alive)
		count := map[uint8]int{}
		for _, o := range owners {
			count[o]++
		}
		k := 0
		for _, a := range alive {
			if a {
				k++
			}
		}
		for s, a := range alive {
			if want := dataplane.NumBuckets / k; a && count[uint8(s)] != want {
				t.Errorf("alive %v: slot %d owns %d buckets, want %d", alive, s, count[uint8(s)], want)
			}
		}
	}
}
