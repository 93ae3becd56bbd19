package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/gossip"
)

func TestKeysGossipKeyCommand(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "cluster.secret")
	if err := os.WriteFile(secret, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	derived, err := gossip.SerfEncryptKey([]byte("s3cret")) // the agent trims the file
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(agent, []byte("node = \"a\"\ndata_dir = \"data\"\nsecret_file = \"cluster.secret\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rotated := bytes.Repeat([]byte{7}, 32)
	writeKeyring := func(t *testing.T) {
		if err := gossip.WriteKeyringFile(filepath.Join(dir, "data", "gossip", gossip.KeyringFileName), [][]byte{rotated, {1: 1, 15: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T)
		args    []string
		code    int
		want    string // stdout
		wantErr string // part of stderr
	}{
		{"from secret file", nil, []string{"--secret-file", secret}, 0, derived + "\n", ""},
		{"agent file, no keyring yet", nil, []string{"--config", agent}, 0, derived + "\n", ""},
		{"agent file, rotated keyring", writeKeyring, []string{"--config", agent}, 0, gossip.EncodeKey(rotated) + "\n", ""},
		{"secret file wins", nil, []string{"--config", agent, "--secret-file", secret}, 0, derived + "\n", ""},
		{"missing secret", nil, []string{"--secret-file", filepath.Join(dir, "nope")}, 1, "", "read cluster secret"},
		{"empty secret", func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"--secret-file", filepath.Join(dir, "empty")}, 1, "", "empty cluster secret"},
		{"extra argument", nil, []string{"x"}, 2, "", "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			var out, errb bytes.Buffer
			code := run(append([]string{"keys", "gossip-key"}, tc.args...), &out, &errb)
			if code != tc.code || out.String() != tc.want || !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("shoal keys gossip-key %q = exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
					tc.args, code, out.String(), errb.String(), tc.code, tc.want, tc.wantErr)
			}
		})
	}
}
