package harness

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testPrefix = "shh-"

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("ParseAddr(%q): %v", s, err)
	}
	return a
}

// needRoot skips unprivileged runs loudly and fails (rather than skips) when
// root lacks the tools, since `make test` installs them.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths, a bridge and nftables rules")
	}
	for _, tool := range []string{"ip", "nft", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (run `make deps`): %v", tool, err)
		}
	}
}

// newTestNet builds a topology that is torn down (and checked gone) at the
// end of the test.
func newTestNet(t *testing.T, opts Options) *Net {
	t.Helper()
	if _, err := CleanupStale(testPrefix); err != nil {
		t.Logf("CleanupStale(%q): %v", testPrefix, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts.Prefix = testPrefix
	n, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close(): %v", err)
		}
		left, err := n.namespaces()
		if err != nil {
			t.Errorf("list namespaces: %v", err)
		}
		if len(left) != 0 {
			t.Errorf("namespaces left after Close(): %v", left)
		}
	})
	return n
}

// probeFor runs a probe from ns to target for d and returns the result.
func probeFor(t *testing.T, n *Net, ns string, target netip.AddrPort, d, timeout time.Duration) *Result {
	t.Helper()
	p, err := n.StartProbeIn(ns, ProbeOptions{Target: target, Duration: d, Timeout: timeout, ReadServer: true})
	if err != nil {
		t.Fatalf("StartProbeIn(%s, %v): %v", ns, target, err)
	}
	<-p.Done()
	return p.Stop()
}

