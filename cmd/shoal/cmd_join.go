package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/appliance/clusterinit"
)

func init() {
	register(&command{name: "join", synopsis: "join a running cluster through one of its members, with the cluster password", run: runJoin})
}

func runJoin(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("join", "join ADDRESS [--node NAME] [--address IP] [--password-file FILE] [--dir DIR] [--data-dir DIR] [--yes]\n\n"+
		"Asks the member at ADDRESS (IP or host[:port], default port 7948; or a cluster\n"+
		"name heard by 'shoal discover') to add this node. Its key fingerprint is shown\n"+
		"for confirmation, then this node proves it knows the cluster password over\n"+
		"TLS without sending it. On success it writes, in DIR: node.key (unless there),\n"+
		"cluster.secret, cluster.toml, agent.toml, and the received config version in\n"+
		"the data dir; start 'shoal agent' next. On failure it writes nothing.\n"+
		"The password comes from --password-file, else $"+clusterPasswordEnv+", else the terminal.", stderr)
	node := fs.String("node", "", "this node's member name (default: the host name)")
	addr := fs.String("address", "", "this node's unicast address (default: the source address towards the sponsor)")
	iface := fs.String("interface", "", "interface for multicast heartbeats (default: the kernel's choice)")
	location := fs.String("location", "", "this node's site, for [location.NAME] overrides")
	pwFile := fs.String("password-file", "", "file holding the cluster password (the cluster secret file of a member)")
	dir := fs.String("dir", clusterinit.DefaultDir, "directory for the agent file, config, key and secret")
	dataDir := fs.String("data-dir", clusterinit.DefaultDataDir, "the agent's data_dir")
	socket := fs.String("socket", "", "admin socket written into the agent file (default: the agent's default)")
	yes := fs.Bool("yes", false, "do not ask to confirm the sponsor's key fingerprint")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one ADDRESS, got %d arguments", len(pos))
	}
	if err := needConfirm(*yes); err != nil {
		return err
	}
	name, err := nodeName(*node)
	if err != nil {
		return err
	}
	var ip netip.Addr
	if *addr != "" || *iface != "" {
		if ip, err = localAddress(*addr, *iface, ""); err != nil {
			return err
		}
	}
	password, err := joinPassword(*pwFile, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sponsor, err := sponsorOf(ctx, argAt(pos, 0), *iface, stdout)
	if err != nil {
		return err
	}
	res, err := clusterinit.Join(ctx, clusterinit.JoinOptions{
		Sponsor: sponsor, Node: name, Address: ip, Location: *location, Interface: *iface,
		Password: password, Dir: *dir, DataDir: *dataDir, Socket: *socket, Timeout: *timeout,
		Confirm: func(addr, fp string) error {
			fmt.Fprintf(stdout, "sponsor %s presents key %s\n", addr, fp)
			if *yes {
				return nil
			}
			fmt.Fprintln(stdout, "Compare it with 'shoal fingerprint' on that member.")
			ok, err := confirm(stdout, "Is this the member you meant to join through?", false)
			if err != nil {
				return err
			}
			if !ok {
				return clusterinit.ErrDeclined
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	p := res.Paths
	fmt.Fprintf(stdout, "joined: %s added %q in config version %d (%s), %d members\n", res.Sponsor, name, res.Version, res.VersionID, res.Members)
	keyNote := "existing"
	if res.NewKey {
		keyNote = "new"
	}
	fmt.Fprintf(stdout, "  agent file      %s\n", p.Agent)
	fmt.Fprintf(stdout, "  node key        %s (%s, fingerprint %s)\n", p.Key, keyNote, res.Fingerprint)
	fmt.Fprintf(stdout, "  cluster secret  %s\n", p.Secret)
	fmt.Fprintf(stdout, "  config          %s and %s\n", p.Cluster, p.DataDir)
	fmt.Fprintf(stdout, "next: shoal agent --config %s\n", p.Agent)
	return nil
}

// joinPassword reads the password from file, the environment, or the
// terminal without echo.
func joinPassword(file string, stderr io.Writer) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil, fmt.Errorf("read password: %s is empty", file)
		}
		return b, nil
	}
	if env := strings.TrimSpace(os.Getenv(clusterPasswordEnv)); env != "" {
		return []byte(env), nil
	}
	if !stdinTerminal() {
		return nil, usagef("no --password-file and standard input is not a terminal to ask for the password")
	}
	fmt.Fprint(stderr, "Cluster password: ")
	b, err := readSecretLine()
	fmt.Fprintln(stderr)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, errors.New("read password: empty password")
	}
	return b, nil
}

// sponsorOf returns arg when it is an address; a bare name that a cluster
// heard on the multicast group carries is replaced by one of its healthy
// members' addresses.
func sponsorOf(ctx context.Context, arg, iface string, stdout io.Writer) (string, error) {
	if _, err := netip.ParseAddr(arg); err == nil {
		return arg, nil
	}
	if _, _, err := net.SplitHostPort(arg); err == nil {
		return arg, nil
	}
	d, err := clusterinit.Discover(ctx, clusterinit.DiscoverOptions{Interface: iface})
	if err != nil {
		return arg, nil // not a cluster we can hear: a host name
	}
	for _, c := range d.Clusters {
		if c.Name != arg {
			continue
		}
		for _, m := range c.Members {
			if m.Healthy && !m.Leaving && m.Address != "" {
				fmt.Fprintf(stdout, "cluster %s heard (unverified): joining through member %s at %s\n", arg, m.Name, m.Address)
				return m.Address, nil
			}
		}
	}
	return arg, nil
}
