package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for Options.
var (
	DefaultSubnet4 = netip.MustParsePrefix("10.99.0.0/24")
	DefaultSubnet6 = netip.MustParsePrefix("fd00:99::/64")
)

// TrafficRanges are the documentation ranges the client reaches on-link
// (route "dev eth0", no gateway), so it resolves traffic IPs with ARP/NDP
// directly like a host on the same LAN.
var TrafficRanges = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// Interface names. Node and client namespaces see their port as IfName; the
// switch namespace holds the bridge and the peer ends.
const (
	IfName     = "eth0"
	bridgeName = "br0"
	clientPort = "pc"
	maxNodes   = 32
	// clientHost is the host number of the client in both subnets (.100
	// and ::100).
	clientHost4 = 100
	clientHost6 = 0x100
)

// Options describe a topology. The zero value plus Nodes is usable.
type Options struct {
	// Nodes is the number of node namespaces, 1..32.
	Nodes int
	// Client adds a client namespace at host .100 / ::100 with on-link
	// routes to TrafficRanges.
	Client bool
	// Prefix starts every namespace name; it should name the caller's area
	// (e.g. "shh-" for the harness self-test). Default "shh-". The full run
	// name is Prefix + creator PID + "-" + random hex, so concurrent runs
	// never clash and CleanupStale can tell dead runs from live ones.
	Prefix string
	// Subnet4 and Subnet6 number the nodes (host i+1) and the client
	// (host 100 / 0x100). Defaults 10.99.0.0/24 and fd00:99::/64. Addresses
	// never clash across topologies because each lives in its own namespaces.
	Subnet4, Subnet6 netip.Prefix
	// Dir holds process logs and generated files. Default: a new temporary
	// directory, removed by Close unless KeepDir is set.
	Dir     string
	KeepDir bool
	// StopGrace is how long Close waits after SIGTERM before SIGKILL.
	// Default 2s.
	StopGrace time.Duration
}

// Net is one live topology. Its methods are safe for concurrent use.
type Net struct {
	opts    Options
	run     string // Prefix + pid + "-" + random
	dir     string
	ownsDir bool

	mu      sync.Mutex
	closed  bool
	procs   []*Proc
	closers []func()
	loss    map[int]int // node index -> drop percent
	sideA   []int
	sideB   []int
	macs    []net.HardwareAddr
}

// New builds the topology. On error everything created so far is removed.
// The context bounds the setup commands.
func New(ctx context.Context, opts Options) (*Net, error) {
	if opts.Nodes < 1 || opts.Nodes > maxNodes {
		return nil, fmt.Errorf("harness new: nodes %d outside 1..%d", opts.Nodes, maxNodes)
	}
	if opts.Prefix == "" {
		opts.Prefix = "shh-"
	}
	if strings.ContainsAny(opts.Prefix, "/ \t\n") {
		return nil, fmt.Errorf("harness new: prefix %q has a slash or space", opts.Prefix)
	}
	if !opts.Subnet4.IsValid() {
		opts.Subnet4 = DefaultSubnet4
	}
	if !opts.Subnet6.IsValid() {
		opts.Subnet6 = DefaultSubnet6
	}
	if !opts.Subnet4.Addr().Is4() || opts.Subnet4.Bits() > 24 {
		return nil, fmt.Errorf("harness new: subnet4 %s must be IPv4 and /24 or larger", opts.Subnet4)
	}
	if !opts.Subnet6.Addr().Is6() || opts.Subnet6.Bits() > 64 {
		return nil, fmt.Errorf("harness new: subnet6 %s must be IPv6 and /64 or larger", opts.Subnet6)
	}
	opts.Subnet4 = opts.Subnet4.Masked()
	opts.Subnet6 = opts.Subnet6.Masked()
	if opts.StopGrace <= 0 {
		opts.StopGrace = 2 * time.Second
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("harness new: %w", err)
	}
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("harness new: random suffix: %w", err)
	}
	n := &Net{
		opts: opts,
		run:  fmt.Sprintf("%s%d-%s", opts.Prefix, os.Getpid(), hex.EncodeToString(suffix[:])),
		loss: map[int]int{},
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", n.run+"-")
		if err != nil {
			return nil, fmt.Errorf("harness new: %w", err)
		}
		n.dir, n.ownsDir = d, !opts.KeepDir
	} else {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("harness new: %w", err)
		}
		n.dir = opts.Dir
	}
	if err := n.build(ctx); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("harness new: %w", err)
	}
	return n, nil
}

