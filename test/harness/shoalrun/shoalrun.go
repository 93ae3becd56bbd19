package shoalrun

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-project/shoal/test/harness"
)

// ErrNoAgent means the binary is missing or has no working `agent`
// subcommand.
var ErrNoAgent = errors.New("shoal agent unavailable")

// Topology is what file generation needs from a harness topology;
// *harness.Net implements it.
type Topology interface {
	Dir() string
	Nodes() int
	NodeAddr4(i int) netip.Prefix
}

var _ Topology = (*harness.Net)(nil)

// Group is one traffic IP group of the generated cluster config.
type Group struct {
	Name    string       // default "bench"
	Mode    string       // "single" (default) or "multi"
	IPs     []netip.Addr // required
	Members []int        // node indexes; default every node of Options.Nodes
	Passive []int        // subset of Members
	// FailbackDelay, GARPCount, GARPSpread are written only when set.
	FailbackDelay string
	GARPCount     int
	GARPSpread    string
}

// Options describe the generated cluster.
type Options struct {
	// Binary is the shoal executable. Default "bin/shoal" (relative to the
	// working directory; made absolute).
	Binary string
	// ClusterName, default "bench".
	ClusterName string
	// Nodes run an agent and are [[member]]s; default every node.
	Nodes []int
	// Groups, at least one.
	Groups []Group
	// HeartbeatInterval and MonitorTimeout are written when set (durations
	// like "500ms"); otherwise the agent's defaults apply.
	HeartbeatInterval string
	MonitorTimeout    string
	// Verbose sets [cluster] verbose = true.
	Verbose bool
	// ExtraTOML is appended verbatim to cluster.toml (e.g. a [selftest]
	// table).
	ExtraTOML string
	// LogLevel of the agents, default "info".
	LogLevel string
}

// Files are the generated files.
type Files struct {
	Dir        string         // <topology dir>/shoal
	Cluster    string         // cluster.toml path
	Secret     string         // cluster.secret path
	Agents     map[int]string // node -> agent file
	DataDirs   map[int]string // node -> data_dir
	Sockets    map[int]string // node -> admin socket
	PublicKeys map[int]string // node -> "ed25519:..."
}

