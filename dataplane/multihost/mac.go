package multihost

import (
	"net"
	"net/netip"
)

// MulticastMAC returns the Ethernet multicast MAC of an IPv4 multicast group:
// 01:00:5e followed by the low 23 bits of the group (RFC 1112). It returns
// nil for anything but an IPv4 address.
func MulticastMAC(group netip.Addr) net.HardwareAddr {
	group = group.Unmap()
	if !group.Is4() {
		return nil
	}
	b := group.As4()
	return net.HardwareAddr{0x01, 0x00, 0x5e, b[1] & 0x7f, b[2], b[3]}
}

// IGMPGroup returns the IPv4 group joined by IGMP so that snooping switches
// forward frames sent to mac (an 01:00:5e MAC) to this port: 239.x.y.z with
// x.y.z the MAC's low 23 bits. For the usual cluster groups in
// 239.0.0.0/9 (e.g. 239.77.83.1) this is the cluster group itself.
func IGMPGroup(mac net.HardwareAddr) netip.Addr {
	if len(mac) != 6 {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte{239, mac[3] & 0x7f, mac[4], mac[5]})
}

// IPv6 rule: a group's IPv6 addresses are answered with the MAC
// 33:33:5e:x:y:z, where x:y:z are the low 23 bits of its IPv4 multicast MAC.
// It is the Ethernet MAC of the IPv6 multicast group ff05::5e:xyz
// (ff05::5exx:yyzz, site-local scope) which the node joins by MLD, so that
// MLD-snooping switches forward it like IGMP-snooping ones forward the IPv4
// MAC.

// MLDGroup returns the IPv6 multicast group joined for the IPv6 addresses of
// a group whose IPv4 multicast MAC is mac.
func MLDGroup(mac net.HardwareAddr) netip.Addr {
	if len(mac) != 6 {
		return netip.Addr{}
	}
	var b [16]byte
	b[0], b[1] = 0xff, 0x05
	b[12], b[13], b[14], b[15] = 0x5e, mac[3]&0x7f, mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// IPv6MulticastMAC returns the MAC answered in neighbour advertisements for
// a group whose IPv4 multicast MAC is mac: 33:33 + low 32 bits of MLDGroup.
func IPv6MulticastMAC(mac net.HardwareAddr) net.HardwareAddr {
	g := MLDGroup(mac)
	if !g.IsValid() {
		return nil
	}
	b := g.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// solicitedNodeMAC is the Ethernet MAC of the solicited-node multicast
// group of ip (33:33:ff + low 24 bits), where neighbour solicitations go.
func solicitedNodeMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As16()
	return net.HardwareAddr{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}
