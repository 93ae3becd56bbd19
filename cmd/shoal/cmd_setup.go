package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/shoal-project/shoal/appliance/firstboot"
)

func init() {
	register(&command{name: "setup", synopsis: "configure this appliance: host name, addresses, access, cluster (console or --seed)", run: runSetup})
}

// setupStdin is the dialogue's input; tests replace it.
var setupStdin io.Reader = os.Stdin

func runSetup(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("setup", "setup [--seed FILE | --firstboot] [--root DIR]", stderr)
	seedPath := fs.String("seed", "", "configure non-interactively from this seed file (TOML; see docs/APPLIANCE.md)")
	first := fs.Bool("firstboot", false, "first-boot mode (run by shoal-firstboot.service): machine-id, SSH host keys, then the seed found on a seed drive or DHCP on the first NIC")
	root := fs.String("root", "/", "root directory of the system to configure (not the running system unless \"/\")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *first && *seedPath != "" {
		return usagef("--firstboot and --seed exclude each other (first boot finds the seed itself)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sys := &firstboot.System{
		Root:    *root,
		Live:    *root == "/",
		Run:     firstboot.ExecRunner{},
		Log:     stdout,
		Cluster: registryCluster{stdout: stdout, stderr: stderr},
	}
	switch {
	case *first:
		seed, src, found, err := sys.FindSeed(ctx)
		if err != nil {
			// Keep the node reachable (DHCP), then report the bad seed.
			fmt.Fprintf(stdout, "shoal setup: %v; continuing with defaults\n", err)
			if _, err2 := sys.FirstBoot(ctx, firstboot.Seed{}); err2 != nil {
				return errors.Join(err, err2)
			}
			return err
		}
		if found {
			fmt.Fprintf(stdout, "shoal setup: seed from %s\n", src)
		}
		_, err = sys.FirstBoot(ctx, seed)
		return err
	case *seedPath != "":
		data, err := os.ReadFile(*seedPath)
		if err != nil {
			return fmt.Errorf("read seed: %w", err)
		}
		seed, err := firstboot.ParseSeed(*seedPath, data)
		if err != nil {
			return err
		}
		_, err = sys.Apply(ctx, seed, true)
		return err
	default:
		seed, ok, err := dialogue(ctx, sys, bufio.NewReader(setupStdin), stdout)
		if err != nil || !ok {
			return err
		}
		_, err = sys.Apply(ctx, seed, false)
		if err == nil {
			fmt.Fprintln(stdout, "shoal setup: done")
		}
		return err
	}
}

// dialogue asks for the settings on the console. It returns ok=false when
// the operator declines to apply them.
func dialogue(ctx context.Context, sys *firstboot.System, in *bufio.Reader, out io.Writer) (firstboot.Seed, bool, error) {
	var s firstboot.Seed
	nics, err := sys.NICs()
	if err != nil {
		return s, false, err
	}
	if len(nics) == 0 {
		return s, false, errors.New("setup: no physical network interface found")
	}
	ask := func(prompt, def string, valid func(string) error) (string, error) {
		for tries := 0; tries < 5; tries++ {
			if def != "" {
				fmt.Fprintf(out, "%s [%s]: ", prompt, def)
			} else {
				fmt.Fprintf(out, "%s: ", prompt)
			}
			line, err := in.ReadString('\n')
			if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
				return "", fmt.Errorf("setup: read answer: %w", err)
			}
			v := strings.TrimSpace(line)
			if v == "" {
				v = def
			}
			if valid == nil {
				return v, nil
			}
			if verr := valid(v); verr != nil {
				fmt.Fprintf(out, "  %v\n", verr)
				if errors.Is(err, io.EOF) {
					return "", fmt.Errorf("setup: %w", verr)
				}
				continue
			}
			return v, nil
		}
		return "", errors.New("setup: too many invalid answers")
	}
	check := func(apply func(*firstboot.Seed, string)) func(string) error {
		return func(v string) error {
			t := s
			apply(&t, v)
			return t.Validate()
		}
	}
	names := make([]string, len(nics))
	for i, n := range nics {
		names[i] = n.Name
	}
	def := firstboot.DefaultHostname(nics[0])
	if cur := strings.TrimSpace(readFileString(sys.Root + "/etc/hostname")); cur != "" && cur != "shoal" {
		def = cur
	}
	if s.Hostname, err = ask("Host name", def, check(func(t *firstboot.Seed, v string) { t.Hostname = v })); err != nil {
		return s, false, err
	}
	fmt.Fprintf(out, "Interfaces: %s\n", strings.Join(names, ", "))
	if s.Network.Interface, err = ask("Interface for the cluster", nics[0].Name, func(v string) error {
		for _, n := range names {
			if n == v {
				return nil
			}
		}
		return fmt.Errorf("no interface %q", v)
	}); err != nil {
		return s, false, err
	}
	if s.Network.Mode, err = ask("Addressing, dhcp or static", "dhcp", func(v string) error {
		if v != "dhcp" && v != "static" {
			return fmt.Errorf("answer dhcp or static")
		}
		return nil
	}); err != nil {
		return s, false, err
	}
	if s.Network.Mode == "static" {
		v, err := ask("Addresses with prefix length (space-separated, e.g. 192.0.2.10/24)", "", check(func(t *firstboot.Seed, v string) { t.Network.Addresses = strings.Fields(v) }))
		if err != nil {
			return s, false, err
		}
		s.Network.Addresses = strings.Fields(v)
		if v, err = ask("Default gateways (space-separated, empty for none)", "", check(func(t *firstboot.Seed, v string) { t.Network.Gateways = strings.Fields(v) })); err != nil {
			return s, false, err
		}
		s.Network.Gateways = strings.Fields(v)
		if v, err = ask("DNS servers (space-separated, empty for none)", "", check(func(t *firstboot.Seed, v string) { t.Network.DNS = strings.Fields(v) })); err != nil {
			return s, false, err
		}
		s.Network.DNS = strings.Fields(v)
	}
	pw, err := askSecret(in, out, "Root password (empty: keep the current one)")
	if err != nil {
		return s, false, err
	}
	if pw != "" {
		again, err := askSecret(in, out, "Root password again")
		if err != nil {
			return s, false, err
		}
		if again != pw {
			return s, false, errors.New("setup: the passwords differ")
		}
		s.Access.RootPassword = pw
	}
	key, err := ask("SSH public key for root (empty: none; SSH stays off)", "", check(func(t *firstboot.Seed, v string) {
		if v != "" {
			t.Access.SSHAuthorizedKeys = []string{v}
		}
	}))
	if err != nil {
		return s, false, err
	}
	if key != "" {
		s.Access.SSHAuthorizedKeys = []string{key}
	}
	action, err := ask("Cluster: init a new one, join an existing one, or skip", "skip", func(v string) error {
		switch v {
		case "init", "join", "skip":
			return nil
		}
		return fmt.Errorf("answer init, join or skip")
	})
	if err != nil {
		return s, false, err
	}
	if action != "skip" {
		s.Cluster.Action = action
		def := ""
		if action == "join" && sys.Cluster != nil {
			found, derr := sys.Cluster.Discover(ctx, s.Network.Interface)
			if derr != nil {
				fmt.Fprintf(out, "  discovery failed: %v\n", derr)
			} else {
				fmt.Fprintf(out, "Clusters found: %s\n", strings.Join(found, ", "))
				if len(found) == 1 {
					def = found[0]
				}
			}
		}
		prompt := "Cluster name"
		if action == "join" {
			prompt = "Cluster to join (a name heard by discovery, or a member's address)"
		}
		if s.Cluster.Name, err = ask(prompt, def, func(v string) error {
			if v == "" {
				return errors.New("a cluster name is required")
			}
			return nil
		}); err != nil {
			return s, false, err
		}
		if s.Cluster.Password, err = askSecret(in, out, "Cluster password"); err != nil {
			return s, false, err
		}
	}
	if err := s.Validate(); err != nil {
		return s, false, fmt.Errorf("setup: %w", err)
	}
	yes, err := ask("Apply these settings? (yes/no)", "no", nil)
	if err != nil {
		return s, false, err
	}
	if yes != "yes" && yes != "y" {
		fmt.Fprintln(out, "setup: nothing changed")
		return s, false, nil
	}
	return s, true, nil
}

