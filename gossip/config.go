package gossip

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/shoal-project/shoal/gossip/wire"
)

// Member is one configured cluster member with its pinned identity.
type Member struct {
	Name      string            // unique member name, 1..64 bytes
	Addr      netip.Addr        // unicast address: gossip, probes, unicast heartbeats
	PublicKey ed25519.PublicKey // pinned Ed25519 key; packets and admission tokens must verify with it
}

// Config is everything the gossip agent needs. It is taken by value from the
// caller (the appliance builds it from the cluster and agent files).
type Config struct {
	// Cluster is the cluster name carried in every heartbeat; packets of
	// other clusters are rejected. Required, 1..64 bytes.
	Cluster string
	// Node is this member's name; it must appear in Members. Required.
	Node string
	// PrivateKey signs heartbeats and the admission token. Its public half
	// must equal this node's Members entry. Required.
	PrivateKey ed25519.PrivateKey
	// Members is the configured membership (including this node).
	Members []Member
	// Interval is the heartbeat interval. Default 500ms, range 10ms..5s.
	Interval time.Duration
	// MonitorTimeout is the hard cap: no packet at all from a member for this
	// long marks it down whatever the probes say. Default 4*Interval; at
	// least 2*Interval.
	MonitorTimeout time.Duration
	// Multicast is the IPv4 group and port of heartbeats. The port is also
	// the unicast port of probes and unicast heartbeats. Default
	// 239.77.83.1:7947.
	Multicast netip.AddrPort
	// Interface is the interface for multicast (IP_MULTICAST_IF and group
	// join). Empty = the interface holding Bind.
	Interface string
	// Unicast sends heartbeats and verdicts to every member's address instead
	// of the multicast group.
	Unicast bool
	// Bind is the local address for heartbeats, probes and gossip. Default:
	// this node's Members address.
	Bind netip.Addr
	// GossipPort is the serf/memberlist TCP+UDP port. Default 7946.
	GossipPort int
	// Secret is the cluster secret; the gossip encryption key is derived
	// from it (DeriveGossipKey). Required unless DisableSerf.
	Secret []byte
	// DataDir holds the persisted gossip keyring (serf.keyring). Empty = the
	// keyring is kept in memory only.
	DataDir string
	// Version is this build's version, published in serf tags.
	Version string
	// Verbose logs every heartbeat sent and received and every view change
	// (the seed's flipper!verbose).
	Verbose bool
	// Logger receives structured logs; a "component=gossip" field is added.
	Logger zerolog.Logger
	// Transport carries heartbeat packets; nil = real UDP sockets (created
	// in New, so a caller may create them inside a network namespace).
	Transport Transport
	// DisableSerf runs the heartbeat detector only (in-memory tests).
	DisableSerf bool
	// Dial, if set, makes memberlist's TCP connections (push/pull, join)
	// through it instead of net.DialTimeout; for running agents inside
	// network namespaces in tests. nil = net.DialTimeout.
	Dial func(network, address string, timeout time.Duration) (net.Conn, error)
	// RejoinInterval is how often configured members that serf does not
	// list as alive are joined again (memberlist never re-merges a healed
	// partition by itself). Default 3s.
	RejoinInterval time.Duration
	// LinkUp, if set, reports whether this node's own link to the cluster
	// (the heartbeat interface) has carrier. The detector asks it every
	// tick: a suspect member not heard since a moment our own link was down
	// is given a fresh confirmation window instead of being declared down
	// (its silence was ours). A longer outage still ends in
	// MonitorTimeout (the view is honest: this node hears nobody), but when
	// the link returns, members declared down during it are taken back with
	// a fresh silence clock instead of waiting for their heartbeats, so the
	// node does not find itself alone and raise every traffic IP. It must
	// be cheap and must not block.
	LinkUp func() bool
	// Observers are the serf node names admitted to the gossip pool without
	// an admission token (stock `serf agent`s used for monitoring and user
	// events), each mapped to the address it must advertise (the zero Addr:
	// any). They never enter the view: they send no heartbeats. A name must
	// not also be a member. Default none: every non-member is refused.
	Observers map[string]netip.Addr
}

// Defaults used when a Config field is zero.
const (
	DefaultInterval       = 500 * time.Millisecond
	DefaultGossipPort     = 7946
	DefaultRejoinInterval = 3 * time.Second
)

// DefaultMulticast is the default heartbeat group and port.
var DefaultMulticast = netip.MustParseAddrPort("239.77.83.1:7947")

// ErrConfig is wrapped by every configuration error from New.
var ErrConfig = errors.New("invalid gossip config")

