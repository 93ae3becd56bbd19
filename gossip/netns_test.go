package gossip

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNS runs f on a locked thread switched into ns; sockets created by f stay
// in ns after the thread switches back.
func inNS(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("set netns: %w", err)
	}
	defer netns.Set(orig) //nolint:errcheck // best effort; the thread is locked and unlocked right after
	return f()
}

// testNet is a bridge namespace ("switch") and one namespace per node, each
// with eth0 = 10.77.0.<i+1>/24 on a veth whose peer vb<i> is in the bridge.
type testNet struct {
	prefix string
	br     string
	nodes  []string
	hs     []netns.NsHandle
}

func newTestNet(t *testing.T, n int) *testNet {
	t.Helper()
	var r [3]byte
	rand.Read(r[:])
	tn := &testNet{prefix: "gsp-" + hex.EncodeToString(r[:])}
	tn.br = tn.prefix + "-br"
	t.Cleanup(func() {
		for _, h := range tn.hs {
			h.Close()
		}
		for _, ns := range append(slices.Clone(tn.nodes), tn.br) {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	run(t, "ip", "netns", "add", tn.br)
	run(t, "ip", "-n", tn.br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	run(t, "ip", "-n", tn.br, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%s-%d", tn.prefix, i+1)
		tn.nodes = append(tn.nodes, ns)
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "-n", tn.br, "link", "add", tn.port(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "-n", tn.br, "link", "set", tn.port(i), "master", "br0", "up")
		run(t, "ip", "-n", ns, "addr", "add", tn.addr(i).String()+"/24", "dev", "eth0")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		h, err := netns.GetFromName(ns)
		if err != nil {
			t.Fatalf("open netns %s: %v", ns, err)
		}
		tn.hs = append(tn.hs, h)
	}
	return tn
}

func (tn *testNet) port(i int) string     { return fmt.Sprintf("vb%d", i+1) }
func (tn *testNet) addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)}) }

// link sets node i's bridge port up or down (partition / heal).
func (tn *testNet) link(t *testing.T, i int, up bool) {
	state := "down"
	if up {
		state = "up"
	}
	run(t, "ip", "-n", tn.br, "link", "set", tn.port(i), state)
}

