package config

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestObservers(t *testing.T) {
	c, err := Load("testdata/observer.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Observer{{Name: "ops-serf"}, {Name: "monitor.dc2", Address: netip.MustParseAddr("2001:db8::99")}}
	if diff := cmp.Diff(want, c.Observers, cmpAddr); diff != "" {
		t.Errorf("Observers (-want +got):\n%s", diff)
	}
	wantAddrs := map[string]netip.Addr{"ops-serf": {}, "monitor.dc2": netip.MustParseAddr("2001:db8::99")}
	if diff := cmp.Diff(wantAddrs, c.ObserverAddrs(), cmpAddr); diff != "" {
		t.Errorf("ObserverAddrs() (-want +got):\n%s", diff)
	}
	checkRoundTrip(t, c)

	// No observers: none encoded, so configs without them keep their bytes.
	m, err := Load("testdata/minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	if m.ObserverAddrs() != nil {
		t.Errorf("ObserverAddrs() without observers = %v, want nil", m.ObserverAddrs())
	}
	out, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "observer") {
		t.Errorf("Encode() without observers mentions them:\n%s", out)
	}
}

// Lines of head: the second [[member]] ("b") ends at line 12.
func TestObserverErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"member name", head + `
[[observer]]
name = "b"
`, []string{`cluster.toml:15: observer "b" key "name": "b" is a member; an observer needs a name of its own`}},
		{"duplicate, bad name, bad address", head + `
[[observer]]
name = "ops"

[[observer]]
name = "ops"
address = "10.0.0.300"

[[observer]]
name = "has space"
`, []string{
			`cluster.toml:18: observer "ops" key "name": duplicate observer name "ops"`,
			`cluster.toml:19: observer "ops" key "address": "10.0.0.300" is not an IP address`,
			`cluster.toml:22: observer "has space" key "name": observer name "has space" must be 1..63 letters, digits, '.', '_' or '-'`,
		}},
		{"unknown key", head + `
[[observer]]
name = "ops"
token = "x"
`, []string{`cluster.toml:16: observer "ops" key "token": unknown key`}},
		{"missing name", head + `
[[observer]]
address = "10.99.0.50"
`, []string{`cluster.toml:14: observer #1 key "name": observer name "" must be 1..63 letters, digits, '.', '_' or '-'`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("cluster.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse() = nil error, want %q", tc.want)
			}
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse() errors (-want +got):\n%s", diff)
			}
		})
	}
}
