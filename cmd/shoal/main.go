// Command shoal is the single binary of the Shoal traffic-IP cluster: the
// agent daemon and every administration command. Each subcommand lives in its
// own cmd_*.go file and registers itself in init; this file only dispatches.
//
// Exit codes: 0 success, 1 error, 2 usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand. Run receives the arguments after the
// subcommand's name and returns an error; a usageError makes the exit code 2.
type command struct {
	name     string // "simulate", or "config validate" for nested commands
	synopsis string // one line for the command list
	run      func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("duplicate command " + c.name)
	}
	commands[c.name] = c
}

// usageError marks an error caused by bad command-line usage (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// newFlagSet returns a flag set that reports errors instead of exiting, with
// a usage text that names the command.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("shoal "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: shoal %s\n\nOptions:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and converts flag errors to usage errors; -h/--help
// is reported as errHelp so the caller exits 0.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err.Error()}
	}
	return nil
}

var errHelp = errors.New("help requested")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printHelp(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	// Longest match first: "config validate" before "config".
	var cmd *command
	var rest []string
	if len(args) >= 2 {
		if c, ok := commands[args[0]+" "+args[1]]; ok {
			cmd, rest = c, args[2:]
		}
	}
	if cmd == nil {
		if c, ok := commands[args[0]]; ok {
			cmd, rest = c, args[1:]
		}
	}
	if cmd == nil {
		if sub := subcommandsOf(args[0]); len(sub) > 0 {
			fmt.Fprintf(stderr, "Usage: shoal %s <command>\n\nCommands:\n", args[0])
			for _, c := range sub {
				fmt.Fprintf(stderr, "  %-18s %s\n", c.name, c.synopsis)
			}
			return 2
		}
		fmt.Fprintf(stderr, "shoal: unknown command %q (see 'shoal --help')\n", args[0])
		return 2
	}
	err := cmd.run(rest, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "shoal %s: %v\n", cmd.name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "shoal %s: %v\n", cmd.name, err)
		return 1
	}
}

func subcommandsOf(prefix string) []*command {
	var out []*command
	for name, c := range commands {
		if strings.HasPrefix(name, prefix+" ") {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: shoal <command> [options]\n\nShoal keeps traffic IP addresses reachable across a masterless cluster.\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].synopsis)
	}
	fmt.Fprintf(w, "\nRun 'shoal <command> --help' for a command's options.\n")
}
