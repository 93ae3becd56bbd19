package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/shoal-project/shoal/appliance/clusterinit"
)

func init() {
	register(&command{name: "init", synopsis: "create a new cluster: its secret, this node's key, the first config and agent file", run: runInit})
}

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", "init --cluster NAME [--node NAME] [--address IP] [--interface IF] [--dir DIR] [--data-dir DIR]\n\n"+
		"Writes, in DIR: cluster.secret (32 random bytes, hex: the join password),\n"+
		"node.key (this node's identity), cluster.toml (the first config, this node\n"+
		"its only member) and agent.toml. Refuses to overwrite any of them. The\n"+
		"secret is taken from $"+clusterPasswordEnv+" instead when that is set.", stderr)
	cluster := fs.String("cluster", "", "cluster name (required)")
	fs.StringVar(cluster, "name", "", "same as --cluster")
	node := fs.String("node", "", "this node's member name (default: the host name)")
	addr := fs.String("address", "", "this node's unicast address (default: the first IPv4 address of --interface, else the source address of the default route)")
	iface := fs.String("interface", "", "interface for multicast heartbeats (default: the kernel's choice)")
	location := fs.String("location", "", "this node's site, for [location.NAME] overrides")
	dir := fs.String("dir", clusterinit.DefaultDir, "directory for the agent file, config, key and secret")
	dataDir := fs.String("data-dir", clusterinit.DefaultDataDir, "the agent's data_dir")
	socket := fs.String("socket", "", "admin socket written into the agent file (default: the agent's default)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *cluster == "" {
		return usagef("--cluster NAME is required")
	}
	name, err := nodeName(*node)
	if err != nil {
		return err
	}
	ip, err := localAddress(*addr, *iface, "192.0.2.1:9")
	if err != nil {
		return err
	}
	res, err := clusterinit.Init(clusterinit.InitOptions{
		Cluster: *cluster, Node: name, Address: ip, Interface: *iface, Location: *location,
		Dir: *dir, DataDir: *dataDir, Socket: *socket, Secret: []byte(strings.TrimSpace(os.Getenv(clusterPasswordEnv))),
	})
	if err != nil {
		return err
	}
	p := res.Paths
	fmt.Fprintf(stdout, "created cluster %q with member %q (%s)\n", *cluster, name, ip)
	fmt.Fprintf(stdout, "  agent file      %s\n", p.Agent)
	fmt.Fprintf(stdout, "  cluster config  %s (first version; later edits: shoal config apply/set)\n", p.Cluster)
	fmt.Fprintf(stdout, "  node key        %s (fingerprint %s)\n", p.Key, res.Fingerprint)
	fmt.Fprintf(stdout, "  cluster secret  %s (the join password: keep it secret)\n", p.Secret)
	fmt.Fprintf(stdout, "next: shoal agent --config %s; then on each new node: shoal join %s\n", p.Agent, ip)
	return nil
}

// nodeName returns name, else the short host name.
func nodeName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", usagef("--node NAME is required (no host name: %v)", err)
	}
	return strings.SplitN(h, ".", 2)[0], nil
}

// localAddress returns addr if set, else the first global IPv4 address of
// iface if set, else this host's source address towards via.
func localAddress(addr, iface, via string) (netip.Addr, error) {
	if addr != "" {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return netip.Addr{}, usagef("--address %q: not an IP address", addr)
		}
		return a, nil
	}
	if iface != "" {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("interface %s: %w", iface, err)
		}
		as, err := ifi.Addrs()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("interface %s: %w", iface, err)
		}
		for _, a := range as {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
				return p.Addr(), nil
			}
		}
		return netip.Addr{}, usagef("interface %s has no IPv4 address: pass --address", iface)
	}
	a, err := clusterinit.LocalAddressFor(via)
	if err != nil {
		return netip.Addr{}, usagef("cannot choose this node's address (%v): pass --address", errors.Unwrap(err))
	}
	return a, nil
}
