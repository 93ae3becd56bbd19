package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSetupSeedIntoRoot runs 'shoal setup --seed' against a directory
// tree with a fake sysfs: no root, no commands needed for this seed.
func TestSetupSeedIntoRoot(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sys/class/net/ens3/address", "52:54:00:12:34:56\n")
	write("sys/class/net/ens3/ifindex", "2\n")
	write("sys/class/net/ens3/type", "1\n")
	write("sys/class/net/ens3/device/uevent", "")
	write("etc/hosts", "127.0.0.1\tlocalhost\n")
	seed := filepath.Join(root, "seed.toml")
	write("seed.toml", "hostname = \"node-a\"\n[network]\nmode = \"static\"\naddresses = [\"192.0.2.10/24\"]\ngateways = [\"192.0.2.1\"]\n")

	var out, errb bytes.Buffer
	if code := run([]string{"setup", "--seed", seed, "--root", root}, &out, &errb); code != 0 {
		t.Fatalf("shoal setup --seed: exit %d: %s%s", code, out.String(), errb.String())
	}
	net, err := os.ReadFile(filepath.Join(root, "etc/systemd/network/10-shoal.network"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"MACAddress=52:54:00:12:34:56", "Address=192.0.2.10/24", "Gateway=192.0.2.1", "DHCP=no"} {
		if !strings.Contains(string(net), want) {
			t.Errorf("network file lacks %q:\n%s", want, net)
		}
	}
	if h, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(h) != "node-a\n" {
		t.Errorf("hostname = %q, want node-a", h)
	}

	// a bad seed changes nothing and exits 1 naming the key
	write("bad.toml", "hostname = \"x\"\n[network]\nmode = \"static\"\n")
	out.Reset()
	errb.Reset()
	if code := run([]string{"setup", "--seed", filepath.Join(root, "bad.toml"), "--root", root}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "network.addresses") {
		t.Errorf("bad seed: exit %d, stderr %q; want 1 naming network.addresses", code, errb.String())
	}
	if h, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(h) != "node-a\n" {
		t.Errorf("hostname changed by a rejected seed: %q", h)
	}
	if code := run([]string{"setup", "--seed", seed, "--firstboot"}, &out, &errb); code != 2 {
		t.Errorf("--seed with --firstboot: exit %d, want 2", code)
	}
}

func TestParseDiscover(t *testing.T) {
	out := "# listened 3s to 239.77.83.1:7947: 2 clusters\nprod  a, b\n\ntest  c\n"
	got := parseDiscover(out)
	if strings.Join(got, ",") != "prod,test" {
		t.Errorf("parseDiscover = %v, want [prod test]", got)
	}
}

// TestSetupDialogue answers the console questions from a script,
// including one invalid answer that must be asked again.
func TestSetupDialogue(t *testing.T) {
	root := t.TempDir()
	for p, s := range map[string]string{
		"sys/class/net/ens3/address":       "52:54:00:12:34:56\n",
		"sys/class/net/ens3/ifindex":       "2\n",
		"sys/class/net/ens3/type":          "1\n",
		"sys/class/net/ens3/device/uevent": "",
		"etc/hosts":                        "127.0.0.1\tlocalhost\n",
	} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	answers := strings.Join([]string{
		"Bad_Name", // rejected, asked again
		"node-b",
		"",       // interface: default ens3
		"static", // addressing
		"198.51.100.7/24",
		"198.51.100.1",
		"",     // DNS
		"",     // root password: keep
		"",     // SSH key: none
		"skip", // cluster
		"yes",
	}, "\n") + "\n"
	old := setupStdin
	setupStdin = strings.NewReader(answers)
	t.Cleanup(func() { setupStdin = old })
	var out, errb bytes.Buffer
	if code := run([]string{"setup", "--root", root}, &out, &errb); code != 0 {
		t.Fatalf("shoal setup: exit %d: %s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "hostname:") || strings.Count(out.String(), "Host name") != 2 {
		t.Errorf("dialogue did not re-ask the invalid host name:\n%s", out.String())
	}
	net, err := os.ReadFile(filepath.Join(root, "etc/systemd/network/10-shoal.network"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(net), "Address=198.51.100.7/24\nGateway=198.51.100.1\n") {
		t.Errorf("network file:\n%s\ndialogue:\n%s", net, out.String())
	}
	if h, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(h) != "node-b\n" {
		t.Errorf("hostname = %q, want node-b", h)
	}

	// answering "no" changes nothing
	setupStdin = strings.NewReader("node-c\n\n\n\n\nskip\nno\n")
	out.Reset()
	if code := run([]string{"setup", "--root", root}, &out, &errb); code != 0 {
		t.Fatalf("shoal setup (declined): exit %d: %s", code, errb.String())
	}
	if h, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(h) != "node-b\n" {
		t.Errorf("declined dialogue changed the host name to %q", h)
	}
}
