package hostile

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/confsync/identity"
	"github.com/shoal-project/shoal/gossip"
	"github.com/shoal-project/shoal/gossip/wire"
	"github.com/shoal-project/shoal/test/chaos"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

const (
	clusterName = "hostile"
	servePort   = 8080
	hbPort      = 7947
)

var (
	hbGroup  = netip.MustParseAddr("239.77.83.1")
	singleIP = netip.MustParseAddr("192.0.2.20")
	multi4   = netip.MustParseAddr("203.0.113.20")
	multi6   = netip.MustParseAddr("2001:db8::20")
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, raw sockets and real agents for hostile-input tests")
	}
}

// shoalBinary is the binary under test: $SHOAL_BIN or a fresh build.
func shoalBinary(t *testing.T) string { return e2ekit.Binary(t) }

// rig is two agents (node0, node1) with a single- and a multi-hosted group,
// a spare node namespace (node2) and a client.
type rig struct {
	net    *harness.Net
	agents *chaos.Agents
	sopts  shoalrun.Options
}

func newRig(t *testing.T) *rig { return newRigWith(t, "", nil) }

// newRigWith is newRig with extra cluster TOML and a hook that may edit the
// generated files before the agents start.
func newRigWith(t *testing.T, extraTOML string, edit func(*chaos.Agents) error) *rig {
	t.Helper()
	needRoot(t)
	bin := shoalBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := harness.New(ctx, harness.Options{Nodes: 3, Client: true, Prefix: "shx-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	sopts := shoalrun.Options{Binary: bin, ClusterName: clusterName, Nodes: []int{0, 1}, Groups: []shoalrun.Group{
		{Name: "web", Mode: "single", IPs: []netip.Addr{singleIP}},
		{Name: "mh", Mode: "multi", IPs: []netip.Addr{multi4, multi6}},
	}, ExtraTOML: extraTOML}
	a, err := chaos.NewAgents(n, sopts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		if err := edit(a); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = a.StopAll(2 * time.Second) })
	if _, err := n.ServeAll(servePort); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} {
		if err := a.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	r := &rig{net: n, agents: a, sopts: sopts}
	r.waitHealthy(t, "start")
	return r
}

// status fetches node's status or fails the test.
func (r *rig) status(t *testing.T, node int) *chaos.AgentStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.agents.Status(ctx, node)
	if err != nil {
		t.Fatalf("status of node%d: %v", node, err)
	}
	return st
}

// waitHealthy waits until both agents see both up, the single-hosted IP
// has one holder and the client connects to every traffic IP.
func (r *rig) waitHealthy(t *testing.T, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	err := harness.Wait(ctx, "healthy cluster "+when, func() (bool, error) {
		for _, i := range []int{0, 1} {
			if !r.agents.Running(i) {
				return false, harness.Abort(fmt.Errorf("agent on node%d exited:\n%s", i, shoalrun.Tail(r.agents.Logs(i), 2000)))
			}
			st, err := r.agents.Status(ctx, i)
			if err != nil {
				return false, err
			}
			if !slices.Equal(st.View.Up, []string{"node0", "node1"}) {
				return false, fmt.Errorf("node%d view %v", i, st.View.Up)
			}
		}
		h, err := r.net.WhoHas(singleIP)
		if err != nil || len(h) != 1 {
			return false, fmt.Errorf("%s on %v (%v)", singleIP, h, err)
		}
		for _, ip := range []netip.Addr{singleIP, multi4, multi6} {
			if err := r.connect(ip); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%v\nnode0:\n%s\nnode1:\n%s", err, shoalrun.Tail(r.agents.Logs(0), 2000), shoalrun.Tail(r.agents.Logs(1), 2000))
	}
}

// connect makes one TCP connection from the client to ip.
func (r *rig) connect(ip netip.Addr) error {
	return harness.InNamespace(r.net.Client(), func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip, servePort).String(), time.Second)
		if err != nil {
			return fmt.Errorf("connect %s: %w", ip, err)
		}
		return c.Close()
	})
}

