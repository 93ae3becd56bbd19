package bpf

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netns"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

var (
	vip4            = netip.MustParseAddr("192.0.2.10")
	vip6            = netip.MustParseAddr("2001:db8::10")
	client4         = netip.MustParseAddr("198.51.100.7")
	client6         = netip.MustParseAddr("2001:db8:1::7")
	other4          = netip.MustParseAddr("192.0.2.99")
	testSeed uint32 = 0x5eed1234
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads an XDP program")
	}
}

func load(t testing.TB) *Objects {
	t.Helper()
	requireRoot(t)
	o, err := Load()
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func fill(v uint8) []uint8 {
	s := make([]uint8, NumBuckets)
	for i := range s {
		s[i] = v
	}
	return s
}

func group(owners, prev []uint8, alive uint8, ipOnly bool) Group {
	return Group{
		IPs:        []netip.Addr{vip4, vip6},
		Seed:       testSeed,
		HashIPOnly: ipOnly,
		SelfSlot:   0,
		Owners:     owners,
		Prev:       prev,
		PrevAlive:  alive,
		MAC:        testIfMAC,
	}
}

func setGroup(t testing.TB, o *Objects, g Group) {
	t.Helper()
	if err := o.SetGroup(0, g); err != nil {
		t.Fatalf("SetGroup() = %v", err)
	}
}

// run runs the program once on frame and checks the output frame: a passed
// frame is either untouched or has only its destination MAC rewritten to the
// interface MAC (ours reports which); a dropped frame reports ours=false.
func run(t testing.TB, o *Objects, frame []byte) (verdict uint32, ours bool) {
	t.Helper()
	out := make([]byte, len(frame)+256)
	ret, err := o.objs.ShoalXdp.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
	if err != nil {
		t.Fatalf("run program: %v", err)
	}
	if ret != xdpPass {
		return ret, false
	}
	// DataOut is trimmed by the library to the output length.
	if len(out) < len(frame) {
		t.Fatalf("output frame %d bytes, input %d", len(out), len(frame))
	}
	out = out[:len(frame)]
	if bytes.Equal(out, frame) {
		return ret, false
	}
	want := append(append([]byte{}, testIfMAC...), frame[6:]...)
	if diff := cmp.Diff(want, out); diff != "" {
		t.Fatalf("passed frame changed beyond the destination MAC (-want +got):\n%s", diff)
	}
	return ret, true
}

func counters(t testing.TB, o *Objects) Counters {
	t.Helper()
	c, err := o.Counters()
	if err != nil {
		t.Fatalf("Counters() = %v", err)
	}
	return c
}

func sub(a, b Counters) Counters {
	return Counters{
		PassedOwner:     a.PassedOwner - b.PassedOwner,
		PassedSocket:    a.PassedSocket - b.PassedSocket,
		DroppedNotOwner: a.DroppedNotOwner - b.DroppedNotOwner,
		DroppedHandover: a.DroppedHandover - b.DroppedHandover,
		PassedNotOurs:   a.PassedNotOurs - b.PassedNotOurs,
		ParseErrors:     a.ParseErrors - b.ParseErrors,
		ICMPSteered:     a.ICMPSteered - b.ICMPSteered,
		Fragments:       a.Fragments - b.Fragments,
	}
}

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		b[0] = 0x20 // keep it global unicast-looking, never v4-mapped
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return netip.AddrFrom4(b)
}

// TestBucketMatchesGo runs many random flows through the program with a
// random owner table and expects the verdict the Go reference predicts.
func TestBucketMatchesGo(t *testing.T) {
	o := load(t)
	r := rand.New(rand.NewPCG(1, 2))
	owners := make([]uint8, NumBuckets)
	for i := range owners {
		owners[i] = uint8(r.IntN(4))
	}
	for _, ipOnly := range []bool{false, true} {
		setGroup(t, o, group(owners, nil, 0xff, ipOnly))
		for _, v6 := range []bool{false, true} {
			for _, proto := range []string{"tcp-syn", "udp"} {
				t.Run(fmt.Sprintf("ipOnly=%v/v6=%v/%s", ipOnly, v6, proto), func(t *testing.T) {
					dst := vip4
					if v6 {
						dst = vip6
					}
					mismatches := 0
					for i := 0; i < 1500; i++ {
						src := randAddr(r, v6)
						sport, dport := uint16(r.Uint32()), uint16(r.Uint32())
						p := tcpSeg(sport, dport, tcpSYN)
						if proto == "udp" {
							p = udpDgram(sport, dport, 16)
						}
						var pkt []byte
						if v6 {
							pkt = ipv6(src, dst, nil, p)
						} else {
							pkt = ipv4(src, dst, 0, p)
						}
						b := Bucket(src, dst, sport, dport, testSeed, ipOnly)
						want := uint32(xdpDrop)
						if owners[b] == 0 {
							want = xdpPass
						}
						got, ours := run(t, o, ether(testMcastMAC, 0, pkt))
						if got != want || (got == xdpPass) != ours {
							mismatches++
							if mismatches < 5 {
								t.Errorf("flow %s:%d -> %s:%d bucket %d owner %d: verdict %d ours %v, want %d", src, sport, dst, dport, b, owners[b], got, ours, want)
							}
						}
					}
					if mismatches > 0 {
						t.Errorf("%d of 1500 verdicts differ from the Go reference", mismatches)
					}
				})
			}
		}
	}
}

