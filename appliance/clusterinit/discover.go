package clusterinit

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/gossip/wire"
)

// DiscoverOptions say where and how long to listen.
type DiscoverOptions struct {
	Interface string         // "" = the kernel's choice for the group
	Group     netip.AddrPort // default: the schema's multicast group and port
	Duration  time.Duration  // default 3s
}

// DefaultGroup is the heartbeat group of a config that does not set one.
func DefaultGroup() netip.AddrPort {
	d := config.DefaultClusterSettings()
	return netip.AddrPortFrom(d.MulticastGroup, d.MulticastPort)
}

// HeardMember is one member heard sending packets. Nothing in it is
// verified: the listener holds no cluster keys.
type HeardMember struct {
	Name          string    `json:"name"`
	Address       string    `json:"address"` // source address of its packets
	ConfigVersion uint64    `json:"config_version"`
	ConfigID      string    `json:"config_id"` // short hex
	Healthy       bool      `json:"healthy"`
	Reasons       []string  `json:"reasons,omitempty"`
	Packets       int       `json:"packets"`
	LastSeen      time.Time `json:"last_seen"`
	Leaving       bool      `json:"leaving,omitempty"` // sent a leave packet
}

// HeardCluster is one cluster name heard, with its members sorted by name.
type HeardCluster struct {
	Name    string        `json:"name"`
	Members []HeardMember `json:"members"`
}

// Discovery is the result of listening.
type Discovery struct {
	Group      string         `json:"group"`
	Interface  string         `json:"interface,omitempty"`
	Duration   time.Duration  `json:"duration_ns"`
	Verified   bool           `json:"verified"` // always false: no keys to verify with
	Clusters   []HeardCluster `json:"clusters"`
	Undecoded  int            `json:"undecoded"` // packets that were not Shoal heartbeats
	TotalHeard int            `json:"packets"`
}

// Discover joins the heartbeat multicast group for o.Duration and reports
// every cluster and member heard. Packets are decoded with gossip/wire but
// their signatures are NOT verified (the listener has no keys), so names
// and versions are what the senders claim.
func Discover(ctx context.Context, o DiscoverOptions) (*Discovery, error) {
	if !o.Group.IsValid() {
		o.Group = DefaultGroup()
	}
	if !o.Group.Addr().Is4() || !o.Group.Addr().IsMulticast() {
		return nil, fmt.Errorf("discover: %s is not an IPv4 multicast group", o.Group)
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	var ifi *net.Interface
	if o.Interface != "" {
		var err error
		if ifi, err = net.InterfaceByName(o.Interface); err != nil {
			return nil, fmt.Errorf("discover: interface %q: %w", o.Interface, err)
		}
	}
	c, err := net.ListenMulticastUDP("udp4", ifi, net.UDPAddrFromAddrPort(o.Group))
	if err != nil {
		return nil, fmt.Errorf("discover: listen on %s: %w", o.Group, err)
	}
	defer c.Close()
	d, err := Listen(ctx, c, o.Duration)
	if err != nil {
		return nil, err
	}
	d.Group, d.Interface = o.Group.String(), o.Interface
	return d, nil
}

// Listen reads packets from c for d (or until ctx ends) and aggregates the
// Shoal packets among them by cluster and member, unverified.
func Listen(ctx context.Context, c net.PacketConn, d time.Duration) (*Discovery, error) {
	end := time.Now().Add(d)
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	if err := c.SetReadDeadline(end); err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	out := &Discovery{Duration: d}
	heard := map[string]map[string]*HeardMember{}
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return nil, fmt.Errorf("discover: read: %w", err)
		}
		out.TotalHeard++
		p, err := wire.Decode(buf[:n])
		if err != nil {
			out.Undecoded++
			continue
		}
		ms := heard[p.Cluster]
		if ms == nil {
			ms = map[string]*HeardMember{}
			heard[p.Cluster] = ms
		}
		m := ms[p.Node]
		if m == nil {
			m = &HeardMember{Name: p.Node}
			ms[p.Node] = m
		}
		if ua, ok := from.(*net.UDPAddr); ok {
			m.Address = ua.AddrPort().Addr().Unmap().String()
		}
		m.Packets++
		m.LastSeen = time.Now()
		m.ConfigVersion = p.ConfigVersion
		m.ConfigID = hex.EncodeToString(p.ConfigHash[:6])
		m.Healthy = p.Health.OK
		m.Reasons = append([]string(nil), p.Health.Reasons...)
		m.Leaving = p.Type == wire.TypeLeave
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("discover: %w", ctx.Err())
	}
	for name, ms := range heard {
		hc := HeardCluster{Name: name}
		for _, m := range ms {
			hc.Members = append(hc.Members, *m)
		}
		sort.Slice(hc.Members, func(i, j int) bool { return hc.Members[i].Name < hc.Members[j].Name })
		out.Clusters = append(out.Clusters, hc)
	}
	sort.Slice(out.Clusters, func(i, j int) bool { return out.Clusters[i].Name < out.Clusters[j].Name })
	return out, nil
}
