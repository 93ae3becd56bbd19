package firstboot

import (
	"os"
	"strings"
	"testing"
)

func TestParseSeedErrors(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"syntax", "hostname = \n", "s.toml:1:"},
		{"unknown key", "[network]\nmtu = 9000\n", `unknown key "network.mtu"`},
		{"bad hostname", `hostname = "Shoal_A"`, "hostname:"},
		{"static without address", "[network]\nmode = \"static\"\n", "network.addresses: mode \"static\" needs"},
		{"address without prefix", "[network]\nmode = \"static\"\naddresses = [\"192.0.2.1\"]\n", "network.addresses[0]"},
		{"addresses with dhcp", "[network]\naddresses = [\"192.0.2.1/24\"]\n", "only with mode"},
		{"bad mode", "[network]\nmode = \"ppp\"\n", "network.mode"},
		{"bad gateway", "[network]\nmode = \"static\"\naddresses = [\"192.0.2.1/24\"]\ngateways = [\"x\"]\n", "network.gateways[0]"},
		{"plain password", "[access]\nroot_password_hash = \"hunter2\"\n", "access.root_password_hash"},
		{"bad ssh key", "[access]\nssh_authorized_keys = [\"not a key\"]\n", "ssh_authorized_keys[0]"},
		{"join without password", "[cluster]\naction = \"join\"\n", "cluster.password"},
		{"init without name", "[cluster]\naction = \"init\"\npassword = \"x\"\n", "cluster.name"},
		{"bad action", "[cluster]\naction = \"leave\"\n", "cluster.action"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSeed("s.toml", []byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseSeed(%q) error = %v, want one containing %q", tc.text, err, tc.want)
			}
		})
	}
}

func FuzzParseSeed(f *testing.F) {
	for _, p := range []string{"testdata/seed-full.toml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("hostname = \"a\"\n[network]\nmode = \"dhcp\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSeed("fuzz", data)
		if err != nil {
			return
		}
		// whatever parses must validate and render a network file
		if err := s.Validate(); err != nil {
			t.Errorf("parsed seed does not validate: %v", err)
		}
		_ = NetworkUnit(s.Network, NIC{Name: "eth0", MAC: "52:54:00:00:00:01"})
	})
}