// nodeMAC is the fixed MAC of node i's eth0 (i < 0: the client), so a MAC in
// a neighbour table names its node.
func nodeMAC(i int) net.HardwareAddr {
	if i < 0 {
		return net.HardwareAddr{0x02, 0x5e, 0, 0, 0, 0x64}
	}
	return net.HardwareAddr{0x02, 0x5e, 0, 0, 0, byte(i + 1)}
}

func (n *Net) build(ctx context.Context) error {
	sw := n.Switch()
	if err := n.ipCmd(ctx, "netns", "add", sw); err != nil {
		return err
	}
	// The switch namespace has no addresses; no IPv6 link-local noise either.
	if err := n.sysctl(ctx, sw, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return err
	}
	var swBatch []string
	swBatch = append(swBatch,
		"link set lo up",
		// No STP, no forwarding delay, multicast floods to every port.
		fmt.Sprintf("link add %s type bridge stp_state 0 forward_delay 0 mcast_snooping 0", bridgeName),
		fmt.Sprintf("link set %s up", bridgeName))
	type end struct {
		ns, port string
		mac      net.HardwareAddr
		v4, v6   netip.Prefix
		client   bool
	}
	var ends []end
	for i := 0; i < n.opts.Nodes; i++ {
		ends = append(ends, end{ns: n.Node(i), port: n.Port(i), mac: nodeMAC(i), v4: n.NodeAddr4(i), v6: n.NodeAddr6(i)})
		n.macs = append(n.macs, nodeMAC(i))
	}
	if n.opts.Client {
		ends = append(ends, end{ns: n.Client(), port: clientPort, mac: nodeMAC(-1), v4: n.ClientAddr4(), v6: n.ClientAddr6(), client: true})
	}
	for _, e := range ends {
		if err := n.ipCmd(ctx, "netns", "add", e.ns); err != nil {
			return err
		}
		swBatch = append(swBatch,
			fmt.Sprintf("link add %s type veth peer name %s netns %s", e.port, IfName, e.ns),
			fmt.Sprintf("link set %s master %s", e.port, bridgeName),
			fmt.Sprintf("link set %s up", e.port))
	}
	if err := n.ipBatch(ctx, sw, swBatch); err != nil {
		return err
	}
	for _, e := range ends {
		if err := n.sysctl(ctx, e.ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"); err != nil {
			return err
		}
		b := []string{
			"link set lo up",
			fmt.Sprintf("link set %s address %s", IfName, e.mac),
			fmt.Sprintf("link set %s up", IfName),
			fmt.Sprintf("addr add %s dev %s", e.v4, IfName),
			fmt.Sprintf("addr add %s dev %s nodad", e.v6, IfName),
		}
		if e.client {
			for _, r := range TrafficRanges {
				b = append(b, fmt.Sprintf("route add %s dev %s", r, IfName))
			}
		}
		if err := n.ipBatch(ctx, e.ns, b); err != nil {
			return err
		}
	}
	return nil
}

// sysctl sets sysctls inside ns.
func (n *Net) sysctl(ctx context.Context, ns string, kv ...string) error {
	args := append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, kv...)
	return n.ipCmd(ctx, args...)
}

// ipCmd runs `ip args...` and wraps failures with the command and output.
func (n *Net) ipCmd(ctx context.Context, args ...string) error {
	_, err := runCmd(ctx, "ip", args...)
	return err
}

