package gossip

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/vishvananda/netns"
)

func TestObserverConfig(t *testing.T) {
	ms := testMembers(2)
	tests := []struct {
		name string
		obs  map[string]netip.Addr
		ok   bool
	}{
		{"none", nil, true},
		{"any address", map[string]netip.Addr{"ops-serf": {}}, true},
		{"pinned address", map[string]netip.Addr{"ops-serf": testAddr(9)}, true},
		{"empty name", map[string]netip.Addr{"": {}}, false},
		{"name too long", map[string]netip.Addr{strings.Repeat("x", 65): {}}, false},
		{"also a member", map[string]netip.Addr{"n2": {}}, false},
		{"this node", map[string]netip.Addr{"n1": {}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Cluster: "c", Node: "n1", PrivateKey: testKey(0), Members: ms, DisableSerf: true, Observers: tc.obs}
			_, err := c.withDefaults()
			if tc.ok != (err == nil) {
				t.Fatalf("withDefaults() with observers %v: error %v, want ok %v", tc.obs, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			a := &Agent{cfg: Config{Members: ms}}
			err = a.UpdateObservers(tc.obs)
			if tc.ok != (err == nil) {
				t.Fatalf("UpdateObservers(%v) = %v, want ok %v", tc.obs, err, tc.ok)
			}
		})
	}
}

func TestVerifyObserver(t *testing.T) {
	a, b := testAddr(1), testAddr(2)
	tests := []struct {
		name      string
		want, got netip.Addr
		ok        bool
	}{
		{"any address", netip.Addr{}, a, true},
		{"configured address", a, a, true},
		{"other address", a, b, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyObserver("ops", tc.want, tc.got)
			if tc.ok != (err == nil) {
				t.Fatalf("verifyObserver(ops, %v, %v) = %v, want ok %v", tc.want, tc.got, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrAdmission) {
				t.Errorf("error %v does not wrap ErrAdmission", err)
			}
		})
	}
}

func TestSerfEncryptKey(t *testing.T) {
	k, _ := DeriveGossipKey([]byte("s3cret"))
	got, err := SerfEncryptKey([]byte("s3cret"))
	if err != nil || got != EncodeKey(k) || len(got) != 44 {
		t.Fatalf("SerfEncryptKey = %q, %v; want %q (base64 of the derived 32 bytes)", got, err, EncodeKey(k))
	}
	if _, err := SerfEncryptKey(nil); err == nil {
		t.Error("SerfEncryptKey(nil) succeeded")
	}
}

// nsDial dials from namespace h (memberlist's TCP must never leave from the
// root namespace).
func nsDial(h netns.NsHandle) func(network, address string, timeout time.Duration) (net.Conn, error) {
	return func(network, address string, timeout time.Duration) (conn net.Conn, err error) {
		err = inNS(h, func() error {
			conn, err = net.DialTimeout(network, address, timeout)
			return err
		})
		return conn, err
	}
}

// rawSerf is a plain serf instance with no Merge delegate, like a stock
// `serf agent -encrypt <key>`, running in namespace h.
type rawSerf struct {
	s  *serf.Serf
	mu sync.Mutex
	ev []string // "user:<name>:<payload>"
}

func startRawSerf(t *testing.T, h netns.NsHandle, name string, addr netip.Addr, secret []byte) *rawSerf {
	t.Helper()
	key, err := DeriveGossipKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := memberlist.NewKeyring(nil, key)
	if err != nil {
		t.Fatal(err)
	}
	lg := log.New(io.Discard, "", 0)
	mlc := memberlist.DefaultLANConfig()
	mlc.BindAddr, mlc.BindPort = addr.String(), DefaultGossipPort
	mlc.AdvertiseAddr, mlc.AdvertisePort = addr.String(), DefaultGossipPort
	mlc.Keyring = kr
	mlc.Logger = lg
	ch := make(chan serf.Event, 64)
	r := &rawSerf{}
	if err := inNS(h, func() error {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr.String()}, BindPort: DefaultGossipPort, Logger: lg})
		if err != nil {
			return err
		}
		mlc.Transport = &nsTransport{NetTransport: nt, dial: nsDial(h)}
		sc := serf.DefaultConfig()
		sc.NodeName, sc.MemberlistConfig, sc.Logger, sc.EventCh = name, mlc, lg, ch
		r.s, err = serf.Create(sc)
		if err != nil {
			_ = nt.Shutdown()
		}
		return err
	}); err != nil {
		t.Fatalf("serf %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case e := <-ch:
				if u, ok := e.(serf.UserEvent); ok {
					r.mu.Lock()
					r.ev = append(r.ev, "user:"+u.Name+":"+string(u.Payload))
					r.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { _ = r.s.Shutdown(); close(done) })
	return r
}

func (r *rawSerf) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ev)
}

