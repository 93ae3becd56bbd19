package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/appliance/events"
)

func init() {
	register(&command{name: "event", synopsis: "send a serf user event to the cluster", run: runEvent})
}

// runEvent is `shoal event NAME [PAYLOAD]`, like `serf event`: the local
// agent broadcasts the user event; serf_handlers such as "user:NAME=script"
// run on every member (and a stock serf agent in the pool sees it too).
func runEvent(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("event", "event [--coalesce=false] [--socket PATH | --config AGENTFILE] NAME [PAYLOAD]", stderr)
	coalesce := fs.Bool("coalesce", true, "let serf coalesce events of the same name (as serf event -coalesce)")
	sockPath := socketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	name, payload, err := nameAndPayload(fs.Args(), "event")
	if err != nil {
		return err
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	body, err := json.Marshal(events.UserEventRequest{Name: name, Payload: payload, Coalesce: *coalesce})
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := appliance.NewAdminClient(path).Post(events.UserEventPath, "application/json", body, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Event '%s' dispatched! Coalescing enabled: %v\n", name, *coalesce)
	return nil
}

// nameAndPayload checks the NAME [PAYLOAD] arguments of event and query.
func nameAndPayload(args []string, what string) (string, []byte, error) {
	switch {
	case len(args) == 0 || args[0] == "":
		return "", nil, usagef("%s: which name? (shoal %s NAME [PAYLOAD])", what, what)
	case len(args) > 2:
		return "", nil, usagef("unexpected argument %q (quote a payload with spaces)", args[2])
	case len(args) == 2:
		return args[0], []byte(args[1]), nil
	}
	return args[0], nil, nil
}