// ipBatch runs `ip -n ns -batch -` with one command per line.
func (n *Net) ipBatch(ctx context.Context, ns string, lines []string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch (%s): %w: %s", ns, strings.Join(lines, "; "), err, bytes.TrimSpace(out))
	}
	return nil
}

// runCmd runs a command with a bounded default timeout and returns stdout;
// errors carry the command line and its combined output.
func runCmd(ctx context.Context, name string, args ...string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(append(stderr.Bytes(), stdout.Bytes()...)))
	}
	return stdout.Bytes(), nil
}

// Name is the run name every namespace of this topology starts with.
func (n *Net) Name() string { return n.run }

// Dir is the directory holding logs and generated files.
func (n *Net) Dir() string { return n.dir }

// Nodes is the number of node namespaces.
func (n *Net) Nodes() int { return n.opts.Nodes }

// Switch is the name of the switch namespace.
func (n *Net) Switch() string { return n.run + "-sw" }

// Node is the name of node i's namespace.
func (n *Net) Node(i int) string { return fmt.Sprintf("%s-n%d", n.run, i) }

// Client is the name of the client namespace ("" without a client).
func (n *Net) Client() string {
	if !n.opts.Client {
		return ""
	}
	return n.run + "-cl"
}

// Port is the name of node i's bridge port in the switch namespace.
func (n *Net) Port(i int) string { return fmt.Sprintf("p%d", i) }

// NodeName is node i's stable name ("node0", ...), used by the TCP server
// answer and by generated peer configurations.
func NodeName(i int) string { return fmt.Sprintf("node%d", i) }

// NodeAddr4 is node i's IPv4 address with the subnet length.
func (n *Net) NodeAddr4(i int) netip.Prefix {
	return netip.PrefixFrom(addHost(n.opts.Subnet4.Addr(), uint64(i+1)), n.opts.Subnet4.Bits())
}

// NodeAddr6 is node i's IPv6 address with the subnet length.
func (n *Net) NodeAddr6(i int) netip.Prefix {
	return netip.PrefixFrom(addHost(n.opts.Subnet6.Addr(), uint64(i+1)), n.opts.Subnet6.Bits())
}

// ClientAddr4 is the client's IPv4 address with the subnet length.
func (n *Net) ClientAddr4() netip.Prefix {
	return netip.PrefixFrom(addHost(n.opts.Subnet4.Addr(), clientHost4), n.opts.Subnet4.Bits())
}

// ClientAddr6 is the client's IPv6 address with the subnet length.
func (n *Net) ClientAddr6() netip.Prefix {
	return netip.PrefixFrom(addHost(n.opts.Subnet6.Addr(), clientHost6), n.opts.Subnet6.Bits())
}

// NodeMAC is the MAC address of node i's eth0.
func (n *Net) NodeMAC(i int) net.HardwareAddr { return nodeMAC(i) }

// NodeByMAC returns the node whose eth0 has mac, or -1.
func (n *Net) NodeByMAC(mac net.HardwareAddr) int {
	for i, m := range n.macs {
		if bytes.Equal(m, mac) {
			return i
		}
	}
	return -1
}

// addHost adds h to the low bits of a.
func addHost(a netip.Addr, h uint64) netip.Addr {
	b := a.AsSlice()
	for i := len(b) - 1; i >= 0 && h > 0; i-- {
		s := uint64(b[i]) + h&0xff
		b[i] = byte(s)
		h = h>>8 + s>>8
	}
	r, _ := netip.AddrFromSlice(b)
	return r
}

// Exec runs argv inside namespace ns (`ip netns exec`) and returns its
// combined output. Errors include the output.
func (n *Net) Exec(ns string, argv ...string) ([]byte, error) {
	return n.ExecContext(context.Background(), ns, argv...)
}

