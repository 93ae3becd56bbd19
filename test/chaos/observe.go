package chaos

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/shoal-project/shoal/appliance/events"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/test/harness"
)

// XDPState is a node's eth0 XDP attachment as netlink reports it.
type XDPState struct {
	Attached bool
	ProgID   uint32
	Mode     uint32
}

// NodeSample is one node at one instant, seen from outside the agent.
type NodeSample struct {
	// Running: the agent process exists (it may be SIGSTOPped).
	Running bool
	// NetErr: the namespace could not be read this round (Held unknown).
	NetErr bool
	// Held lists the watched single-hosted traffic IPs on eth0.
	Held []netip.Addr
	XDP  XDPState
	// Reached: the agent answered /v1/status this round. When false the
	// fields below are the last answer of the current process (Known) or
	// zero.
	Reached bool
	Known   bool
	Epoch   uint64
	Up      []string
	Digest  string
	Healthy bool
	CfgVer  uint64
	CfgHash string
	// Shares is each multi-hosted group's member -> buckets table as this
	// node computes it from its view.
	Shares map[string]map[string]int
	// Goroutines from the status JSON, -1 when not published.
	Goroutines int
}

// Sample is every node at one instant.
type Sample struct {
	T     time.Time
	Nodes []NodeSample
}

// observer polls the nodes from outside the agents.
type observer struct {
	a     *Agents
	n     *harness.Net
	nodes int
	ips   map[netip.Addr]bool // watched single-hosted IPs
	every time.Duration

	handles []*netlink.Handle
	nsh     []netns.NsHandle

	mu      sync.Mutex
	samples []Sample
	last    []NodeSample // last reached status per node, per process
	lastPid []int
	events  map[string]events.Event
	evErrs  int
}

func newObserver(a *Agents, n *harness.Net, cfg *config.Cluster, every time.Duration) (*observer, error) {
	o := &observer{a: a, n: n, nodes: n.Nodes(), ips: map[netip.Addr]bool{}, every: every,
		last: make([]NodeSample, n.Nodes()), lastPid: make([]int, n.Nodes()), events: map[string]events.Event{}}
	for _, g := range cfg.Groups {
		if g.Mode == config.ModeSingle {
			for _, ip := range g.IPs {
				o.ips[ip] = true
			}
		}
	}
	for i := range o.nodes {
		h, err := netns.GetFromPath(filepath.Join("/run/netns", n.Node(i)))
		if err != nil {
			o.close()
			return nil, fmt.Errorf("observer: open namespace of node %d: %w", i, err)
		}
		o.nsh = append(o.nsh, h)
		nl, err := netlink.NewHandleAt(h)
		if err != nil {
			o.close()
			return nil, fmt.Errorf("observer: netlink in node %d: %w", i, err)
		}
		o.handles = append(o.handles, nl)
	}
	return o, nil
}

func (o *observer) close() {
	for _, h := range o.handles {
		h.Close()
	}
	for _, h := range o.nsh {
		_ = h.Close()
	}
	o.handles, o.nsh = nil, nil
}

// run samples until ctx ends, and collects events every eventEvery.
func (o *observer) run(ctx context.Context) {
	t := time.NewTicker(o.every)
	defer t.Stop()
	ev := time.NewTicker(3 * time.Second)
	defer ev.Stop()
	for {
		s := o.sample(ctx)
		o.mu.Lock()
		o.samples = append(o.samples, s)
		o.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ev.C:
			o.collectEvents(ctx)
		case <-t.C:
		}
	}
}

// sample reads every node once, in parallel.
func (o *observer) sample(ctx context.Context) Sample {
	s := Sample{T: time.Now(), Nodes: make([]NodeSample, o.nodes)}
	var wg sync.WaitGroup
	for i := range o.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Nodes[i] = o.sampleNode(ctx, i)
		}()
	}
	wg.Wait()
	return s
}

func (o *observer) sampleNode(ctx context.Context, i int) NodeSample {
	ns := NodeSample{Goroutines: -1}
	pid := o.a.Pid(i)
	ns.Running = pid != 0
	held, xdp, err := o.netState(i)
	if err != nil {
		ns.NetErr = true
	}
	ns.Held, ns.XDP = held, xdp
	if ns.Running {
		sctx, cancel := context.WithTimeout(ctx, 800*time.Millisecond)
		st, err := o.a.Status(sctx, i)
		cancel()
		if err == nil {
			ns.Reached, ns.Known = true, true
			ns.Epoch, ns.Up, ns.Digest = st.View.Epoch, st.View.Up, st.View.Digest
			ns.Healthy, ns.CfgVer, ns.CfgHash = st.Health.OK, st.ConfigVersion, st.ConfigHash
			if st.Goroutines != nil {
				ns.Goroutines = *st.Goroutines
			}
			for _, g := range st.Groups {
				if g.Shares != nil {
					if ns.Shares == nil {
						ns.Shares = map[string]map[string]int{}
					}
					ns.Shares[g.Name] = g.Shares
				}
			}
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if ns.Reached {
		o.last[i], o.lastPid[i] = ns, pid
	} else if ns.Running && o.lastPid[i] == pid && o.last[i].Known {
		l := o.last[i]
		ns.Known, ns.Epoch, ns.Up, ns.Digest = true, l.Epoch, l.Up, l.Digest
		ns.Healthy, ns.CfgVer, ns.CfgHash, ns.Shares, ns.Goroutines = l.Healthy, l.CfgVer, l.CfgHash, l.Shares, l.Goroutines
	}
	return ns
}

// netState reads node i's eth0 addresses and XDP attachment with netlink.
func (o *observer) netState(i int) ([]netip.Addr, XDPState, error) {
	var x XDPState
	h := o.handles[i]
	l, err := h.LinkByName(harness.IfName)
	if err != nil {
		return nil, x, fmt.Errorf("link of node %d: %w", i, err)
	}
	if xd := l.Attrs().Xdp; xd != nil {
		x = XDPState{Attached: xd.Attached, ProgID: xd.ProgId, Mode: xd.AttachMode}
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, x, fmt.Errorf("addresses of node %d: %w", i, err)
	}
	var held []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if o.ips[ip] {
			held = append(held, ip)
		}
	}
	sort.Slice(held, func(a, b int) bool { return held[a].Less(held[b]) })
	return held, x, nil
}

// collectEvents merges every running agent's recent events.
func (o *observer) collectEvents(ctx context.Context) {
	for i := range o.nodes {
		if !o.a.Running(i) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		evs, err := o.a.Events(sctx, i)
		cancel()
		o.mu.Lock()
		if err != nil {
			o.evErrs++
		}
		for _, e := range evs {
			k := fmt.Sprintf("%s|%d|%s|%s|%s", e.Node, e.Time.UnixNano(), e.Type, e.Member, e.IP)
			o.events[k] = e
		}
		o.mu.Unlock()
	}
}

// Samples returns a copy of the samples so far.
func (o *observer) Samples() []Sample {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Sample(nil), o.samples...)
}

// Events returns the collected events, sorted by time.
func (o *observer) Events() []events.Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]events.Event, 0, len(o.events))
	for _, e := range o.events {
		out = append(out, e)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Time.Before(out[b].Time) })
	return out
}