// waitReachable polls from ns until target answers (bounded).
func waitReachable(t *testing.T, n *Net, ns string, target netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	p, err := n.StartProbeIn(ns, ProbeOptions{Target: target, Duration: 15 * time.Second, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("StartProbeIn(%s, %v): %v", ns, target, err)
	}
	defer p.Stop()
	if err := Wait(ctx, target.String()+" reachable from "+ns, func() (bool, error) {
		return !p.LastSuccess().IsZero(), nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestTopology(t *testing.T) {
	needRoot(t)
	n := newTestNet(t, Options{Nodes: 3, Client: true})
	const port = 8080
	if _, err := n.ServeAll(port); err != nil {
		t.Fatalf("ServeAll(%d): %v", port, err)
	}
	target := func(i int) netip.AddrPort { return netip.AddrPortFrom(n.NodeAddr4(i).Addr(), port) }

	t.Run("addresses", func(t *testing.T) {
		for i := range 3 {
			got, err := n.Addrs(i)
			if err != nil {
				t.Fatalf("Addrs(%d): %v", i, err)
			}
			for _, want := range []netip.Prefix{n.NodeAddr4(i), n.NodeAddr6(i)} {
				if !slices.Contains(got, want) {
					t.Errorf("Addrs(%d) = %v, missing %v", i, got, want)
				}
			}
		}
	})

	t.Run("client reaches every node", func(t *testing.T) {
		for i := range 3 {
			for _, addr := range []netip.Addr{n.NodeAddr4(i).Addr(), n.NodeAddr6(i).Addr()} {
				tgt := netip.AddrPortFrom(addr, port)
				waitReachable(t, n, n.Client(), tgt)
				r := probeFor(t, n, n.Client(), tgt, 200*time.Millisecond, 0)
				okN, failN := r.Counts()
				if okN == 0 || failN != 0 {
					t.Errorf("probe %v: %d ok, %d failed; want all ok", tgt, okN, failN)
				}
				if diff := cmp.Diff(map[string]int{NodeName(i): okN}, r.Servers()); diff != "" {
					t.Errorf("probe %v servers (-want +got):\n%s", tgt, diff)
				}
			}
		}
	})

	t.Run("cut and restore port", func(t *testing.T) {
		waitReachable(t, n, n.Client(), target(0))
		p, err := n.StartProbe(ProbeOptions{Target: target(0), Duration: 30 * time.Second, Timeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := Wait(ctx, "probe success", func() (bool, error) { return p.SuccessesSince(time.Time{}) > 10, nil }); err != nil {
			t.Fatal(err)
		}
		if err := n.CutPort(0); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		// Nothing may succeed once in-flight attempts are over.
		quiet := cut.Add(300 * time.Millisecond)
		if err := Wait(ctx, "a second after the cut", func() (bool, error) { return time.Since(cut) > time.Second, nil }); err != nil {
			t.Fatal(err)
		}
		if got := p.SuccessesSince(quiet); got != 0 {
			t.Errorf("after CutPort(0): %d successful connects, want 0", got)
		}
		restore := time.Now()
		if err := n.RestorePort(0); err != nil {
			t.Fatal(err)
		}
		if err := Wait(ctx, "success after RestorePort", func() (bool, error) { return p.SuccessesSince(restore) > 0, nil }); err != nil {
			t.Fatal(err)
		}
		r := p.Stop()
		g := r.GapAt(cut)
		if g.Open || g.Duration < time.Second {
			t.Errorf("GapAt(cut) = %+v; want a closed gap of at least 1s", g)
		}
	})

	t.Run("loss", func(t *testing.T) {
		waitReachable(t, n, n.Client(), target(1))
		if err := n.Loss(1, 50); err != nil {
			t.Fatal(err)
		}
		// 50% each way: SYN and SYN-ACK both survive about 25% of the time.
		// Timeout below the 1s SYN retransmission: one try per attempt.
		r := probeFor(t, n, n.Client(), target(1), 2*time.Second, 300*time.Millisecond)
		okN, failN := r.Counts()
		ratio := float64(okN) / float64(okN+failN)
		t.Logf("Loss(1, 50): %d ok, %d failed (%.2f)", okN, failN, ratio)
		if okN+failN < 100 || ratio < 0.08 || ratio > 0.5 {
			t.Errorf("Loss(1, 50): %d ok of %d attempts (%.2f); want about 0.25 (0.08..0.5)", okN, okN+failN, ratio)
		}
		if err := n.ClearLoss(1); err != nil {
			t.Fatal(err)
		}
		waitReachable(t, n, n.Client(), target(1))
		r = probeFor(t, n, n.Client(), target(1), 500*time.Millisecond, 300*time.Millisecond)
		okN, failN = r.Counts()
		if failN*10 > okN {
			t.Errorf("after ClearLoss(1): %d ok, %d failed; want at most 10%% failed", okN, failN)
		}
	})

	t.Run("partition", func(t *testing.T) {
		cs, err := ServeIn(n.Client(), "client", port)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		clientTgt := netip.AddrPortFrom(n.ClientAddr4().Addr(), port)
		if err := n.Partition([]int{0}, []int{1, 2}); err != nil {
			t.Fatal(err)
		}
		reach := []struct {
			from string
			to   netip.AddrPort
		}{
			{n.Node(0), clientTgt},
			{n.Client(), target(0)},
			{n.Node(1), target(2)},
			{n.Node(2), clientTgt},
		}
		for _, c := range reach {
			waitReachable(t, n, c.from, c.to)
		}
		for _, c := range []struct {
			from string
			to   netip.AddrPort
		}{{n.Node(0), target(1)}, {n.Node(2), target(0)}} {
			r := probeFor(t, n, c.from, c.to, 500*time.Millisecond, 200*time.Millisecond)
			if okN, _ := r.Counts(); okN != 0 {
				t.Errorf("partitioned %s -> %v: %d successful connects, want 0", c.from, c.to, okN)
			}
		}
		if err := n.Heal(); err != nil {
			t.Fatal(err)
		}
		waitReachable(t, n, n.Node(0), target(1))
		waitReachable(t, n, n.Node(2), target(0))
	})

	t.Run("traffic IP, who has, client neighbour", func(t *testing.T) {
		vip := mustAddr(t, "192.0.2.77")
		if _, err := n.Exec(n.Node(2), "ip", "addr", "add", vip.String()+"/32", "dev", IfName); err != nil {
			t.Fatal(err)
		}
		got, err := n.WhoHas(vip)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{2}, got); diff != "" {
			t.Errorf("WhoHas(%v) (-want +got):\n%s", vip, diff)
		}
		tgt := netip.AddrPortFrom(vip, port)
		waitReachable(t, n, n.Client(), tgt)
		r := probeFor(t, n, n.Client(), tgt, 100*time.Millisecond, 0)
		okN, _ := r.Counts()
		if diff := cmp.Diff(map[string]int{NodeName(2): okN}, r.Servers()); diff != "" {
			t.Errorf("servers answering %v (-want +got):\n%s", tgt, diff)
		}
		nb, ok, err := n.ClientNeigh(vip)
		if err != nil || !ok {
			t.Fatalf("ClientNeigh(%v) = %+v, %v, %v; want an entry", vip, nb, ok, err)
		}
		if nb.Node != 2 || nb.MAC.String() != n.NodeMAC(2).String() {
			t.Errorf("ClientNeigh(%v) = %+v; want node 2 MAC %s", vip, nb, n.NodeMAC(2))
		}
		if err := n.DelAddr(2, vip); err != nil {
			t.Fatal(err)
		}
		if got, err := n.WhoHas(vip); err != nil || len(got) != 0 {
			t.Errorf("WhoHas(%v) after DelAddr = %v, %v; want none", vip, got, err)
		}
	})

	t.Run("processes", func(t *testing.T) {
		p, err := n.Start(1, "sleeper", []string{"sleep", "60"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The pid is `ip netns exec`'s until it has entered the namespace
		// and exec'd argv: poll briefly.
		var got string
		for start := time.Now(); time.Since(start) < 2*time.Second; time.Sleep(10 * time.Millisecond) {
			out, err := n.Exec(n.Node(1), "ip", "netns", "identify", strconv.Itoa(p.Pid()))
			if err != nil {
				t.Fatal(err)
			}
			if got = strings.TrimSpace(string(out)); got == n.Node(1) {
				break
			}
		}
		if got != n.Node(1) {
			t.Errorf("namespace of pid %d = %q after 2 s, want %q", p.Pid(), got, n.Node(1))
		}
		if err := p.Stop(time.Second); err != nil {
			t.Fatal(err)
		}
		if !p.Exited() {
			t.Errorf("sleeper still running after Stop")
		}
	})
}

// TestCloseKillsEverything checks that Close kills processes left running,
// deletes the namespaces and can be called again.
func TestCloseKillsEverything(t *testing.T) {
	needRoot(t)
	n := newTestNet(t, Options{Nodes: 2, Client: true})
	q, err := n.Start(1, "orphan", []string{"sleep", "60"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ServeAll(8080); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close(): %v", err)
	}
	if !q.Exited() {
		t.Errorf("orphan pid %d survived Close", q.Pid())
	}
	if left, err := n.namespaces(); err != nil || len(left) != 0 {
		t.Errorf("namespaces after Close() = %v, %v; want none", left, err)
	}
	if _, err := n.Start(0, "late", []string{"true"}, nil); err == nil {
		t.Errorf("Start after Close succeeded; want an error")
	}
	// The cleanup calls Close a second time: it must succeed.
}

// TestCleanupStale checks that dead runs' namespaces go and live ones stay.
func TestCleanupStale(t *testing.T) {
	needRoot(t)
	n := newTestNet(t, Options{Nodes: 1})
	// PIDs above pid_max (at most 2^22) never exist.
	stale := testPrefix + "99999999-0000-sw"
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", stale, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", stale).Run() })
	removed, err := CleanupStale(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, stale) {
		t.Errorf("CleanupStale(%q) = %v; want it to contain %s", testPrefix, removed, stale)
	}
	for _, ns := range removed {
		if strings.HasPrefix(ns, n.Name()) {
			t.Errorf("CleanupStale removed live namespace %s", ns)
		}
	}
	names, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, stale) {
		t.Errorf("%s still exists after CleanupStale", stale)
	}
	if !slices.Contains(names, n.Switch()) {
		t.Errorf("live %s removed by CleanupStale", n.Switch())
	}
}
