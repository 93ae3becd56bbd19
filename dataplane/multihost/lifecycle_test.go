package multihost

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/rs/zerolog"
	"github.com/shoal-project/shoal/bpf"
	"github.com/shoal-project/shoal/dataplane"
)

func out(t *testing.T, args ...string) string {
	t.Helper()
	b, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLifecycle checks leftover cleanup on New, the kernel state Apply sets
// up, that malformed ARP frames are counted, that bad input changes
// nothing, and that Close restores everything.
func TestLifecycle(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, 1)
	node := tp.nodes[0]
	// Leftovers of an earlier run, plus an address that is not ours.
	sh(t, "-n", node, "addr", "add", "192.0.2.55/32", "dev", "lo", "label", "lo:shoal")
	sh(t, "-n", node, "addr", "add", "2001:db8::55/128", "dev", "lo", "nodad", "noprefixroute")
	sh(t, "-n", node, "addr", "add", "192.0.2.56/32", "dev", "lo")

	m, err := New(Config{Mode: bpf.ModeGeneric, NetNS: tp.ns(t, node), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			m.Close()
		}
	})
	lo := out(t, "ip", "-n", node, "addr", "show", "dev", "lo")
	if strings.Contains(lo, "192.0.2.55") || strings.Contains(lo, "2001:db8::55") || !strings.Contains(lo, "192.0.2.56") {
		t.Errorf("after New, lo should have lost Shoal's leftovers and kept the rest:\n%s", lo)
	}
	sysctl := func(key string) string {
		return strings.TrimSpace(out(t, "ip", "netns", "exec", node, "cat", "/proc/sys/net/ipv4/conf/eth0/"+key))
	}
	ignore0, announce0 := sysctl("arp_ignore"), sysctl("arp_announce")

	g := multiGroup(0, permOwners([]bool{true, true}), nil, []bool{true, true})
	if err := m.Apply([]dataplane.MultiGroup{g}); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	lo = out(t, "ip", "-n", node, "addr", "show", "dev", "lo")
	for _, want := range []string{"192.0.2.10/32", "2001:db8::10/128", "lo:shoal"} {
		if !strings.Contains(lo, want) {
			t.Errorf("after Apply, lo lacks %s:\n%s", want, lo)
		}
	}
	if got := sysctl("arp_ignore") + "/" + sysctl("arp_announce"); got != "1/2" {
		t.Errorf("arp_ignore/arp_announce = %s, want 1/2", got)
	}
	link := out(t, "ip", "-n", node, "link", "show", "dev", "eth0")
	if !strings.Contains(link, "xdpgeneric") || !strings.Contains(link, bpf.ProgramName) && !strings.Contains(link, "prog/xdp") {
		t.Errorf("after Apply, eth0 has no generic XDP program:\n%s", link)
	}
	maddr := out(t, "ip", "-n", node, "maddr", "show", "dev", "eth0")
	for _, want := range []string{"01:00:5e:4d:53:01", "239.77.83.1", "33:33:5e:4d:53:01", "ff05::5e4d:5301"} {
		if !strings.Contains(maddr, want) {
			t.Errorf("after Apply, eth0 multicast memberships lack %s:\n%s", want, maddr)
		}
	}
	st, err := m.Status()
	if err != nil || len(st.Groups) != 1 || st.Groups[0].BucketsOwned != dataplane.NumBuckets/2 {
		t.Errorf("Status() = %+v, %v; want one group owning half the buckets", st, err)
	}

	// Malformed ARP frames from the client are dropped and counted.
	err = inNS(tp.ns(t, tp.client), func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		// Address lengths beyond the frame (Ethernet pads to 46 bytes).
		for _, lens := range [][2]byte{{200, 4}, {6, 250}, {255, 255}} {
			f := ethernet.Frame{Destination: ethernet.Broadcast, Source: ifi.HardwareAddr, EtherType: etherTypeARP, Payload: []byte{0, 1, 8, 0, lens[0], lens[1], 0, 1, 1, 2, 3, 4}}
			b, _ := f.MarshalBinary()
			if _, err := c.WriteTo(b, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send malformed arp: %v", err)
	}
	eventually(t, "malformed arp counted", func() bool {
		st, _ := m.Status()
		return st.MalformedARP >= 3
	})

	// Bad input: an error, and the last good state stays.
	bad := g
	bad.Owners = bad.Owners[:10]
	if err := m.Apply([]dataplane.MultiGroup{bad}); err == nil {
		t.Errorf("Apply(short table) = nil, want error")
	}
	if lo := out(t, "ip", "-n", node, "addr", "show", "dev", "lo"); !strings.Contains(lo, "192.0.2.10/32") {
		t.Errorf("a failed Apply removed the address:\n%s", lo)
	}

	closed = true
	if err := m.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	lo = out(t, "ip", "-n", node, "addr", "show", "dev", "lo")
	if strings.Contains(lo, "192.0.2.10") || strings.Contains(lo, "2001:db8::10") {
		t.Errorf("after Close, lo still has the group's addresses:\n%s", lo)
	}
	if got, want := sysctl("arp_ignore")+"/"+sysctl("arp_announce"), ignore0+"/"+announce0; got != want {
		t.Errorf("after Close arp_ignore/arp_announce = %s, want %s", got, want)
	}
	if link := out(t, "ip", "-n", node, "link", "show", "dev", "eth0"); strings.Contains(link, "xdp") {
		t.Errorf("after Close, eth0 still has XDP:\n%s", link)
	}
	if maddr := out(t, "ip", "-n", node, "maddr", "show", "dev", "eth0"); strings.Contains(maddr, "01:00:5e:4d:53:01") {
		t.Errorf("after Close, eth0 still joins the multicast MAC:\n%s", maddr)
	}
}

// newGenericManager starts a Manager in generic mode in node's namespace,
// closed when the test ends.
func newGenericManager(t *testing.T, tp *topo, node string) *Manager {
	t.Helper()
	m, err := New(Config{Mode: bpf.ModeGeneric, NetNS: tp.ns(t, node), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestPrepare: Prepare attaches the program and answers nothing before any
// Apply (what an agent does before its first heartbeat); an Apply that
// serves no group on the interface releases it; a missing interface is an
// error naming it.
func TestPrepare(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, 1)
	node := tp.nodes[0]
	var applied [][]uint64
	m, err := New(Config{Mode: bpf.ModeGeneric, NetNS: tp.ns(t, node), Logger: zerolog.Nop(),
		Applied: func(ds []uint64) { applied = append(applied, ds) }})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Prepare([]string{"eth0"}); err != nil {
		t.Fatalf("Prepare(eth0) = %v", err)
	}
	if link := out(t, "ip", "-n", node, "link", "show", "dev", "eth0"); !strings.Contains(link, "xdpgeneric") {
		t.Errorf("after Prepare, eth0 has no generic XDP program:\n%s", link)
	}
	if lo := out(t, "ip", "-n", node, "addr", "show", "dev", "lo"); strings.Contains(lo, "lo:shoal") {
		t.Errorf("Prepare raised an address:\n%s", lo)
	}
	if st, err := m.Status(); err != nil || len(st.Groups) != 0 {
		t.Errorf("Status() after Prepare = %+v, %v; want no group", st, err)
	}
	// The first Apply uses the prepared interface.
	g := multiGroup(0, permOwners([]bool{true, true}), nil, []bool{true, true})
	if err := m.Apply([]dataplane.MultiGroup{g}); err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	if st, err := m.Status(); err != nil || len(st.Groups) != 1 || st.Groups[0].Table != g.Digest {
		t.Errorf("Status() after Apply = %+v, %v; want the group's table", st, err)
	}
	if err := m.Apply(nil); err != nil {
		t.Fatalf("Apply(nil) = %v", err)
	}
	// Applied reports what the kernel holds after each Apply: the
	// group's table digest (48 bits), then nothing.
	if want := [][]uint64{{g.Digest & (1<<TableDigestBits - 1)}, nil}; !cmp.Equal(applied, want, cmpopts.EquateEmpty()) {
		t.Errorf("Applied calls = %x, want %x", applied, want)
	}
	if link := out(t, "ip", "-n", node, "link", "show", "dev", "eth0"); strings.Contains(link, "xdp") {
		t.Errorf("after Apply(nil), eth0 still has an XDP program:\n%s", link)
	}
	if err := m.Prepare([]string{"nosuch0"}); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("Prepare(nosuch0) = %v, want an error naming it", err)
	}
}

// TestPrepareReplacesStaleProgram: a program of ours attached through
// netlink (by an older run or by hand: it outlives its loader, unlike our
// bpf_link) is removed and replaced when the interface is set up, and ours
// is gone after Close.
func TestPrepareReplacesStaleProgram(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, 1)
	node := tp.nodes[0]
	progID := func() string {
		link := out(t, "ip", "-n", node, "link", "show", "dev", "eth0")
		_, rest, ok := strings.Cut(link, "prog/xdp id ")
		if !ok {
			return ""
		}
		id, _, _ := strings.Cut(rest, " ")
		return id
	}
	out(t, "ip", "-n", node, "link", "set", "dev", "eth0", "xdpgeneric", "obj", "../../bpf/shoal_bpfel.o", "sec", "xdp")
	stale := progID()
	if stale == "" {
		t.Fatalf("no stale program attached")
	}
	m := newGenericManager(t, tp, node)
	if err := m.Prepare([]string{"eth0"}); err != nil {
		t.Fatalf("Prepare(eth0) over a stale program = %v", err)
	}
	if id := progID(); id == "" || id == stale {
		t.Errorf("after Prepare, eth0 runs program %q; want ours, not the stale %s", id, stale)
	}
	if st, _ := m.Status(); len(st.Interfaces) != 1 || st.Interfaces[0].Mode != "generic" {
		t.Errorf("Status().Interfaces = %+v, want eth0 generic", st.Interfaces)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if id := progID(); id != "" {
		t.Errorf("after Close, eth0 still runs program %s", id)
	}
}
