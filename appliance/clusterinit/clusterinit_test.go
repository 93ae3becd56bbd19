package clusterinit

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/confsync/identity"
	"github.com/shoal-project/shoal/gossip/wire"
)

const demo = "../../examples/cluster.toml"

func readDemo(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(demo)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSetKeys(t *testing.T) {
	base := readDemo(t)
	tests := []struct {
		name   string
		assign []string
		check  func(t *testing.T, c *config.Cluster)
		errSub string
	}{
		{
			name:   "cluster duration, group duration, member bool",
			assign: []string{"cluster.heartbeat_interval=750ms", "group.web.failback_delay=10s", "member.b.can_update=false"},
			check: func(t *testing.T, c *config.Cluster) {
				g, _ := c.GroupByName("web")
				b, _ := c.MemberByName("b")
				a, _ := c.MemberByName("a")
				got := []any{c.Settings.HeartbeatInterval, g.FailbackDelay, b.CanUpdate, a.CanUpdate}
				want := []any{750 * time.Millisecond, 10 * time.Second, false, true}
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("(-want +got)\n%s", d)
				}
			},
		},
		{
			name:   "array and integer",
			assign: []string{`group.web.ips=["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"]`, "group.web.garp_count=2"},
			check: func(t *testing.T, c *config.Cluster) {
				g, _ := c.GroupByName("web")
				var ips []string
				for _, ip := range g.IPs {
					ips = append(ips, ip.String())
				}
				if d := cmp.Diff([]string{"192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"}, ips); d != "" {
					t.Errorf("ips (-want +got)\n%s", d)
				}
				if g.GARPCount != 2 {
					t.Errorf("garp_count = %d, want 2", g.GARPCount)
				}
			},
		},
		{
			name:   "new key in an existing table and a new table",
			assign: []string{"selftest.gateway=198.51.100.1", "location.dc2.cluster.multicast_group=239.77.83.2"},
			check: func(t *testing.T, c *config.Cluster) {
				if got := c.SelfTest.Gateway.String(); got != "198.51.100.1" {
					t.Errorf("gateway = %s", got)
				}
			},
		},
		{name: "unknown group", assign: []string{"group.nosuch.failback_delay=1s"}, errSub: `no [[group]] named "nosuch"`},
		{name: "bool wanted", assign: []string{"cluster.verbose=maybe"}, errSub: `"maybe" is not of type boolean`},
		{name: "type mismatch", assign: []string{"cluster.multicast_port=true"}, errSub: "is of type boolean, the key holds a value of type integer"},
		{name: "table itself", assign: []string{"cluster=1"}, errSub: "is a table"},
		{name: "unknown member", assign: []string{"member.zz.can_update=true"}, errSub: `no [[member]] named "zz"`},
		{name: "list without entry", assign: []string{"member.name=x"}, errSub: "name an entry"},
		{name: "list named but no key", assign: []string{"group.web=1"}, errSub: "name an entry"},
		{name: "below a value", assign: []string{"cluster.name.x=1"}, errSub: `"cluster.name" is a value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var as []Assignment
			for _, s := range tt.assign {
				a, err := ParseAssignment(s)
				if err != nil {
					t.Fatal(err)
				}
				as = append(as, a)
			}
			out, err := SetKeys(base, as)
			if tt.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errSub) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.errSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := confsync.ConfigValidator("edited", nil)(out); err != nil {
				t.Fatalf("edited config invalid: %v\n%s", err, out)
			}
			c, err := confsync.ResolveConfig("edited", out, "")
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
			// Everything not set is unchanged.
			orig, _ := config.Parse("orig", base)
			if len(c.Members) != len(orig.Members) || len(c.Groups) != len(orig.Groups) || len(c.Events.Actions) != len(orig.Events.Actions) {
				t.Errorf("members/groups/actions %d/%d/%d, want %d/%d/%d", len(c.Members), len(c.Groups), len(c.Events.Actions),
					len(orig.Members), len(orig.Groups), len(orig.Events.Actions))
			}
			if !strings.Contains(string(out), "comments of the previous version are not kept") {
				t.Errorf("no note about lost comments:\n%s", out)
			}
		})
	}
	for _, bad := range []string{"novalue", "=1", "a..b=1", "a.b c=1"} {
		if _, err := ParseAssignment(bad); err == nil {
			t.Errorf("ParseAssignment(%q) succeeded", bad)
		}
	}
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	data := filepath.Join(t.TempDir(), "data")
	o := InitOptions{Cluster: "lab", Node: "n1", Address: netip.MustParseAddr("192.0.2.1"), Interface: "eth0", Dir: dir, DataDir: data}
	res, err := Init(o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Generated {
		t.Error("secret not reported as generated")
	}
	secret, err := os.ReadFile(res.Paths.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := hex.DecodeString(strings.TrimSpace(string(secret))); err != nil || len(b) != SecretSize {
		t.Errorf("secret %q: want %d hex-encoded bytes (%v)", secret, SecretSize, err)
	}
	ac, err := config.LoadAgent(res.Paths.Agent)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{ac.Node, ac.ClusterConfig, ac.KeyFile, ac.SecretFile, ac.DataDir, ac.Bind.String(), ac.HeartbeatInterface}
	want := []string{"n1", res.Paths.Cluster, res.Paths.Key, res.Paths.Secret, data, "192.0.2.1", "eth0"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("agent file (-want +got)\n%s", d)
	}
	c, err := config.Load(ac.ClusterConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := ac.CheckAgainst(c); err != nil {
		t.Error(err)
	}
	key, err := identity.LoadPrivateKey(ac.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.MemberByName("n1")
	if c.Settings.Name != "lab" || len(c.Members) != 1 || !m.CanUpdate || !m.PublicKey.Equal(identity.Public(key)) ||
		res.PublicKey != identity.FormatPublicKey(identity.Public(key)) {
		t.Errorf("cluster config: name %q, members %+v, want lab with n1 holding the new key", c.Settings.Name, c.Members)
	}
	for _, p := range []string{res.Paths.Secret, res.Paths.Key, res.Paths.Agent, res.Paths.Cluster} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 (%v)", p, st.Mode().Perm(), err)
		}
	}

	// A second init refuses and changes nothing.
	before := map[string]string{}
	for _, p := range []string{res.Paths.Secret, res.Paths.Key, res.Paths.Agent, res.Paths.Cluster} {
		b, _ := os.ReadFile(p)
		before[p] = string(b)
	}
	o.Cluster = "other"
	if _, err := Init(o); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}
	for p, b := range before {
		if now, _ := os.ReadFile(p); string(now) != b {
			t.Errorf("%s changed by the refused init", p)
		}
	}
	// Only one file in the way: still nothing written.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, KeyFileName), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.Dir = dir2
	if _, err := Init(o); !errors.Is(err, ErrExists) {
		t.Fatalf("init over a key: %v, want ErrExists", err)
	}
	if ents, _ := os.ReadDir(dir2); len(ents) != 1 {
		t.Errorf("refused init left %d files, want only the existing key", len(ents))
	}
	// Given secret (shoal setup passes the password).
	o.Dir, o.Secret = t.TempDir(), []byte("correct horse")
	res, err = Init(o)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(res.Paths.Secret); string(b) != "correct horse\n" || res.Generated {
		t.Errorf("secret file %q generated=%v, want the given secret", b, res.Generated)
	}
	if _, err := Init(InitOptions{Cluster: "x", Node: "n", Dir: t.TempDir()}); err == nil {
		t.Error("init without an address succeeded")
	}
}

func TestListen(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	snd, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	send := func(p *wire.Packet) {
		b, err := wire.Encode(p, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := snd.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	send(&wire.Packet{Type: wire.TypeHeartbeat, Cluster: "red", Node: "b", Seq: 1, ConfigVersion: 3, Health: wire.Health{OK: true}})
	send(&wire.Packet{Type: wire.TypeHeartbeat, Cluster: "red", Node: "a", Seq: 1, ConfigVersion: 2, Health: wire.Health{OK: true}})
	send(&wire.Packet{Type: wire.TypeHeartbeat, Cluster: "red", Node: "a", Seq: 2, ConfigVersion: 3, Health: wire.Health{OK: false, Reasons: []string{"gateway"}}})
	send(&wire.Packet{Type: wire.TypeHeartbeat, Cluster: "blue", Node: "x", Seq: 1, Health: wire.Health{OK: true}})
	if _, err := snd.Write([]byte("not a heartbeat")); err != nil {
		t.Fatal(err)
	}
	d, err := Listen(context.Background(), pc, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	type m struct {
		Cluster, Name, Addr string
		Ver                 uint64
		OK                  bool
		N                   int
	}
	var got []m
	for _, c := range d.Clusters {
		for _, x := range c.Members {
			got = append(got, m{c.Name, x.Name, x.Address, x.ConfigVersion, x.Healthy, x.Packets})
		}
	}
	want := []m{{"blue", "x", "127.0.0.1", 0, true, 1}, {"red", "a", "127.0.0.1", 3, false, 2}, {"red", "b", "127.0.0.1", 3, true, 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("heard (-want +got)\n%s", diff)
	}
	if d.Undecoded != 1 || d.TotalHeard != 5 || d.Verified {
		t.Errorf("undecoded %d of %d, verified %v; want 1 of 5, false", d.Undecoded, d.TotalHeard, d.Verified)
	}
}

// sponsor runs an unrestricted member "a" of the demo cluster serving joins
// on 127.0.0.1 with password.
func sponsor(t *testing.T, password string) (addr string, node *confsync.Node, key ed25519.PrivateKey) {
	t.Helper()
	key, err := identity.LoadPrivateKey("../../examples/keys/a.key")
	if err != nil {
		t.Fatal(err)
	}
	pins := confsync.NewPinSet(nil)
	var n *confsync.Node
	tr, err := confsync.NewTLSTransport(confsync.TLSOptions{
		Self: "a", Key: key, Pins: pins, JoinPassword: []byte(password),
		Admit:  func(r confsync.JoinRequest) (confsync.Record, error) { return n.Admit(r) },
		Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err = confsync.New(confsync.Options{
		Self: "a", Key: key, Dir: t.TempDir(), Bootstrap: readDemo(t), Transport: tr, Pins: pins,
		Validate: confsync.ConfigValidator("cluster.toml", nil), Authority: confsync.ConfigAuthority, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = tr.Serve(ctx, ln, n); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), n, key
}

func TestJoin(t *testing.T) {
	addr, n, skey := sponsor(t, "s3cret-s3cret")
	etc := t.TempDir()
	data := filepath.Join(t.TempDir(), "data")
	o := JoinOptions{Sponsor: addr, Node: "d", Address: netip.MustParseAddr("10.99.0.4"), Interface: "eth0",
		Password: []byte("wrong-password"), Dir: etc, DataDir: data, Timeout: 20 * time.Second}
	var shown []string
	o.Confirm = func(a, fp string) error { shown = append(shown, a+" "+fp); return nil }

	t.Run("wrong password writes nothing", func(t *testing.T) {
		_, err := Join(context.Background(), o)
		if !errors.Is(err, confsync.ErrJoinProof) && (err == nil || !strings.Contains(err.Error(), "password proof failed")) {
			t.Fatalf("err = %v, want the password proof refusal", err)
		}
		for _, d := range []string{etc, data} {
			if ents, _ := os.ReadDir(d); len(ents) != 0 {
				t.Errorf("%s holds %d entries after a refused join", d, len(ents))
			}
		}
		if v, _ := n.Current(); v.Counter != 0 {
			t.Errorf("sponsor's config moved to version %d", v.Counter)
		}
	})
	t.Run("declined sponsor writes nothing", func(t *testing.T) {
		o2 := o
		o2.Password = []byte("s3cret-s3cret")
		o2.Confirm = func(string, string) error { return ErrDeclined }
		if _, err := Join(context.Background(), o2); !errors.Is(err, ErrDeclined) {
			t.Fatalf("err = %v, want ErrDeclined", err)
		}
		if ents, _ := os.ReadDir(etc); len(ents) != 0 {
			t.Errorf("declined join left %d files", len(ents))
		}
	})
	t.Run("right password", func(t *testing.T) {
		o.Password = []byte("s3cret-s3cret\n")
		shown = nil
		res, err := Join(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if want := addr + " " + identity.Fingerprint(identity.Public(skey)); len(shown) != 1 || shown[0] != want {
			t.Errorf("confirmation shown %q, want [%q]", shown, want)
		}
		v, content := n.Current()
		if res.Sponsor != "a" || res.Version != v.Counter || res.Members != 4 || !res.NewKey {
			t.Errorf("result %+v; sponsor at version %d", res, v.Counter)
		}
		if b, _ := os.ReadFile(res.Paths.Secret); string(b) != "s3cret-s3cret\n" {
			t.Errorf("secret file %q", b)
		}
		ac, err := config.LoadAgent(res.Paths.Agent)
		if err != nil {
			t.Fatal(err)
		}
		key, err := identity.LoadPrivateKey(ac.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(ac.ClusterConfig)
		if err != nil {
			t.Fatal(err)
		}
		if err := ac.CheckAgainst(c); err != nil {
			t.Error(err)
		}
		me, _ := c.MemberByName("d")
		if !me.PublicKey.Equal(identity.Public(key)) || me.Address.String() != "10.99.0.4" || !me.CanUpdate {
			t.Errorf("member d = %+v", me)
		}
		// The data dir opens with the sponsor's version as current, without
		// any bootstrap file.
		jn, err := confsync.New(confsync.Options{Self: "d", Key: key, Dir: filepath.Join(ac.DataDir, "config"),
			Authority: confsync.ConfigAuthority, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		jv, jc := jn.Current()
		if jv.ID() != v.ID() || string(jc) != string(content) {
			t.Errorf("joined node's current version %s, sponsor's %s", jv, v)
		}
		// Joining again over the written files is refused.
		if _, err := Join(context.Background(), o); !errors.Is(err, ErrExists) {
			t.Errorf("second join: %v, want ErrExists", err)
		}
	})
}