// ExecContext is Exec with a context (default timeout 30s).
func (n *Net) ExecContext(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec: empty argv")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("exec in %s: %s: %w: %s", ns, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// onClose registers a function Close runs before killing processes (in
// reverse order); used for in-process servers and probes.
func (n *Net) onClose(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closers = append(n.closers, f)
}

// namespaces lists this topology's namespaces that still exist.
func (n *Net) namespaces() ([]string, error) {
	all, err := listNamespaces()
	if err != nil {
		return nil, err
	}
	var mine []string
	for _, ns := range all {
		if strings.HasPrefix(ns, n.run+"-") {
			mine = append(mine, ns)
		}
	}
	return mine, nil
}

// Close stops in-process servers and probes, stops every process started
// with Start (SIGTERM, then SIGKILL after StopGrace), kills whatever else
// still runs inside the topology's namespaces, and deletes them (by name
// prefix, so leftovers of a half-built topology go too). It is idempotent:
// later calls redo the namespace sweep and return its error.
func (n *Net) Close() error {
	n.mu.Lock()
	first := !n.closed
	n.closed = true
	closers := n.closers
	procs := n.procs
	n.closers, n.procs = nil, nil
	n.mu.Unlock()

	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Stop(n.opts.StopGrace)
		}()
	}
	wg.Wait()
	err := removeNamespaces(func(ns string) bool { return strings.HasPrefix(ns, n.run+"-") })
	if first && n.ownsDir && err == nil {
		if rerr := os.RemoveAll(n.dir); rerr != nil {
			err = fmt.Errorf("harness close: %w", rerr)
		}
	}
	return err
}

// CloseOnSignal makes SIGINT, SIGTERM and SIGHUP tear the topology down and
// exit the process with status 130 (for command-line programs; tests use
// t.Cleanup). The returned function uninstalls the handler.
func (n *Net) CloseOnSignal() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			fmt.Fprintf(os.Stderr, "harness: %v: tearing down %s\n", s, n.run)
			_ = n.Close()
			os.Exit(130)
		case <-done:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
		})
	}
}

// listNamespaces returns the names under /run/netns.
func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// removeNamespaces kills every process inside the matching namespaces and
// deletes them. It keeps going on errors and returns them joined.
func removeNamespaces(match func(string) bool) error {
	names, err := listNamespaces()
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		if !match(ns) {
			continue
		}
		killNamespacePids(ns)
		if _, err := runCmd(context.Background(), "ip", "netns", "del", ns); err != nil {
			if _, serr := os.Stat(nsPath(ns)); serr == nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// killNamespacePids SIGKILLs every process in ns and waits briefly for them
// to disappear.
func killNamespacePids(ns string) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		out, err := runCmd(context.Background(), "ip", "netns", "pids", ns)
		if err != nil {
			return
		}
		pids := strings.Fields(string(out))
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, s := range pids {
			if pid, err := strconv.Atoi(s); err == nil && pid > 1 && pid != os.Getpid() {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CleanupStale deletes namespaces left behind by crashed earlier runs whose
// names start with prefix: those named Prefix + PID + "-..." whose creator
// PID no longer exists. Namespaces of live runs (including concurrent tests
// with the same prefix) are left alone. It returns the names removed.
func CleanupStale(prefix string) ([]string, error) {
	if len(prefix) < 3 {
		return nil, fmt.Errorf("cleanup stale: prefix %q shorter than 3 characters", prefix)
	}
	names, err := listNamespaces()
	if err != nil {
		return nil, err
	}
	var removed []string
	stale := func(ns string) bool {
		rest, ok := strings.CutPrefix(ns, prefix)
		if !ok {
			return false
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			return false
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			return false
		}
		return !processExists(pid)
	}
	for _, ns := range names {
		if stale(ns) {
			removed = append(removed, ns)
		}
	}
	if err := removeNamespaces(stale); err != nil {
		return removed, fmt.Errorf("cleanup stale: %w", err)
	}
	return removed, nil
}

// processExists reports whether pid names a live process.
func processExists(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
