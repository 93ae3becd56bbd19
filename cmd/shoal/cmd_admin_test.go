package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/appliance/adminapi"
)

func TestAdminHashPassword(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(f, []byte("s3cret\nignored"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"admin", "hash-password", "--password-file", f}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	h := strings.TrimSpace(out.String())
	if err := bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret")); err != nil {
		t.Errorf("printed hash %q does not match the password: %v", h, err)
	}
}

func TestAdminNewToken(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"admin", "new-token"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var tok, hash string
	for _, l := range strings.Split(out.String(), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "token":
			tok = strings.TrimSpace(v)
		case "token_hash":
			hash = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	if tok == "" || hash != adminapi.HashToken(tok) {
		t.Errorf("token %q hash %q: hash is not HashToken(token)\n%s", tok, hash, out.String())
	}
	if code := run([]string{"admin", "new-token", "extra"}, &out, &errb); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}
