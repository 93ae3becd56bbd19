package confsync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// tlsNode is a Node served over a real TLS listener on 127.0.0.1.
type tlsNode struct {
	node *Node
	tr   *TLSTransport
	pins *PinSet
	addr string
}

type addrBook struct {
	mu sync.Mutex
	m  map[string]string
}

func (a *addrBook) set(name, addr string) {
	a.mu.Lock()
	a.m[name] = addr
	a.mu.Unlock()
}

func (a *addrBook) addr(m Member) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[m.Name]
}

func startTLSNode(t *testing.T, name, dir string, boot []byte, book *addrBook, password []byte) *tlsNode {
	t.Helper()
	pins := NewPinSet(nil)
	tn := &tlsNode{pins: pins}
	tr, err := NewTLSTransport(TLSOptions{
		Self: name, Key: testKey(name), Pins: pins, Addr: book.addr, Timeout: 5 * time.Second,
		JoinPassword: password, Admit: func(r JoinRequest) (Record, error) { return tn.node.Admit(r) },
		Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	node, err := New(Options{
		Self: name, Key: testKey(name), Dir: dir, Bootstrap: boot, Transport: tr, Pins: pins,
		Logger: zerolog.Nop(), AntiEntropyInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	tn.node, tn.tr = node, tr
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tn.addr = ln.Addr().String()
	book.set(name, tn.addr)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = tr.Serve(ctx, ln, node) }()
	go func() { defer wg.Done(); _ = node.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return tn
}

func TestTLSMutualAuth(t *testing.T) {
	ns := names(2)
	boot := testConfig("rev = 0", members(ns)...)
	book := &addrBook{m: map[string]string{}}
	a := startTLSNode(t, "n00", t.TempDir(), boot, book, nil)
	b := startTLSNode(t, "n01", t.TempDir(), boot, book, nil)
	ctx := context.Background()

	v, err := a.node.Propose(testConfig("rev = 1", members(ns)...))
	if err != nil {
		t.Fatal(err)
	}
	// Anti-entropy over TLS brings b up to date (no heartbeats here).
	waitFor(t, converge, "n01 at the new version over TLS", func() (bool, string) {
		cur, _ := b.node.Current()
		return cur.ID() == v.ID(), cur.String()
	})
	h, err := b.tr.History(ctx, "n00")
	if err != nil || len(h) != 2 {
		t.Errorf("History(n00) = %d versions, %v; want 2", len(h), err)
	}
	if _, err := b.tr.Get(ctx, "n00", ID{1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown id): err = %v, want ErrNotFound", err)
	}

	tests := []struct {
		name   string
		self   string
		key    ed25519.PrivateKey
		pinned ed25519.PublicKey // what the client believes n00's key is
	}{
		{"client key not pinned by server", "mallory", ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)), testKey("n00").Public().(ed25519.PublicKey)},
		{"client claims a member's name with its own key", "n01", ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)), testKey("n00").Public().(ed25519.PublicKey)},
		{"server key is not the pinned one", "n01", testKey("n01"), testKey("n07").Public().(ed25519.PublicKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pins := NewPinSet(StaticAuthority{{Name: "n00", PublicKey: tt.pinned, CanUpdate: true}})
			tr, err := NewTLSTransport(TLSOptions{Self: tt.self, Key: tt.key, Pins: pins, Addr: book.addr, Timeout: 5 * time.Second, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			_, err = tr.Head(ctx, "n00")
			if err == nil {
				t.Fatal("Head(n00) succeeded, want the TLS handshake to fail")
			}
			if !strings.Contains(err.Error(), "tls") && !errors.Is(err, ErrUnpinned) {
				t.Errorf("Head(n00): err = %v, want a TLS failure", err)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
	// The genuine pair still works.
	if got, err := b.tr.Head(ctx, "n00"); err != nil || got.ID() != v.ID() {
		t.Errorf("Head(n00) from n01 = %s, %v; want %s", got, err, v)
	}
}

func TestJoin(t *testing.T) {
	ns := names(2)
	boot := testConfig("rev = 0", members(ns)...)
	book := &addrBook{m: map[string]string{}}
	password := []byte("correct horse battery staple")
	sponsor := startTLSNode(t, "n00", t.TempDir(), boot, book, password)
	ctx := context.Background()

	t.Run("wrong password", func(t *testing.T) {
		start := time.Now()
		_, err := Join(ctx, sponsor.addr, JoinOptions{Self: "n05", Key: testKey("n05"), Address: "10.99.0.5", Password: []byte("wrong")})
		if err == nil || !strings.Contains(err.Error(), "password proof failed") {
			t.Fatalf("Join with a wrong password: err = %v, want a refusal", err)
		}
		if time.Since(start) < joinFailDelay {
			t.Errorf("refusal came after %v, want at least %v", time.Since(start), joinFailDelay)
		}
		cur, _ := sponsor.node.Current()
		if !cur.Genesis() {
			t.Errorf("sponsor config changed to %s after a refused join", cur)
		}
	})
	t.Run("pinned sponsor key mismatch", func(t *testing.T) {
		other := testKey("impostor").Public().(ed25519.PublicKey)
		_, err := Join(ctx, sponsor.addr, JoinOptions{Self: "n05", Key: testKey("n05"), Address: "10.99.0.5", Password: password, SponsorKey: other})
		if err == nil {
			t.Fatal("Join with a pinned key the sponsor does not have succeeded")
		}
		cur, _ := sponsor.node.Current()
		if !cur.Genesis() {
			t.Errorf("sponsor config changed to %s although the joiner refused it", cur)
		}
	})
	t.Run("pinned sponsor key match", func(t *testing.T) {
		// The sponsor's own key, pinned, is accepted (checked by the
		// "right password" case below, which joins without a pin).
		if _, err := Join(ctx, sponsor.addr, JoinOptions{Self: "n05", Key: testKey("n05"), Address: "10.99.0.5", Password: []byte("wrong"), SponsorKey: testKey("n00").Public().(ed25519.PublicKey)}); err == nil || !strings.Contains(err.Error(), "password proof failed") {
			t.Fatalf("Join pinned to the right key with a wrong password: err = %v, want the password refusal (handshake passed)", err)
		}
	})
	t.Run("restricted sponsor", func(t *testing.T) {
		dir := t.TempDir()
		r := startTLSNode(t, "n01", dir, testConfig("rev = 0", members(ns, "n01")...), book, password)
		_, err := Join(ctx, r.addr, JoinOptions{Self: "n06", Key: testKey("n06"), Address: "10.99.0.6", Password: password})
		if err == nil || !strings.Contains(err.Error(), "restricted") {
			t.Fatalf("Join via a restricted node: err = %v, want a refusal naming the restriction", err)
		}
	})
	t.Run("right password", func(t *testing.T) {
		res, err := Join(ctx, sponsor.addr, JoinOptions{Self: "n05", Key: testKey("n05"), Address: "10.99.0.5", Location: "dc2", Password: password})
		if err != nil {
			t.Fatalf("Join: %v", err)
		}
		if res.Sponsor != "n00" || res.Version.Origin != "n00" || res.Version.Counter != 1 {
			t.Errorf("Join result: sponsor %q version %s, want n00 #1 by n00", res.Sponsor, res.Version)
		}
		auth, err := MembersFromTOML(res.Content)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := auth.Member("n05")
		if !ok || !m.PublicKey.Equal(testKey("n05").Public()) || m.Location != "dc2" || !m.CanUpdate {
			t.Errorf("joined member = %+v, %v", m, ok)
		}
		// Joining again with the same key is idempotent.
		again, err := Join(ctx, sponsor.addr, JoinOptions{Self: "n05", Key: testKey("n05"), Address: "10.99.0.5", Password: password})
		if err != nil || again.Version.ID() != res.Version.ID() {
			t.Errorf("second Join = %s, %v; want the same version", again.Version, err)
		}
		// Same name, another key: refused.
		_, err = Join(ctx, sponsor.addr, JoinOptions{Self: "n05", Key: testKey("other"), Address: "10.99.0.5", Password: password})
		if err == nil || !strings.Contains(err.Error(), ErrMemberExists.Error()) {
			t.Errorf("Join with a taken name: err = %v, want ErrMemberExists", err)
		}
		// The joiner installs the version and replicates over pinned TLS.
		dir := t.TempDir()
		if err := Install(dir, res.Version, res.Content); err != nil {
			t.Fatal(err)
		}
		j := startTLSNode(t, "n05", dir, nil, book, nil)
		next, err := sponsor.node.Propose(append(bytes.Clone(res.Content), "# edit after join\n"...))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, converge, "joiner at the sponsor's next edit", func() (bool, string) {
			cur, _ := j.node.Current()
			return cur.ID() == next.ID(), cur.String()
		})
	})
}
