package main

import (
	"fmt"
	"io"

	"github.com/shoal-project/shoal/confsync/identity"
)

func init() {
	register(&command{name: "keygen", synopsis: "generate a node's Ed25519 identity key", run: runKeygen})
}

// runKeygen writes a new private key (PEM PKCS#8, mode 0600; never over an
// existing file) and prints the public key string for the cluster config and
// its fingerprint.
func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen", "keygen --out FILE", stderr)
	out := fs.String("out", "", "private key file to create (refuses to overwrite)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return usagef("--out FILE is required")
	}
	k, err := identity.Generate()
	if err != nil {
		return err
	}
	if err := identity.SavePrivateKey(*out, k); err != nil {
		return err
	}
	pub := identity.Public(k)
	fmt.Fprintf(stdout, "public_key = %q\nfingerprint: %s\n", identity.FormatPublicKey(pub), identity.Fingerprint(pub))
	return nil
}
