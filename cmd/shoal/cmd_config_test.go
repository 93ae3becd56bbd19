package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/confsync/identity"
)

func TestConfigValidate(t *testing.T) {
	code, out, errOut := runCmd(t, "config", "validate", demoConfig)
	if code != 0 || out != demoConfig+": ok (cluster demo, 3 members, 2 groups)\n" {
		t.Errorf("valid config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(bad, []byte("[cluster]\nname = \"x\"\nheartbeat_interval = \"1h\"\ncolour = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, "config", "validate", bad)
	if code != 1 {
		t.Errorf("invalid config: exit %d, want 1", code)
	}
	// Unknown keys and type errors are reported before validation runs;
	// once the key is fixed, every validation error shows at once.
	if !strings.Contains(errOut, bad+`:4: cluster key "colour": unknown key`) {
		t.Errorf("stderr lacks the unknown key error:\n%s", errOut)
	}
	if err := os.WriteFile(bad, []byte("[cluster]\nname = \"x\"\nheartbeat_interval = \"1h\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, "config", "validate", bad)
	for _, want := range []string{
		bad + `:3: cluster key "heartbeat_interval": 1h0m0s out of range 100ms..5s`,
		bad + `: key "member": no [[member]] defined`,
		"2 configuration errors",
	} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, stderr lacks %q:\n%s", code, want, errOut)
		}
	}
	for _, args := range [][]string{{"config", "validate"}, {"config", "validate", "a", "b"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
	if code, out, _ := runCmd(t, "config", "validate", "--help"); code != 0 {
		t.Errorf("--help exit %d: %s", code, out)
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	code, out, errOut := runCmd(t, "keygen", "--out", path)
	if code != 0 {
		t.Fatalf("keygen exit %d: %s", code, errOut)
	}
	k, err := identity.LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pub := identity.Public(k)
	want := "public_key = \"" + identity.FormatPublicKey(pub) + "\"\nfingerprint: " + identity.Fingerprint(pub) + "\n"
	if out != want {
		t.Errorf("keygen stdout = %q, want %q", out, want)
	}
	if code, _, errOut := runCmd(t, "keygen", "--out", path); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("keygen over an existing file: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runCmd(t, "keygen"); code != 2 {
		t.Errorf("keygen without --out: exit %d, want 2", code)
	}
	if code, _, _ := runCmd(t, "keygen", "--help"); code != 0 {
		t.Errorf("keygen --help: exit %d, want 0", code)
	}
}

// TestExampleKeysMatchConfig: the demo key files belong to the public keys
// in examples/cluster.toml.
func TestExampleKeysMatchConfig(t *testing.T) {
	src, err := os.ReadFile(demoConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		k, err := identity.LoadPrivateKey("../../examples/keys/" + n + ".key")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(src), identity.FormatPublicKey(identity.Public(k))) {
			t.Errorf("examples/keys/%s.key does not match any public key in %s", n, demoConfig)
		}
	}
}