// TestExactBucket owns exactly one bucket (the Go reference's) and checks
// that the flow passes while owning either neighbour instead drops it.
func TestExactBucket(t *testing.T) {
	o := load(t)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 40; i++ {
		v6 := i%2 == 1
		src, dst := randAddr(r, v6), vip4
		if v6 {
			dst = vip6
		}
		sport, dport := uint16(r.Uint32()), uint16(r.Uint32())
		var pkt []byte
		if v6 {
			pkt = ipv6(src, dst, nil, tcpSeg(sport, dport, tcpSYN))
		} else {
			pkt = ipv4(src, dst, 0, tcpSeg(sport, dport, tcpSYN))
		}
		frame := ether(testMcastMAC, 0, pkt)
		b := Bucket(src, dst, sport, dport, testSeed, false)
		for _, tc := range []struct {
			owned int
			want  uint32
		}{{b, xdpPass}, {(b + 1) % NumBuckets, xdpDrop}, {(b + NumBuckets - 1) % NumBuckets, xdpDrop}} {
			owners := fill(1)
			owners[tc.owned] = 0
			setGroup(t, o, group(owners, nil, 0xff, false))
			if got, _ := run(t, o, frame); got != tc.want {
				t.Errorf("flow %s:%d bucket %d, owned bucket %d: verdict %d, want %d", src, sport, b, tc.owned, got, tc.want)
			}
		}
	}
}

