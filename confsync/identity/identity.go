package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// PublicKeyPrefix starts every public key string.
const PublicKeyPrefix = "ed25519:"

const pemType = "PRIVATE KEY"

// Generate returns a new Ed25519 private key from crypto/rand.
func Generate() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return priv, nil
}

// MarshalPrivateKey encodes k as a PEM "PRIVATE KEY" block (PKCS#8).
func MarshalPrivateKey(k ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// ParsePrivateKey decodes the first PEM "PRIVATE KEY" block in data (text
// before it, such as a comment, is ignored) and requires an Ed25519 key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("parse private key: no PEM \"PRIVATE KEY\" block")
		}
		if b.Type != pemType {
			continue
		}
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("parse private key: %T is not an ed25519 key", k)
		}
		return ek, nil
	}
}

// LoadPrivateKey reads a private key file written by SavePrivateKey.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("load private key %s: %w", path, err)
	}
	return k, nil
}

// SavePrivateKey writes k to path with mode 0600. It never overwrites an
// existing file (os.ErrExist), so a node cannot lose its identity by
// accident.
func SavePrivateKey(path string, k ed25519.PrivateKey) error {
	data, err := MarshalPrivateKey(k)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save private key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("save private key: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path) // do not leave a partial key behind
		return fmt.Errorf("save private key %s: %w", path, err)
	}
	return nil
}

// FormatPublicKey returns "ed25519:" + base64 (standard, padded) of pub.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return PublicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey parses a string made by FormatPublicKey.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("parse public key: missing %q prefix", PublicKeyPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("parse public key: %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	// The decoder skips newlines; one key must have one spelling.
	if base64.StdEncoding.EncodeToString(b) != rest {
		return nil, fmt.Errorf("parse public key: not in canonical base64 (no spaces or line breaks)")
	}
	return ed25519.PublicKey(b), nil
}

// Fingerprint returns "SHA256:" + unpadded base64 of sha256(pub), as
// OpenSSH displays keys.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Public returns the public half of k.
func Public(k ed25519.PrivateKey) ed25519.PublicKey {
	return k.Public().(ed25519.PublicKey)
}
