package adminapi

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/shoal-project/shoal/confsync"
)

// NodeCertificate returns the node's Ed25519 certificate: self-signed, made
// from the node key, valid for server and client authentication. Peers and
// Go or OpenSSL clients (curl) get this one; its public key is the key
// pinned in the cluster config. It is confsync's node certificate.
func NodeCertificate(key ed25519.PrivateKey, node string) (tls.Certificate, error) {
	if len(key) != ed25519.PrivateKeySize {
		return tls.Certificate{}, errors.New("node certificate: bad ed25519 private key")
	}
	return confsync.Certificate(node, key)
}

// BrowserCertificate returns a self-signed ECDSA P-256 certificate whose key
// is derived from the node key (HKDF-SHA256 of the Ed25519 seed), so that
// its public key, and with it Fingerprint, is the same at every start.
// Browsers need it: Chromium and Firefox do not accept Ed25519 server
// certificates. The server offers both; Go's TLS picks the Ed25519 one for
// clients that support it.
func BrowserCertificate(key ed25519.PrivateKey, node string) (tls.Certificate, error) {
	if len(key) != ed25519.PrivateKeySize {
		return tls.Certificate{}, errors.New("browser certificate: bad ed25519 private key")
	}
	var ek *ecdsa.PrivateKey
	for i := 0; ek == nil; i++ {
		if i == 16 { // each try fails with probability ~2^-32
			return tls.Certificate{}, errors.New("browser certificate: cannot derive a P-256 key")
		}
		b, err := hkdf.Key(sha256.New, key.Seed(), nil, fmt.Sprintf("shoal admin api p256 v1 %d", i), 32)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("browser certificate: %w", err)
		}
		ek, _ = ecdsa.ParseRawPrivateKey(elliptic.P256(), b)
	}
	sum := sha256.Sum256(key.Public().(ed25519.PublicKey))
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(sum[:16]),
		Subject:               pkix.Name{CommonName: node, Organization: []string{"shoal"}},
		DNSNames:              []string{dnsName(node)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(100, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ek.Public(), ek)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("browser certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("browser certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: ek, Leaf: leaf}, nil
}

// dnsName turns a member name into a valid DNS label (the SAN browsers
// match; member names may contain anything up to 64 bytes).
func dnsName(node string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(node) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" || len(s) > 63 {
		return "shoal"
	}
	return s
}

// Pin is the SHA-256 of a certificate's SubjectPublicKeyInfo: what users
// pin. It survives restarts because both certificates' keys derive from the
// node key.
type Pin [32]byte

// Fingerprint returns the public-key pin of cert.
func Fingerprint(cert tls.Certificate) (Pin, error) {
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return Pin{}, errors.New("fingerprint: empty certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return Pin{}, fmt.Errorf("fingerprint: %w", err)
		}
	}
	return sha256.Sum256(leaf.RawSubjectPublicKeyInfo), nil
}

// String is the curl form, for `curl --pinnedpubkey`: "sha256//" + base64.
func (p Pin) String() string { return "sha256//" + base64.StdEncoding.EncodeToString(p[:]) }

// Hex is the colon-separated upper-case hex form browsers show as the
// "public key" SHA-256 fingerprint.
func (p Pin) Hex() string {
	var b strings.Builder
	for i, c := range p {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}
