package main

import (
	"fmt"
	"io"

	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/confsync/identity"
)

func init() {
	register(&command{name: "fingerprint", synopsis: "print this node's key fingerprint (to confirm a 'shoal join')", run: runFingerprint})
}

func runFingerprint(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fingerprint", "fingerprint [--config AGENTFILE | --key FILE]", stderr)
	agentFile := fs.String("config", "/etc/shoal/agent.toml", "agent file naming the key file")
	keyFile := fs.String("key", "", "private key file (instead of --config)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	path := *keyFile
	if path == "" {
		a, err := config.LoadAgent(*agentFile)
		if err != nil {
			return err
		}
		path = a.KeyFile
	}
	k, err := identity.LoadPrivateKey(path)
	if err != nil {
		return err
	}
	pub := identity.Public(k)
	fmt.Fprintf(stdout, "%s\npublic_key = %q\n", identity.Fingerprint(pub), identity.FormatPublicKey(pub))
	return nil
}
