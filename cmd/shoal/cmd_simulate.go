package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/confsync/config"
)

func init() {
	register(&command{name: "simulate", synopsis: "show where traffic IPs go for a config and a set of failed members", run: runSimulate})
}

func runSimulate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("simulate", "simulate --config FILE [--down a,b,...] [--json] [--explain IP]", stderr)
	cfgPath := fs.String("config", "", "cluster config file (TOML)")
	downList := fs.String("down", "", "comma-separated members to treat as failed")
	asJSON := fs.Bool("json", false, "print as JSON")
	explain := fs.String("explain", "", "explain the placement of one traffic IP")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *cfgPath == "" {
		return usagef("--config FILE is required")
	}
	var explainIP netip.Addr
	if *explain != "" {
		ip, err := netip.ParseAddr(*explain)
		if err != nil {
			return usagef("--explain %q is not an IP address", *explain)
		}
		explainIP = ip.Unmap()
	}
	c, err := config.Load(*cfgPath)
	if err != nil {
		if config.IsConfigError(err) {
			return configFailure(stderr, *cfgPath, err)
		}
		return err
	}
	var down []string
	for _, d := range strings.Split(*downList, ",") {
		if d = strings.TrimSpace(d); d != "" {
			if _, ok := c.MemberByName(d); !ok {
				return usagef("--down: %q is not a member of cluster %q", d, c.Settings.Name)
			}
			down = append(down, d)
		}
	}
	if explainIP.IsValid() {
		e, err := appliance.ExplainIP(c, down, explainIP)
		if err != nil {
			if errors.Is(err, allocate.ErrNotInGroup) {
				return usagef("--explain: %s is not a traffic IP of any group", explainIP)
			}
			return err
		}
		if *asJSON {
			return writeJSON(stdout, explanationJSON(e))
		}
		fmt.Fprint(stdout, e.String())
		return nil
	}
	sim, err := appliance.Simulate(c, down)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, sim)
	}
	return printSimulation(stdout, sim)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func explanationJSON(e allocate.Explanation) any {
	type cand struct {
		Member  string `json:"member"`
		Passive bool   `json:"passive"`
		Alive   bool   `json:"alive"`
		Slot    *int   `json:"slot,omitempty"`
		Status  string `json:"status"`
		Share   int    `json:"share"`
	}
	out := struct {
		IP         string `json:"ip"`
		Group      string `json:"group"`
		Mode       string `json:"mode"`
		Owner      string `json:"owner,omitempty"`
		Candidates []cand `json:"candidates"`
	}{IP: e.IP.String(), Group: e.Group, Mode: e.Mode.String(), Owner: e.Owner}
	for _, c := range e.Candidates {
		x := cand{Member: c.Member, Passive: c.Passive, Alive: c.Alive, Status: string(c.Status), Share: c.Share}
		if c.Slot >= 0 {
			s := c.Slot
			x.Slot = &s
		}
		out.Candidates = append(out.Candidates, x)
	}
	return out
}

func printSimulation(w io.Writer, sim *appliance.Simulation) error {
	fmt.Fprintf(w, "alive: %s\n\n", strings.Join(sim.Alive, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tMODE\tIP/MEMBER\tOWNER/SHARE")
	for _, g := range sim.Groups {
		if g.Mode == config.ModeMulti {
			for _, m := range g.Members {
				role := ""
				if slices.Contains(g.Passive, m) {
					role = " passive"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s (slot %d%s)\t%d/%d (%.1f%%)\n", g.Name, g.Mode, m, g.Slots[m], role,
					g.Shares[m], g.Buckets, 100*float64(g.Shares[m])/float64(g.Buckets))
			}
			fmt.Fprintf(tw, "%s\t%s\tIPs\t%s\n", g.Name, g.Mode, strings.Join(g.IPOrder, ", "))
			continue
		}
		for _, ip := range g.IPOrder {
			owner := g.IPs[ip]
			if owner == "" {
				owner = "- (no member alive)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.Mode, ip, owner)
		}
	}
	return tw.Flush()
}