// TestNetnsMulticastSerf runs three agents with real sockets in three
// namespaces: multicast heartbeats, encrypted serf with admission (a fourth,
// unconfigured node with the right secret is refused), user events and
// queries, key rotation, and re-merge after a partition heals.
func TestNetnsMulticastSerf(t *testing.T) {
	requireRoot(t, "creates network namespaces, veths and a bridge")
	const n = 3
	tn := newTestNet(t, n+1) // the last namespace holds the intruder
	secret := []byte("netns test cluster secret")
	members := make([]Member, n)
	for i := range members {
		members[i] = Member{Name: testName(i), Addr: tn.addr(i), PublicKey: testKey(i).Public().(ed25519.PublicKey)}
	}
	intruderKey := testKey(50)
	logger := testLog(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	agents := make([]*Agent, n+1)
	dirs := make([]string, n+1)
	var evMu sync.Mutex
	userEvents := map[string][]string{} // node -> user event names seen
	for i := range n + 1 {
		cfg := Config{
			Cluster: "netns", Node: testName(i), PrivateKey: testKey(i), Members: members,
			Interval: 200 * time.Millisecond, Interface: "eth0", Secret: secret, Version: "test",
			Logger: logger, RejoinInterval: time.Second,
		}
		if i == n { // the intruder: knows the secret, not in anyone's config
			cfg.Node, cfg.PrivateKey = "intruder", intruderKey
			cfg.Members = append(slices.Clone(members), Member{Name: "intruder", Addr: tn.addr(i), PublicKey: intruderKey.Public().(ed25519.PublicKey)})
		}
		dirs[i] = t.TempDir()
		cfg.DataDir = dirs[i]
		h := tn.hs[i]
		cfg.Dial = func(network, address string, timeout time.Duration) (conn net.Conn, err error) {
			err = inNS(h, func() error {
				conn, err = net.DialTimeout(network, address, timeout)
				return err
			})
			return conn, err
		}
		if err := inNS(h, func() error {
			var err error
			agents[i], err = New(cfg)
			return err
		}); err != nil {
			t.Fatalf("New(%s) in %s: %v", cfg.Node, tn.nodes[i], err)
		}
		a, name := agents[i], cfg.Node
		wg.Add(2)
		go func() { defer wg.Done(); _ = a.Run(ctx) }()
		go func() { // serf handler: record user events, answer queries
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-a.SerfEvents():
					switch ev.Type {
					case "user":
						evMu.Lock()
						userEvents[name] = append(userEvents[name], ev.Name)
						evMu.Unlock()
					case "query":
						if ev.Name == "whoami" {
							_ = ev.Query.Respond([]byte("I am " + name))
						}
					}
				}
			}
		}()
	}
	real := seq(n)
	waitViews := func(among []int, want []string, timeout time.Duration) {
		t.Helper()
		waitFor(t, timeout, fmt.Sprintf("views of %v = %v", names(among...), want), func() (bool, string) {
			for _, i := range among {
				if v := agents[i].View(); !slices.Equal(v.Up, want) {
					return false, fmt.Sprintf("%s view %s", testName(i), v)
				}
			}
			return true, ""
		})
	}
	serfAlive := func(among []int, want []string, timeout time.Duration) {
		t.Helper()
		waitFor(t, timeout, fmt.Sprintf("serf members of %v alive = %v", names(among...), want), func() (bool, string) {
			for _, i := range among {
				var alive []string
				for _, m := range agents[i].SerfMembers() {
					if m.Status == "alive" {
						alive = append(alive, m.Name)
					}
				}
				slices.Sort(alive)
				if !slices.Equal(alive, want) {
					return false, fmt.Sprintf("%s: serf alive %v", testName(i), alive)
				}
			}
			return true, ""
		})
	}

	// Multicast heartbeats: every real node sees the three; serf agrees.
	waitViews(real, names(real...), 10*time.Second)
	serfAlive(real, names(real...), 15*time.Second)
	for _, i := range real {
		if st := agents[i].Stats(); st.Rejected[RejectUnknownNode] == 0 {
			t.Errorf("%s: no unknown_node rejection of the intruder's multicast heartbeats: %+v", testName(i), st.Rejected)
		}
		for _, m := range agents[i].SerfMembers() {
			if m.Name == "intruder" {
				t.Errorf("%s: serf lists the intruder: %+v", testName(i), m)
			}
		}
		if !agents[i].serf.s.EncryptionEnabled() {
			t.Errorf("%s: serf encryption disabled", testName(i))
		}
	}
	// The intruder's join runs on its own schedule: wait for a refusal
	// (a CI run checked before the first one and failed).
	waitFor(t, 10*time.Second, "a serf admission refusal counted while the intruder tries to join", func() (bool, string) {
		var refused uint64
		for _, i := range real {
			refused += agents[i].Stats().AdmissionRefused
		}
		return refused > 0, "0 refusals counted"
	})

	// User events and queries. A user event is best effort over UDP
	// gossip (serf's push/pull repairs a lost one only every 30 s), so it is
	// sent again, as an operator would, if it has not arrived in 10 s; the
	// retries are reported.
	got := func() (bool, string) {
		evMu.Lock()
		defer evMu.Unlock()
		return slices.Contains(userEvents["n2"], "deploy") && slices.Contains(userEvents["n3"], "deploy"), fmt.Sprint(userEvents)
	}
	for attempt := 1; ; attempt++ {
		if err := agents[0].UserEvent("deploy", []byte("v2"), false); err != nil {
			t.Fatalf("UserEvent: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for ok, _ := got(); !ok && time.Now().Before(deadline); ok, _ = got() {
			time.Sleep(10 * time.Millisecond)
		}
		ok, seen := got()
		if ok {
			break
		}
		if attempt == 3 {
			t.Fatalf("user event not at n2 and n3 after %d sends 10 s apart: %s (serf events dropped: %d %d %d)", attempt, seen,
				agents[0].Stats().SerfEventsDropped, agents[1].Stats().SerfEventsDropped, agents[2].Stats().SerfEventsDropped)
		}
		t.Logf("user event not delivered within 10 s (%s): sending it again", seen)
	}
	resp, err := agents[0].Query("whoami", nil, 3*time.Second)
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	for _, name := range []string{"n2", "n3"} {
		if got := string(resp[name]); got != "I am "+name {
			t.Errorf("Query response of %s = %q, want %q (all: %q)", name, got, "I am "+name, resp)
		}
	}

	// Key rotation: install, use, remove; every node's keyring file follows.
	oldKey, _ := DeriveGossipKey(secret)
	newKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	for _, step := range []struct {
		name string
		f    func(string) (KeyringStatus, error)
		key  string
	}{{"install", agents[0].InstallKey, newKey}, {"use", agents[0].UseKey, newKey}, {"remove", agents[0].RemoveKey, base64.StdEncoding.EncodeToString(oldKey)}} {
		if st, err := step.f(step.key); err != nil {
			t.Fatalf("%s key: %v (%+v)", step.name, err, st)
		}
	}
	for _, i := range real {
		keys, err := ReadKeyringFile(filepath.Join(dirs[i], KeyringFileName))
		if err != nil || len(keys) != 1 || base64.StdEncoding.EncodeToString(keys[0]) != newKey {
			t.Errorf("%s keyring file after rotation = %d keys, %v; want only the new key", testName(i), len(keys), err)
		}
	}

	// Partition n3 away at the switch, then heal: one view again.
	tn.link(t, 2, false)
	waitViews([]int{0, 1}, names(0, 1), 10*time.Second)
	waitViews([]int{2}, names(2), 10*time.Second)
	serfAlive([]int{0, 1}, names(0, 1), 30*time.Second) // memberlist marks n3 failed
	tn.link(t, 2, true)
	serfAlive(real, names(real...), 30*time.Second) // re-merged by the re-join loop
	waitViews(real, names(real...), 10*time.Second)
}
