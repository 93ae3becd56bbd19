package identity

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeyFileRoundTrip(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "node.key")
	if err := SavePrivateKey(path, k); err != nil {
		t.Fatalf("SavePrivateKey() = %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadPrivateKey(path)
	if err != nil {
		t.Fatalf("LoadPrivateKey() = %v", err)
	}
	if !k.Equal(got) {
		t.Errorf("LoadPrivateKey() returned a different key")
	}
	if err := SavePrivateKey(path, k); !errors.Is(err, os.ErrExist) {
		t.Errorf("SavePrivateKey(existing) = %v, want os.ErrExist", err)
	}
	// A comment before the PEM block is allowed.
	data, _ := os.ReadFile(path)
	withComment := append([]byte("# DEMO ONLY\n"), data...)
	if k2, err := ParsePrivateKey(withComment); err != nil || !k.Equal(k2) {
		t.Errorf("ParsePrivateKey(with comment) = %v", err)
	}
}

func TestParsePrivateKeyErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":     "",
		"wrong pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
		"bad der":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	} {
		if _, err := ParsePrivateKey([]byte(in)); err == nil {
			t.Errorf("ParsePrivateKey(%s) = nil error", name)
		}
	}
}

func TestPublicKeyString(t *testing.T) {
	pub := ed25519.PublicKey(make([]byte, 32))
	for i := range pub {
		pub[i] = byte(i)
	}
	s := FormatPublicKey(pub)
	if want := "ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; s != want {
		t.Errorf("FormatPublicKey() = %q, want %q", s, want)
	}
	got, err := ParsePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]byte(pub), []byte(got)); diff != "" {
		t.Errorf("ParsePublicKey(FormatPublicKey()) (-want +got):\n%s", diff)
	}
	fp := Fingerprint(pub)
	if !strings.HasPrefix(fp, "SHA256:") || strings.HasSuffix(fp, "=") || len(fp) != len("SHA256:")+43 {
		t.Errorf("Fingerprint() = %q", fp)
	}
	for _, bad := range []string{"", "AAECAw==", "ed25519:", "ed25519:AAECAw==", "ed25519:!!!", "rsa:" + s[8:], s + "AA"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) = nil error", bad)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add("ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	f.Add("ed25519:")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err != nil {
			return
		}
		if FormatPublicKey(k) != s {
			t.Errorf("round trip %q -> %q", s, FormatPublicKey(k))
		}
	})
}
