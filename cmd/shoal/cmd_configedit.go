package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/appliance/clusterinit"
	"github.com/shoal-project/shoal/confsync"
)

// The replicated cluster config, through the local agent's admin socket:
// show, apply, set, history, diff, rollback. Edits are made on this node
// and replicated by the agent; a restricted node's agent refuses them.

func init() {
	register(&command{name: "config show", synopsis: "print the running cluster config (or an older version)", run: runConfigShow})
	register(&command{name: "config apply", synopsis: "make a file the new cluster config version (validate, diff, confirm)", run: runConfigApply})
	register(&command{name: "config set", synopsis: "change cluster config keys (KEY=VALUE) as a new version", run: runConfigSet})
	register(&command{name: "config history", synopsis: "list the stored cluster config versions", run: runConfigHistory})
	register(&command{name: "config diff", synopsis: "show what changed between two config versions", run: runConfigDiff})
	register(&command{name: "config rollback", synopsis: "make an earlier version's content the new config version", run: runConfigRollback})
}

const tomlType = "application/toml"

// getConfig fetches a version (ref "" = current), resolved for location
// when it is not "".
func getConfig(c *appliance.AdminClient, ref, location string) (appliance.ConfigVersion, error) {
	q := url.Values{}
	if ref != "" {
		q.Set("version", ref)
	}
	if location != "" {
		q.Set("location", location)
	}
	path := "/v1/config"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var v appliance.ConfigVersion
	err := c.Get(path, &v)
	return v, err
}

func versionLabel(v appliance.ConfigVersion) string {
	short := v.ID
	if len(short) > 12 {
		short = short[:12]
	}
	return fmt.Sprintf("version %d (%s)", v.Version, short)
}

func runConfigShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config show", "config show [--version REF] [--location NAME] [--json] [--socket PATH | --config AGENTFILE]", stderr)
	ref := fs.String("version", "", "version to show: a version number or an ID prefix (default: the current one)")
	loc := fs.String("location", "", "show the config as members in this location see it ([location.NAME] overrides applied)")
	asJSON := fs.Bool("json", false, "print the version and its content as JSON")
	sockPath := socketFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", argAt(pos, 0))
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	v, err := getConfig(appliance.NewAdminClient(path), *ref, *loc)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	origin := v.Origin
	if origin == "" {
		origin = "(initial file)"
	}
	// The header goes to stderr: stdout is the config byte for byte, so
	// `config show > f`, an edit and `config apply f` diff only the edit.
	fmt.Fprintf(stderr, "# %s by %s at %s\n", versionLabel(v), origin, v.Time.UTC().Format(time.RFC3339))
	if *loc != "" {
		fmt.Fprintf(stderr, "# resolved for location %q\n", *loc)
	}
	_, _ = io.WriteString(stdout, v.Content)
	if !strings.HasSuffix(v.Content, "\n") && v.Content != "" {
		fmt.Fprintln(stdout)
	}
	return nil
}

func runConfigApply(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config apply", "config apply FILE [--yes] [--socket PATH | --config AGENTFILE]\n\n"+
		"Validates FILE, shows a unified diff against the running config and, once\n"+
		"confirmed, makes it the new config version on every member.", stderr)
	yes := fs.Bool("yes", false, "do not ask for confirmation (required when stdin is not a terminal)")
	sockPath := socketFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one FILE, got %d arguments", len(pos))
	}
	if err := needConfirm(*yes); err != nil {
		return err
	}
	file := argAt(pos, 0)
	content, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	return proposeEdit(appliance.NewAdminClient(path), file, content, *yes, stdout, stderr)
}

// proposeEdit validates content locally, diffs it against the current
// version, asks, and posts it. name labels the new side and the errors.
func proposeEdit(c *appliance.AdminClient, name string, content []byte, yes bool, stdout, stderr io.Writer) error {
	if err := confsync.ConfigValidator(name, nil)(content); err != nil {
		return configFailure(stderr, name, err)
	}
	cur, err := getConfig(c, "", "")
	if err != nil {
		return err
	}
	d := confsync.Diff(versionLabel(cur), name, []byte(cur.Content), content)
	if d == "" {
		fmt.Fprintf(stdout, "no changes: %s is the running config (%s)\n", name, versionLabel(cur))
		return nil
	}
	_, _ = io.WriteString(stdout, d)
	ok, err := confirm(stdout, "Apply?", yes)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("not applied")
	}
	if !yes {
		// The operator took a while: make sure the diff shown is still the
		// change that will be made.
		now, err := getConfig(c, "", "")
		if err != nil {
			return err
		}
		if now.ID != cur.ID {
			return fmt.Errorf("not applied: the config changed to %s (by %s) while you were deciding; run the command again to see the new diff", versionLabel(now), now.Origin)
		}
	}
	var v appliance.ConfigVersion
	if err := c.Post("/v1/config", tomlType, content, &v); err != nil {
		return postFailure(stdout, stderr, err)
	}
	fmt.Fprintf(stdout, "applied: %s by %s; the other members fetch it after this node's next heartbeat\n", versionLabel(v), v.Origin)
	return nil
}