// withDefaults fills zero fields and validates the result.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("gossip config: %w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Interval < 10*time.Millisecond || c.Interval > 5*time.Second {
		return bad("interval %s outside 10ms..5s", c.Interval)
	}
	if c.MonitorTimeout == 0 {
		c.MonitorTimeout = 4 * c.Interval
	}
	if c.MonitorTimeout < 2*c.Interval {
		return bad("monitor timeout %s below 2 x interval %s", c.MonitorTimeout, c.Interval)
	}
	if !c.Multicast.IsValid() {
		c.Multicast = DefaultMulticast
	}
	if !c.Unicast && (!c.Multicast.Addr().Is4() || !c.Multicast.Addr().IsMulticast()) {
		return bad("multicast group %s is not an IPv4 multicast address", c.Multicast.Addr())
	}
	if c.Multicast.Port() == 0 {
		return bad("multicast port 0")
	}
	if c.GossipPort == 0 {
		c.GossipPort = DefaultGossipPort
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = DefaultRejoinInterval
	}
	if l := len(c.Cluster); l == 0 || l > wire.MaxNameLen {
		return bad("cluster name of %d bytes (1..%d)", l, wire.MaxNameLen)
	}
	if len(c.PrivateKey) != ed25519.PrivateKeySize {
		return bad("private key of %d bytes", len(c.PrivateKey))
	}
	if err := checkMembers(c.Members); err != nil {
		return bad("%v", err)
	}
	i := slices.IndexFunc(c.Members, func(m Member) bool { return m.Name == c.Node })
	if i < 0 {
		return bad("node %q is not a member", c.Node)
	}
	if !c.Members[i].PublicKey.Equal(c.PrivateKey.Public()) {
		return bad("private key does not match the public key pinned for %q", c.Node)
	}
	if !c.Bind.IsValid() {
		c.Bind = c.Members[i].Addr
	}
	if !c.DisableSerf && len(c.Secret) == 0 {
		return bad("cluster secret required for encrypted gossip")
	}
	if err := checkObservers(c.Observers, c.Members); err != nil {
		return bad("%v", err)
	}
	c.Members = slices.Clone(c.Members)
	c.Observers = maps.Clone(c.Observers)
	return c, nil
}

// checkObservers checks observer names: 1..MaxNameLen bytes and no member
// of that name (a member must always present its token).
func checkObservers(obs map[string]netip.Addr, members []Member) error {
	for _, name := range slices.Sorted(maps.Keys(obs)) {
		if l := len(name); l == 0 || l > wire.MaxNameLen {
			return fmt.Errorf("observer name %q of %d bytes (1..%d)", name, l, wire.MaxNameLen)
		}
		if slices.ContainsFunc(members, func(m Member) bool { return m.Name == name }) {
			return fmt.Errorf("observer %q is also a member", name)
		}
	}
	return nil
}

func checkMembers(ms []Member) error {
	seen := map[string]bool{}
	for _, m := range ms {
		if l := len(m.Name); l == 0 || l > wire.MaxNameLen {
			return fmt.Errorf("member name %q of %d bytes (1..%d)", m.Name, l, wire.MaxNameLen)
		}
		if seen[m.Name] {
			return fmt.Errorf("member %q listed twice", m.Name)
		}
		seen[m.Name] = true
		if !m.Addr.IsValid() {
			return fmt.Errorf("member %q has no address", m.Name)
		}
		if len(m.PublicKey) != ed25519.PublicKeySize {
			return fmt.Errorf("member %q public key of %d bytes", m.Name, len(m.PublicKey))
		}
	}
	return nil
}

// Detector timings derived from the interval; see docs/PROTOCOL.md.
type timings struct {
	interval     time.Duration
	suspectAfter time.Duration // silence before suspicion: 1.5 intervals + a 5 % margin
	window       time.Duration // probe confirmation window
	retransmit   time.Duration // probe retransmit period inside the window
	tick         time.Duration // detector resolution
	fresh        time.Duration // "heard recently": answer verdicts with evidence
	recoverGap   time.Duration // max gap between consecutive recovery heartbeats
	monitor      time.Duration
}

func newTimings(interval, monitor time.Duration) timings {
	return timings{
		interval:     interval,
		suspectAfter: interval*3/2 + interval/20,
		window:       interval * 2 / 5,
		retransmit:   interval / 20,
		tick:         max(interval/20, time.Millisecond),
		fresh:        interval,
		recoverGap:   2 * interval,
		monitor:      monitor,
	}
}
