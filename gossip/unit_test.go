package gossip

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/shoal-project/shoal/gossip/wire"
)

func TestConfigValidation(t *testing.T) {
	base := func() Config {
		return Config{Cluster: "c", Node: "n1", PrivateKey: testKey(0), Members: testMembers(3), DisableSerf: true}
	}
	tests := []struct {
		name string
		mut  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no cluster", func(c *Config) { c.Cluster = "" }, false},
		{"not a member", func(c *Config) { c.Node = "zz" }, false},
		{"wrong key", func(c *Config) { c.PrivateKey = testKey(1) }, false},
		{"duplicate member", func(c *Config) { c.Members = append(c.Members, c.Members[0]) }, false},
		{"interval too short", func(c *Config) { c.Interval = time.Millisecond }, false},
		{"monitor below 2 intervals", func(c *Config) { c.Interval = time.Second; c.MonitorTimeout = time.Second }, false},
		{"unicast group", func(c *Config) { c.Multicast = netipAP("192.0.2.1:7947") }, false},
		{"unicast mode needs no group", func(c *Config) { c.Unicast = true; c.Multicast = netipAP("192.0.2.1:7947") }, true},
		{"serf needs a secret", func(c *Config) { c.DisableSerf = false }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mut(&c)
			got, err := c.withDefaults()
			if tc.ok != (err == nil) {
				t.Fatalf("withDefaults() error = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if tc.name == "defaults" {
				want := fmt.Sprint(DefaultInterval, 4*DefaultInterval, DefaultMulticast, DefaultGossipPort, testAddr(0))
				if diff := cmp.Diff(want, fmt.Sprint(got.Interval, got.MonitorTimeout, got.Multicast, got.GossipPort, got.Bind)); diff != "" {
					t.Errorf("defaults (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// The largest possible heartbeat (longest names, many long reasons, view,
// every table digest) still encodes within wire.MaxSize after clipping.
func TestHeartbeatAlwaysFits(t *testing.T) {
	long := strings.Repeat("x", wire.MaxNameLen)
	ms := testMembers(2)
	ms[0].Name = long
	a, err := New(Config{Cluster: long, Node: long, PrivateKey: testKey(0), Members: ms, DisableSerf: true,
		Transport: NewMemNetwork().Transport(testAddr(0)), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	reasons := make([]string, 40)
	for i := range reasons {
		reasons[i] = strings.Repeat("r", 300)
	}
	a.SetHealth(Health{OK: false, Reasons: reasons})
	tables := make([]uint64, wire.MaxTables)
	for i := range tables {
		tables[i] = 1<<wire.TableDigestBits - 1 - uint64(i)
	}
	if err := a.SetTables(tables); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, typ := range []wire.Type{wire.TypeHeartbeat, wire.TypeVerdict} {
		body := wire.Body{}
		if typ == wire.TypeVerdict {
			body = wire.Body{Subject: long, Status: wire.StatusDown}
		}
		b, err := a.packetLocked(typ, body)
		if err != nil || len(b) > wire.MaxSize {
			t.Fatalf("packetLocked(%s) = %d bytes, %v; want <= %d", typ, len(b), err, wire.MaxSize)
		}
		p, err := wire.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(p.Health.Reasons); n != maxWireReasons || p.Health.Reasons[n-1] != "(+35 more)" {
			t.Errorf("reasons = %d, last %q; want %d ending with (+35 more)", n, p.Health.Reasons[n-1], maxWireReasons)
		}
	}
}

func TestLogAdapterLevels(t *testing.T) {
	tests := []struct {
		in, level, lib, msg string
	}{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4", "debug", "memberlist", "Stream connection from=1.2.3.4"},
		{"2024/01/02 03:04:05 [INFO] serf: EventMemberJoin: a 10.0.0.1", "info", "serf", "EventMemberJoin: a 10.0.0.1"},
		{"[WARN] memberlist: Refuting a suspect message", "warn", "memberlist", "Refuting a suspect message"},
		{"[ERR] memberlist: Failed to send", "error", "memberlist", "Failed to send"},
		{"no level here", "info", "", "no level here"},
	}
	for _, tc := range tests {
		t.Run(tc.level+" "+tc.lib, func(t *testing.T) {
			var buf bytes.Buffer
			l := newStdLogger(zerolog.New(&buf).Level(zerolog.TraceLevel))
			l.Print(tc.in)
			want := `{"level":"` + tc.level + `",`
			if tc.lib != "" {
				want += `"lib":"` + tc.lib + `",`
			}
			want += `"message":"` + tc.msg + `"}` + "\n"
			if diff := cmp.Diff(want, buf.String()); diff != "" {
				t.Errorf("log of %q (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestAdmission(t *testing.T) {
	const be = 1700000000000000000
	good := map[string]string{TagBootEpoch: "1700000000000000000", TagToken: AdmissionToken(testKey(0), "c", "n1", be)}
	pub := testMembers(2)[0].PublicKey
	other := testMembers(2)[1].PublicKey
	tests := []struct {
		name    string
		cluster string
		key     []byte
		node    string
		tags    map[string]string
		ok      bool
	}{
		{"valid", "c", pub, "n1", good, true},
		{"unknown member", "c", nil, "n1", good, false},
		{"other member's key", "c", other, "n1", good, false},
		{"other cluster", "d", pub, "n1", good, false},
		{"token for another name", "c", pub, "n2", good, false},
		{"no token", "c", pub, "n1", map[string]string{TagBootEpoch: "1"}, false},
		{"epoch changed", "c", pub, "n1", map[string]string{TagBootEpoch: "1700000000000000001", TagToken: good[TagToken]}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyAdmission(tc.cluster, tc.key, tc.node, tc.tags)
			if tc.ok != (err == nil) {
				t.Fatalf("verifyAdmission = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrAdmission) {
				t.Errorf("error %v does not wrap ErrAdmission", err)
			}
		})
	}
}

func TestKeyring(t *testing.T) {
	k1, err := DeriveGossipKey([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	k1b, _ := DeriveGossipKey([]byte("s3cret"))
	k2, _ := DeriveGossipKey([]byte("other"))
	if len(k1) != 32 || !bytes.Equal(k1, k1b) || bytes.Equal(k1, k2) {
		t.Fatalf("DeriveGossipKey: want 32 deterministic bytes per secret, got %x %x %x", k1, k1b, k2)
	}
	if _, err := DeriveGossipKey(nil); err == nil {
		t.Error("DeriveGossipKey(nil) succeeded")
	}

	dir := t.TempDir()
	keys, path, err := loadOrCreateKeyring(dir, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]byte{k1}, keys); diff != "" || path != filepath.Join(dir, KeyringFileName) {
		t.Fatalf("first start: keys (-want +got) %s, path %q", diff, path)
	}
	raw, _ := os.ReadFile(path)
	if want := `[` + "\n  \"" + base64.StdEncoding.EncodeToString(k1) + "\"\n]"; string(raw) != want {
		t.Errorf("keyring file = %q, want serf's format %q", raw, want)
	}
	// A rotated keyring on disk wins over the secret.
	if err := WriteKeyringFile(path, [][]byte{k2, k1}); err != nil {
		t.Fatal(err)
	}
	keys, _, err = loadOrCreateKeyring(dir, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]byte{k2, k1}, keys); diff != "" {
		t.Errorf("restart after rotation (-want +got):\n%s", diff)
	}
	if err := os.WriteFile(path, []byte(`["not base64!"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateKeyring(dir, []byte("s3cret")); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt keyring: err = %v, want an error naming %s", err, path)
	}
}

func netipAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
