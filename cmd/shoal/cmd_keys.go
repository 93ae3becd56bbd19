package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/gossip"
)

func init() {
	register(&command{name: "keys gossip-key", synopsis: "print the gossip encryption key for a stock 'serf agent -encrypt' observer", run: runKeysGossipKey})
}

// gossipDataDir is where the agent keeps its gossip state inside data_dir
// (appliance/agent.go passes it as gossip.Config.DataDir).
const gossipDataDir = "gossip"

// runKeysGossipKey prints the serf-format (base64) gossip key. With
// --secret-file it is the key derived from the cluster secret; with --config
// it is this node's current primary key: the keyring file's after a
// rotation, else the derived one.
func runKeysGossipKey(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("keys gossip-key", "keys gossip-key [--secret-file FILE | --config AGENTFILE]", stderr)
	secretFile := flags.String("secret-file", "", "cluster secret file: print the key derived from it")
	agentFile := flags.String("config", "/etc/shoal/agent.toml", "agent file (used without --secret-file): print the primary key of this node's keyring, else the key derived from its secret_file")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return usagef("unexpected argument %q", flags.Arg(0))
	}
	if *secretFile != "" {
		key, err := derivedGossipKey(*secretFile)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, key)
		return nil
	}
	a, err := config.LoadAgent(*agentFile)
	if err != nil {
		return err
	}
	keys, err := gossip.ReadKeyringFile(filepath.Join(a.DataDir, gossipDataDir, gossip.KeyringFileName))
	switch {
	case err == nil:
		fmt.Fprintln(stdout, gossip.EncodeKey(keys[0]))
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("gossip key: %w", err)
	}
	key, err := derivedGossipKey(a.SecretFile)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, key)
	return nil
}

// derivedGossipKey reads a cluster secret file as the agent does (trimmed)
// and returns the serf-format key derived from it.
func derivedGossipKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("gossip key: read cluster secret: %w", err)
	}
	key, err := gossip.SerfEncryptKey(bytes.TrimSpace(b))
	if err != nil {
		return "", fmt.Errorf("gossip key: %s: %w", path, err)
	}
	return key, nil
}
