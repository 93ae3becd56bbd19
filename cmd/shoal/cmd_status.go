package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-project/shoal/appliance"
	"github.com/shoal-project/shoal/dataplane/multihost"
)

func init() {
	register(&command{name: "status", synopsis: "show this node's view of the cluster", run: runStatus})
	register(&command{name: "members", synopsis: "list cluster members and their health", run: runMembers})
}

// socketFlags adds --socket and --config to fs and returns a resolver for the
// admin socket path: --socket wins, else the agent file's socket, else the
// default.
func socketFlags(fs interface {
	String(name, value, usage string) *string
}) func() (string, error) {
	sock := fs.String("socket", "", "agent admin socket (default: from --config, else "+appliance.DefaultSocket+")")
	cfg := fs.String("config", "", "agent file whose socket to use")
	return func() (string, error) {
		if *sock != "" {
			return *sock, nil
		}
		if *cfg != "" {
			return appliance.SocketFromAgentFile(*cfg)
		}
		return appliance.DefaultSocket, nil
	}
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "status [--json] [--socket PATH | --config AGENTFILE]", stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	sockPath := socketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	var st appliance.Status
	if err := appliance.NewAdminClient(path).Get("/v1/status", &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, &st)
	return nil
}

func runMembers(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("members", "members [--json] [--socket PATH | --config AGENTFILE]", stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	sockPath := socketFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	path, err := sockPath()
	if err != nil {
		return err
	}
	var st appliance.Status
	if err := appliance.NewAdminClient(path).Get("/v1/status", &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st.Members)
	}
	printMembers(stdout, st.Members)
	return nil
}

func printMembers(w io.Writer, ms []appliance.MemberStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tHEALTH\tLAST HEARTBEAT\tCONFIG\tGOSSIP")
	for _, m := range ms {
		state := "down"
		if m.Up {
			state = "up"
		}
		health := m.Health
		if len(m.Reasons) > 0 {
			health += " (" + strings.Join(m.Reasons, "; ") + ")"
		}
		age := "-"
		if m.Self {
			age = "self"
		} else if m.LastHeartbeatMS >= 0 {
			age = (time.Duration(m.LastHeartbeatMS) * time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.Name, m.Address, state, health, age, m.ConfigVersion, m.Gossip)
	}
	tw.Flush()
}

func printStatus(w io.Writer, st *appliance.Status) {
	fmt.Fprintf(w, "Node %s in cluster %s (shoal %s)\n", st.Node, st.Cluster, st.Version)
	health := "ok"
	if !st.Health.OK {
		health = "FAILED: " + strings.Join(st.Health.Reasons, "; ")
	}
	fmt.Fprintf(w, "Health: %s\n", health)
	fmt.Fprintf(w, "View: epoch %d, up %s\n", st.View.Epoch, strings.Join(st.View.Up, ","))
	fmt.Fprintf(w, "Config: version %d\n\n", st.ConfigVersion)
	printMembers(w, st.Members)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tMODE\tIP / MEMBER\tOWNER / BUCKETS\tHELD HERE")
	for _, g := range st.Groups {
		if g.Mode == "multi" {
			names := make([]string, 0, len(g.Shares))
			for n := range g.Shares {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				here := ""
				if n == st.Node {
					here = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", g.Name, g.Mode, n, g.Shares[n], here)
			}
			continue
		}
		ips := make([]string, 0, len(g.IPs))
		for ip := range g.IPs {
			ips = append(ips, ip)
		}
		sort.Strings(ips)
		for _, ip := range ips {
			owner := g.IPs[ip]
			if owner == "" {
				owner = "(none)"
			}
			here := ""
			for _, h := range g.Held {
				if h == ip {
					here = "yes"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.Name, g.Mode, ip, owner, here)
		}
	}
	tw.Flush()
	if st.Multihost != nil {
		printMultihost(w, st.Multihost)
	}
}

// printMultihost prints the multi-hosted data plane as the kernel runs it:
// where the XDP program is attached and how, each group's applied table,
// and the program's and responders' counters.
func printMultihost(w io.Writer, mh *multihost.Status) {
	fmt.Fprintln(w)
	var ifs []string
	for _, i := range mh.Interfaces {
		ifs = append(ifs, i.Name+" ("+i.Mode+")")
	}
	if len(ifs) == 0 {
		ifs = []string{"none"}
	}
	fmt.Fprintf(w, "Multi-hosted data plane: XDP on %s\n", strings.Join(ifs, ", "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tINTERFACE\tBUCKETS OWNED\tHELD (OWNED ELSEWHERE)\tIN HANDOVER\tTABLE")
	for _, g := range mh.Groups {
		table := "(failed)"
		if g.Table != 0 {
			table = appliance.TableDigestHex(g.Table)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", g.Name, g.Interface, g.BucketsOwned, g.BucketsHeld, g.BucketsHandover, table)
	}
	tw.Flush()
	c := mh.Counters
	fmt.Fprintf(w, "Packets: %d passed (owner), %d passed (socket), %d dropped (not owner), %d dropped (handover), %d parse errors, %d ICMP steered, %d fragments\n",
		c.PassedOwner, c.PassedSocket, c.DroppedNotOwner, c.DroppedHandover, c.ParseErrors, c.ICMPSteered, c.Fragments)
	fmt.Fprintf(w, "Responders: %d ARP and %d NDP replies, %d ARP and %d NDP malformed frames dropped\n",
		mh.ARPReplies, mh.NDPReplies, mh.MalformedARP, mh.MalformedNDP)
}
