package shoalrun

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/test/harness"
)

// fakeTopo stands in for a harness topology (no root needed).
type fakeTopo struct{ dir string }

func (f fakeTopo) Dir() string { return f.dir }
func (f fakeTopo) Nodes() int  { return 3 }
func (f fakeTopo) NodeAddr4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, 0, byte(i + 1)}), 24)
}

// TestWriteFiles generates a cluster and checks it with the product's own
// config decoder, and that every key file matches its pinned public key.
func TestWriteFiles(t *testing.T) {
	topo := fakeTopo{dir: t.TempDir()}
	opts := Options{
		Binary:            "/nonexistent/shoal",
		HeartbeatInterval: "500ms",
		Groups: []Group{{
			IPs:     []netip.Addr{netip.MustParseAddr("192.0.2.10")},
			Passive: []int{2},
		}},
	}
	f, err := WriteFiles(topo, opts)
	if err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	data, err := os.ReadFile(f.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(f.Cluster, data); err != nil {
		t.Errorf("config.Parse(generated cluster.toml): %v\n%s", err, data)
	}
	for _, want := range []string{`name = "node0"`, `address = "10.99.0.3"`, `members = ["node0", "node1", "node2"]`, `passive = ["node2"]`, `mode = "single"`, `heartbeat_interval = "500ms"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("cluster.toml lacks %q:\n%s", want, data)
		}
	}
	secret, err := os.ReadFile(f.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := hex.DecodeString(strings.TrimSpace(string(secret))); err != nil || len(b) != 32 {
		t.Errorf("secret %q: %d bytes, %v; want 32 hex-encoded bytes", secret, len(b), err)
	}
	for node := range 3 {
		t.Run(harness.NodeName(node), func(t *testing.T) {
			adata, err := os.ReadFile(f.Agents[node])
			if err != nil {
				t.Fatal(err)
			}
			a, err := config.ParseAgent(f.Agents[node], adata, filepath.Dir(f.Agents[node]))
			if err != nil {
				t.Fatalf("config.ParseAgent: %v\n%s", err, adata)
			}
			if a.Node != harness.NodeName(node) {
				t.Errorf("agent node = %q, want %q", a.Node, harness.NodeName(node))
			}
			pemData, err := os.ReadFile(filepath.Join(filepath.Dir(f.Agents[node]), "node.key"))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(pemData)
			if blk == nil || blk.Type != "PRIVATE KEY" {
				t.Fatalf("node.key: no PEM PRIVATE KEY block")
			}
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			priv, ok := k.(ed25519.PrivateKey)
			if !ok {
				t.Fatalf("node.key holds %T, want ed25519.PrivateKey", k)
			}
			want := "ed25519:" + base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
			if diff := cmp.Diff(want, f.PublicKeys[node]); diff != "" {
				t.Errorf("public key (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckBinaryMissing(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "shoal")
	if err := CheckBinary(bin); !errors.Is(err, ErrNoAgent) {
		t.Errorf("CheckBinary(%s) = %v, want ErrNoAgent", bin, err)
	}
	// A binary without the agent subcommand.
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"unknown command $1\" >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := CheckBinary(bin); !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), "unknown command agent") {
		t.Errorf("CheckBinary(no agent) = %v, want ErrNoAgent quoting the output", err)
	}
}
