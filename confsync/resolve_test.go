package confsync

import (
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"

	"github.com/shoal-project/shoal/confsync/config"
)

const siteConfig = `[cluster]
name = "demo"
multicast_group = "239.77.83.1"

[[member]]
name = "a"
address = "10.99.0.1"
public_key = "ed25519:Z1pdJjr9ZkjMER7HxyXHycp/a/IX9acRB+iWaWXlcRA="
location = "dc1"

[[member]]
name = "b"
address = "10.99.0.2"
public_key = "ed25519:dQgdps8Sq4Wc1CGW9QHjSwXuLg7G2IYL6SvfmHs65w0="
location = "dc2"

[[group]]
name = "web"
ips = ["192.0.2.10"]
members = ["a", "b"]
interface = "eth0"

[[group]]
name = "api"
ips = ["192.0.2.20"]
members = ["a", "b"]
interface = "eth0"

[location.dc2.cluster]
multicast_group = "239.77.83.2"

[location.dc2.group.web]
interface = "eth1"

[selftest]
gateway = "192.0.2.1"
`

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	m := map[string]any{}
	if _, err := toml.Decode(string(b), &m); err != nil {
		t.Fatalf("decode resolved config: %v\n%s", err, b)
	}
	return m
}

func TestResolve(t *testing.T) {
	tests := []struct {
		location      string
		wantGroup     string // multicast_group
		wantWebIface  string
		wantAPIIface  string
		wantSameLines bool // base text kept, [location] blanked
	}{
		{"", "239.77.83.1", "eth0", "eth0", true},
		{"dc1", "239.77.83.1", "eth0", "eth0", true},
		{"dc2", "239.77.83.2", "eth1", "eth0", false},
		{"nowhere", "239.77.83.1", "eth0", "eth0", true},
	}
	for _, tt := range tests {
		t.Run("location="+tt.location, func(t *testing.T) {
			b, err := Resolve([]byte(siteConfig), tt.location)
			if err != nil {
				t.Fatal(err)
			}
			m := decodeMap(t, b)
			if _, ok := m["location"]; ok {
				t.Error("resolved config still has [location]")
			}
			got := []string{
				m["cluster"].(map[string]any)["multicast_group"].(string),
				m["group"].([]map[string]any)[0]["interface"].(string),
				m["group"].([]map[string]any)[1]["interface"].(string),
				m["selftest"].(map[string]any)["gateway"].(string),
			}
			want := []string{tt.wantGroup, tt.wantWebIface, tt.wantAPIIface, "192.0.2.1"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Resolve(%q) (-want +got):\n%s", tt.location, diff)
			}
			if tt.wantSameLines {
				if n, w := strings.Count(string(b), "\n"), strings.Count(siteConfig, "\n"); n != w {
					t.Errorf("line count %d, want %d (line numbers must stay true)", n, w)
				}
				if !strings.Contains(string(b), "[selftest]\ngateway") {
					t.Error("base text not kept verbatim")
				}
			}
			// The schema package accepts the resolved config.
			if _, err := config.Parse("site.toml", b); err != nil {
				t.Errorf("config.Parse(resolved %q): %v", tt.location, err)
			}
		})
	}
	locs, err := Locations([]byte(siteConfig))
	if err != nil || !cmp.Equal(locs, []string{"dc2"}) {
		t.Errorf("Locations = %v, %v; want [dc2]", locs, err)
	}
}

func TestResolveErrors(t *testing.T) {
	base := "[cluster]\nname = \"x\"\n[[group]]\nname = \"web\"\n"
	tests := []struct {
		name, extra string
	}{
		{"unknown group", "[location.dc2.group.nope]\ninterface = \"eth1\"\n"},
		{"member override", "[location.dc2.member.a]\ncan_update = true\n"},
		{"rename group", "[location.dc2.group.web]\nname = \"other\"\n"},
		{"location not a table", "[location]\ndc2 = 3\n"},
		{"group override not a table", "[location.dc2]\ngroup = 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Resolve([]byte(base+tt.extra), "dc2")
			if !errors.Is(err, ErrLocation) {
				t.Errorf("Resolve: err = %v, want ErrLocation", err)
			}
		})
	}
}

