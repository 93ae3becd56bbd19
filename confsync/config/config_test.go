package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestLoadTestdata(t *testing.T) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Errorf("Load(%s) = %v", f, err)
			}
		})
	}
}

func TestFullValues(t *testing.T) {
	c, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	wantSettings := ClusterSettings{
		Name: "full", HeartbeatInterval: 250 * time.Millisecond, MonitorTimeout: time.Second,
		MulticastGroup: netip.MustParseAddr("239.1.2.3"), MulticastPort: 9000, HeartbeatMode: HeartbeatUnicast,
		GossipPort: 9001, ConfigPort: 9002, Verbose: true,
	}
	if diff := cmp.Diff(wantSettings, c.Settings, cmpAddr); diff != "" {
		t.Errorf("Settings (-want +got):\n%s", diff)
	}
	if c.Members[1].CanUpdate || !c.Members[0].CanUpdate || !c.Members[2].CanUpdate {
		t.Errorf("CanUpdate = %v %v %v, want true false true (default true)", c.Members[0].CanUpdate, c.Members[1].CanUpdate, c.Members[2].CanUpdate)
	}
	web := c.Groups[0]
	wantWeb := Group{
		Name: "web", Mode: ModeSingle, IPs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")},
		Members: []string{"a", "b", "c"}, Passive: []string{"c"}, KeepTogether: true, Interface: "eth0",
		PrefixLen: 24, PrefixRoute: true, FailbackDelay: 30 * time.Second, GARPCount: 0, GARPSpread: time.Second, GARPRefresh: 0,
	}
	if diff := cmp.Diff(wantWeb, web, cmpAddr); diff != "" {
		t.Errorf("group web (-want +got):\n%s", diff)
	}
	// Slots: a explicit 0; c and b (in listed order) get 1 and 2.
	if diff := cmp.Diff(map[string]int{"a": 0, "c": 1, "b": 2}, c.Groups[2].Slots); diff != "" {
		t.Errorf("front slots (-want +got):\n%s", diff)
	}
	if c.Groups[2].Hash != HashIP || c.Groups[1].Hash != "" {
		t.Errorf("hash = %q, %q", c.Groups[2].Hash, c.Groups[1].Hash)
	}
	if got := c.Events.Actions[1]; got.Timeout != 5*time.Second || got.Retries != 3 || !got.StartTLS || got.MaxPerHour != 60 {
		t.Errorf("webhook action defaults: %+v", got)
	}
	if st := c.SelfTest; st.CheckLinks || st.FailAfter != 3 || len(st.CheckIPs) != 2 || st.Gateway != netip.MustParseAddr("10.99.0.254") {
		t.Errorf("selftest: %+v", st)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("testdata/minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultClusterSettings()
	want.Name = "min"
	if diff := cmp.Diff(want, c.Settings, cmpAddr); diff != "" {
		t.Errorf("Settings (-want +got):\n%s", diff)
	}
	g := DefaultGroup()
	g.Name, g.IPs, g.Members, g.Interface = "web", []netip.Addr{netip.MustParseAddr("192.0.2.10")}, []string{"a"}, "eth0"
	if diff := cmp.Diff(g, c.Groups[0], cmpAddr); diff != "" {
		t.Errorf("group (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(DefaultSelfTest(), c.SelfTest, cmpAddr); diff != "" {
		t.Errorf("selftest (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(DefaultEvents(), c.Events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	// monitor_timeout defaults to 4 x heartbeat_interval.
	c2, err := Parse("x.toml", []byte(strings.Replace(minimal(t), `name = "min"`, "name = \"min\"\nheartbeat_interval = \"1s\"", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c2.Settings.MonitorTimeout != 4*time.Second {
		t.Errorf("MonitorTimeout = %v, want 4s", c2.Settings.MonitorTimeout)
	}
}

func minimal(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const head = `[cluster]
name = "demo"

[[member]]
name = "a"
address = "10.99.0.1"
public_key = "ed25519:Z1pdJjr9ZkjMER7HxyXHycp/a/IX9acRB+iWaWXlcRA="

[[member]]
name = "b"
address = "10.99.0.2"
public_key = "ed25519:dQgdps8Sq4Wc1CGW9QHjSwXuLg7G2IYL6SvfmHs65w0="
`

// TestErrors checks the exact messages, with file, line and key. Lines of
// head: [cluster] is line 1, the second [[member]] starts at line 9.
func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"bad ip", head + `
[[group]]
name = "web"
ips = ["192.0.2.10", "192.0.2.300"]
members = ["a", "b"]
interface = "eth0"
`, []string{`cluster.toml:16: group "web" key "ips": 192.0.2.300 is not an IP address`}},
		{"bad ip in multi-line array", head + `
[[group]]
name = "web"
ips = [
  "192.0.2.10",
  "192.0.2.300",
]
members = ["a", "b"]
interface = "eth0"
`, []string{`cluster.toml:18: group "web" key "ips": 192.0.2.300 is not an IP address`}},
		{"unknown keys", head + `
[[group]]
name = "web"
ips = ["192.0.2.10"]
members = ["a"]
interface = "eth0"
colour = "red"

[selftest]
gatway = "10.0.0.1"
`, []string{
			`cluster.toml:19: group "web" key "colour": unknown key`,
			`cluster.toml:22: selftest key "gatway": unknown key`,
		}},
		{"admin users", head + `
[[admin.user]]
name = "ops"
password_hash = "plaintext"

[[admin.user]]
name = "ops"
token_hash = "sha256:abc"
role = "root"

[[admin.user]]
name = "viewer"
role = "read-only"
`, []string{
			`cluster.toml:16: admin user "ops" key "password_hash": not a bcrypt hash (want $2a$/$2b$/$2y$..., 60 characters; make one with 'shoal admin hash-password')`,
			`cluster.toml:19: admin user "ops" key "name": duplicate user name "ops"`,
			`cluster.toml:20: admin user "ops" key "token_hash": want "sha256:" + 64 hex digits (make one with 'shoal admin new-token')`,
			`cluster.toml:21: admin user "ops" key "role": "root" is not one of admin, read-only`,
			`cluster.toml:23: admin user "viewer" key "password_hash": user "viewer" has neither password_hash nor token_hash`,
		}},
		{"unknown top-level table", head + "\n[extra]\nx = 1\n", []string{`cluster.toml:14: key "extra": unknown key`}},
		{"type mismatch", head + `
[[group]]
name = "web"
ips = "192.0.2.10"
members = ["a", 3]
interface = "eth0"
garp_count = "five"
`, []string{
			`cluster.toml:16: group "web" key "ips": want an array of strings, got a string`,
			`cluster.toml:17: group "web" key "members": want an array of strings, got an element that is an integer`,
			`cluster.toml:19: group "web" key "garp_count": want an integer, got a string`,
		}},
		{"syntax", head + "\n[[group]\nname = 1\n", []string{`cluster.toml:15: expected end of table array name delimiter`}},
		{"duplicates and membership", head + `
[[group]]
name = "web"
ips = ["192.0.2.10", "192.0.2.11"]
members = ["a", "b", "zed"]
passive = ["a", "b", "c"]
interface = "eth0"

[[group]]
name = "web"
ips = ["192.0.2.12", "192.0.2.12"]
members = ["a"]
interface = "eth0"

[[group]]
name = "api"
ips = ["192.0.2.11"]
members = ["a"]
interface = "eth0"
`, []string{
			`cluster.toml:17: group "web" key "members": member "zed" is not defined in any [[member]]`,
			`cluster.toml:18: group "web" key "passive": "c" is not one of the group's members`,
			`cluster.toml:22: group "web" key "name": duplicate group name "web"`,
			`cluster.toml:23: group "web" key "ips": 192.0.2.12 listed twice`,
			`cluster.toml:29: group "api" key "ips": 192.0.2.11 is also in group "web"`,
		}},
		{"all passive", head + `
[[group]]
name = "web"
ips = ["192.0.2.10"]
members = ["a", "b"]
passive = ["b", "a"]
interface = "eth0"
`, []string{`cluster.toml:18: group "web" key "passive": every member is passive; at least one must be active`}},
		{"durations and ranges", strings.Replace(head, `name = "demo"`, `name = "demo"
heartbeat_interval = "50ms"
monitor_timeout = "xyz"
multicast_group = "10.0.0.1"
gossip_port = 70000
heartbeat_mode = "carrier-pigeon"`, 1), []string{
			`cluster.toml:3: cluster key "heartbeat_interval": 50ms out of range 100ms..5s`,
			`cluster.toml:4: cluster key "monitor_timeout": "xyz" is not a duration (e.g. "500ms", "2s")`,
			`cluster.toml:5: cluster key "multicast_group": "10.0.0.1" is not an IPv4 multicast address (224.0.0.0/4)`,
			`cluster.toml:6: cluster key "gossip_port": 70000 out of range 1..65535`,
			`cluster.toml:7: cluster key "heartbeat_mode": "carrier-pigeon" is not one of multicast, unicast`,
		}},
		{"monitor timeout too short", strings.Replace(head, `name = "demo"`, "name = \"demo\"\nmonitor_timeout = \"600ms\"", 1),
			[]string{`cluster.toml:3: cluster key "monitor_timeout": 600ms out of range 1s..5m0s`}},
		{"members", strings.Replace(strings.Replace(head, `"10.99.0.2"`, `"10.99.0.1"`, 1), `name = "b"`, `name = "a"`, 1) + `
[[member]]
name = "c d"
address = "nowhere"
public_key = "ed25519:AAAA"
`, []string{
			`cluster.toml:10: member "a" key "name": duplicate member name "a"`,
			`cluster.toml:11: member "a" key "address": 10.99.0.1 is also the address of member "a"`,
			`cluster.toml:15: member "c d" key "name": member name "c d" must be 1..63 letters, digits, '.', '_' or '-'`,
			`cluster.toml:16: member "c d" key "address": "nowhere" is not an IP address`,
			`cluster.toml:17: member "c d" key "public_key": parse public key: 3 bytes, want 32`,
		}},
		{"multi", head + `
[[group]]
name = "front"
mode = "multi"
ips = ["198.51.100.10"]
members = ["a", "b"]
interface = "eth0"
keep_together = true
hash = "crc"
slots = { a = 1, b = 1 }
`, []string{
			`cluster.toml:20: group "front" key "keep_together": only for single-hosted groups`,
			`cluster.toml:21: group "front" key "hash": "crc" is not one of ip-port, ip`,
			`cluster.toml:22: group "front" key "slots": slot 1 given to both "a" and "b"`,
		}},
		{"multi too many", head + `
[[group]]
name = "front"
mode = "multi"
ips = ["198.51.100.10"]
members = ["a", "b", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]
interface = "eth0"
`, nil}, // checked below: 7 undefined members and the limit
		{"single only keys", head + `
[[group]]
name = "web"
ips = ["192.0.2.10"]
members = ["a"]
interface = "eth0/1"
hash = "ip"
slots = { a = 0 }
prefix_len = 33
garp_refresh = "10ms"
`, []string{
			`cluster.toml:18: group "web" key "interface": "eth0/1" is not an interface name`,
			`cluster.toml:19: group "web" key "hash": only for multi-hosted groups`,
			`cluster.toml:20: group "web" key "slots": only for multi-hosted groups`,
			`cluster.toml:21: group "web" key "prefix_len": 33 out of range 0..32`,
			`cluster.toml:22: group "web" key "garp_refresh": 10ms is below 1s (use "0s" to turn refresh off)`,
		}},
		{"events", head + `
[events]
max_concurrent = 0

[[events.action]]
name = "x"
type = "pager"

[[events.action]]
name = "x"
type = "webhook"
url = "ftp://x"
groups = ["nope"]

[[events.action]]
name = "m"
type = "email"
`, []string{
			`cluster.toml:15: events key "max_concurrent": 0 out of range 1..64`,
			`cluster.toml:19: action "x" key "type": "pager" is not one of log, script, email, webhook`,
			`cluster.toml:22: action "x" key "name": duplicate action name "x"`,
			`cluster.toml:24: action "x" key "url": "ftp://x" is not an http(s) URL`,
			`cluster.toml:25: action "x" key "groups": group "nope" is not defined`,
			`cluster.toml:27: action "m" key "smtp_server": "": want host:port`,
			`cluster.toml:27: action "m" key "from": "" is not a mail address`,
			`cluster.toml:27: action "m" key "to": missing: an email action needs recipients`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("cluster.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse() = nil error, want %q", tc.want)
			}
			if !IsConfigError(err) {
				t.Errorf("IsConfigError(%v) = false", err)
			}
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
			}
			if tc.name == "syntax" {
				if len(got) != 1 || !strings.HasPrefix(got[0], tc.want[0]) {
					t.Errorf("Parse() errors = %q, want one starting %q", got, tc.want[0])
				}
				return
			}
			if tc.want == nil {
				t.Logf("errors: %q", got)
				found := false
				for _, g := range got {
					found = found || strings.Contains(g, "a multi-hosted group has at most 8")
				}
				if !found || len(got) != 8 {
					t.Errorf("Parse() errors = %q, want 7 undefined members and the 8-member limit", got)
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse() errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNoMembers(t *testing.T) {
	_, err := Parse("c.toml", []byte("[cluster]\nname = \"x\"\n"))
	if diff := cmp.Diff([]string{`c.toml: key "member": no [[member]] defined`}, errStrings(err)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func errStrings(err error) []string {
	var out []string
	for _, e := range Errors(err) {
		out = append(out, e.Error())
	}
	return out
}

func TestLoadAgent(t *testing.T) {
	a, err := LoadAgent("../../examples/agent-a.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("../../examples")
	abs := func(p string) string { r, _ := filepath.Abs(p); return r }
	got := *a
	got.ClusterConfig, got.KeyFile, got.SecretFile = abs(a.ClusterConfig), abs(a.KeyFile), abs(a.SecretFile)
	want := Agent{
		File: "../../examples/agent-a.toml", Node: "a", ClusterConfig: filepath.Join(dir, "cluster.toml"),
		DataDir: "/var/lib/shoal-demo/a", KeyFile: filepath.Join(dir, "keys/a.key"), SecretFile: filepath.Join(dir, "cluster.secret"),
		Bind: netip.MustParseAddr("10.99.0.1"), HeartbeatInterface: "eth0", Socket: "/run/shoal-demo/a.sock",
		LogLevel: "info", LogFormat: "console", XDPMode: "auto",
	}
	if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
		t.Errorf("LoadAgent (-want +got):\n%s", diff)
	}
	c, err := Load(a.ClusterConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CheckAgainst(c); err != nil {
		t.Errorf("CheckAgainst() = %v", err)
	}
	a.Node = "zz"
	if err := a.CheckAgainst(c); err == nil {
		t.Errorf("CheckAgainst(non-member) = nil")
	}

	_, err = ParseAgent("agent.toml", []byte("node = \"a\"\nlog_level = \"loud\"\nbind = \"x\"\nkey = 1\n"), "/etc/shoal")
	want2 := []string{
		`agent.toml:2: key "log_level": "loud" is not one of debug, info, warn, error`,
		`agent.toml:3: key "bind": "x" is not an IP address`,
	}
	if diff := cmp.Diff([]string{`agent.toml:4: key "key": unknown key`}, errStrings(err)); diff != "" {
		t.Errorf("ParseAgent unknown key (-want +got):\n%s", diff)
	}
	_, err = ParseAgent("agent.toml", []byte("node = \"a\"\nlog_level = \"loud\"\nbind = \"x\"\nxdp_mode = \"fast\"\n"), "/etc/shoal")
	want2 = append(want2, `agent.toml:4: key "xdp_mode": "fast" is not one of auto, native, generic`)
	if diff := cmp.Diff(want2, errStrings(err)); diff != "" {
		t.Errorf("ParseAgent (-want +got):\n%s", diff)
	}
	d, err := ParseAgent("agent.toml", []byte("node = \"a\"\n"), "/etc/shoal")
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyFile != "/etc/shoal/node.key" || d.DataDir != "/var/lib/shoal" || d.ClusterConfig != "/etc/shoal/cluster.toml" || d.XDPMode != "auto" {
		t.Errorf("agent defaults: %+v", d)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.toml")
	for _, f := range files {
		c, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, c)
	}
}

func checkRoundTrip(t *testing.T, c *Cluster) {
	t.Helper()
	out, err := Encode(c)
	if err != nil {
		t.Fatalf("Encode() = %v", err)
	}
	c2, err := Parse(c.File, out)
	if err != nil {
		t.Fatalf("Parse(Encode()) = %v\n%s", err, out)
	}
	if diff := cmp.Diff(c, c2, cmpAddr, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("Parse(Encode()) (-want +got):\n%s\n%s", diff, out)
	}
}

func TestLocator(t *testing.T) {
	src := `top = 1 # [not a header]
[cluster]
name = "x"
[[group]]
name = "g0"
[[group]]
"name" = "g1"
ips = [
  "192.0.2.1",
  "192.0.2.2", # comment
]
slots.a = 1
[ events . action ]
`
	l := newLocator([]byte(src))
	tests := []struct {
		table      string
		n          int
		key, value string
		want       int
	}{
		{"", 0, "top", "", 1},
		{"", 0, "missing", "", 0},
		{"cluster", 0, "name", "", 3},
		{"cluster", 0, "missing", "", 2},
		{"group", 0, "name", "", 5},
		{"group", 1, "name", "", 7},
		{"group", 1, "ips", "192.0.2.2", 10},
		{"group", 1, "ips", "192.0.2.9", 8},
		{"group", 1, "slots", "", 12},
		{"group", 2, "name", "", 0},
		{"events.action", 0, "x", "", 13},
	}
	for _, tc := range tests {
		if got := l.value(tc.table, tc.n, tc.key, tc.value); got != tc.want {
			t.Errorf("locate(%q, %d, %q, %q) = %d, want %d", tc.table, tc.n, tc.key, tc.value, got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.toml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			for _, e := range Errors(err) {
				if !IsConfigError(e) {
					t.Fatalf("error %v is not a *config.Error", e)
				}
			}
			return
		}
		checkRoundTrip(t, c)
	})
}
