package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/shoal-project/shoal/confsync"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/confsync/identity"
)

func TestInitCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"init", "--cluster", "lab", "--node", "n1", "--address", "192.0.2.5", "--dir", dir, "--data-dir", data}
	code, out, errOut := runCmd(t, args...)
	if code != 0 || !strings.Contains(out, `created cluster "lab" with member "n1" (192.0.2.5)`) || !strings.Contains(out, "fingerprint SHA256:") {
		t.Fatalf("init: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	ac, err := config.LoadAgent(filepath.Join(dir, "agent.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(ac.ClusterConfig)
	if err != nil {
		t.Fatal(err)
	}
	if ac.Node != "n1" || ac.DataDir != data || c.Settings.Name != "lab" || len(c.Members) != 1 {
		t.Errorf("agent %+v, cluster %q members %d", ac, c.Settings.Name, len(c.Members))
	}
	// The printed fingerprint is the one `shoal fingerprint` shows.
	code, fp, _ := runCmd(t, "fingerprint", "--config", filepath.Join(dir, "agent.toml"))
	if code != 0 || !strings.Contains(out, strings.SplitN(fp, "\n", 2)[0]) {
		t.Errorf("fingerprint %q (exit %d) not in the init output", fp, code)
	}
	code, _, errOut = runCmd(t, args...)
	if code != 1 || !strings.Contains(errOut, "refusing to overwrite") {
		t.Errorf("second init: exit %d, stderr %q", code, errOut)
	}
	for _, bad := range [][]string{{"init"}, {"init", "--cluster", "x", "--address", "nope"}, {"init", "--cluster", "x", "extra"}} {
		if code, _, _ := runCmd(t, bad...); code != 2 {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
}

// cfgSponsor serves joins for member "a" of the demo cluster on 127.0.0.1.
func cfgSponsor(t *testing.T, password string) (string, *confsync.Node) {
	t.Helper()
	key, err := identity.LoadPrivateKey("../../examples/keys/a.key")
	if err != nil {
		t.Fatal(err)
	}
	pins := confsync.NewPinSet(nil)
	var n *confsync.Node
	tr, err := confsync.NewTLSTransport(confsync.TLSOptions{Self: "a", Key: key, Pins: pins, JoinPassword: []byte(password),
		Admit: func(r confsync.JoinRequest) (confsync.Record, error) { return n.Admit(r) }, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	n, err = confsync.New(confsync.Options{Self: "a", Key: key, Dir: t.TempDir(), Bootstrap: cfgDemo(t), Transport: tr, Pins: pins,
		Validate: confsync.ConfigValidator("cluster.toml", nil), Authority: confsync.ConfigAuthority, Logger: zerolog.Nop()})
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
	return ln.Addr().String(), n
}

func TestJoinCommand(t *testing.T) {
	addr, n := cfgSponsor(t, "hunter2-hunter2")
	dir, data := t.TempDir(), filepath.Join(t.TempDir(), "data")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(extra ...string) []string {
		return append([]string{"join", addr, "--node", "d", "--address", "10.99.0.4", "--dir", dir, "--data-dir", data, "--password-file", pw}, extra...)
	}
	cfgInput(t, false, "")
	if code, _, errOut := runCmd(t, args()...); code != 2 || !strings.Contains(errOut, "--yes") {
		t.Errorf("no terminal, no --yes: exit %d, %q", code, errOut)
	}
	code, _, errOut := runCmd(t, args("--yes")...)
	if code != 1 || !strings.Contains(errOut, "password proof failed (wrong password") {
		t.Errorf("wrong password: exit %d, stderr %q", code, errOut)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("wrong password wrote %d files", len(ents))
	}
	if err := os.WriteFile(pw, []byte("hunter2-hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Interactive: the sponsor's fingerprint is shown; "n" declines.
	cfgInput(t, true, "n\n")
	code, out, errOut := runCmd(t, args()...)
	fp := identity.Fingerprint(identity.Public(mustKey(t, "a")))
	if code != 1 || !strings.Contains(out, "sponsor "+addr+" presents key "+fp) || !strings.Contains(errOut, "sponsor not confirmed") {
		t.Errorf("declined: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	cfgInput(t, true, "y\n")
	code, out, errOut = runCmd(t, args()...)
	v, _ := n.Current()
	if code != 0 || v.Counter != 1 || !strings.Contains(out, `joined: a added "d" in config version 1`) {
		t.Fatalf("join: exit %d, sponsor at %d, stderr %q, stdout:\n%s", code, v.Counter, errOut, out)
	}
	ac, err := config.LoadAgent(filepath.Join(dir, "agent.toml"))
	if err != nil || ac.Node != "d" || ac.DataDir != data {
		t.Errorf("agent file: %+v %v", ac, err)
	}
}

func mustKey(t *testing.T, name string) []byte {
	t.Helper()
	k, err := identity.LoadPrivateKey("../../examples/keys/" + name + ".key")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDiscoverUsage(t *testing.T) {
	for _, args := range [][]string{{"discover", "--group", "10.0.0.1:7947"}, {"discover", "--duration", "0s"}, {"discover", "x"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
