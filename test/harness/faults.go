package harness

import (
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// nftTable is the bridge-family table in the switch namespace that carries
// loss and partition rules. It is rebuilt atomically on every change.
const nftTable = "harness"

func (n *Net) checkNode(op string, i int) error {
	if i < 0 || i >= n.opts.Nodes {
		return fmt.Errorf("%s: node %d out of range 0..%d", op, i, n.opts.Nodes-1)
	}
	return nil
}

// CutPort sets node i's bridge port down in the switch namespace: the node
// loses carrier and no frame passes either way (a crash as seen by peers,
// while the node's processes keep running). The port is set down with an
// ioctl from a thread inside the switch namespace, so it went down at most
// microseconds before CutPort returns: take the cut instant after the call.
func (n *Net) CutPort(i int) error {
	if err := n.checkNode("cut port", i); err != nil {
		return err
	}
	if err := setLinkUp(n.Switch(), n.Port(i), false); err != nil {
		return fmt.Errorf("cut port: %w", err)
	}
	return nil
}

// RestorePort sets node i's bridge port up again (same precision as CutPort).
func (n *Net) RestorePort(i int) error {
	if err := n.checkNode("restore port", i); err != nil {
		return err
	}
	if err := setLinkUp(n.Switch(), n.Port(i), true); err != nil {
		return fmt.Errorf("restore port: %w", err)
	}
	return nil
}

// CutClient sets the client's bridge port down.
func (n *Net) CutClient() error {
	if err := setLinkUp(n.Switch(), clientPort, false); err != nil {
		return fmt.Errorf("cut client port: %w", err)
	}
	return nil
}

// RestoreClient sets the client's bridge port up again.
func (n *Net) RestoreClient() error {
	if err := setLinkUp(n.Switch(), clientPort, true); err != nil {
		return fmt.Errorf("restore client port: %w", err)
	}
	return nil
}

// setLinkUp sets or clears IFF_UP on ifname inside namespace ns with
// SIOCGIFFLAGS/SIOCSIFFLAGS.
func setLinkUp(ns, ifname string, up bool) error {
	return InNamespace(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(ifname)
		if err != nil {
			return fmt.Errorf("ifreq %s: %w", ifname, err)
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("get flags of %s in %s: %w", ifname, ns, err)
		}
		flags := ifr.Uint16()
		if up {
			flags |= unix.IFF_UP
		} else {
			flags &^= unix.IFF_UP
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("set %s up=%v in %s: %w", ifname, up, ns, err)
		}
		return nil
	})
}

// Loss makes node i's port drop percent% of frames in each direction
// (independently, so a request/response pair survives with probability
// (1-p)^2), with nftables `numgen random mod 100 < p` in the bridge's
// forward hook. percent 0 clears it; 100 drops everything.
func (n *Net) Loss(i, percent int) error {
	if err := n.checkNode("loss", i); err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("loss: percent %d outside 0..100", percent)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	old, had := n.loss[i]
	if percent == 0 {
		delete(n.loss, i)
	} else {
		n.loss[i] = percent
	}
	if err := n.applyRulesLocked(); err != nil {
		if had {
			n.loss[i] = old
		} else {
			delete(n.loss, i)
		}
		return fmt.Errorf("loss: %w", err)
	}
	return nil
}

// ClearLoss removes node i's loss rule.
func (n *Net) ClearLoss(i int) error { return n.Loss(i, 0) }

// Partition drops every frame between any port of sideA and any port of
// sideB (both directions). Ports in neither side, and the client, still
// reach everyone. It replaces any earlier partition.
func (n *Net) Partition(sideA, sideB []int) error {
	for _, i := range append(slices.Clone(sideA), sideB...) {
		if err := n.checkNode("partition", i); err != nil {
			return err
		}
	}
	for _, a := range sideA {
		if slices.Contains(sideB, a) {
			return fmt.Errorf("partition: node %d on both sides", a)
		}
	}
	if len(sideA) == 0 || len(sideB) == 0 {
		return fmt.Errorf("partition: both sides need at least one node")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	oldA, oldB := n.sideA, n.sideB
	n.sideA, n.sideB = slices.Clone(sideA), slices.Clone(sideB)
	if err := n.applyRulesLocked(); err != nil {
		n.sideA, n.sideB = oldA, oldB
		return fmt.Errorf("partition: %w", err)
	}
	return nil
}

// Heal removes the partition (loss rules stay).
func (n *Net) Heal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sideA, n.sideB = nil, nil
	if err := n.applyRulesLocked(); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	return nil
}

// rulesetLocked renders the nftables script for the current loss and
// partition state: it (re)creates the table in one atomic transaction.
func (n *Net) rulesetLocked() string {
	var b strings.Builder
	// "add" then "delete" makes the delete succeed whether or not the table
	// existed; the whole file is one transaction.
	fmt.Fprintf(&b, "add table bridge %s\ndelete table bridge %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table bridge %s {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n", nftTable)
	idx := make([]int, 0, len(n.loss))
	for i := range n.loss {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		p := n.loss[i]
		fmt.Fprintf(&b, "\t\tiifname %q numgen random mod 100 < %d drop\n", n.Port(i), p)
		fmt.Fprintf(&b, "\t\toifname %q numgen random mod 100 < %d drop\n", n.Port(i), p)
	}
	if len(n.sideA) > 0 && len(n.sideB) > 0 {
		a, bb := n.portSet(n.sideA), n.portSet(n.sideB)
		fmt.Fprintf(&b, "\t\tiifname %s oifname %s drop\n", a, bb)
		fmt.Fprintf(&b, "\t\tiifname %s oifname %s drop\n", bb, a)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func (n *Net) portSet(nodes []int) string {
	var q []string
	for _, i := range nodes {
		q = append(q, fmt.Sprintf("%q", n.Port(i)))
	}
	return "{ " + strings.Join(q, ", ") + " }"
}

func (n *Net) applyRulesLocked() error {
	script := n.rulesetLocked()
	cmd := exec.Command("ip", "netns", "exec", n.Switch(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\nscript:\n%s", n.Switch(), err, strings.TrimSpace(string(out)), script)
	}
	return nil
}
