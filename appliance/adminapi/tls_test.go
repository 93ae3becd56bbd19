package adminapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Node-to-node calls authenticate with TLS client certificates made from
// the node keys; a presented key must be pinned.
func TestNodeMutualTLS(t *testing.T) {
	keyA, keyB, keyX := testKey(1), testKey(2), testKey(9)
	src := &fakeSource{status: clusterStatus("a", names, nil, nil, 1)}
	s := newTestServer(t, src, Options{Node: "a", Key: keyA, Peers: []Peer{
		{Name: "a", PublicKey: pub(keyA)}, {Name: "b", PublicKey: pub(keyB), Addr: "198.51.100.2:8443"}}})
	addr := serveTLS(t, s)

	certB, err := NodeCertificate(keyB, "b")
	if err != nil {
		t.Fatal(err)
	}
	certX, err := NodeCertificate(keyX, "b") // right name, unpinned key
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		cert     *tls.Certificate
		wantCode int    // 0 = the handshake must fail
		wantWho  string // whoami name
	}{
		{name: "pinned peer key", cert: &certB, wantCode: 200, wantWho: "node:b"},
		{name: "unpinned key refused", cert: &certX},
		{name: "no certificate, no password", wantCode: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := clientTLS(tt.cert).Get("https://" + addr + "/api/v1/whoami")
			if tt.wantCode == 0 {
				if err == nil {
					_ = resp.Body.Close()
					t.Fatalf("request with an unpinned client key succeeded: %s", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET whoami: %v", err)
			}
			defer func() { _ = resp.Body.Close() }()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("GET whoami: %s, want %d", resp.Status, tt.wantCode)
			}
			if tt.wantWho != "" {
				var p Principal
				if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
					t.Fatal(err)
				}
				if p.Name != tt.wantWho || p.Role != RoleReadOnly || p.Via != "node-certificate" {
					t.Errorf("whoami = %+v, want %s read-only via node-certificate", p, tt.wantWho)
				}
			}
		})
	}

	// A peer is read-only: it cannot write.
	s.Handle("POST /api/v1/test-write", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	resp, err := clientTLS(&certB).Post("https://"+addr+"/api/v1/test-write", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("peer POST: %s, want 403", resp.Status)
	}
}

// The node-to-node client pins the server: the member's configured key
// passes, any other key is refused.
func TestPeerClientPinsServer(t *testing.T) {
	keyA, keyB, keyX := testKey(1), testKey(2), testKey(9)
	srcB := &fakeSource{status: clusterStatus("b", names, nil, nil, 1)}
	sb := newTestServer(t, srcB, Options{Node: "b", Key: keyB, Peers: []Peer{{Name: "a", PublicKey: pub(keyA)}}})
	addrB := serveTLS(t, sb)
	certA, _ := NodeCertificate(keyA, "a")
	for _, tt := range []struct {
		name    string
		pinned  ed25519.PublicKey
		wantErr error
	}{
		{"right key", pub(keyB), nil},
		{"wrong key", pub(keyX), errUnpinnedServer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			peer := Peer{Name: "b", PublicKey: tt.pinned, Addr: addrB}
			acc, err := newAccess(nil, []Peer{peer}, false)
			if err != nil {
				t.Fatal(err)
			}
			pc := newPeerClient(certA, 5*time.Second, func() *access { return acc })
			r := pc.report(context.Background(), peer, 10)
			if !errors.Is(r.err, tt.wantErr) {
				t.Fatalf("report err = %v, want %v", r.err, tt.wantErr)
			}
			if tt.wantErr == nil && r.status.Node != "b" {
				t.Errorf("report status node = %q, want b", r.status.Node)
			}
		})
	}
}

// Go clients get the Ed25519 node certificate, clients without Ed25519
// (browsers) the ECDSA one; both pins stay the same for the same key.
func TestCertificatesAndPins(t *testing.T) {
	key := testKey(1)
	n1, _ := NodeCertificate(key, "a")
	n2, _ := NodeCertificate(key, "a")
	b1, _ := BrowserCertificate(key, "a")
	b2, _ := BrowserCertificate(key, "a")
	other, _ := BrowserCertificate(testKey(2), "a")
	pin := func(c tls.Certificate) Pin {
		p, err := Fingerprint(c)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if pin(n1) != pin(n2) || pin(b1) != pin(b2) {
		t.Error("pins differ between two certificates of the same key")
	}
	if pin(b1) == pin(other) || pin(n1) == pin(b1) {
		t.Error("pins of different keys are equal")
	}
	if _, ok := b1.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("browser certificate key is %T, want ECDSA", b1.PrivateKey)
	}
	if !strings.HasPrefix(pin(n1).String(), "sha256//") || len(pin(n1).Hex()) != 95 {
		t.Errorf("pin forms: %s %s", pin(n1), pin(n1).Hex())
	}
	// Without Leaf, Fingerprint parses the DER.
	if p, _ := Fingerprint(tls.Certificate{Certificate: n1.Certificate}); p != pin(n1) {
		t.Error("Fingerprint without Leaf differs")
	}

	s := newTestServer(t, &fakeSource{status: clusterStatus("a", names, nil, nil, 1)},
		Options{Node: "a", Key: key, Users: []User{{Name: "ci", TokenHash: HashToken("tok"), Role: RoleReadOnly}}})
	addr := serveTLS(t, s)
	// A Go client (Ed25519 supported) gets the node certificate.
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // pin checked below
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256Sum(c.ConnectionState().PeerCertificates[0]); got != pin(n1) {
		t.Errorf("Go client got certificate pin %s, want the node's %s", got, pin(n1))
	}
	_ = c.Close()
	// A client without Ed25519 (Chromium's ClientHello signature list) gets
	// the ECDSA one: crypto/tls serves the first certificate that
	// SupportsCertificate accepts. (The browser test checks it for real.)
	chrome := &tls.ClientHelloInfo{
		SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256, tls.PKCS1WithSHA256,
			tls.ECDSAWithP384AndSHA384, tls.PSSWithSHA384, tls.PKCS1WithSHA384, tls.PSSWithSHA512, tls.PKCS1WithSHA512},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
		CipherSuites:      []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	}
	var chosen *tls.Certificate
	for i := range s.certs {
		if chrome.SupportsCertificate(&s.certs[i]) == nil {
			chosen = &s.certs[i]
			break
		}
	}
	if chosen == nil || pin(*chosen) != pin(b1) {
		t.Errorf("a client without Ed25519 would not get the browser certificate")
	}

	// What users pin works with curl: the right pin passes, another fails.
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Log("curl not installed: skipping the --pinnedpubkey check")
		return
	}
	np, _ := s.Pins()
	for _, tt := range []struct {
		name string
		pin  string
		ok   bool
	}{
		{"curl with the node pin", np.String(), true},
		{"curl with another pin", pin(other).String(), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, curl, "-sS", "--fail", "-k", "--pinnedpubkey", tt.pin,
				"-H", "Authorization: Bearer tok", "https://"+addr+"/api/v1/status").CombinedOutput()
			if tt.ok != (err == nil) {
				t.Fatalf("curl --pinnedpubkey %s: err=%v, want ok=%v\n%s", tt.pin, err, tt.ok, out)
			}
			if tt.ok && !strings.Contains(string(out), `"node":"a"`) {
				t.Errorf("curl output lacks the status: %s", out)
			}
		})
	}
}

func sha256Sum(c *x509.Certificate) Pin {
	p, _ := Fingerprint(tls.Certificate{Certificate: [][]byte{c.Raw}})
	return p
}

var _ = io.Discard