// nodeKey loads node's private key from the generated files.
func (r *rig) nodeKey(t *testing.T, node int) ed25519.PrivateKey {
	t.Helper()
	k, err := identity.LoadPrivateKey(filepath.Join(r.agents.Files.Dir, harness.NodeName(node), "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// capture joins the heartbeat group in the client namespace and returns
// the first heartbeat packet from node.
func (r *rig) capture(t *testing.T, node string) []byte {
	t.Helper()
	var conn *net.UDPConn
	err := harness.InNamespace(r.net.Client(), func() error {
		ifi, err := net.InterfaceByName(harness.IfName)
		if err != nil {
			return err
		}
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			_ = rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("%s:%d", hbGroup, hbPort))
		if err != nil {
			return err
		}
		conn = pc.(*net.UDPConn)
		return ipv4.NewPacketConn(conn).JoinGroup(ifi, &net.UDPAddr{IP: hbGroup.AsSlice()})
	})
	if err != nil {
		t.Fatalf("join heartbeat group in the client: %v", err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		_ = conn.SetReadDeadline(deadline)
		k, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("capture heartbeat of %s: %v", node, err)
		}
		p, err := wire.Decode(buf[:k])
		if err == nil && p.Node == node && p.Type == wire.TypeHeartbeat {
			return bytes.Clone(buf[:k])
		}
	}
	t.Fatalf("no heartbeat of %s in 10 s", node)
	return nil
}

// send sends b from the client to node's heartbeat port (unicast).
func (r *rig) send(t *testing.T, node int, b []byte) {
	t.Helper()
	to := netip.AddrPortFrom(r.net.NodeAddr4(node).Addr(), hbPort)
	err := harness.InNamespace(r.net.Client(), func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(b)
		return err
	})
	if err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
}

func randomKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func encode(t *testing.T, p *wire.Packet, key ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := wire.Encode(p, key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hasEvent waits up to 3 s for node to raise an event of type typ at or
// after since whose JSON mentions want.
func (r *rig) hasEvent(ctx context.Context, node int, typ events.Type, since time.Time, want string) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := harness.Wait(wctx, "event "+string(typ), func() (bool, error) {
		evs, err := r.agents.Events(wctx, node)
		if err != nil {
			return false, err
		}
		for _, e := range evs {
			if e.Type != typ || e.Time.Before(since) {
				continue
			}
			b, _ := json.Marshal(e)
			if want == "" || strings.Contains(string(b), want) {
				return true, nil
			}
		}
		return false, nil
	})
	return err == nil, nil
}

// TestHostileHeartbeats sends forged, replayed, wrong-cluster, wrong-key,
// unknown-sender, malformed and oversized heartbeats to node0 and checks
// each is rejected and counted under its reason, reported by a
// heartbeat-rejected event, and that the cluster keeps working.
func TestHostileHeartbeats(t *testing.T) {
	r := newRig(t)
	real1 := r.capture(t, "node1")
	p1, err := wire.Decode(real1)
	if err != nil {
		t.Fatal(err)
	}
	key1 := r.nodeKey(t, 1)
	fresh := func() *wire.Packet {
		return &wire.Packet{Type: wire.TypeHeartbeat, Cluster: clusterName, Node: "node1", BootEpoch: p1.BootEpoch,
			Seq: p1.Seq + 1_000_000, SendTime: time.Now().UnixNano(), Health: wire.Health{OK: true},
			ConfigVersion: p1.ConfigVersion, ConfigHash: p1.ConfigHash}
	}
	// A fresh sequence: a tampered copy of an already seen packet is
	// refused as a replay before its signature is checked.
	tampered := encode(t, fresh(), key1)
	tampered[len(tampered)-wire.SignatureSize-1] ^= 0x55 // inside the signed part
	wrongCluster := fresh()
	wrongCluster.Cluster = "other"
	unknown := fresh()
	unknown.Node = "mallory"
	oversize := append(bytes.Clone(real1[:6]), make([]byte, wire.MaxSize+100)...)

	tests := []struct {
		name   string
		packet []byte
		reason string
	}{
		{"replayed", real1, gossip.RejectReplay},
		{"forged (tampered after signing)", tampered, gossip.RejectBadSignature},
		{"wrong key (node1 signed by another key)", encode(t, fresh(), randomKey(t)), gossip.RejectBadSignature},
		{"wrong cluster", encode(t, wrongCluster, key1), gossip.RejectWrongCluster},
		{"unknown sender", encode(t, unknown, randomKey(t)), gossip.RejectUnknownNode},
		{"oversized", oversize, gossip.RejectOversize},
		{"malformed", append([]byte("SHB\x01\x01\x00"), bytes.Repeat([]byte{0xff}, 200)...), gossip.RejectMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := r.status(t, 0).Heartbeats
			since := time.Now().Add(-time.Second)
			const copies = 5
			for range copies {
				r.send(t, 0, tc.packet)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var after gossip.Stats
			err := harness.Wait(ctx, "rejection counted", func() (bool, error) {
				st, err := r.agents.Status(ctx, 0)
				if err != nil {
					return false, err
				}
				after = st.Heartbeats
				return after.Rejected[tc.reason] >= before.Rejected[tc.reason]+copies, nil
			})
			if err != nil {
				t.Errorf("rejected[%s] %d -> %d after %d packets: %v (all: %v)", tc.reason, before.Rejected[tc.reason], after.Rejected[tc.reason], copies, err, after.Rejected)
			}
			if after.Accepted > before.Accepted+20 {
				t.Logf("accepted grew by %d (real heartbeats of node1 continue)", after.Accepted-before.Accepted)
			}
			ok, err := r.hasEvent(ctx, 0, events.HeartbeatRejected, since, "")
			if err != nil || !ok {
				t.Errorf("no %s event on node0 for a %s packet (err %v): the agent does not publish rejections as events", events.HeartbeatRejected, tc.reason, err)
			}
		})
	}
	r.waitHealthy(t, "after hostile heartbeats")
	for _, i := range []int{0, 1} {
		if !r.agents.Running(i) {
			t.Errorf("agent on node%d exited", i)
		}
	}
	if ex := r.agents.Exits(); len(ex) > 0 {
		t.Errorf("agents exited: %+v", ex)
	}
}

// TestIntruder runs a real agent on node2 that holds the cluster secret but
// is not in the cluster's config (its own config lists it): node0 and node1
// must refuse it in serf (admission) and in heartbeats (unknown node), and
// keep their view.
func TestIntruder(t *testing.T) {
	r := newRig(t)
	before := r.status(t, 0).Heartbeats
	since := time.Now()
	dir := filepath.Join(r.net.Dir(), "intruder")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "node.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	o := r.sopts
	o.Nodes = []int{0, 1, 2}
	o.Groups = []shoalrun.Group{{Name: "web", Mode: "single", IPs: []netip.Addr{singleIP}, Members: []int{0, 1}}}
	pubs := map[int]string{0: r.agents.Files.PublicKeys[0], 1: r.agents.Files.PublicKeys[1], 2: "ed25519:" + base64.StdEncoding.EncodeToString(pub)}
	cluster := filepath.Join(dir, "cluster.toml")
	if err := os.WriteFile(cluster, []byte(shoalrun.RenderCluster(r.net, o, pubs)), 0o600); err != nil {
		t.Fatal(err)
	}
	agentFile := filepath.Join(dir, "agent.toml")
	agent := fmt.Sprintf("node = \"node2\"\ncluster_config = %q\ndata_dir = %q\nkey_file = %q\nsecret_file = %q\nbind = %q\nheartbeat_interface = \"eth0\"\nsocket = %q\n",
		cluster, filepath.Join(dir, "data"), keyFile, r.agents.Files.Secret, r.net.NodeAddr4(2).Addr(), filepath.Join(dir, "shoal.sock"))
	if err := os.WriteFile(agentFile, []byte(agent), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := r.net.Start(2, "intruder", []string{r.sopts.Binary, "agent", "--config", agentFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var after gossip.Stats
	err = harness.Wait(ctx, "intruder refused", func() (bool, error) {
		if p.Exited() {
			return false, harness.Abort(fmt.Errorf("intruder exited: %v\n%s", p.Wait(), shoalrun.Tail(p.Logs(), 2000)))
		}
		st, err := r.agents.Status(ctx, 0)
		if err != nil {
			return false, err
		}
		after = st.Heartbeats
		return after.AdmissionRefused > before.AdmissionRefused && after.Rejected[gossip.RejectUnknownNode] > before.Rejected[gossip.RejectUnknownNode], nil
	})
	if err != nil {
		t.Errorf("admission refused %d -> %d, unknown-node rejections %d -> %d: %v\nintruder log:\n%s", before.AdmissionRefused, after.AdmissionRefused,
			before.Rejected[gossip.RejectUnknownNode], after.Rejected[gossip.RejectUnknownNode], err, shoalrun.Tail(p.Logs(), 2000))
	}
	for _, i := range []int{0, 1} {
		st := r.status(t, i)
		for _, m := range st.Members {
			if m.Name == "node2" {
				t.Errorf("node%d lists the intruder as a member: %+v", i, m)
			}
		}
		if !slices.Equal(st.View.Up, []string{"node0", "node1"}) {
			t.Errorf("node%d view %v, want [node0 node1]", i, st.View.Up)
		}
	}
	ok, err := r.hasEvent(ctx, 0, events.HeartbeatRejected, since, "")
	if err != nil || !ok {
		t.Errorf("no %s event on node0 for the intruder (err %v): the agent does not publish rejections/admission refusals as events", events.HeartbeatRejected, err)
	}
	r.waitHealthy(t, "with the intruder running")
}

// TestMalformedNeighbourFrames sends malformed ARP and NDP frames from the
// client to the multi-hosted responder, then checks that both nodes still
// answer ARP and neighbour solicitations for the multi-hosted IPs, and that
// the malformed counters in the status JSON rose.
func TestMalformedNeighbourFrames(t *testing.T) {
	r := newRig(t)
	clientMAC := r.net.NodeMAC(-1)
	if clientMAC == nil {
		clientMAC = net.HardwareAddr{0x02, 0x5e, 0, 0, 0, 0x64}
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	eth := func(dst net.HardwareAddr, typ uint16, payload []byte) []byte {
		b := append(append(bytes.Clone(dst), clientMAC...), byte(typ>>8), byte(typ))
		return append(b, payload...)
	}
	arpHdr := func(hlen, plen byte, op uint16) []byte {
		return []byte{0, 1, 8, 0, hlen, plen, byte(op >> 8), byte(op)}
	}
	cl4 := r.net.ClientAddr4().Addr().As4()
	t4 := multi4.As4()
	goodArp := func(sender net.HardwareAddr) []byte {
		b := arpHdr(6, 4, 1)
		b = append(b, sender...)
		b = append(b, cl4[:]...)
		b = append(b, make([]byte, 6)...)
		return append(b, t4[:]...)
	}
	// Neighbour solicitation for multi6 (ICMPv6 type 135) with a given hop
	// limit and payload length field.
	solicited := net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x20}
	ns := func(hop byte, plenDelta int) []byte {
		icmp := []byte{135, 0, 0, 0, 0, 0, 0, 0}
		t16 := multi6.As16()
		icmp = append(icmp, t16[:]...)
		icmp = append(icmp, 1, 1)
		icmp = append(icmp, clientMAC...)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)+plenDelta))
		ip[6], ip[7] = 58, hop
		src := r.net.ClientAddr6().Addr().As16()
		copy(ip[8:], src[:])
		dst := netip.MustParseAddr("ff02::1:ff00:20").As16()
		copy(ip[24:], dst[:])
		return append(ip, icmp...)
	}
	arpFrames := [][]byte{
		eth(bcast, 0x0806, arpHdr(6, 4, 1)[:6]),                               // truncated header
		eth(bcast, 0x0806, append(arpHdr(20, 4, 1), make([]byte, 12)...)),     // hardware length beyond the frame
		eth(bcast, 0x0806, goodArp(net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1})), // multicast sender MAC
		eth(bcast, 0x0806, append(goodArp(clientMAC)[:20], 0xde, 0xad)),       // cut inside the addresses
	}
	ndpFrames := [][]byte{
		eth(solicited, 0x86dd, ns(255, 0)[:30]), // short IPv6 header
		eth(solicited, 0x86dd, ns(255, 400)),    // payload length beyond the frame
		eth(solicited, 0x86dd, ns(64, 0)),       // hop limit != 255
	}
	before := malformedCounters(t, r)
	const rounds = 10
	err := harness.InNamespace(r.net.Client(), func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(harness.IfName)
		if err != nil {
			return err
		}
		for range rounds {
			for _, f := range append(slices.Clone(arpFrames), ndpFrames...) {
				proto := binary.BigEndian.Uint16(f[12:14])
				sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(proto), Halen: 6}
				copy(sa.Addr[:], f[:6])
				if err := unix.Sendto(fd, f, 0, sa); err != nil {
					return fmt.Errorf("send frame: %w", err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send malformed frames: %v", err)
	}
	// The responders keep answering: forget every neighbour and connect
	// again, which needs fresh ARP and NDP answers.
	if err := r.net.FlushClientNeigh(); err != nil {
		t.Fatal(err)
	}
	r.waitHealthy(t, "after malformed ARP/NDP frames")
	after := malformedCounters(t, r)
	if before.found && after.found {
		if after.arp < before.arp+rounds*2 {
			t.Errorf("malformed ARP counter %d -> %d after %d malformed frames per node", before.arp, after.arp, rounds*len(arpFrames))
		}
		if after.ndp < before.ndp+rounds {
			t.Errorf("malformed NDP counter %d -> %d after %d malformed frames per node", before.ndp, after.ndp, rounds*len(ndpFrames))
		}
	} else {
		t.Errorf("the status JSON carries no multi-hosted responder counters (multihost.Status MalformedARP/MalformedNDP): cannot see the malformed frames counted")
	}
}

type counters struct {
	found    bool
	arp, ndp uint64
}

// malformedCounters sums the MalformedARP and MalformedNDP counters found
// anywhere in both nodes' status JSON.
func malformedCounters(t *testing.T, r *rig) counters {
	t.Helper()
	var c counters
	for _, i := range []int{0, 1} {
		st := r.status(t, i)
		b, err := json.Marshal([]any{st.Dataplane, st.Multihost})
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		walk(v, func(k string, n float64) {
			switch strings.ToLower(strings.ReplaceAll(k, "_", "")) {
			case "malformedarp":
				c.found = true
				c.arp += uint64(n)
			case "malformedndp":
				c.ndp += uint64(n)
			}
		})
	}
	return c
}

func walk(v any, f func(string, float64)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if n, ok := e.(float64); ok {
				f(k, n)
			}
			walk(e, f)
		}
	case []any:
		for _, e := range x {
			walk(e, f)
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
