package multihost

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/dataplane"
	"github.com/vishvananda/netns"
)

// Test topology: node namespaces and a client namespace, each with eth0
// plugged into a bridge that lives in its own switch namespace.

const (
	testPort  = 8080
	testSeed  = 0xc0ffee
	bridgeNet = "10.77.0."
)

var (
	testVIP4  = netip.MustParseAddr("192.0.2.10")
	testVIP6  = netip.MustParseAddr("2001:db8::10")
	testGroup = netip.MustParseAddr("239.77.83.1")
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and attaches XDP")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2: ip not found")
	}
}

func sh(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

type topo struct {
	prefix string
	sw     string
	client string
	nodes  []string // namespace names, node i has 10.77.0.(i+1)
}

func (tp *topo) ns(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// newTopo builds n node namespaces, a client namespace and a switch.
func newTopo(t testing.TB, n int) *topo {
	t.Helper()
	var rb [3]byte
	rand.Read(rb[:])
	p := "mht-" + hex.EncodeToString(rb[:])
	tp := &topo{prefix: p, sw: p + "-sw", client: p + "-c"}
	t.Cleanup(func() {
		for _, ns := range append([]string{tp.sw, tp.client}, tp.nodes...) {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	sh(t, "netns", "add", tp.sw)
	sh(t, "-n", tp.sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	sh(t, "-n", tp.sw, "link", "set", "br0", "up")
	plug := func(ns, port string) {
		sh(t, "netns", "add", ns)
		sh(t, "-n", ns, "link", "set", "lo", "up")
		sh(t, "-n", tp.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "-n", tp.sw, "link", "set", port, "master", "br0", "up")
		sh(t, "-n", ns, "link", "set", "eth0", "up")
	}
	for i := range n {
		ns := fmt.Sprintf("%s-n%d", p, i)
		tp.nodes = append(tp.nodes, ns)
		plug(ns, fmt.Sprintf("p%d", i))
		sh(t, "-n", ns, "addr", "add", fmt.Sprintf("%s%d/24", bridgeNet, i+1), "dev", "eth0")
		sh(t, "-n", ns, "addr", "add", fmt.Sprintf("2001:db8:1::%d/64", i+1), "dev", "eth0", "nodad")
	}
	plug(tp.client, "pc")
	for i := range 4 { // one client source address per test phase
		sh(t, "-n", tp.client, "addr", "add", fmt.Sprintf("%s%d/24", bridgeNet, 100+i), "dev", "eth0")
	}
	sh(t, "-n", tp.client, "addr", "add", "2001:db8:1::100/64", "dev", "eth0", "nodad")
	sh(t, "-n", tp.client, "route", "add", testVIP4.String()+"/32", "dev", "eth0")
	sh(t, "-n", tp.client, "route", "add", testVIP6.String()+"/128", "dev", "eth0")
	return tp
}

// permOwners is the test's own allocation: bucket b belongs to the first
// alive slot of the b-th permutation (lexicographic) of the 8 slots.
func permOwners(alive []bool) []uint8 {
	owners := make([]uint8, dataplane.NumBuckets)
	var fact [8]int
	fact[0] = 1
	for i := 1; i < 8; i++ {
		fact[i] = fact[i-1] * i
	}
	for b := range owners {
		rest := []uint8{0, 1, 2, 3, 4, 5, 6, 7}
		r := b
		owners[b] = dataplane.NoOwner
		for i := 7; i >= 0; i-- {
			k := r / fact[i]
			r %= fact[i]
			s := rest[k]
			rest = append(rest[:k], rest[k+1:]...)
			if int(s) < len(alive) && alive[s] {
				owners[b] = s
				break
			}
		}
	}
	return owners
}

func aliveMask(alive []bool) uint8 {
	var m uint8
	for i, a := range alive {
		if a {
			m |= 1 << i
		}
	}
	return m
}

func multiGroup(self uint8, owners, prev []uint8, alive []bool) dataplane.MultiGroup {
	return dataplane.MultiGroup{
		Name: "web", Interface: "eth0",
		IPs:  []netip.Addr{testVIP4, testVIP6},
		MAC:  MulticastMAC(testGroup),
		Seed: testSeed, SelfSlot: self,
		Owners: owners, Prev: prev, PrevAlive: aliveMask(alive),
	}
}

// server is a TCP server in one node namespace: it answers every line with
// its node name and records the clients it accepted.
type server struct {
	name string
	ln   net.Listener
	mu   sync.Mutex
	seen map[string]int // client address -> accepts
	conn []net.Conn
	wg   sync.WaitGroup
}

func startServer(t testing.TB, ns netns.NsHandle, name string) *server {
	t.Helper()
	s := &server{name: name, seen: map[string]int{}}
	err := inNS(ns, func() error {
		var err error
		s.ln, err = net.Listen("tcp", fmt.Sprintf(":%d", testPort))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", name, err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen[c.RemoteAddr().String()]++
			s.conn = append(s.conn, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := c.Write([]byte(s.name + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { s.crash() })
	return s
}

// crash closes the listener and aborts every connection (SO_LINGER 0), so
// that no socket of this node survives, like a crashed node.
func (s *server) crash() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conn {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	s.conn = nil
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *server) accepted(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[addr]
}

// clientConn is one client connection and the node that answered it.
type clientConn struct {
	c    net.Conn
	r    *bufio.Reader
	node string
}

func (cc *clientConn) ping() (string, error) {
	cc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := cc.c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	line, err := cc.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

func dial(ns netns.NsHandle, local, vip netip.Addr) (*clientConn, error) {
	var c net.Conn
	err := inNS(ns, func() error {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
		var err error
		c, err = d.Dial("tcp", netip.AddrPortFrom(vip, testPort).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	cc := &clientConn{c: c, r: bufio.NewReader(c)}
	cc.node, err = cc.ping()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("first exchange: %w", err)
	}
	return cc, nil
}
