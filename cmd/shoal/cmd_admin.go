package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/shoal-project/shoal/appliance/adminapi"
)

func init() {
	register(&command{name: "admin hash-password", synopsis: "make a password_hash for an [[admin.user]]", run: runHashPassword})
	register(&command{name: "admin new-token", synopsis: "make a bearer token and its token_hash for an [[admin.user]]", run: runNewToken})
}

func runHashPassword(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin hash-password", "admin hash-password [--password-file FILE]\n\nReads the password from FILE, or from the terminal without echo, and prints\nits bcrypt hash for password_hash in the cluster config.", stderr)
	file := fs.String("password-file", "", "read the password from this file (first line)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	var pw string
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return fmt.Errorf("read password: %w", err)
		}
		pw, _, _ = strings.Cut(string(b), "\n")
	} else {
		if !stdinTerminal() {
			return usagef("no terminal to read the password from: use --password-file")
		}
		fmt.Fprint(stderr, "Password: ")
		b, err := readSecretLine()
		fmt.Fprintln(stderr)
		if err != nil {
			return fmt.Errorf("read password: %w", err)
		}
		pw = string(b)
	}
	if pw == "" {
		return fmt.Errorf("empty password")
	}
	h, err := adminapi.HashPassword(pw)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, h)
	return nil
}

func runNewToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin new-token", "admin new-token\n\nPrints a new random bearer token (give it to the API user) and the\ntoken_hash to put in the cluster config (the config never holds the token).", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	tok, err := adminapi.NewToken()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token      = %s\ntoken_hash = %q\n", tok, adminapi.HashToken(tok))
	return nil
}
