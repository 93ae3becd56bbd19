package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Addrs returns the addresses currently on node i's eth0 (global and
// link-local, with prefix length) as the kernel reports them.
func (n *Net) Addrs(i int) ([]netip.Prefix, error) {
	if err := n.checkNode("addrs", i); err != nil {
		return nil, err
	}
	return n.addrsIn(n.Node(i))
}

// addrsIn reads the addresses of eth0 in namespace ns over netlink, in
// process: WhoHas polls this every 100 ms while a probe measures gaps of a
// few milliseconds, and three `ip -n` processes per poll (each remounting
// /sys in a new mount namespace) delayed the probe by 1-3 ms.
func (n *Net) addrsIn(ns string) ([]netip.Prefix, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("addrs in %s: %w", ns, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("addrs in %s: netlink: %w", ns, err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(IfName)
	if err != nil {
		return nil, fmt.Errorf("addrs in %s: %w", ns, err)
	}
	list, err := nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addrs in %s: %w", ns, err)
	}
	var res []netip.Prefix
	for _, a := range list {
		addr, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.IPNet == nil {
			return nil, fmt.Errorf("addrs in %s: bad address %v", ns, a.IP)
		}
		ones, _ := a.Mask.Size()
		res = append(res, netip.PrefixFrom(addr.Unmap(), ones))
	}
	return res, nil
}

// HasAddr reports whether node i's eth0 currently carries ip.
func (n *Net) HasAddr(i int, ip netip.Addr) (bool, error) {
	addrs, err := n.Addrs(i)
	if err != nil {
		return false, err
	}
	for _, p := range addrs {
		if p.Addr() == ip.Unmap() {
			return true, nil
		}
	}
	return false, nil
}

// WhoHas returns the indexes (ascending) of the nodes whose eth0 carries ip.
// Nodes are queried in parallel.
func (n *Net) WhoHas(ip netip.Addr) ([]int, error) {
	has := make([]bool, n.opts.Nodes)
	errs := make([]error, n.opts.Nodes)
	var wg sync.WaitGroup
	for i := range n.opts.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			has[i], errs[i] = n.HasAddr(i, ip)
		}()
	}
	wg.Wait()
	var res []int
	for i := range has {
		if errs[i] != nil {
			return nil, fmt.Errorf("who has %s: %w", ip, errs[i])
		}
		if has[i] {
			res = append(res, i)
		}
	}
	return res, nil
}

// Neigh is one entry of the client's neighbour table.
type Neigh struct {
	IP    netip.Addr
	MAC   net.HardwareAddr // nil while unresolved
	State []string         // e.g. ["REACHABLE"], ["STALE"], ["FAILED"]
	Node  int              // node owning MAC, -1 if none
}

// ClientNeigh returns the client's neighbour entry for ip (ok false when
// there is none).
func (n *Net) ClientNeigh(ip netip.Addr) (Neigh, bool, error) {
	if !n.opts.Client {
		return Neigh{}, false, fmt.Errorf("client neigh: topology has no client")
	}
	out, err := runCmd(context.Background(), "ip", "-n", n.Client(), "-j", "neigh", "show", "to", ip.String(), "dev", IfName)
	if err != nil {
		return Neigh{}, false, fmt.Errorf("client neigh %s: %w", ip, err)
	}
	var ents []struct {
		Dst    string   `json:"dst"`
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if err := json.Unmarshal(out, &ents); err != nil {
		return Neigh{}, false, fmt.Errorf("client neigh %s: decode: %w", ip, err)
	}
	for _, e := range ents {
		dst, err := netip.ParseAddr(e.Dst)
		if err != nil || dst != ip {
			continue
		}
		nb := Neigh{IP: dst, State: e.State, Node: -1}
		if e.LLAddr != "" {
			if nb.MAC, err = net.ParseMAC(e.LLAddr); err != nil {
				return Neigh{}, false, fmt.Errorf("client neigh %s: lladdr %q: %w", ip, e.LLAddr, err)
			}
			nb.Node = n.NodeByMAC(nb.MAC)
		}
		return nb, true, nil
	}
	return Neigh{}, false, nil
}

// FlushClientNeigh empties the client's neighbour table, so the next
// connection resolves traffic IPs afresh.
func (n *Net) FlushClientNeigh() error {
	if !n.opts.Client {
		return fmt.Errorf("flush client neigh: topology has no client")
	}
	if err := n.ipCmd(context.Background(), "-n", n.Client(), "neigh", "flush", "dev", IfName); err != nil {
		return fmt.Errorf("flush client neigh: %w", err)
	}
	return nil
}

// DelAddr removes ip (host prefix) from node i's eth0 if present; used to
// reset state between benchmark trials.
func (n *Net) DelAddr(i int, ip netip.Addr) error {
	has, err := n.HasAddr(i, ip)
	if err != nil || !has {
		return err
	}
	addrs, err := n.Addrs(i)
	if err != nil {
		return err
	}
	for _, p := range addrs {
		if p.Addr() == ip {
			if err := n.ipCmd(context.Background(), "-n", n.Node(i), "addr", "del", p.String(), "dev", IfName); err != nil {
				return fmt.Errorf("del addr: %w", err)
			}
		}
	}
	return nil
}

// PollInterval is how often Wait polls.
const PollInterval = 20 * time.Millisecond

// Wait polls cond every PollInterval until it returns true, it returns an
// error, or ctx ends (the error then names what and the last cond error).
func Wait(ctx context.Context, what string, cond func() (bool, error)) error {
	return WaitEvery(ctx, what, PollInterval, cond)
}

// abortError makes Wait give up at once.
type abortError struct{ err error }

func (a abortError) Error() string { return a.err.Error() }
func (a abortError) Unwrap() error { return a.err }

// Abort wraps err so that Wait returns it at once instead of retrying
// (other cond errors are taken as transient and retried until ctx ends).
func Abort(err error) error {
	if err == nil {
		return nil
	}
	return abortError{err}
}

// WaitEvery is Wait with a given poll interval (use a slow one when cond
// spawns processes during a timing measurement).
func WaitEvery(ctx context.Context, what string, every time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if err == nil && ok {
			return nil
		}
		var ab abortError
		if errors.As(err, &ab) {
			return fmt.Errorf("wait for %s: %w", what, ab.err)
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("wait for %s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// WaitHolders waits until exactly the nodes in want (ascending) carry ip.
// want nil or empty waits until no node carries it.
func (n *Net) WaitHolders(ctx context.Context, ip netip.Addr, want []int) error {
	var got []int
	err := Wait(ctx, fmt.Sprintf("%s on nodes %v", ip, want), func() (bool, error) {
		var err error
		got, err = n.WhoHas(ip)
		return err == nil && slices.Equal(got, want), err
	})
	if err != nil {
		return fmt.Errorf("%w; last seen on %v", err, got)
	}
	return nil
}

// WaitSingleHolder waits until exactly one node carries ip and returns it.
func (n *Net) WaitSingleHolder(ctx context.Context, ip netip.Addr) (int, error) {
	var got []int
	err := Wait(ctx, fmt.Sprintf("%s on exactly one node", ip), func() (bool, error) {
		var err error
		got, err = n.WhoHas(ip)
		return err == nil && len(got) == 1, err
	})
	if err != nil {
		return -1, fmt.Errorf("%w; last seen on %v", err, got)
	}
	return got[0], nil
}
