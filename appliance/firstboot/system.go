package firstboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Runner runs an external program with stdin (may be empty).
type Runner interface {
	Run(ctx context.Context, stdin, name string, args ...string) error
}

// ExecRunner runs programs with os/exec, their output going to Output.
type ExecRunner struct{ Output io.Writer }

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, stdin, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("run %s: %w: %s", name, err, strings.TrimSpace(buf.String()))
	}
	if r.Output != nil {
		_, _ = r.Output.Write(buf.Bytes())
	}
	return nil
}

// ClusterRequest is what creating or joining a cluster needs from setup.
type ClusterRequest struct {
	Name      string // cluster to create, or cluster name / member address to join
	Password  string // the cluster password
	Node      string // this node's member name (the host name)
	Interface string // interface for the heartbeat
	Address   string // this node's unicast address ("" = let the command choose)
	Dir       string // where the agent file, key, secret and config go (/etc/shoal)
	DataDir   string // the agent's data directory (/var/lib/shoal)
	// Unattended skips the interactive confirmation of the sponsor's key
	// fingerprint when joining (seed files).
	Unattended bool
}

// ClusterOps creates, discovers and joins clusters; the cluster commands
// (shoal init, discover, join) implement it and write the agent file.
type ClusterOps interface {
	Init(ctx context.Context, r ClusterRequest) error
	Discover(ctx context.Context, iface string) ([]string, error)
	Join(ctx context.Context, r ClusterRequest) error
}

// ErrNoCluster is returned when a seed asks for a cluster action but this
// build has no cluster commands.
var ErrNoCluster = errors.New("cluster commands are not available in this build")

// System is the machine being configured.
type System struct {
	// Root is the file system root ("/" on the appliance).
	Root string
	// SysClassNet is where interfaces are listed (default Root+"/sys/class/net").
	SysClassNet string
	// Live means Root is the running system: setup also applies changes
	// at run time (hostname, networkd reload, starting ssh).
	Live    bool
	Run     Runner
	Cluster ClusterOps // nil: no cluster commands
	Log     io.Writer
	// NICWait bounds the wait for the first NIC to appear (default 30 s).
	NICWait time.Duration
}

func (s *System) path(p string) string { return filepath.Join(s.Root, p) }

func (s *System) logf(format string, a ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, "shoal setup: "+format+"\n", a...)
	}
}

// Files written by setup, relative to Root.
const (
	NetworkFile     = "etc/systemd/network/10-shoal.network"
	FirstBootStamp  = "var/lib/shoal-firstboot/done"
	AuthorizedKeys  = "root/.ssh/authorized_keys"
	autologinSerial = "etc/systemd/system/serial-getty@ttyS0.service.d/shoal-autologin.conf"
	autologinTTY    = "etc/systemd/system/getty@tty1.service.d/shoal-autologin.conf"
)

// NIC is a network interface.
type NIC struct {
	Name  string
	MAC   string
	Index int
}