func TestConfigValidatorCoversLocations(t *testing.T) {
	validate := ConfigValidator("site.toml", nil)
	if err := validate([]byte(siteConfig)); err != nil {
		t.Fatalf("valid site config: %v", err)
	}
	bad := siteConfig + "\n[location.dc3.cluster]\nheartbeat_interval = \"1h\"\n"
	err := validate([]byte(bad))
	if err == nil || !strings.Contains(err.Error(), "[location.dc3]") || !strings.Contains(err.Error(), "heartbeat_interval") {
		t.Errorf("override out of range: err = %v, want an error naming the location and key", err)
	}
	typo := siteConfig + "\n[location.dc2.selftest]\ngatway = \"192.0.2.9\"\n"
	if err := validate([]byte(typo)); err == nil || !strings.Contains(err.Error(), "gatway") {
		t.Errorf("unknown override key: err = %v, want it named", err)
	}
	// Base errors keep their line numbers.
	broken := strings.Replace(siteConfig, `gateway = "192.0.2.1"`, `gateway = "not-an-ip"`, 1)
	err = validate([]byte(broken))
	if err == nil || !strings.Contains(err.Error(), "site.toml:36") {
		t.Errorf("base error: %v, want it at site.toml:36", err)
	}
	auth, err := ConfigAuthority([]byte(siteConfig))
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := auth.Member("b"); !ok || m.Location != "dc2" || !m.CanUpdate || m.Address != "10.99.0.2" {
		t.Errorf("ConfigAuthority member b = %+v", m)
	}
	// Both authorities agree on the schema's example files.
	for _, f := range []string{"config/testdata/full.toml", "config/testdata/minimal.toml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Skipf("schema testdata not available: %v", err)
		}
		a1, err1 := ConfigAuthority(b)
		a2, err2 := MembersFromTOML(b)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v / %v", f, err1, err2)
		}
		if diff := cmp.Diff(a1.Members(), a2.Members()); diff != "" {
			t.Errorf("%s: ConfigAuthority vs MembersFromTOML (-config +lenient):\n%s", f, diff)
		}
	}
}

// applyPatch applies a unified diff produced by Diff to a.
func applyPatch(t *testing.T, a []string, patch string) []string {
	t.Helper()
	lines := splitLines(patch)
	var out []string
	ai := 0
	for i := 2; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "@@") {
			var as, an, bs, bn int
			hdr := strings.Fields(l)
			parse := func(s string, start, n *int) {
				s = s[1:]
				*n = 1
				if p, q, ok := strings.Cut(s, ","); ok {
					*start, *n = atoi(t, p), atoi(t, q)
				} else {
					*start = atoi(t, p)
				}
			}
			parse(hdr[1], &as, &an)
			parse(hdr[2], &bs, &bn)
			if an == 0 {
				as++
			}
			for ai < as-1 {
				out = append(out, a[ai])
				ai++
			}
			continue
		}
		if strings.HasPrefix(l, "\\") {
			out[len(out)-1] = strings.TrimSuffix(out[len(out)-1], "\n")
			continue
		}
		switch l[0] {
		case ' ':
			out = append(out, l[1:])
			ai++
		case '-':
			ai++
		case '+':
			out = append(out, l[1:])
		}
	}
	return append(out, a[ai:]...)
}

func atoi(t *testing.T, s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("bad number %q in hunk header", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func TestDiff(t *testing.T) {
	a := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
	b := "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\n"
	want := `--- old
+++ new
@@ -1,10 +1,11 @@
 a
 b
 c
-d
+D
 e
 f
 g
 h
 i
 j
+k
`
	if diff := cmp.Diff(want, Diff("old", "new", []byte(a), []byte(b))); diff != "" {
		t.Errorf("Diff (-want +got):\n%s", diff)
	}
	if got := Diff("x", "y", []byte(a), []byte(a)); got != "" {
		t.Errorf("Diff(equal) = %q, want empty", got)
	}
	// Property: the patch turns a into b, for random edits.
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		var x []string
		for i := range r.IntN(40) {
			x = append(x, string(rune('a'+i%26))+"\n")
		}
		y := append([]string(nil), x...)
		for range r.IntN(6) {
			switch p := r.IntN(len(y) + 1); r.IntN(3) {
			case 0:
				y = append(y[:p], append([]string{"new\n"}, y[p:]...)...)
			case 1:
				if p < len(y) {
					y = append(y[:p], y[p+1:]...)
				}
			case 2:
				if p < len(y) {
					y[p] = "changed\n"
				}
			}
		}
		if trial%7 == 0 && len(y) > 0 {
			y[len(y)-1] = strings.TrimSuffix(y[len(y)-1], "\n") // no final newline
		}
		patch := Diff("a", "b", []byte(strings.Join(x, "")), []byte(strings.Join(y, "")))
		got := applyPatch(t, x, patch)
		if strings.Join(got, "") != strings.Join(y, "") {
			t.Fatalf("trial %d: patch does not reproduce b\npatch:\n%s\ngot:\n%q\nwant:\n%q", trial, patch, got, y)
		}
	}
}
