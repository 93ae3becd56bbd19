package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-project/shoal/appliance"
)

func init() {
	register(&command{name: "agent", synopsis: "run a cluster node (heartbeat, gossip, view, dataplane)", run: runAgent})
}

func runAgent(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("agent", "agent --config FILE", stderr)
	cfgPath := fs.String("config", "/etc/shoal/agent.toml", "node-local agent file (TOML)")
	logLevel := fs.String("log-level", "", "override the agent file's log_level (debug, info, warn, error)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return appliance.RunAgent(ctx, appliance.AgentOptions{
		ConfigPath: *cfgPath,
		Version:    version,
		LogLevel:   *logLevel,
		Stderr:     stderr,
	})
}