// CheckBinary verifies that binary exists and answers `agent --help`; the
// error wraps ErrNoAgent and quotes the binary's output.
func CheckBinary(binary string) error {
	if _, err := os.Stat(binary); err != nil {
		return fmt.Errorf("%w: %v (run `make build`)", ErrNoAgent, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "agent", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s agent --help: %v: %s", ErrNoAgent, binary, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (o *Options) defaults(n Topology) error {
	if o.Binary == "" {
		o.Binary = "bin/shoal"
	}
	abs, err := filepath.Abs(o.Binary)
	if err != nil {
		return err
	}
	o.Binary = abs
	if o.ClusterName == "" {
		o.ClusterName = "bench"
	}
	if len(o.Nodes) == 0 {
		for i := range n.Nodes() {
			o.Nodes = append(o.Nodes, i)
		}
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if len(o.Groups) == 0 {
		return errors.New("no traffic IP groups")
	}
	for i := range o.Groups {
		g := &o.Groups[i]
		if g.Name == "" {
			g.Name = "bench"
		}
		if g.Mode == "" {
			g.Mode = "single"
		}
		if len(g.IPs) == 0 {
			return fmt.Errorf("group %s: no IPs", g.Name)
		}
		if len(g.Members) == 0 {
			g.Members = o.Nodes
		}
	}
	return nil
}

// WriteFiles generates keys, the secret, cluster.toml and the agent files
// under <topology dir>/shoal. Each node gets a fresh, empty data_dir.
func WriteFiles(n Topology, opts Options) (*Files, error) {
	if err := opts.defaults(n); err != nil {
		return nil, fmt.Errorf("write shoal files: %w", err)
	}
	return writeFiles(n, opts)
}

func writeFiles(n Topology, opts Options) (*Files, error) {
	dir := filepath.Join(n.Dir(), "shoal")
	f := &Files{
		Dir: dir, Cluster: filepath.Join(dir, "cluster.toml"), Secret: filepath.Join(dir, "cluster.secret"),
		Agents: map[int]string{}, DataDirs: map[int]string{}, Sockets: map[int]string{}, PublicKeys: map[int]string{},
	}
	wrap := func(err error) (*Files, error) { return nil, fmt.Errorf("write shoal files: %w", err) }
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wrap(err)
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return wrap(err)
	}
	if err := os.WriteFile(f.Secret, []byte(hex.EncodeToString(secret[:])+"\n"), 0o600); err != nil {
		return wrap(err)
	}
	for _, node := range opts.Nodes {
		name := harness.NodeName(node)
		ndir := filepath.Join(dir, name)
		f.DataDirs[node] = filepath.Join(ndir, "data")
		f.Sockets[node] = filepath.Join(ndir, "shoal.sock")
		if err := os.RemoveAll(f.DataDirs[node]); err != nil {
			return wrap(err)
		}
		if err := os.MkdirAll(f.DataDirs[node], 0o700); err != nil {
			return wrap(err)
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return wrap(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return wrap(err)
		}
		keyFile := filepath.Join(ndir, "node.key")
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return wrap(err)
		}
		f.PublicKeys[node] = "ed25519:" + base64.StdEncoding.EncodeToString(pub)
		agent := renderAgent(n, opts, node, f, keyFile)
		f.Agents[node] = filepath.Join(ndir, "agent.toml")
		if err := os.WriteFile(f.Agents[node], []byte(agent), 0o600); err != nil {
			return wrap(err)
		}
	}
	if err := os.WriteFile(f.Cluster, []byte(RenderCluster(n, opts, f.PublicKeys)), 0o600); err != nil {
		return wrap(err)
	}
	return f, nil
}

func q(s string) string { return strconv.Quote(s) }

func nameList(nodes []int) string {
	var s []string
	for _, i := range nodes {
		s = append(s, q(harness.NodeName(i)))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// RenderCluster returns cluster.toml for opts (after defaults) and the
// members' public keys.
func RenderCluster(n Topology, opts Options, pubs map[int]string) string {
	var b strings.Builder
	b.WriteString("# generated by test/harness/shoalrun\n[cluster]\n")
	fmt.Fprintf(&b, "name = %s\n", q(opts.ClusterName))
	if opts.HeartbeatInterval != "" {
		fmt.Fprintf(&b, "heartbeat_interval = %s\n", q(opts.HeartbeatInterval))
	}
	if opts.MonitorTimeout != "" {
		fmt.Fprintf(&b, "monitor_timeout = %s\n", q(opts.MonitorTimeout))
	}
	if opts.Verbose {
		b.WriteString("verbose = true\n")
	}
	for _, node := range opts.Nodes {
		fmt.Fprintf(&b, "\n[[member]]\nname = %s\naddress = %s\npublic_key = %s\ncan_update = true\n",
			q(harness.NodeName(node)), q(n.NodeAddr4(node).Addr().String()), q(pubs[node]))
	}
	for _, g := range opts.Groups {
		var ips []string
		for _, ip := range g.IPs {
			ips = append(ips, q(ip.String()))
		}
		fmt.Fprintf(&b, "\n[[group]]\nname = %s\nmode = %s\nips = [%s]\nmembers = %s\ninterface = %s\n",
			q(g.Name), q(g.Mode), strings.Join(ips, ", "), nameList(g.Members), q(harness.IfName))
		if len(g.Passive) > 0 {
			fmt.Fprintf(&b, "passive = %s\n", nameList(g.Passive))
		}
		if g.FailbackDelay != "" {
			fmt.Fprintf(&b, "failback_delay = %s\n", q(g.FailbackDelay))
		}
		if g.GARPCount > 0 {
			fmt.Fprintf(&b, "garp_count = %d\n", g.GARPCount)
		}
		if g.GARPSpread != "" {
			fmt.Fprintf(&b, "garp_spread = %s\n", q(g.GARPSpread))
		}
	}
	if opts.ExtraTOML != "" {
		b.WriteString("\n" + opts.ExtraTOML + "\n")
	}
	return b.String()
}

func renderAgent(n Topology, opts Options, node int, f *Files, keyFile string) string {
	var b strings.Builder
	b.WriteString("# generated by test/harness/shoalrun\n")
	fmt.Fprintf(&b, "node = %s\n", q(harness.NodeName(node)))
	fmt.Fprintf(&b, "cluster_config = %s\n", q(f.Cluster))
	fmt.Fprintf(&b, "data_dir = %s\n", q(f.DataDirs[node]))
	fmt.Fprintf(&b, "key_file = %s\n", q(keyFile))
	fmt.Fprintf(&b, "secret_file = %s\n", q(f.Secret))
	fmt.Fprintf(&b, "bind = %s\n", q(n.NodeAddr4(node).Addr().String()))
	fmt.Fprintf(&b, "heartbeat_interface = %s\n", q(harness.IfName))
	fmt.Fprintf(&b, "socket = %s\n", q(f.Sockets[node]))
	fmt.Fprintf(&b, "log_level = %s\n", q(opts.LogLevel))
	b.WriteString("log_format = \"console\"\n")
	// Test topologies are veth: native XDP there leaves frames multicast
	// and TCP drops them (docs/MULTIHOST.md, "Modes").
	b.WriteString("xdp_mode = \"generic\"\n")
	return b.String()
}

// Cluster is the Shoal agent running on a set of nodes.
type Cluster struct {
	n     *harness.Net
	opts  Options
	Files *Files
	procs map[int]*harness.Proc
}

// Start checks the binary, writes the files and starts
// `shoal agent --config <agent file>` in each node's namespace.
func Start(n *harness.Net, opts Options) (*Cluster, error) {
	if err := opts.defaults(n); err != nil {
		return nil, fmt.Errorf("start shoal: %w", err)
	}
	if err := CheckBinary(opts.Binary); err != nil {
		return nil, fmt.Errorf("start shoal: %w", err)
	}
	files, err := writeFiles(n, opts)
	if err != nil {
		return nil, fmt.Errorf("start shoal: %w", err)
	}
	c := &Cluster{n: n, opts: opts, Files: files, procs: map[int]*harness.Proc{}}
	for _, node := range opts.Nodes {
		_ = os.Remove(files.Sockets[node])
		argv := []string{opts.Binary, "agent", "--config", files.Agents[node]}
		p, err := n.Start(node, "shoal-"+harness.NodeName(node), argv, nil)
		if err != nil {
			_ = c.Kill()
			return nil, fmt.Errorf("start shoal: %w", err)
		}
		c.procs[node] = p
	}
	return c, nil
}

// Proc returns node's agent process (nil if none).
func (c *Cluster) Proc(node int) *harness.Proc { return c.procs[node] }

// Exited returns an error (wrapping ErrNoAgent) naming any agent that has
// exited, with the tail of its log.
func (c *Cluster) Exited() error {
	var errs []error
	for _, node := range c.opts.Nodes {
		if p := c.procs[node]; p != nil && p.Exited() {
			errs = append(errs, fmt.Errorf("%w: agent on %s exited: %v\n%s", ErrNoAgent, harness.NodeName(node), p.Wait(), Tail(p.Logs(), 3000)))
		}
	}
	return errors.Join(errs...)
}

// WaitSingleHolder waits until exactly one node carries ip and returns it,
// failing early when an agent exits.
func (c *Cluster) WaitSingleHolder(ctx context.Context, ip netip.Addr) (int, error) {
	var got []int
	err := harness.Wait(ctx, fmt.Sprintf("%s on exactly one node", ip), func() (bool, error) {
		if err := c.Exited(); err != nil {
			return false, harness.Abort(err)
		}
		var err error
		got, err = c.n.WhoHas(ip)
		return err == nil && len(got) == 1, err
	})
	if err != nil {
		return -1, fmt.Errorf("%w; last seen on %v", err, got)
	}
	return got[0], nil
}

// Stop stops every agent in parallel (SIGTERM, SIGKILL after grace).
func (c *Cluster) Stop(grace time.Duration) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.opts.Nodes))
	for k, node := range c.opts.Nodes {
		if p := c.procs[node]; p != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = p.Stop(grace)
			}()
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop shoal: %w", err)
	}
	return nil
}

// Kill SIGKILLs every agent (a crash of all nodes).
func (c *Cluster) Kill() error {
	var errs []error
	for _, p := range c.procs {
		errs = append(errs, p.Kill())
	}
	return errors.Join(errs...)
}

// Tail returns the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
