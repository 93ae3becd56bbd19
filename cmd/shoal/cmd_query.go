package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/appliance/events"
)

func init() {
	register(&command{name: "query", synopsis: "send a serf query and print the answers", run: runQuery})
}

// queryAnswerJSON is one answer in `shoal query --json` (payload as text).
type queryAnswerJSON struct {
	From    string `json:"from"`
	Payload string `json:"payload"`
}

// runQuery is `shoal query NAME [PAYLOAD]`, like `serf query`: members
// whose serf_handlers match "query:NAME" answer with their handler's output.
func runQuery(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("query", "query [--timeout D] [--json] [--socket PATH | --config AGENTFILE] NAME [PAYLOAD]", stderr)
	timeout := fs.Duration("timeout", 0, "how long to collect answers (0 = serf's default; at most "+events.MaxQueryTimeout.String()+")")
	asJSON := fs.Bool("json", false, "print the answers as JSON")
	sockPath := socketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	name, payload, err := nameAndPayload(fs.Args(), "query")
	if err != nil {
		return err
	}
	if *timeout < 0 || *timeout > events.MaxQueryTimeout {
		return usagef("--timeout %s: must be 0..%s", *timeout, events.MaxQueryTimeout)
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	body, err := json.Marshal(events.QueryRequest{Name: name, Payload: payload, TimeoutMS: timeout.Milliseconds()})
	if err != nil {
		return fmt.Errorf("encode query: %w", err)
	}
	var resp events.QueryResponse
	if err := appliance.NewAdminClient(path).Post(events.QueryPath, "application/json", body, &resp); err != nil {
		return err
	}
	if *asJSON {
		out := struct {
			Responses []queryAnswerJSON `json:"responses"`
		}{Responses: []queryAnswerJSON{}}
		for _, r := range resp.Responses {
			out.Responses = append(out.Responses, queryAnswerJSON{From: r.From, Payload: string(r.Payload)})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "Query '%s' dispatched\n", name)
	for _, r := range resp.Responses {
		fmt.Fprintf(stdout, "Response from '%s': %s\n", r.From, strings.TrimSuffix(string(r.Payload), "\n"))
	}
	fmt.Fprintf(stdout, "Total Responses: %d\n", len(resp.Responses))
	return nil
}
