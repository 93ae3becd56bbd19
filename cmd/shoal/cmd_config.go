package main

import (
	"fmt"
	"io"

	"github.com/shoal-project/shoal/confsync/config"
)

func init() {
	register(&command{name: "config validate", synopsis: "check a cluster config file", run: runConfigValidate})
}

func runConfigValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config validate", "config validate FILE", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one FILE, got %d arguments", fs.NArg())
	}
	path := fs.Arg(0)
	c, err := config.Load(path)
	if err != nil {
		return configFailure(stderr, path, err)
	}
	fmt.Fprintf(stdout, "%s: ok (cluster %s, %d members, %d groups)\n", path, c.Settings.Name, len(c.Members), len(c.Groups))
	return nil
}

// configFailure prints every configuration error on its own line and
// returns a one-line summary error (exit 1).
func configFailure(stderr io.Writer, path string, err error) error {
	list := config.Errors(err)
	for _, e := range list {
		fmt.Fprintln(stderr, e)
	}
	if len(list) == 1 {
		return fmt.Errorf("%s: invalid configuration", path)
	}
	return fmt.Errorf("%s: %d configuration errors", path, len(list))
}