// NICs lists the physical Ethernet interfaces (those with a device link
// and ARP type 1), lowest ifindex first.
func (s *System) NICs() ([]NIC, error) {
	dir := s.SysClassNet
	if dir == "" {
		dir = s.path("sys/class/net")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []NIC
	for _, e := range entries {
		d := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(d, "device")); err != nil {
			continue // virtual: lo, bridges, veth
		}
		if t, _ := os.ReadFile(filepath.Join(d, "type")); strings.TrimSpace(string(t)) != "1" {
			continue
		}
		idx, err := strconv.Atoi(strings.TrimSpace(readString(filepath.Join(d, "ifindex"))))
		if err != nil {
			continue
		}
		out = append(out, NIC{Name: e.Name(), MAC: strings.TrimSpace(readString(filepath.Join(d, "address"))), Index: idx})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

func readString(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// pickNIC returns the named interface, or the first NIC, waiting up to
// NICWait for drivers to bring one up.
func (s *System) pickNIC(ctx context.Context, name string) (NIC, error) {
	wait := s.NICWait
	if wait == 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		nics, err := s.NICs()
		if err != nil {
			return NIC{}, err
		}
		for _, n := range nics {
			if name == "" || n.Name == name {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			if name != "" {
				return NIC{}, fmt.Errorf("find interface %q: not present", name)
			}
			return NIC{}, errors.New("find first NIC: no physical Ethernet interface")
		}
		select {
		case <-ctx.Done():
			return NIC{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// writeFile writes atomically (temporary file + rename) with mode.
func (s *System) writeFile(rel string, data []byte, mode os.FileMode) error {
	p := s.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", rel, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", rel, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	return nil
}

// NetworkUnit renders the systemd-networkd file for nic. The interface is
// matched by MAC address so a rename does not lose the configuration.
func NetworkUnit(n Network, nic NIC) string {
	var b strings.Builder
	b.WriteString("# Written by 'shoal setup'; run it again to change.\n[Match]\n")
	if nic.MAC != "" {
		fmt.Fprintf(&b, "MACAddress=%s\n", nic.MAC)
	} else {
		fmt.Fprintf(&b, "Name=%s\n", nic.Name)
	}
	b.WriteString("\n[Network]\n")
	if n.Mode == "static" {
		b.WriteString("DHCP=no\nIPv6AcceptRA=no\n")
		for _, a := range n.Addresses {
			fmt.Fprintf(&b, "Address=%s\n", a)
		}
		for _, g := range n.Gateways {
			fmt.Fprintf(&b, "Gateway=%s\n", g)
		}
		for _, d := range n.DNS {
			fmt.Fprintf(&b, "DNS=%s\n", d)
		}
	} else {
		b.WriteString("DHCP=yes\nIPv6AcceptRA=yes\n")
	}
	return b.String()
}

// SetNetwork writes the network file and, when live, reloads networkd.
func (s *System) SetNetwork(ctx context.Context, n Network) (NIC, error) {
	nic, err := s.pickNIC(ctx, n.Interface)
	if err != nil {
		return NIC{}, err
	}
	if err := s.writeFile(NetworkFile, []byte(NetworkUnit(n, nic)), 0o644); err != nil {
		return NIC{}, err
	}
	mode := n.Mode
	if mode == "" {
		mode = "dhcp"
	}
	s.logf("network: %s (%s) %s %s", nic.Name, nic.MAC, mode, strings.Join(n.Addresses, " "))
	if s.Live {
		// networkd may not run yet at first boot; reload is best effort.
		_ = s.Run.Run(ctx, "", "networkctl", "reload")
	}
	return nic, nil
}

// DefaultHostname is "shoal-" and the MAC's last three bytes.
func DefaultHostname(nic NIC) string {
	m := strings.ReplaceAll(strings.ToLower(nic.MAC), ":", "")
	if len(m) < 6 {
		return "shoal"
	}
	return "shoal-" + m[len(m)-6:]
}

// SetHostname writes /etc/hostname and the 127.0.1.1 line of /etc/hosts.
func (s *System) SetHostname(ctx context.Context, name string) error {
	if err := s.writeFile("etc/hostname", []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	hosts, err := os.ReadFile(s.path("etc/hosts"))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read etc/hosts: %w", err)
	}
	short, _, _ := strings.Cut(name, ".")
	entry := "127.0.1.1\t" + name
	if short != name {
		entry += " " + short
	}
	var lines []string
	replaced := false
	for _, l := range strings.Split(strings.TrimRight(string(hosts), "\n"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "127.0.1.1" {
			if !replaced {
				lines = append(lines, entry)
				replaced = true
			}
			continue
		}
		if l != "" || len(lines) > 0 {
			lines = append(lines, l)
		}
	}
	if !replaced {
		if len(lines) == 0 {
			lines = append(lines, "127.0.0.1\tlocalhost")
		}
		lines = append(lines, entry)
	}
	if err := s.writeFile("etc/hosts", []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	s.logf("hostname: %s", name)
	if s.Live {
		if err := s.Run.Run(ctx, "", "hostname", name); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	return nil
}

// EnsureMachineID writes a new random machine-id when the file is missing,
// empty or "uninitialized" (as the image ships it). On a booted system
// systemd has usually done this already; then nothing changes.
func (s *System) EnsureMachineID() (bool, error) {
	cur := strings.TrimSpace(readString(s.path("etc/machine-id")))
	if len(cur) == 32 && isHex(cur) {
		return false, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, fmt.Errorf("new machine-id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // UUID v4, as systemd-id128 makes them
	b[8] = b[8]&0x3f | 0x80
	if err := s.writeFile("etc/machine-id", []byte(hex.EncodeToString(b[:])+"\n"), 0o444); err != nil {
		return false, err
	}
	s.logf("machine-id: new")
	return true, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// EnsureSSHHostKeys generates the SSH host keys when there are none.
func (s *System) EnsureSSHHostKeys(ctx context.Context) (bool, error) {
	keys, _ := filepath.Glob(s.path("etc/ssh/ssh_host_*_key"))
	if len(keys) > 0 {
		return false, nil
	}
	if _, err := os.Stat(s.path("etc/ssh")); err != nil {
		return false, nil // no SSH server installed
	}
	args := []string{"-A"}
	if s.Root != "/" {
		args = append(args, "-f", s.Root)
	}
	if err := s.Run.Run(ctx, "", "ssh-keygen", args...); err != nil {
		return false, fmt.Errorf("generate ssh host keys: %w", err)
	}
	s.logf("ssh: new host keys")
	return true, nil
}

// SetAccess sets root's password hash and authorized keys; keys enable
// the SSH server. When either is given, the console autologin is removed.
func (s *System) SetAccess(ctx context.Context, a Access) error {
	if a.RootPasswordHash == "" && a.RootPassword == "" && len(a.SSHAuthorizedKeys) == 0 {
		return nil
	}
	if a.RootPasswordHash != "" || a.RootPassword != "" {
		var args []string
		line := "root:" + a.RootPassword + "\n"
		if a.RootPasswordHash != "" {
			args = append(args, "-e")
			line = "root:" + a.RootPasswordHash + "\n"
		}
		if s.Root != "/" {
			args = append(args, "-R", s.Root)
		}
		if err := s.Run.Run(ctx, line, "chpasswd", args...); err != nil {
			return fmt.Errorf("set root password: %w", err)
		}
		s.logf("access: root password set")
	}
	if len(a.SSHAuthorizedKeys) > 0 {
		if err := os.MkdirAll(s.path("root/.ssh"), 0o700); err != nil {
			return fmt.Errorf("write authorized keys: %w", err)
		}
		if err := s.writeFile(AuthorizedKeys, []byte(strings.Join(a.SSHAuthorizedKeys, "\n")+"\n"), 0o600); err != nil {
			return err
		}
		if err := s.Run.Run(ctx, "", "systemctl", s.systemctlArgs("enable", "ssh.service")...); err != nil {
			return fmt.Errorf("enable ssh: %w", err)
		}
		if s.Live {
			if err := s.Run.Run(ctx, "", "systemctl", "start", "ssh.service"); err != nil {
				return fmt.Errorf("start ssh: %w", err)
			}
		}
		s.logf("access: %d SSH key(s) for root, SSH server enabled", len(a.SSHAuthorizedKeys))
	}
	for _, p := range []string{autologinSerial, autologinTTY} {
		if err := os.Remove(s.path(p)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove console autologin: %w", err)
		}
	}
	s.logf("access: console autologin removed")
	if s.Live {
		_ = s.Run.Run(ctx, "", "systemctl", "daemon-reload")
	}
	return nil
}

func (s *System) systemctlArgs(args ...string) []string {
	if s.Root != "/" {
		return append([]string{"--root=" + s.Root}, args...)
	}
	return args
}

// Result says what Apply did.
type Result struct {
	Hostname string
	NIC      NIC
	Cluster  string // the cluster created or joined ("" if none)
}

// Apply configures the node from seed: network, host name, access, then
// the cluster action, which writes the agent file (/etc/shoal/agent.toml)
// and makes the agent leave its unconfigured state.
func (s *System) Apply(ctx context.Context, seed Seed, unattended bool) (Result, error) {
	if err := seed.Validate(); err != nil {
		return Result{}, fmt.Errorf("apply seed: %w", err)
	}
	var r Result
	nic, err := s.SetNetwork(ctx, seed.Network)
	if err != nil {
		return r, err
	}
	r.NIC = nic
	r.Hostname = seed.Hostname
	if r.Hostname == "" {
		r.Hostname = DefaultHostname(nic)
	}
	if err := s.SetHostname(ctx, r.Hostname); err != nil {
		return r, err
	}
	if err := s.SetAccess(ctx, seed.Access); err != nil {
		return r, err
	}
	if seed.Cluster.Action == "" {
		return r, nil
	}
	req := ClusterRequest{
		Name: seed.Cluster.Name, Password: seed.Cluster.Password,
		Node: strings.SplitN(r.Hostname, ".", 2)[0], Interface: nic.Name,
		Dir: s.path("etc/shoal"), DataDir: s.path("var/lib/shoal"), Unattended: unattended,
	}
	if len(seed.Network.Addresses) > 0 {
		if p, err := netip.ParsePrefix(seed.Network.Addresses[0]); err == nil {
			req.Address = p.Addr().String()
		}
	}
	name, err := s.clusterAction(ctx, seed.Cluster.Action, req)
	if err != nil {
		return r, err
	}
	r.Cluster = name
	if s.Live {
		if err := s.Run.Run(ctx, "", "systemctl", "restart", "shoal.service"); err != nil {
			return r, fmt.Errorf("restart agent: %w", err)
		}
	}
	return r, nil
}

func (s *System) clusterAction(ctx context.Context, action string, req ClusterRequest) (string, error) {
	if s.Cluster == nil {
		return "", fmt.Errorf("cluster %s: %w", action, ErrNoCluster)
	}
	switch action {
	case "init":
		if err := s.Cluster.Init(ctx, req); err != nil {
			return "", fmt.Errorf("cluster init %s: %w", req.Name, err)
		}
		s.logf("cluster: created %s", req.Name)
	case "join":
		if req.Name == "" {
			found, err := s.Cluster.Discover(ctx, req.Interface)
			if err != nil {
				return "", fmt.Errorf("cluster discover: %w", err)
			}
			if len(found) != 1 {
				return "", fmt.Errorf("cluster join: %d clusters discovered (%s); name one in cluster.name", len(found), strings.Join(found, ", "))
			}
			req.Name = found[0]
		}
		if err := s.Cluster.Join(ctx, req); err != nil {
			return "", fmt.Errorf("cluster join %s: %w", req.Name, err)
		}
		s.logf("cluster: joined %s", req.Name)
	default:
		return "", fmt.Errorf("cluster action %q: want init or join", action)
	}
	return req.Name, nil
}

// FirstBoot runs once per machine: machine-id, SSH host keys, then the
// seed (or DHCP on the first NIC with the default host name), then the
// stamp that keeps it from running again. Without a cluster in the seed
// the agent stays unconfigured until 'shoal setup'.
func (s *System) FirstBoot(ctx context.Context, seed Seed) (Result, error) {
	if _, err := s.EnsureMachineID(); err != nil {
		return Result{}, err
	}
	if _, err := s.EnsureSSHHostKeys(ctx); err != nil {
		return Result{}, err
	}
	r, err := s.Apply(ctx, seed, true)
	if err != nil {
		return r, err
	}
	if err := s.writeFile(FirstBootStamp, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return r, err
	}
	s.logf("first boot done (host %s, %s on %s)", r.Hostname, modeOf(seed.Network), r.NIC.Name)
	return r, nil
}

func modeOf(n Network) string {
	if n.Mode == "" {
		return "dhcp"
	}
	return n.Mode
}
