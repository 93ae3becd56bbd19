package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/test/e2e/e2ekit"
	"github.com/shoal-project/shoal/test/harness"
	"github.com/shoal-project/shoal/test/harness/shoalrun"
)

// TestMembership (issue 3) runs 4 agents and checks the view every node
// reports through `shoal status --json`: random loss does not remove
// anyone, a crashed node (agent killed, or switch port cut) leaves every
// survivor's view and comes back, and a partition splits the view in two
// that heal into one (same up set and digest everywhere).
func TestMembership(t *testing.T) {
	c := newCluster(t, e2ekit.Options{
		Nodes: 4,
		Shoal: shoalrun.Options{
			ClusterName:       "e2e-members",
			HeartbeatInterval: "500ms",
			Groups: []shoalrun.Group{{Name: "m", IPs: []netip.Addr{
				netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"),
				netip.MustParseAddr("192.0.2.12"), netip.MustParseAddr("192.0.2.13"),
			}}},
		},
	})
	all := c.Agents()
	must(t, c.WaitView(deadline(t, wait), all, all))

	// First, on a fresh cluster: 5 % random loss on every port (each
	// heartbeat crosses two ports, so ~10 % of them are lost) for 20 s.
	t.Run("loss-5pct-no-removal", func(t *testing.T) {
		before, err := c.Statuses(all)
		must(t, err)
		start := time.Now()
		for _, i := range all {
			must(t, c.Net.Loss(i, 5))
		}
		defer func() {
			for _, i := range all {
				if err := c.Net.ClearLoss(i); err != nil {
					t.Errorf("clear loss: %v", err)
				}
			}
		}()
		var violations []string
		polls := 0
		for time.Since(start) < 20*time.Second {
			sts, err := c.Statuses(all)
			if err != nil {
				t.Fatalf("during loss: %v", err)
			}
			polls++
			for _, i := range all {
				if got := sts[i].View.Up; !slices.Equal(got, e2ekit.Names(all)) {
					violations = append(violations, fmt.Sprintf("%s after %v: up %v", harness.NodeName(i), time.Since(start).Round(time.Millisecond), got))
				}
			}
			time.Sleep(250 * time.Millisecond)
		}
		if len(violations) > 0 {
			t.Errorf("a member left a view during 5%% loss (%d of %d polls):\n%s", len(violations), polls, strings.Join(violations, "\n"))
		}
		after, err := c.Statuses(all)
		must(t, err)
		for _, i := range all {
			if d := after[i].Heartbeats.ViewChanges - before[i].Heartbeats.ViewChanges; d != 0 {
				t.Errorf("%s counted %d view changes during loss (want 0)", harness.NodeName(i), d)
			}
			if before[i].View.Epoch != after[i].View.Epoch {
				t.Errorf("%s view epoch %d -> %d during loss (want unchanged)", harness.NodeName(i), before[i].View.Epoch, after[i].View.Epoch)
			}
			es, err := c.LogEntries(i)
			must(t, err)
			for _, e := range es {
				if e.Time.After(start) && (e.Message == "view changed" || e.Message == "member declared down") {
					t.Errorf("%s logged %q (member %q, reason %q, up %v) at %v during loss", harness.NodeName(i), e.Message, e.Member, e.Reason, e.Up, e.Time.Sub(start).Round(time.Millisecond))
				}
			}
		}
		t.Logf("%d polls of 4 views over %v: no removal", polls, time.Since(start).Round(time.Second))
	})

	t.Run("crash-sigkill", func(t *testing.T) {
		must(t, c.Kill(3))
		t.Cleanup(func() { ensureAgent(c, 3) })
		must(t, c.WaitView(deadline(t, wait), e2ekit.Except(all, 3), e2ekit.Except(all, 3)))
		must(t, c.StartAgent(3))
		must(t, c.WaitView(deadline(t, wait), all, all))
	})

	t.Run("crash-cut-port", func(t *testing.T) {
		must(t, c.Net.CutPort(2))
		t.Cleanup(func() { _ = c.Net.RestorePort(2) })
		must(t, c.WaitView(deadline(t, wait), e2ekit.Except(all, 2), e2ekit.Except(all, 2)))
		// The cut node hears nobody (and, its traffic interface having no
		// carrier, check_links fails it too): no peer in its view.
		must(t, harness.Wait(deadline(t, wait), "node2's view without peers", func() (bool, error) {
			st, err := c.StatusAPI(2)
			if err != nil {
				return false, err
			}
			return len(st.View.Up) == 0 || slices.Equal(st.View.Up, []string{harness.NodeName(2)}), nil
		}))
		must(t, c.Net.RestorePort(2))
		must(t, c.WaitView(deadline(t, wait), all, all))
	})

	t.Run("partition-heal", func(t *testing.T) {
		a, b := []int{0, 1}, []int{2, 3}
		must(t, c.Net.Partition(a, b))
		t.Cleanup(func() { _ = c.Net.Heal() })
		must(t, c.WaitView(deadline(t, wait), a, a))
		must(t, c.WaitView(deadline(t, wait), b, b))
		must(t, c.Net.Heal())
		must(t, c.WaitView(deadline(t, 20*time.Second), all, all))
	})
}