// TestNetnsSerfObserver: a configured observer (a plain serf instance, no
// token) is admitted into every Shoal node's serf pool, exchanges user
// events both ways and never enters the view; an unlisted one and a listed
// one advertising another address are refused.
func TestNetnsSerfObserver(t *testing.T) {
	requireRoot(t, "creates network namespaces, veths and a bridge")
	const n = 2
	tn := newTestNet(t, n+3) // n agents, the observer, a rogue, an impostor
	obsIdx, rogueIdx, impIdx := n, n+1, n+2
	secret := []byte("observer test cluster secret")
	members := make([]Member, n)
	for i := range members {
		members[i] = Member{Name: testName(i), Addr: tn.addr(i), PublicKey: testKey(i).Public().(ed25519.PublicKey)}
	}
	observers := map[string]netip.Addr{"watch": {}, "pinned": tn.addr(obsIdx)}
	logger := testLog(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	agents := make([]*Agent, n)
	var evMu sync.Mutex
	userEvents := map[string][]string{}
	for i := range n {
		cfg := Config{
			Cluster: "obs", Node: testName(i), PrivateKey: testKey(i), Members: members, Observers: observers,
			Interval: 200 * time.Millisecond, Interface: "eth0", Secret: secret, Version: "test",
			Logger: logger, RejoinInterval: time.Second, Dial: nsDial(tn.hs[i]),
		}
		if err := inNS(tn.hs[i], func() error {
			var err error
			agents[i], err = New(cfg)
			return err
		}); err != nil {
			t.Fatalf("New(%s): %v", cfg.Node, err)
		}
		a, name := agents[i], cfg.Node
		wg.Add(2)
		go func() { defer wg.Done(); _ = a.Run(ctx) }()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-a.SerfEvents():
					if ev.Type == "user" {
						evMu.Lock()
						userEvents[name] = append(userEvents[name], ev.Name+":"+string(ev.Payload))
						evMu.Unlock()
					}
				}
			}
		}()
	}
	real := seq(n)
	serfAlive := func(i int) []string {
		var alive []string
		for _, m := range agents[i].SerfMembers() {
			if m.Status == "alive" {
				alive = append(alive, m.Name)
			}
		}
		slices.Sort(alive)
		return alive
	}
	waitSerf := func(want []string, timeout time.Duration) {
		t.Helper()
		waitFor(t, timeout, fmt.Sprintf("serf alive members = %v", want), func() (bool, string) {
			for _, i := range real {
				if got := serfAlive(i); !slices.Equal(got, want) {
					return false, fmt.Sprintf("%s: %v", testName(i), got)
				}
			}
			return true, ""
		})
	}
	refused := func() uint64 {
		var sum uint64
		for _, i := range real {
			sum += agents[i].Stats().AdmissionRefused
		}
		return sum
	}
	waitSerf(names(real...), 15*time.Second)

	obs := startRawSerf(t, tn.hs[obsIdx], "watch", tn.addr(obsIdx), secret)
	if _, err := obs.s.Join([]string{netip.AddrPortFrom(tn.addr(0), DefaultGossipPort).String()}, false); err != nil {
		t.Fatalf("observer join: %v", err)
	}
	waitSerf([]string{"n1", "n2", "watch"}, 15*time.Second)
	for _, i := range real {
		if v := agents[i].View(); !slices.Equal(v.Up, names(real...)) {
			t.Errorf("%s view = %v, want only the members %v", testName(i), v.Up, names(real...))
		}
	}
	if got := refused(); got != 0 {
		t.Errorf("AdmissionRefused = %d with only the observer joining, want 0", got)
	}

	// User events both ways.
	if err := obs.s.UserEvent("deploy", []byte("v1"), false); err != nil {
		t.Fatalf("observer UserEvent: %v", err)
	}
	if err := agents[1].UserEvent("hello", []byte("world"), false); err != nil {
		t.Fatalf("UserEvent: %v", err)
	}
	waitFor(t, 35*time.Second, "the observer's event at every node and the node's event at the observer", func() (bool, string) {
		evMu.Lock()
		defer evMu.Unlock()
		for _, i := range real {
			if !slices.Contains(userEvents[testName(i)], "deploy:v1") {
				return false, fmt.Sprintf("nodes saw %v", userEvents)
			}
		}
		return slices.Contains(obs.events(), "user:hello:world"), fmt.Sprintf("observer saw %v", obs.events())
	})

	// An unlisted name, and a listed name from another address: refused.
	for _, tc := range []struct {
		name string
		idx  int
	}{{"rogue", rogueIdx}, {"pinned", impIdx}} {
		before := refused()
		r := startRawSerf(t, tn.hs[tc.idx], tc.name, tn.addr(tc.idx), secret)
		r.s.Join([]string{netip.AddrPortFrom(tn.addr(0), DefaultGossipPort).String()}, false) //nolint:errcheck // refused or not, judged below
		waitFor(t, 10*time.Second, tc.name+" refused", func() (bool, string) {
			got := refused()
			return got > before, fmt.Sprintf("AdmissionRefused %d, was %d", got, before)
		})
		if err := r.s.Shutdown(); err != nil {
			t.Errorf("shutdown %s: %v", tc.name, err)
		}
	}
	for _, i := range real {
		for _, m := range agents[i].SerfMembers() {
			if m.Name == "rogue" || m.Name == "pinned" {
				t.Errorf("%s: serf lists refused %s: %+v", testName(i), m.Name, m)
			}
		}
	}
}
