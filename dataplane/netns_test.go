package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and veth pairs")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip): make deps")
	}
}

func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testNet is a namespace for the Manager ("self", interface dp0) joined by a
// veth pair to a neighbour namespace ("peer", interface dp1).
type testNet struct {
	self, peer string
	selfMAC    net.HardwareAddr
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := &testNet{self: "dpt-" + hex.EncodeToString(b), peer: "dpt-" + hex.EncodeToString(b) + "-n"}
	for _, ns := range []string{n.self, n.peer} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v: %s", ns, err, out)
			}
		})
	}
	ipCmd(t, "-n", n.self, "link", "add", "dp0", "type", "veth", "peer", "name", "dp1", "netns", n.peer)
	for _, c := range [][]string{
		{"-n", n.self, "link", "set", "lo", "up"},
		{"-n", n.peer, "link", "set", "lo", "up"},
		{"-n", n.self, "addr", "add", "192.0.2.1/24", "dev", "dp0"},
		{"-n", n.peer, "addr", "add", "192.0.2.2/24", "dev", "dp1"},
		{"-n", n.self, "link", "set", "dp0", "up"},
		{"-n", n.peer, "link", "set", "dp1", "up"},
	} {
		ipCmd(t, c...)
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(ipCmd(t, "-n", n.self, "-j", "link", "show", "dp0")), &links); err != nil || len(links) != 1 {
		t.Fatalf("read dp0 address: %v %v", err, links)
	}
	mac, err := net.ParseMAC(links[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	n.selfMAC = mac
	return n
}

type ipAddrInfo struct {
	Family        string `json:"family"`
	Local         string `json:"local"`
	PrefixLen     int    `json:"prefixlen"`
	Label         string `json:"label"`
	NoPrefixRoute bool   `json:"noprefixroute"`
	NoDAD         bool   `json:"nodad"`
	DADFailed     bool   `json:"dadfailed"`
}

// addrs returns the addresses on dev in ns as `ip -j addr` shows them,
// without link-local ones.
func addrsOf(t *testing.T, ns, dev string) map[string]ipAddrInfo {
	t.Helper()
	var links []struct {
		AddrInfo []ipAddrInfo `json:"addr_info"`
	}
	out, err := exec.Command("ip", "-n", ns, "-j", "addr", "show", "dev", dev).CombinedOutput()
	if err != nil {
		return nil // device gone or down; callers poll
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("decode ip addr output %q: %v", out, err)
	}
	m := map[string]ipAddrInfo{}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if strings.HasPrefix(a.Local, "fe80:") {
				continue
			}
			m[fmt.Sprintf("%s/%d", a.Local, a.PrefixLen)] = a
		}
	}
	return m
}

// neighMAC returns the link-layer address the peer has for ip ("" = none).
// icmp6Stats returns the named counters of ns's /proc/net/snmp6 as
// "name=value ..." (for failure messages).
func icmp6Stats(ns string, names ...string) string {
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp6").Output()
	if err != nil {
		return "(snmp6: " + err.Error() + ")"
	}
	var got []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 2 && slices.Contains(names, f[0]) {
			got = append(got, f[0]+"="+f[1])
		}
	}
	return strings.Join(got, " ")
}

func neighMAC(t *testing.T, ns, dev string, ip netip.Addr) string {
	t.Helper()
	var entries []struct {
		Dst    string `json:"dst"`
		LLAddr string `json:"lladdr"`
	}
	out := ipCmd(t, "-n", ns, "-j", "neigh", "show", "dev", dev)
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("decode ip neigh output %q: %v", out, err)
	}
	for _, e := range entries {
		if e.Dst == ip.String() {
			return e.LLAddr
		}
	}
	return ""
}

// arpCapture collects the ARP packets arriving on dev in namespace ns.
type arpCapture struct {
	mu   sync.Mutex
	pkts []capturedARP
	conn *packet.Conn
	done chan struct{}
}

type capturedARP struct {
	dst net.HardwareAddr
	p   arp.Packet
}

func startARPCapture(t *testing.T, nsName, dev string) *arpCapture {
	t.Helper()
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c := &arpCapture{done: make(chan struct{})}
	err = inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c.conn, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	})
	if err != nil {
		t.Fatalf("open capture on %s in %s: %v", dev, nsName, err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 1500)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			var f ethernet.Frame
			if f.UnmarshalBinary(buf[:n]) != nil {
				continue
			}
			var p arp.Packet
			if p.UnmarshalBinary(f.Payload) != nil {
				continue
			}
			c.mu.Lock()
			c.pkts = append(c.pkts, capturedARP{dst: f.Destination, p: p})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.conn.Close(); <-c.done })
	return c
}

