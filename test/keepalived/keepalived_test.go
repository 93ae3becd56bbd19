package keepalived

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/harness"
)

func TestRender(t *testing.T) {
	vip4 := netip.MustParseAddr("192.0.2.10")
	vip6 := netip.MustParseAddr("2001:db8::10")
	tests := []struct {
		name    string
		opts    Options
		nodes   []int
		k       int
		want    []string // lines that must appear
		notWant []string
		wantErr bool
	}{
		{
			name: "first node is master", opts: Options{VIPs: []netip.Addr{vip4}}, nodes: []int{0, 1, 2}, k: 0,
			want:    []string{"vrrp_version 3", "state MASTER", "priority 200", "advert_int 0.5", "virtual_router_id 51", "192.0.2.10/32 dev eth0", "router_id node0"},
			notWant: []string{"nopreempt", "VI_6"},
		},
		{
			name: "third node is backup with lower priority", opts: Options{VIPs: []netip.Addr{vip4}}, nodes: []int{0, 1, 2}, k: 2,
			want: []string{"state BACKUP", "priority 180", "router_id node2"},
		},
		{
			name: "families split", opts: Options{VIPs: []netip.Addr{vip4, vip6}, AdvertInt: time.Second, NoPreempt: true, RouterID: 7}, nodes: []int{1, 0}, k: 1,
			want: []string{"vrrp_instance VI_4", "vrrp_instance VI_6", "virtual_router_id 7", "virtual_router_id 8", "2001:db8::10/128 dev eth0", "advert_int 1", "nopreempt", "router_id node0", "priority 190"},
		},
		{
			name: "explicit priorities", opts: Options{VIPs: []netip.Addr{vip4}, Priorities: []int{250, 240, 140}}, nodes: []int{0, 1, 2}, k: 2,
			want: []string{"priority 140", "state BACKUP"},
		},
		{name: "priority count mismatch", opts: Options{VIPs: []netip.Addr{vip4}, Priorities: []int{250}}, nodes: []int{0, 1}, k: 0, wantErr: true},
		{name: "priority above 254", opts: Options{VIPs: []netip.Addr{vip4}, Priorities: []int{255}}, nodes: []int{0}, k: 0, wantErr: true},
		{name: "no VIPs", opts: Options{}, nodes: []int{0}, k: 0, wantErr: true},
		{name: "position out of range", opts: Options{VIPs: []netip.Addr{vip4}}, nodes: []int{0}, k: 1, wantErr: true},
		{name: "bad advert", opts: Options{VIPs: []netip.Addr{vip4}, AdvertInt: 15 * time.Millisecond}, nodes: []int{0}, k: 0, wantErr: true},
		{name: "priorities exhausted", opts: Options{VIPs: []netip.Addr{vip4}, BasePriority: 20}, nodes: []int{0, 1, 2}, k: 0, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render(tc.opts, tc.nodes, tc.k)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Render(%+v, %v, %d) error = %v, want error %v", tc.opts, tc.nodes, tc.k, err, tc.wantErr)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Render(...) lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("Render(...) has %q:\n%s", w, got)
				}
			}
			if err != nil {
				return
			}
			// keepalived itself must accept it.
			if _, lerr := exec.LookPath("keepalived"); lerr != nil {
				return
			}
			f := filepath.Join(t.TempDir(), "k.conf")
			if err := os.WriteFile(f, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("keepalived", "--config-test", "-f", f).CombinedOutput(); err != nil {
				t.Errorf("keepalived --config-test rejects:\n%s\n%v: %s", got, err, out)
			}
		})
	}
}

// TestFailoverAndFailback runs keepalived on two nodes with one VIP: the
// client reaches it, cutting the master's port moves the VIP to the backup
// with a bounded gap, restoring the port moves it back.
func TestFailoverAndFailback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs keepalived in network namespaces")
	}
	if err := Available(""); err != nil {
		t.Fatal(err)
	}
	if _, err := harness.CleanupStale("shk-"); err != nil {
		t.Logf("CleanupStale: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	n, err := harness.New(ctx, harness.Options{Nodes: 2, Client: true, Prefix: "shk-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close(): %v", err)
		}
	})
	const port = 8080
	if _, err := n.ServeAll(port); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("192.0.2.10")
	c, err := Start(n, Options{VIPs: []netip.Addr{vip}}, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	logs := func() {
		for _, node := range c.Nodes() {
			t.Logf("keepalived %s log:\n%s", harness.NodeName(node), c.Proc(node).Logs())
		}
	}
	fatal := func(err error) {
		t.Helper()
		logs()
		t.Fatal(err)
	}
	started := time.Now()
	if err := c.WaitMaster(ctx, 0); err != nil {
		fatal(err)
	}
	t.Logf("node0 master %v after start", time.Since(started))
	p, err := n.StartProbe(harness.ProbeOptions{Target: netip.AddrPortFrom(vip, port), Duration: 60 * time.Second, ReadServer: true})
	if err != nil {
		fatal(err)
	}
	defer p.Stop()
	if err := harness.Wait(ctx, "VIP answering", func() (bool, error) { return p.SuccessesSince(time.Time{}) >= 20, nil }); err != nil {
		fatal(err)
	}

	if err := n.CutPort(0); err != nil {
		fatal(err)
	}
	cut := time.Now()
	if err := harness.Wait(ctx, "VIP answering after the cut", func() (bool, error) {
		return p.SuccessesSince(cut) >= 20, nil
	}); err != nil {
		fatal(err)
	}
	holders, err := n.WhoHas(vip)
	if err != nil {
		fatal(err)
	}
	if len(holders) == 0 || holders[len(holders)-1] != 1 {
		t.Errorf("after cutting node0: VIP on %v, want node1 among them", holders)
	}

	if err := n.RestorePort(0); err != nil {
		fatal(err)
	}
	restore := time.Now()
	if err := c.WaitMaster(ctx, 0); err != nil {
		fatal(err)
	}
	back := time.Now()
	if err := harness.Wait(ctx, "VIP answering after failback", func() (bool, error) {
		return p.SuccessesSince(back) >= 20, nil
	}); err != nil {
		fatal(err)
	}
	r := p.Stop()

	if g := r.GapAt(cut); g.Open || g.Duration <= 100*time.Millisecond || g.Duration >= 10*time.Second {
		t.Errorf("failover gap %+v; want a closed gap between 100ms and 10s", g)
	} else {
		t.Logf("failover gap %v", g.Duration)
	}
	if a, ok := r.FirstSuccessAfter(cut); !ok || a.Server != harness.NodeName(1) {
		t.Errorf("first answer after the cut = %+v, %v; want from %s", a, ok, harness.NodeName(1))
	}
	var last harness.Attempt
	for _, a := range r.Attempts {
		if a.OK && a.End.After(last.End) {
			last = a
		}
	}
	if last.Server != harness.NodeName(0) {
		t.Errorf("last answer = %+v; want from %s after failback", last, harness.NodeName(0))
	}
	t.Logf("failback gap %v (restore to master %v)", r.LongestGapIn(restore, back.Add(time.Second)).Duration, back.Sub(restore))
	stopping := time.Now()
	if err := c.Stop(); err != nil {
		t.Error(err)
	}
	t.Logf("stopped in %v", time.Since(stopping))
	// A clean stop releases the VIP.
	if err := n.WaitHolders(ctx, vip, nil); err != nil {
		t.Error(err)
	}
}