// postFailure turns the agent's refusal into the CLI's answer.
func postFailure(stdout, stderr io.Writer, err error) error {
	switch appliance.AdminStatus(err) {
	case http.StatusConflict:
		fmt.Fprintln(stdout, "no changes: the agent already runs this config")
		return nil
	case http.StatusUnprocessableEntity:
		var ae *appliance.AdminError
		errors.As(err, &ae)
		for _, l := range strings.Split(ae.Msg, "\n") {
			fmt.Fprintln(stderr, l)
		}
		return errors.New("the agent refused the config as invalid")
	}
	return err
}

func runConfigSet(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config set", "config set KEY=VALUE... [--yes] [--socket PATH | --config AGENTFILE]\n\n"+
		"Changes keys of the running config and proposes the result as a new version\n"+
		"(validated, diffed and confirmed like 'config apply'). Keys are dotted paths;\n"+
		"[[member]], [[group]] and [[events.action]] entries are named by their name:\n"+
		"  cluster.heartbeat_interval=750ms  group.web.failback_delay=10s\n"+
		"  member.b.can_update=false         group.web.ips='[\"192.0.2.10\", \"192.0.2.11\"]'\n"+
		"VALUE replacing a string stays a string; replacing a number, boolean or list\n"+
		"it must be one in TOML syntax. The config is decoded and re-encoded: its\n"+
		"COMMENTS AND KEY ORDER ARE LOST (use 'config show', edit, 'config apply' to keep them).", stderr)
	yes := fs.Bool("yes", false, "do not ask for confirmation (required when stdin is not a terminal)")
	sockPath := socketFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want at least one KEY=VALUE")
	}
	var as []clusterinit.Assignment
	for _, a := range pos {
		x, err := clusterinit.ParseAssignment(a)
		if err != nil {
			return usagef("%v", err)
		}
		as = append(as, x)
	}
	if err := needConfirm(*yes); err != nil {
		return err
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	c := appliance.NewAdminClient(path)
	cur, err := getConfig(c, "", "")
	if err != nil {
		return err
	}
	content, err := clusterinit.SetKeys([]byte(cur.Content), as)
	if err != nil {
		return err
	}
	return proposeEdit(c, "edited config", content, *yes, stdout, stderr)
}

func runConfigHistory(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config history", "config history [--json] [--socket PATH | --config AGENTFILE]", stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	sockPath := socketFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", argAt(pos, 0))
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	var hs []appliance.ConfigHistoryEntry
	if err := appliance.NewAdminClient(path).Get("/v1/config/history", &hs); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(hs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tVERSION\tID\tORIGIN\tTIME\tSTATUS\tSIZE")
	for _, h := range hs {
		mark := ""
		if h.Current {
			mark = "*"
		}
		origin := h.Origin
		if origin == "" {
			origin = "(initial file)"
		}
		status := h.Status
		if h.Reason != "" {
			status += ": " + h.Reason
		}
		id := h.ID
		if len(id) > 12 {
			id = id[:12]
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\n", mark, h.Version, id, origin, h.Time.UTC().Format(time.RFC3339), status, h.Size)
	}
	return tw.Flush()
}

func runConfigDiff(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config diff", "config diff A [B] [--socket PATH | --config AGENTFILE]\n\n"+
		"A and B are version numbers or ID prefixes (see 'config history'); B defaults\n"+
		"to the current version.", stderr)
	sockPath := socketFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("want A [B], got %d arguments", len(pos))
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	c := appliance.NewAdminClient(path)
	a, err := getConfig(c, argAt(pos, 0), "")
	if err != nil {
		return err
	}
	b, err := getConfig(c, argAt(pos, 1), "")
	if err != nil {
		return err
	}
	d := confsync.Diff(versionLabel(a), versionLabel(b), []byte(a.Content), []byte(b.Content))
	if d == "" {
		fmt.Fprintf(stdout, "%s and %s have the same content\n", versionLabel(a), versionLabel(b))
		return nil
	}
	_, err = io.WriteString(stdout, d)
	return err
}

func runConfigRollback(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config rollback", "config rollback REF [--yes] [--socket PATH | --config AGENTFILE]\n\n"+
		"Proposes the content of version REF (a number or ID prefix) as a new version;\n"+
		"history is kept.", stderr)
	yes := fs.Bool("yes", false, "do not ask for confirmation (required when stdin is not a terminal)")
	sockPath := socketFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one REF, got %d arguments", len(pos))
	}
	if err := needConfirm(*yes); err != nil {
		return err
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	c := appliance.NewAdminClient(path)
	old, err := getConfig(c, argAt(pos, 0), "")
	if err != nil {
		return err
	}
	cur, err := getConfig(c, "", "")
	if err != nil {
		return err
	}
	d := confsync.Diff(versionLabel(cur), versionLabel(old), []byte(cur.Content), []byte(old.Content))
	if d == "" {
		fmt.Fprintf(stdout, "no changes: the running config (%s) has the content of %s\n", versionLabel(cur), versionLabel(old))
		return nil
	}
	_, _ = io.WriteString(stdout, d)
	ok, err := confirm(stdout, fmt.Sprintf("Roll back to the content of %s?", versionLabel(old)), *yes)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("not rolled back")
	}
	var v appliance.ConfigVersion
	// The full ID: a short ref could become ambiguous in between.
	if err := c.Post("/v1/config/rollback?version="+url.QueryEscape(old.ID), "", nil, &v); err != nil {
		return postFailure(stdout, stderr, err)
	}
	fmt.Fprintf(stdout, "rolled back: %s has the content of %s\n", versionLabel(v), versionLabel(old))
	return nil
}
