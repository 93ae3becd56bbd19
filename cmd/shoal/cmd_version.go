package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
)

func init() {
	register(&command{name: "version", synopsis: "print the version", run: runVersion})
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "version [--json]", stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]string{"version": version, "go": runtime.Version()})
	}
	fmt.Fprintf(stdout, "shoal %s (%s)\n", version, runtime.Version())
	return nil
}