// gratuitous returns the gratuitous ARP packets seen for ip from mac.
func (c *arpCapture) gratuitous(ip netip.Addr, mac net.HardwareAddr) (requests, replies int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.pkts {
		if x.p.SenderIP != ip || x.p.TargetIP != ip || !slices.Equal(x.p.SenderHardwareAddr, mac) ||
			!slices.Equal(x.dst, ethernet.Broadcast) {
			continue
		}
		switch x.p.Operation {
		case arp.OperationRequest:
			requests++
		case arp.OperationReply:
			replies++
		}
	}
	return requests, replies
}

func startReal(t *testing.T, n *testNet, dir string) (*Manager, func()) {
	t.Helper()
	m, err := New(Options{
		StateDir:  dir,
		Namespace: "/run/netns/" + n.self,
		Logger:    zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
		RetryMin:  50 * time.Millisecond,
		RetryMax:  time.Second,

		DetectConflicts: true,
	})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run() = %v", err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("Close() = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return m, stop
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRealKernel(t *testing.T) {
	needRoot(t)
	n := newTestNet(t)
	dir := t.TempDir()
	v4 := netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8::10")
	// The neighbour has stale entries pointing elsewhere (the previous
	// owner); the announcements must move them to dp0's MAC.
	const oldMAC = "02:00:00:00:00:99"
	ipCmd(t, "-n", n.peer, "neigh", "replace", v4.String(), "lladdr", oldMAC, "dev", "dp1", "nud", "stale")
	ipCmd(t, "-n", n.peer, "neigh", "replace", v6.String(), "lladdr", oldMAC, "dev", "dp1", "nud", "stale")
	capture := startARPCapture(t, n.peer, "dp1")

	m, stop := startReal(t, n, dir)
	ann := Announce{Count: 3, Spread: time.Second}
	desired := Desired{Addresses: []Address{
		{Group: "web", IP: v4, Interface: "dp0", Announce: ann},
		{Group: "web", IP: v6, Interface: "dp0", Announce: ann},
	}}
	m.Apply(desired)

	t.Run("raise", func(t *testing.T) {
		waitFor(t, "addresses raised", 10*time.Second, func() error {
			got := addrsOf(t, n.self, "dp0")
			a4, ok4 := got["192.0.2.10/32"]
			a6, ok6 := got["2001:db8::10/128"]
			if !ok4 || !ok6 {
				return fmt.Errorf("addresses on dp0: %v", got)
			}
			if a4.Label != "dp0:sh" || !a4.NoPrefixRoute {
				return fmt.Errorf("ipv4 address = %+v, want label dp0:sh, noprefixroute", a4)
			}
			if !a6.NoDAD || !a6.NoPrefixRoute || a6.DADFailed {
				return fmt.Errorf("ipv6 address = %+v, want nodad, noprefixroute", a6)
			}
			return nil
		})
		waitFor(t, "converged", 10*time.Second, func() error {
			if st := m.Status(); !st.Converged || len(st.Held) != 2 {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
	})

	t.Run("announce", func(t *testing.T) {
		waitFor(t, "gratuitous arp request and reply captured by the neighbour", 10*time.Second, func() error {
			if req, rep := capture.gratuitous(v4, n.selfMAC); req < 1 || rep < 1 {
				return fmt.Errorf("requests %d, replies %d", req, rep)
			}
			return nil
		})
		for _, ip := range []netip.Addr{v4, v6} {
			waitFor(t, "neighbour entry for "+ip.String()+" moved to dp0", 10*time.Second, func() error {
				if got := neighMAC(t, n.peer, "dp1", ip); got != n.selfMAC.String() {
					// Say where the announcement got lost (a CI run once
					// left the IPv6 entry unchanged).
					return fmt.Errorf("lladdr %q, want %s; sent: %s; received: %s; peer's entries: %s", got, n.selfMAC,
						icmp6Stats(n.self, "Icmp6OutNeighborAdvertisements"), icmp6Stats(n.peer, "Icmp6InNeighborAdvertisements", "Icmp6InErrors"),
						strings.TrimSpace(ipCmd(t, "-n", n.peer, "neigh", "show", "dev", "dp1")))
				}
				return nil
			})
		}
	})

	t.Run("restore removed by hand", func(t *testing.T) {
		for _, p := range []string{"192.0.2.10/32", "2001:db8::10/128"} {
			ipCmd(t, "-n", n.self, "addr", "del", p, "dev", "dp0")
			waitFor(t, p+" restored", 10*time.Second, func() error {
				if _, ok := addrsOf(t, n.self, "dp0")[p]; !ok {
					return errors.New("missing")
				}
				return nil
			})
		}
		waitFor(t, "restores counted", 10*time.Second, func() error {
			if st := m.Status(); st.Restored < 2 {
				return fmt.Errorf("Status().Restored = %d, want >= 2", st.Restored)
			}
			return nil
		})
	})

	t.Run("conflict", func(t *testing.T) {
		// The neighbour claims 192.0.2.10 with a gratuitous ARP.
		ns, err := netns.GetFromName(n.peer)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		var (
			c   *arp.Client
			mac net.HardwareAddr
		)
		err = inNetns(ns, func() error {
			ifi, err := net.InterfaceByName("dp1")
			if err != nil {
				return err
			}
			mac = ifi.HardwareAddr
			p, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
			if err != nil {
				return err
			}
			c, err = arp.New(ifi, p)
			return err
		})
		if err != nil {
			t.Fatalf("open arp client in the neighbour: %v", err)
		}
		defer c.Close()
		deadline := time.After(10 * time.Second)
		for {
			if err := sendGratuitousARP(c, mac, v4); err != nil {
				t.Fatal(err)
			}
			select {
			case f := <-m.Conflicts():
				if f.IP != v4 || f.Interface != "dp0" || f.MAC.String() != mac.String() {
					t.Errorf("conflict = %+v, want %s on dp0 from %s", f, v4, mac)
				}
				return
			case <-time.After(500 * time.Millisecond):
				// The watcher may not be listening yet: send again.
			case <-deadline:
				t.Fatal("no conflict reported for a neighbour claiming our address")
			}
		}
	})

	t.Run("link down and up", func(t *testing.T) {
		drain := func() {
			for {
				select {
				case <-m.Failures():
				default:
					return
				}
			}
		}
		drain()
		ipCmd(t, "-n", n.self, "link", "set", "dp0", "down")
		select {
		case f := <-m.Failures():
			if !f.Failed || f.Group != "web" {
				t.Fatalf("failure = %+v, want web failed", f)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no failure reported for a down interface")
		}
		ipCmd(t, "-n", n.self, "link", "set", "dp0", "up")
		select {
		case f := <-m.Failures():
			if f.Failed {
				t.Fatalf("failure = %+v, want web recovered", f)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no recovery reported for an interface back up")
		}
		// The kernel flushed the IPv6 address on link down; it is back.
		waitFor(t, "addresses back after link up", 10*time.Second, func() error {
			got := addrsOf(t, n.self, "dp0")
			if _, ok := got["2001:db8::10/128"]; !ok {
				return fmt.Errorf("addresses %v", got)
			}
			if _, ok := got["192.0.2.10/32"]; !ok {
				return fmt.Errorf("addresses %v", got)
			}
			return nil
		})
	})

	t.Run("stale cleanup on restart", func(t *testing.T) {
		stop() // crash-like: nothing dropped
		if got := addrsOf(t, n.self, "dp0"); len(got) != 3 {
			t.Fatalf("addresses after Close = %v, want base + both traffic IPs kept", got)
		}
		// A labelled leftover and a foreign address raised by someone else.
		ipCmd(t, "-n", n.self, "addr", "add", "192.0.2.50/32", "dev", "dp0", "label", "dp0:sh")
		ipCmd(t, "-n", n.self, "addr", "add", "192.0.2.60/32", "dev", "dp0")
		m2, _ := startReal(t, n, dir)
		m2.Apply(Desired{Addresses: desired.Addresses[:1]}) // keep only v4
		waitFor(t, "stale v6 (record) and labelled v4 dropped", 10*time.Second, func() error {
			got := addrsOf(t, n.self, "dp0")
			keys := make([]string, 0, len(got))
			for k := range got {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			want := []string{"192.0.2.1/24", "192.0.2.10/32", "192.0.2.60/32"}
			if !slices.Equal(keys, want) {
				return fmt.Errorf("addresses %v, want %v", keys, want)
			}
			return nil
		})

		t.Run("drop all", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m2.DropAll(ctx); err != nil {
				t.Fatalf("DropAll() = %v", err)
			}
			got := addrsOf(t, n.self, "dp0")
			if _, ok := got["192.0.2.10/32"]; ok || len(got) != 2 {
				t.Errorf("addresses after DropAll = %v, want only 192.0.2.1/24 and the foreign 192.0.2.60/32", got)
			}
		})
	})

	t.Run("link up", func(t *testing.T) {
		m3, _ := startReal(t, n, t.TempDir())
		for _, tc := range []struct {
			name string
			up   bool
			err  bool
		}{{"dp0", true, false}, {"lo", true, false}, {"nope0", false, true}} {
			up, err := m3.LinkUp(tc.name)
			if up != tc.up || (err != nil) != tc.err {
				t.Errorf("LinkUp(%q) = %v, %v; want %v, error %v", tc.name, up, err, tc.up, tc.err)
			}
		}
	})
}
