package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
)

// Announcement defaults (Address.Announce zero values).
const (
	DefaultAnnounceCount  = 5
	DefaultAnnounceSpread = 2 * time.Second
)

// allNodes is the IPv6 link-local all-nodes multicast group.
var allNodes = netip.MustParseAddr("ff02::1")

// zeroMAC is the target hardware address of an ARP announcement request
// (RFC 5227 section 2.3: ignored by receivers, SHOULD be zero).
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// gratuitousARP returns the two packets of one IPv4 announcement round:
//   - an ARP request with sender = target = ip and a zero target hardware
//     address (an RFC 5227 ARP announcement; what Linux itself sends);
//   - an ARP reply with sender = target = ip and the broadcast target
//     hardware address (what older stacks and some switches only honour).
//
// Both go to the Ethernet broadcast address.
func gratuitousARP(mac net.HardwareAddr, ip netip.Addr) (req, reply *arp.Packet, err error) {
	req, err = arp.NewPacket(arp.OperationRequest, mac, ip, zeroMAC, ip)
	if err != nil {
		return nil, nil, fmt.Errorf("build gratuitous arp request for %s: %w", ip, err)
	}
	reply, err = arp.NewPacket(arp.OperationReply, mac, ip, ethernet.Broadcast, ip)
	if err != nil {
		return nil, nil, fmt.Errorf("build gratuitous arp reply for %s: %w", ip, err)
	}
	return req, reply, nil
}

// sendGratuitousARP writes one IPv4 announcement round through c.
func sendGratuitousARP(c *arp.Client, mac net.HardwareAddr, ip netip.Addr) error {
	req, reply, err := gratuitousARP(mac, ip)
	if err != nil {
		return err
	}
	if err := c.WriteTo(req, ethernet.Broadcast); err != nil {
		return fmt.Errorf("send gratuitous arp request for %s: %w", ip, err)
	}
	if err := c.WriteTo(reply, ethernet.Broadcast); err != nil {
		return fmt.Errorf("send gratuitous arp reply for %s: %w", ip, err)
	}
	return nil
}

// unsolicitedNA returns the unsolicited neighbour advertisement for ip
// (RFC 4861 section 7.2.6): not solicited, override set so receivers replace
// a cached link-layer address, and the target link-layer address option.
func unsolicitedNA(mac net.HardwareAddr, ip netip.Addr) *ndp.NeighborAdvertisement {
	return &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac},
		},
	}
}

// packetAnnouncer is the real Announcer: packet sockets for ARP (through
// mdlayher/arp) and ICMPv6 sockets for NDP (through mdlayher/ndp), opened in
// the manager's network namespace for each round and closed after it. A
// round is rare (a burst on raise and a refresh every tens of seconds), so
// no socket is kept open.
type packetAnnouncer struct {
	ns        netns.NsHandle
	closeOnce sync.Once
}

var _ Announcer = (*packetAnnouncer)(nil)

// NewPacketAnnouncer returns the real Announcer. nsPath names a network
// namespace file; empty means the process's namespace.
func NewPacketAnnouncer(nsPath string) (Announcer, error) {
	ns, err := openNetns(nsPath)
	if err != nil {
		return nil, err
	}
	return &packetAnnouncer{ns: ns}, nil
}

// Close releases the namespace handle.
func (a *packetAnnouncer) Close() error {
	a.closeOnce.Do(func() { _ = a.ns.Close() })
	return nil
}

func (a *packetAnnouncer) Announce(link LinkInfo, ip netip.Addr) error {
	if len(link.MAC) != 6 {
		return fmt.Errorf("announce %s on %s: link has no ethernet address", ip, link.Name)
	}
	ifi := &net.Interface{Index: link.Index, Name: link.Name, HardwareAddr: link.MAC, MTU: link.MTU}
	if ip.Is4() {
		return a.announceARP(ifi, ip)
	}
	return a.announceNDP(ifi, ip)
}

func (a *packetAnnouncer) announceARP(ifi *net.Interface, ip netip.Addr) error {
	var c *arp.Client
	err := inNetns(a.ns, func() error {
		// arp.New reads the interface's addresses (it needs one IPv4
		// address; the traffic IP is already raised), so it runs in the
		// namespace too.
		p, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		if err != nil {
			return err
		}
		c, err = arp.New(ifi, p)
		if err != nil {
			_ = p.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("open arp socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	return sendGratuitousARP(c, ifi.HardwareAddr, ip)
}

func (a *packetAnnouncer) announceNDP(ifi *net.Interface, ip netip.Addr) error {
	var c *ndp.Conn
	err := inNetns(a.ns, func() error {
		// Source address = the traffic IP itself, as the kernel does for
		// its own unsolicited NAs; raised with NODAD it is usable at once.
		var err error
		c, _, err = ndp.Listen(ifi, ndp.Addr(ip.String()))
		return err
	})
	if err != nil {
		return fmt.Errorf("open ndp socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	if err := c.WriteTo(unsolicitedNA(ifi.HardwareAddr, ip), nil, allNodes); err != nil {
		return fmt.Errorf("send unsolicited neighbour advertisement for %s: %w", ip, err)
	}
	return nil
}

// closeAnnouncer closes a if it has a Close method.
func closeAnnouncer(a Announcer) error {
	if c, ok := a.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

var errNotRunning = errors.New("manager not running")