// askSecret reads a line without echo when stdin is a terminal.
func askSecret(in *bufio.Reader, out io.Writer, prompt string) (string, error) {
	fmt.Fprintf(out, "%s: ", prompt)
	tty := setupStdin == os.Stdin && isTerminal(os.Stdin)
	if tty {
		_ = stty("-echo")
		defer func() { _ = stty("echo"); fmt.Fprintln(out) }()
	}
	line, err := in.ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return "", fmt.Errorf("setup: read answer: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func stty(arg string) error {
	cmd := exec.Command("stty", arg)
	cmd.Stdin = os.Stdin
	return cmd.Run()
}

func readFileString(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// registryCluster runs the cluster commands registered in this binary
// (init, discover, join) in-process, passing the password in the
// environment variable SHOAL_CLUSTER_PASSWORD (which they read) so it never
// appears on a command line. A build without them returns ErrNoCluster.
type registryCluster struct{ stdout, stderr io.Writer }

var _ firstboot.ClusterOps = registryCluster{}

const clusterPasswordEnv = "SHOAL_CLUSTER_PASSWORD"

func (r registryCluster) call(name, password string, args ...string) (string, error) {
	c, ok := commands[name]
	if !ok {
		return "", fmt.Errorf("%s: %w", name, firstboot.ErrNoCluster)
	}
	if password != "" {
		if err := os.Setenv(clusterPasswordEnv, password); err != nil {
			return "", err
		}
		defer func() { _ = os.Unsetenv(clusterPasswordEnv) }()
	}
	var out strings.Builder
	err := c.run(args, &out, r.stderr)
	return out.String(), err
}

func clusterArgs(req firstboot.ClusterRequest) []string {
	args := []string{"--dir", req.Dir, "--data-dir", req.DataDir}
	if req.Node != "" {
		args = append(args, "--node", req.Node)
	}
	if req.Interface != "" {
		args = append(args, "--interface", req.Interface)
	}
	if req.Address != "" {
		args = append(args, "--address", req.Address)
	}
	return args
}

func (r registryCluster) Init(_ context.Context, req firstboot.ClusterRequest) error {
	out, err := r.call("init", req.Password, append([]string{"--cluster", req.Name}, clusterArgs(req)...)...)
	fmt.Fprint(r.stdout, out)
	return err
}

func (r registryCluster) Discover(_ context.Context, iface string) ([]string, error) {
	var args []string
	if iface != "" {
		args = append(args, "--interface", iface)
	}
	out, err := r.call("discover", "", args...)
	if err != nil {
		return nil, err
	}
	return parseDiscover(out), nil
}

// parseDiscover takes the cluster names from 'shoal discover' text output:
// one "NAME  members" line per cluster, comments starting with '#'.
func parseDiscover(out string) []string {
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			names = append(names, f[0])
		}
	}
	return names
}

func (r registryCluster) Join(_ context.Context, req firstboot.ClusterRequest) error {
	args := append([]string{req.Name}, clusterArgs(req)...)
	if req.Unattended {
		args = append(args, "--yes")
	}
	out, err := r.call("join", req.Password, args...)
	fmt.Fprint(r.stdout, out)
	return err
}
