package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/appliance/clusterinit"
)

func init() {
	register(&command{name: "discover", synopsis: "list the clusters and members heard on the heartbeat multicast group", run: runDiscover})
}

func runDiscover(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("discover", "discover [--interface IF] [--group ADDR:PORT] [--duration 3s] [--json]\n\n"+
		"Listens to the heartbeat multicast group and lists what it hears. This node\n"+
		"holds no cluster keys, so signatures are NOT verified: names, addresses and\n"+
		"versions are what the senders claim.", stderr)
	iface := fs.String("interface", "", "interface to listen on (default: the kernel's choice for the group)")
	group := fs.String("group", clusterinit.DefaultGroup().String(), "heartbeat multicast group and port")
	dur := fs.Duration("duration", 3*time.Second, "how long to listen")
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	g, err := netip.ParseAddrPort(*group)
	if err != nil || !g.Addr().Is4() || !g.Addr().IsMulticast() {
		return usagef("--group %q: want an IPv4 multicast ADDR:PORT", *group)
	}
	if *dur <= 0 || *dur > time.Hour {
		return usagef("--duration %v: want 0 < d <= 1h", *dur)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := clusterinit.Discover(ctx, clusterinit.DiscoverOptions{Interface: *iface, Group: g, Duration: *dur})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	}
	printDiscovery(stdout, d)
	return nil
}

// printDiscovery prints one line per cluster (its name first: `shoal
// setup` reads the first word of each line not starting with "#").
func printDiscovery(w io.Writer, d *clusterinit.Discovery) {
	on := d.Group
	if d.Interface != "" {
		on += " on " + d.Interface
	}
	fmt.Fprintf(w, "# listened %v to %s: %d clusters, %d packets (unverified: signatures not checked, this node has no cluster keys)\n",
		d.Duration, on, len(d.Clusters), d.TotalHeard)
	if d.Undecoded > 0 {
		fmt.Fprintf(w, "# %d packets were not Shoal heartbeats\n", d.Undecoded)
	}
	if len(d.Clusters) > 0 {
		fmt.Fprintln(w, "# CLUSTER  MEMBERS (name address config-version health)")
	}
	for _, c := range d.Clusters {
		var ms []string
		for _, m := range c.Members {
			h := "ok"
			switch {
			case m.Leaving:
				h = "leaving"
			case !m.Healthy:
				h = "failed"
			}
			ms = append(ms, fmt.Sprintf("%s %s v%d %s", m.Name, m.Address, m.ConfigVersion, h))
		}
		fmt.Fprintf(w, "%s  %s\n", c.Name, strings.Join(ms, ", "))
	}
}
