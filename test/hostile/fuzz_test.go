package hostile

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/confsync/identity"
)

// Fuzz targets for decoders that have none in their own package. Seeds come
// from testdata/. `make fuzz` runs them with every other target in the
// repository.

func seedFiles(f *testing.F, pattern string) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds for %s in testdata/ (%v)", pattern, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzParseAgent: the node-local agent file decoder never panics, and
// what it accepts names a node and an absolute cluster config path.
func FuzzParseAgent(f *testing.F) {
	seedFiles(f, "agent-*.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := config.ParseAgent("agent.toml", data, "/etc/shoal")
		if err != nil {
			if !strings.Contains(err.Error(), "agent.toml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		if a.Node == "" {
			t.Errorf("accepted an agent file without a node:\n%q", data)
		}
		if a.ClusterConfig != "" && !filepath.IsAbs(a.ClusterConfig) {
			t.Errorf("cluster config path %q not made absolute", a.ClusterConfig)
		}
	})
}

// FuzzParseTag: the config version announcement carried in serf tags and
// heartbeats ("<counter>:<id>") round-trips through FormatTag.
func FuzzParseTag(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "tags.txt"))
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, id, err := confsync.ParseTag(s)
		if err != nil {
			return
		}
		n2, id2, err := confsync.ParseTag(confsync.FormatTag(n, id))
		if err != nil || n2 != n || id2 != id {
			t.Errorf("ParseTag(FormatTag(%d, %s)) = %d, %s, %v", n, id, n2, id2, err)
		}
		if _, err := confsync.ParseID(id.String()); err != nil {
			t.Errorf("ParseID(%s): %v", id, err)
		}
	})
}

// FuzzParsePrivateKey: the node key decoder never panics and what it
// accepts is a usable Ed25519 key.
func FuzzParsePrivateKey(f *testing.F) {
	seedFiles(f, "*.pem")
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := identity.ParsePrivateKey(data)
		if err != nil {
			return
		}
		if len(k) != ed25519.PrivateKeySize {
			t.Fatalf("accepted a key of %d bytes", len(k))
		}
		msg := []byte("shoal")
		if !ed25519.Verify(identity.Public(k), msg, ed25519.Sign(k, msg)) {
			t.Errorf("accepted key does not verify its own signature")
		}
		if !bytes.Equal(identity.Public(k), k.Public().(ed25519.PublicKey)) {
			t.Errorf("identity.Public disagrees with the key's public half")
		}
	})
}
