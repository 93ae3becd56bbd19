package gossip

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyringFileName is the gossip keyring file in Config.DataDir: serf's JSON
// format, a list of base64 keys, primary first.
const KeyringFileName = "serf.keyring"

// gossipKeyInfo is the HKDF info string of the derived gossip key.
const gossipKeyInfo = "shoal gossip key v1"

// DeriveGossipKey derives the 32-byte AES-256 gossip key from the cluster
// secret: HKDF-SHA256(secret, salt none, info "shoal gossip key v1").
func DeriveGossipKey(secret []byte) ([]byte, error) {
	if len(secret) == 0 {
		return nil, errors.New("derive gossip key: empty cluster secret")
	}
	k, err := hkdf.Key(sha256.New, secret, nil, gossipKeyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive gossip key: %w", err)
	}
	return k, nil
}

// EncodeKey returns a gossip key as serf writes it: standard base64, the
// form of `serf agent -encrypt` and of keyring files.
func EncodeKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// SerfEncryptKey returns the gossip key derived from the cluster secret
// (DeriveGossipKey) in serf's base64 form, so that a stock `serf agent
// -encrypt <key>` can join the pool as an observer. After a key rotation the
// pool uses the primary key of the keyring file instead (ReadKeyringFile).
func SerfEncryptKey(secret []byte) (string, error) {
	k, err := DeriveGossipKey(secret)
	if err != nil {
		return "", err
	}
	return EncodeKey(k), nil
}

// ReadKeyringFile reads a serf keyring file: a JSON list of base64 keys of
// 16, 24 or 32 bytes, primary first.
func ReadKeyringFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	var enc []string
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("read keyring %s: %w", path, err)
	}
	if len(enc) == 0 {
		return nil, fmt.Errorf("read keyring %s: no keys", path)
	}
	keys := make([][]byte, 0, len(enc))
	for i, e := range enc {
		k, err := base64.StdEncoding.DecodeString(e)
		if err != nil {
			return nil, fmt.Errorf("read keyring %s: key %d: %w", path, i, err)
		}
		if l := len(k); l != 16 && l != 24 && l != 32 {
			return nil, fmt.Errorf("read keyring %s: key %d is %d bytes, want 16, 24 or 32", path, i, l)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// WriteKeyringFile writes keys (primary first) in serf's format, mode 0600,
// atomically.
func WriteKeyringFile(path string, keys [][]byte) error {
	enc := make([]string, len(keys))
	for i, k := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, err := json.MarshalIndent(enc, "", "  ")
	if err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	return nil
}

// loadOrCreateKeyring returns the keys to start with: the persisted keyring
// when dataDir holds one, else the key derived from the secret (persisted
// when dataDir is set). path is "" when nothing is persisted.
func loadOrCreateKeyring(dataDir string, secret []byte) (keys [][]byte, path string, err error) {
	derived, err := DeriveGossipKey(secret)
	if err != nil {
		return nil, "", err
	}
	if dataDir == "" {
		return [][]byte{derived}, "", nil
	}
	path = filepath.Join(dataDir, KeyringFileName)
	keys, err = ReadKeyringFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		keys = [][]byte{derived}
		if err := WriteKeyringFile(path, keys); err != nil {
			return nil, "", err
		}
		return keys, path, nil
	}
	if err != nil {
		return nil, "", err
	}
	return keys, path, nil
}

// KeyringStatus is the cluster-wide answer to a keyring operation.
type KeyringStatus struct {
	Keys        map[string]int    // base64 key -> number of nodes holding it
	PrimaryKeys map[string]int    // base64 key -> number of nodes using it as primary
	NumNodes    int               // nodes serf knows of
	NumResp     int               // nodes that answered
	NumErr      int               // nodes that reported an error
	Messages    map[string]string // node -> error message
}
