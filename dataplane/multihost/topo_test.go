package multihost

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/shoal-project/shoal/bpf"
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
			_ = exec.Command("ip", "netns", "del", ns).Run()
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
		Digest: ownersDigest(owners),
	}
}

// ownersDigest stands in for the planner's table digest.
func ownersDigest(owners []uint8) uint64 {
	h := fnv.New64a()
	h.Write(owners)
	return h.Sum64()
}

// server is a TCP server in one node namespace: it answers every line with
// its node name and records the clients it accepted.
type server struct {
	name string
	ln   net.Listener
	mu   sync.Mutex
	seen map[string]int // client address -> accepts
	conn map[net.Conn]struct{}
	wg   sync.WaitGroup
}

func startServer(t testing.TB, ns netns.NsHandle, name string) *server {
	t.Helper()
	s := &server{name: name, seen: map[string]int{}, conn: map[net.Conn]struct{}{}}
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
			s.conn[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() { // the client closed: release the socket
					s.mu.Lock()
					delete(s.conn, c)
					s.mu.Unlock()
					c.Close()
				}()
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
	for c := range s.conn {
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	clear(s.conn)
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
	_ = cc.c.SetDeadline(time.Now().Add(10 * time.Second))
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

// Share test: many short connections from fixed client ports, so the hash
// inputs, and thus the expected owner of every connection and the expected
// shares, are fixed and known in advance.

const (
	shareConns    = 10000 // connections per phase
	sharePortBase = 20000 // client ports sharePortBase .. sharePortBase+shareConns-1, below ip_local_port_range
	shareParallel = 64    // connections in flight at once
	shareTol      = 0.03  // each node's share within +-3 % of even
	shareMaxFails = 10    // stop a phase after this many failed connections
)

// oneShot opens a connection from local:port to vip, exchanges one line and
// closes it. It returns the node that answered.
func oneShot(ctx context.Context, ns netns.NsHandle, local netip.Addr, port uint16, vip netip.Addr) (string, error) {
	var c net.Conn
	err := inNS(ns, func() error {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, port))}
		var err error
		c, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(vip, testPort).String())
		return err
	})
	if err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	cc := &clientConn{c: c, r: bufio.NewReader(c)}
	node, err := cc.ping()
	if err != nil {
		return "", fmt.Errorf("exchange: %w", err)
	}
	return node, nil
}

// shareResult is what happened to one connection of a share phase.
type shareResult struct {
	port uint16
	node string
	err  error
}

// openShort opens n short connections from local, ports sharePortBase.., with
// at most shareParallel in flight, and returns one result per port (in port
// order). It stops early after shareMaxFails failures.
func (cl *cluster) openShort(t *testing.T, n int, local, vip netip.Addr) []shareResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	res := make([]shareResult, n)
	next := make(chan int)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fails int
	)
	for range shareParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				port := uint16(sharePortBase + i)
				node, err := oneShot(ctx, cl.clientNS, local, port, vip)
				res[i] = shareResult{port: port, node: node, err: err}
				if err != nil {
					mu.Lock()
					if fails++; fails >= shareMaxFails {
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			for j := i; j < n; j++ {
				res[j] = shareResult{port: uint16(sharePortBase + j), err: fmt.Errorf("not attempted: %w", ctx.Err())}
			}
			break feed
		}
	}
	close(next)
	wg.Wait()
	return res
}

// TestMultiHostedShares opens 10,000 connections from fixed client ports to
// the multi-hosted IP, with three and with four nodes alive: every
// connection must be answered and accepted exactly once by the node the Go
// reference hash and the owner table predict, none may fail or be reset,
// and each node's share must be within +-3 % of even. The ports are fixed,
// so the expected shares are a fixed property of the hash, computed here
// and compared with the real kernel run.
func TestMultiHostedShares(t *testing.T) {
	requireRoot(t)
	cl := newCluster(t, 4)
	for i, tc := range []struct {
		name  string
		alive []bool
	}{
		{"three nodes", []bool{true, true, true, false}},
		{"four nodes", []bool{true, true, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for j, a := range tc.alive {
				cl.setLink(t, j, a)
			}
			owners := cl.apply(t, tc.alive, nil)
			local := clientAddr(i) // a fresh address per phase: no TIME-WAIT from the last one
			var nodes []string
			for j, a := range tc.alive {
				if a {
					nodes = append(nodes, cl.names[j])
				}
			}

			start := time.Now()
			res := cl.openShort(t, shareConns, local, testVIP4)
			elapsed := time.Since(start)

			wantShares, gotShares := map[string]int{}, map[string]int{}
			failed, resets, wrong := 0, 0, 0
			for _, r := range res {
				b := bpf.Bucket(local, testVIP4, r.port, testPort, testSeed, false)
				want := "none"
				if o := owners[b]; o != dataplane.NoOwner {
					want = cl.names[o]
				}
				wantShares[want]++
				if r.err != nil {
					failed++
					if errors.Is(r.err, syscall.ECONNRESET) {
						resets++
					}
					if failed <= 5 {
						t.Errorf("connection from port %d (owner %s): %v", r.port, want, r.err)
					}
					continue
				}
				gotShares[r.node]++
				addr := netip.AddrPortFrom(local, r.port).String()
				accepts := map[string]int{}
				for _, s := range cl.srvs {
					if k := s.accepted(addr); k > 0 {
						accepts[s.name] = k
					}
				}
				if r.node != want || !cmp.Equal(accepts, map[string]int{want: 1}) {
					wrong++
					if wrong <= 5 {
						t.Errorf("connection from port %d: answered by %s, accepts %v, want %s and accepted once by it", r.port, r.node, accepts, want)
					}
				}
			}
			if failed > 0 {
				t.Errorf("%d of %d connections failed (%d reset)", failed, shareConns, resets)
			}
			if wrong > 0 {
				t.Errorf("%d of %d connections not answered and accepted exactly once by the predicted node", wrong, shareConns)
			}
			if diff := cmp.Diff(wantShares, gotShares); diff != "" {
				t.Errorf("kernel shares differ from the hash's prediction (-want +got):\n%s", diff)
			}
			even := float64(shareConns) / float64(len(nodes))
			for _, node := range nodes {
				dev := (float64(gotShares[node]) - even) / even
				if math.Abs(dev) > shareTol {
					t.Errorf("node %s got %d of %d connections, %+.2f %% from even (%.0f), want within +-%.0f %%", node, gotShares[node], shareConns, 100*dev, even, 100*shareTol)
				}
			}
			t.Logf("%d connections from %s ports %d..%d in %v: shares %v (predicted %v)",
				shareConns, local, sharePortBase, sharePortBase+shareConns-1, elapsed.Round(time.Millisecond), gotShares, wantShares)
		})
	}
}
