package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strings"

	"github.com/shoal-project/shoal/appliance"
)

func init() {
	register(&command{name: "explain", synopsis: "say why a traffic IP is where it is", run: runExplain})
}

// explainAnswer is the agent's /v1/explain answer (docs/API.md).
type explainAnswer struct {
	Group string `json:"group"`
	Text  string `json:"text"`
}

func runExplain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("explain", "explain IP [--json] [--socket PATH | --config AGENTFILE]", stderr)
	asJSON := fs.Bool("json", false, "print the agent's answer as JSON")
	sockPath := socketFlags(fs)
	// Flags may come before or after the IP.
	var pos []string
	for rest := args; ; {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch {
	case len(pos) == 0:
		return usagef("explain: which IP? (shoal explain IP)")
	case len(pos) > 1:
		return usagef("unexpected argument %q", pos[1])
	}
	ip, err := netip.ParseAddr(pos[0])
	if err != nil {
		return usagef("explain: %q is not an IP address", pos[0])
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := appliance.NewAdminClient(path).Get("/v1/explain?ip="+url.QueryEscape(ip.String()), &raw); err != nil {
		return err
	}
	if *asJSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("explain: agent answer: %w", err)
		}
		buf.WriteByte('\n')
		_, err := buf.WriteTo(stdout)
		return err
	}
	var a explainAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("explain: decode agent answer: %w", err)
	}
	if a.Text == "" {
		return fmt.Errorf("explain: the agent gave no explanation for %s", ip)
	}
	fmt.Fprintln(stdout, strings.TrimRight(a.Text, "\n"))
	return nil
}