func TestVerdicts(t *testing.T) {
	o := load(t)
	self, peer := fill(0), fill(1)
	const sport, dport = 40000, 443
	tcp4 := func(flags uint8) []byte {
		return ether(testMcastMAC, 0, ipv4(client4, vip4, 0, tcpSeg(sport, dport, flags)))
	}
	tcp6 := func(flags uint8) []byte {
		return ether(testMcastMAC, 0, ipv6(client6, vip6, nil, tcpSeg(sport, dport, flags)))
	}
	// Inner packets of ICMP errors: what this node sent (vip -> client).
	inner4 := ipv4(vip4, client4, 0x4000, tcpSeg(dport, sport, tcpACK))
	inner6 := ipv6(vip6, client6, nil, tcpSeg(dport, sport, tcpACK))
	router4 := netip.MustParseAddr("203.0.113.1")
	router6 := netip.MustParseAddr("2001:db8:ff::1")
	fragNeeded := ether(testMcastMAC, 0, ipv4(router4, vip4, 0, l4{proto: 1, icmpType: 3, icmpCode: 4, inner: inner4}))
	tooBig := ether(testMcastMAC, 0, ipv6(router6, vip6, nil, l4{proto: 58, icmpType: 2, inner: inner6}))
	// Only the connection's bucket (client -> vip) is owned: the error is
	// steered by the embedded tuple, not by the router's address.
	connOwned := fill(1)
	connOwned[Bucket(client4, vip4, sport, dport, testSeed, false)] = 0
	connOwned[Bucket(client6, vip6, sport, dport, testSeed, false)] = 0
	routerOwned := fill(1)
	routerOwned[Bucket(router4, vip4, 0, 0, testSeed, false)] = 0
	routerOwned[Bucket(router6, vip6, 0, 0, testSeed, false)] = 0

	fragBucket := fill(1)
	fragBucket[Bucket(client4, vip4, 0, 0, testSeed, false)] = 0
	fragBucket[Bucket(client6, vip6, 0, 0, testSeed, false)] = 0
	portBucket := fill(1)
	portBucket[Bucket(client4, vip4, sport, dport, testSeed, false)] = 0

	cases := []struct {
		name      string
		g         Group
		frame     []byte
		want      uint32
		wantOurs  bool
		wantCount Counters
	}{
		{"owned syn", group(self, nil, 1, false), tcp4(tcpSYN), xdpPass, true, Counters{PassedOwner: 1}},
		{"owned ack", group(self, nil, 1, false), tcp4(tcpACK), xdpPass, true, Counters{PassedOwner: 1}},
		{"owned v6", group(self, nil, 1, false), tcp6(tcpACK), xdpPass, true, Counters{PassedOwner: 1}},
		{"owned vlan", group(self, nil, 1, false), ether(testMcastMAC, 42, ipv4(client4, vip4, 0, tcpSeg(sport, dport, tcpSYN))), xdpPass, true, Counters{PassedOwner: 1}},
		{"not owned syn", group(peer, nil, 3, false), tcp4(tcpSYN), xdpDrop, false, Counters{DroppedNotOwner: 1}},
		{"not owned ack no socket", group(peer, nil, 3, false), tcp4(tcpACK), xdpDrop, false, Counters{DroppedNotOwner: 1}},
		{"not owned v6", group(peer, nil, 3, false), tcp6(tcpSYN | tcpACK), xdpDrop, false, Counters{DroppedNotOwner: 1}},
		{"not owned vlan", group(peer, nil, 3, false), ether(testMcastMAC, 42, ipv4(client4, vip4, 0, tcpSeg(sport, dport, tcpSYN))), xdpDrop, false, Counters{DroppedNotOwner: 1}},
		{"no owner", group(fill(NoOwner), nil, 0, false), tcp4(tcpSYN), xdpDrop, false, Counters{DroppedNotOwner: 1}},
		{"not ours dst", group(peer, nil, 3, false), ether(testMcastMAC, 0, ipv4(client4, other4, 0, tcpSeg(sport, dport, tcpSYN))), xdpPass, false, Counters{PassedNotOurs: 1}},
		{"not ours arp", group(peer, nil, 3, false), append(append(append([]byte{}, testMcastMAC...), testPeerMAC...), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1), xdpPass, false, Counters{PassedNotOurs: 1}},
		{"handover syn to new owner", group(self, peer, 3, false), tcp4(tcpSYN), xdpPass, true, Counters{PassedOwner: 1}},
		{"handover ack left to alive old owner", group(self, peer, 3, false), tcp4(tcpACK), xdpDrop, false, Counters{DroppedHandover: 1}},
		{"handover rst left to alive old owner", group(self, peer, 3, false), tcp4(tcpRST), xdpDrop, false, Counters{DroppedHandover: 1}},
		{"handover v6 ack", group(self, peer, 3, false), tcp6(tcpACK), xdpDrop, false, Counters{DroppedHandover: 1}},
		{"dead old owner: new owner takes ack", group(self, peer, 1, false), tcp4(tcpACK), xdpPass, true, Counters{PassedOwner: 1}},
		{"handover udp goes to new owner", group(self, peer, 3, false), ether(testMcastMAC, 0, ipv4(client4, vip4, 0, udpDgram(sport, 53, 10))), xdpPass, true, Counters{PassedOwner: 1}},
		{"old owner without socket drops ack", group(peer, self, 3, false), tcp4(tcpACK), xdpDrop, false, Counters{DroppedNotOwner: 1}},
		{"icmp frag needed to connection owner", group(connOwned, nil, 3, false), fragNeeded, xdpPass, true, Counters{PassedOwner: 1, ICMPSteered: 1}},
		{"icmp frag needed elsewhere", group(routerOwned, nil, 3, false), fragNeeded, xdpDrop, false, Counters{DroppedNotOwner: 1, ICMPSteered: 1}},
		{"icmpv6 too big to connection owner", group(connOwned, nil, 3, false), tooBig, xdpPass, true, Counters{PassedOwner: 1, ICMPSteered: 1}},
		{"icmpv6 too big elsewhere", group(routerOwned, nil, 3, false), tooBig, xdpDrop, false, Counters{DroppedNotOwner: 1, ICMPSteered: 1}},
		{"icmp time exceeded", group(connOwned, nil, 3, false), ether(testMcastMAC, 0, ipv4(router4, vip4, 0, l4{proto: 1, icmpType: 11, inner: inner4})), xdpPass, true, Counters{PassedOwner: 1, ICMPSteered: 1}},
		{"icmp echo hashed without ports", group(routerOwned, nil, 3, false), ether(testMcastMAC, 0, ipv4(router4, vip4, 0, l4{proto: 1, icmpType: 8, payload: make([]byte, 8)})), xdpPass, true, Counters{PassedOwner: 1}},
		{"first fragment hashed without ports", group(fragBucket, nil, 3, false), ether(testMcastMAC, 0, ipv4(client4, vip4, 0x2000, udpDgram(sport, dport, 100))), xdpPass, true, Counters{PassedOwner: 1, Fragments: 1}},
		{"later fragment hashed without ports", group(fragBucket, nil, 3, false), ether(testMcastMAC, 0, ipv4(client4, vip4, 185, l4{proto: 17, payload: make([]byte, 64)})), xdpPass, true, Counters{PassedOwner: 1, Fragments: 1}},
		{"first fragment not in port bucket", group(portBucket, nil, 3, false), ether(testMcastMAC, 0, ipv4(client4, vip4, 0x2000, udpDgram(sport, dport, 100))), xdpDrop, false, Counters{DroppedNotOwner: 1, Fragments: 1}},
		{"unfragmented udp in port bucket", group(portBucket, nil, 3, false), ether(testMcastMAC, 0, ipv4(client4, vip4, 0x4000, udpDgram(sport, dport, 100))), xdpPass, true, Counters{PassedOwner: 1}},
		{"v6 first fragment", group(fragBucket, nil, 3, false), ether(testMcastMAC, 0, ipv6(client6, vip6, &[2]uint16{0, 1}, udpDgram(sport, dport, 100))), xdpPass, true, Counters{PassedOwner: 1, Fragments: 1}},
		{"v6 later fragment", group(fragBucket, nil, 3, false), ether(testMcastMAC, 0, ipv6(client6, vip6, &[2]uint16{100, 0}, l4{proto: 17, payload: make([]byte, 64)})), xdpPass, true, Counters{PassedOwner: 1, Fragments: 1}},
		{"v6 atomic fragment keeps ports", group(fragBucket, nil, 3, false), ether(testMcastMAC, 0, ipv6(client6, vip6, &[2]uint16{0, 0}, udpDgram(sport, dport, 10))), xdpDrop, false, Counters{DroppedNotOwner: 1}},
		{"bad ihl", group(self, nil, 1, false), func() []byte {
			f := tcp4(tcpSYN)
			f[14] = 0x44
			return f
		}(), xdpDrop, false, Counters{ParseErrors: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			setGroup(t, o, tc.g)
			before := counters(t, o)
			got, ours := run(t, o, tc.frame)
			if got != tc.want || ours != tc.wantOurs {
				t.Errorf("verdict %d ours %v, want %d ours %v", got, ours, tc.want, tc.wantOurs)
			}
			if diff := cmp.Diff(tc.wantCount, sub(counters(t, o), before)); diff != "" {
				t.Errorf("counters (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTruncated cuts frames to a multi-hosted IP at every length: the
// program never passes a cut frame as ours, passes it untouched when the
// destination cannot be read and drops it otherwise, counting a parse error
// each time.
func TestTruncated(t *testing.T) {
	o := load(t)
	setGroup(t, o, group(fill(0), nil, 1, false))
	inner4 := ipv4(vip4, client4, 0, tcpSeg(443, 40000, tcpACK))
	inner6 := ipv6(vip6, client6, nil, tcpSeg(443, 40000, tcpACK))
	frames := map[string]struct {
		frame  []byte
		dstEnd int // offset after the destination address
		need   int // length the program needs to decide
	}{
		"tcp4":      {ether(testMcastMAC, 0, ipv4(client4, vip4, 0, tcpSeg(1, 2, tcpACK))), 14 + 20, 14 + 20 + 20},
		"udp4 vlan": {ether(testMcastMAC, 7, ipv4(client4, vip4, 0, udpDgram(1, 2, 0))), 18 + 20, 18 + 20 + 8},
		"tcp6":      {ether(testMcastMAC, 0, ipv6(client6, vip6, nil, tcpSeg(1, 2, tcpACK))), 14 + 40, 14 + 40 + 20},
		// Embedded headers: the inner IP header and the 4 port bytes.
		"icmp4 err": {ether(testMcastMAC, 0, ipv4(client4, vip4, 0, l4{proto: 1, icmpType: 3, icmpCode: 4, inner: inner4[:28]})), 14 + 20, 14 + 20 + 8 + 20 + 4},
		"icmp6 err": {ether(testMcastMAC, 0, ipv6(client6, vip6, nil, l4{proto: 58, icmpType: 2, inner: inner6[:44]})), 14 + 40, 14 + 40 + 8 + 40 + 4},
		// A fragment needs no more than its fragment header.
		"frag6 hdr": {ether(testMcastMAC, 0, ipv6(client6, vip6, &[2]uint16{0, 1}, udpDgram(1, 2, 0))), 14 + 40, 14 + 40 + 8},
	}
	for name, f := range frames {
		t.Run(name, func(t *testing.T) {
			for n := 14; n < f.need; n++ {
				before := counters(t, o)
				got, ours := run(t, o, f.frame[:n])
				want := uint32(xdpDrop)
				if n < f.dstEnd {
					want = xdpPass
				}
				if got != want || ours {
					t.Errorf("cut at %d: verdict %d ours %v, want %d not ours", n, got, ours, want)
				}
				if d := sub(counters(t, o), before); d.ParseErrors != 1 {
					t.Errorf("cut at %d: parse errors +%d, want +1", n, d.ParseErrors)
				}
			}
			for n := f.need; n <= len(f.frame); n++ {
				if got, ours := run(t, o, f.frame[:n]); got != xdpPass || !ours {
					t.Errorf("cut at %d (complete headers): verdict %d ours %v, want pass as ours", n, got, ours)
				}
			}
		})
	}
}

// TestAtomicSwap rewrites the table many times and checks every write lands
// in the other half and flips the group at once.
func TestAtomicSwap(t *testing.T) {
	o := load(t)
	frame := ether(testMcastMAC, 0, ipv4(client4, vip4, 0, tcpSeg(1000, 80, tcpSYN)))
	for i := 0; i < 20; i++ {
		owner := uint8(i % 2)
		setGroup(t, o, group(fill(owner), nil, 3, false))
		want := uint32(xdpPass)
		if owner != 0 {
			want = xdpDrop
		}
		if got, _ := run(t, o, frame); got != want {
			t.Fatalf("update %d (owner %d): verdict %d, want %d", i, owner, got, want)
		}
	}
	if err := o.ClearGroup(0); err != nil {
		t.Fatalf("ClearGroup() = %v", err)
	}
	if got, ours := run(t, o, frame); got != xdpPass || ours {
		t.Errorf("after ClearGroup: verdict %d ours %v, want untouched pass", got, ours)
	}
}

func TestSetGroupErrors(t *testing.T) {
	o := load(t)
	ok := group(fill(0), nil, 1, false)
	cases := map[string]struct {
		index int
		g     Group
	}{
		"index":       {MaxGroups, ok},
		"short table": {0, Group{IPs: ok.IPs, Owners: make([]uint8, 10), MAC: testIfMAC}},
		"short prev":  {0, Group{IPs: ok.IPs, Owners: fill(0), Prev: make([]uint8, 3), MAC: testIfMAC}},
		"slot":        {0, Group{IPs: ok.IPs, Owners: fill(0), SelfSlot: 8, MAC: testIfMAC}},
		"mac":         {0, Group{IPs: ok.IPs, Owners: fill(0)}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := o.SetGroup(tc.index, tc.g); err == nil {
				t.Errorf("SetGroup(%d) = nil, want error", tc.index)
			}
		})
	}
	setGroup(t, o, ok)
	if err := o.SetGroup(1, ok); err == nil {
		t.Errorf("SetGroup(1) with group 0's IPs = nil, want error")
	}
}

// TestBySocket opens a real TCP connection on loopback in a fresh network
// namespace and runs the program there: a non-owner passes the
// connection's packets, but not those of a tuple only a listener matches.
func TestBySocket(t *testing.T) {
	o := load(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // switches this thread
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("restore network namespace: " + err.Error()) // never run on in the wrong namespace
		}
	}()
	if err := setLoopbackUp(); err != nil {
		t.Fatalf("loopback up: %v", err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()

	lo := netip.MustParseAddr("127.0.0.1")
	la := c.LocalAddr().(*net.TCPAddr)
	ra := ln.Addr().(*net.TCPAddr)
	g := group(fill(1), nil, 3, false)
	g.IPs = []netip.Addr{lo}
	setGroup(t, o, g)
	for _, tc := range []struct {
		name  string
		sport uint16
		flags uint8
		want  uint32
		count Counters
	}{
		{"established ack", uint16(la.Port), tcpACK, xdpPass, Counters{PassedSocket: 1}},
		{"established syn goes to owner only", uint16(la.Port), tcpSYN, xdpDrop, Counters{DroppedNotOwner: 1}},
		{"listener only", uint16(la.Port) + 1, tcpACK, xdpDrop, Counters{DroppedNotOwner: 1}},
	} {
		// No t.Run: a subtest runs on another goroutine, hence another
		// thread and network namespace than this locked one.
		before := counters(t, o)
		frame := ether(testMcastMAC, 0, ipv4(lo, lo, 0, tcpSeg(tc.sport, uint16(ra.Port), tc.flags)))
		got, _ := run(t, o, frame)
		if got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
		if diff := cmp.Diff(tc.count, sub(counters(t, o), before)); diff != "" {
			t.Errorf("%s: counters (-want +got):\n%s", tc.name, diff)
		}
	}
	// Held buckets: a prune that finds the connection keeps its bucket
	// held (the ACK still passes by socket); one that finds none clears it,
	// and the same ACK is dropped without a lookup.
	conn := Conn{Remote: netip.AddrPortFrom(lo, uint16(la.Port)), Local: netip.AddrPortFrom(lo, uint16(ra.Port))}
	if o.Held(0) != NumBuckets {
		t.Errorf("Held after the first SetGroup = %d, want all %d (connections may predate the agent)", o.Held(0), NumBuckets)
	}
	ack := ether(testMcastMAC, 0, ipv4(lo, lo, 0, tcpSeg(uint16(la.Port), uint16(ra.Port), tcpACK)))
	for _, tc := range []struct {
		name  string
		conns []Conn
		held  int
		want  uint32
		count Counters
	}{
		{"pruned with the socket", []Conn{conn}, 1, xdpPass, Counters{PassedSocket: 1}},
		{"pruned without it", nil, 0, xdpDrop, Counters{DroppedNotOwner: 1}},
	} {
		left, err := o.Prune(0, func() ([]Conn, error) { return tc.conns, nil })
		if err != nil || left != tc.held || o.Held(0) != tc.held {
			t.Errorf("%s: Prune() = %d, %v; Held() = %d; want %d held", tc.name, left, err, o.Held(0), tc.held)
		}
		before := counters(t, o)
		if got, _ := run(t, o, ack); got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
		if diff := cmp.Diff(tc.count, sub(counters(t, o), before)); diff != "" {
			t.Errorf("%s: counters (-want +got):\n%s", tc.name, diff)
		}
	}
	called := false
	if _, err := o.Prune(0, func() ([]Conn, error) { called = true; return nil, nil }); err != nil || called {
		t.Errorf("Prune with nothing held: dumped sockets = %v, err %v; want no dump", called, err)
	}

	// Handover: owner, alive previous owner elsewhere, but the socket is
	// here: keep it.
	g = group(fill(0), fill(1), 3, false)
	g.IPs = []netip.Addr{lo}
	setGroup(t, o, g)
	frame := ether(testMcastMAC, 0, ipv4(lo, lo, 0, tcpSeg(uint16(la.Port), uint16(ra.Port), tcpACK)))
	before := counters(t, o)
	if got, _ := run(t, o, frame); got != xdpPass {
		t.Errorf("handover with local socket: verdict %d, want pass", got)
	}
	if diff := cmp.Diff(Counters{PassedSocket: 1}, sub(counters(t, o), before)); diff != "" {
		t.Errorf("handover with local socket counters (-want +got):\n%s", diff)
	}
}

func FuzzProgram(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root: loads an XDP program")
	}
	o, err := Load()
	if err != nil {
		f.Fatalf("Load() = %v", err)
	}
	f.Cleanup(func() { o.Close() })
	if err := o.SetGroup(0, group(fill(0), fill(1), 3, false)); err != nil {
		f.Fatal(err)
	}
	f.Add(ether(testMcastMAC, 0, ipv4(client4, vip4, 0, tcpSeg(1, 2, tcpACK))))
	f.Add(ether(testMcastMAC, 5, ipv6(client6, vip6, &[2]uint16{0, 1}, udpDgram(1, 2, 4))))
	f.Add(ether(testMcastMAC, 0, ipv4(client4, vip4, 0, l4{proto: 1, icmpType: 3, inner: ipv4(vip4, client4, 0, udpDgram(2, 1, 0))})))
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 {
			return
		}
		got, _ := run(t, o, frame) // run checks the output frame
		if got != xdpPass && got != xdpDrop {
			t.Fatalf("verdict %d", got)
		}
	})
}
