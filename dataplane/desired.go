package dataplane

import (
	"net"
	"net/netip"
	"time"
)

// Desired is the whole state this node should hold in the kernel. It is a
// plain value computed by the agent loop (appliance/) from the allocation;
// the reconcile loop drives the kernel towards the latest Desired it was
// given and keeps it there.
type Desired struct {
	// Addresses are the single-hosted traffic IPs this node must hold.
	Addresses []Address
	// Multi are the multi-hosted groups this node is a member of.
	Multi []MultiGroup
}

// Address is one single-hosted traffic IP to raise on an interface.
type Address struct {
	Group     string     // traffic IP group name, for labels, events and logs
	IP        netip.Addr // IPv4 or IPv6
	Interface string     // interface to raise it on
	// PrefixLen is the prefix length used when raising the address. With
	// PrefixRoute false the kernel adds no prefix route (IFA_F_NOPREFIXROUTE).
	PrefixLen   int
	PrefixRoute bool
	// Announce is how to tell the neighbours: a burst on raise and a
	// periodic refresh (Refresh 0 = off).
	Announce Announce
}

// Announce configures gratuitous ARP / unsolicited neighbour advertisements.
type Announce struct {
	Count   int           // packets in the burst on raise (default 5)
	Spread  time.Duration // time over which the burst is spread (default 2s)
	Refresh time.Duration // periodic re-announcement; 0 = off (default 60s)
}

// NumBuckets is the size of a multi-hosted group's hash space (8!).
const NumBuckets = 40320

// NoOwner marks a bucket with no alive owner.
const NoOwner = 0xff

// MultiGroup is one multi-hosted group as this node must serve it.
type MultiGroup struct {
	Name      string
	Interface string
	IPs       []netip.Addr
	// MAC is the multicast MAC answered in ARP replies for the IPs
	// (01:00:5e + low 23 bits of the cluster multicast IPv4 group).
	MAC net.HardwareAddr
	// HashIPOnly hashes the source IP only (group hash = "ip"); otherwise the
	// 4-tuple (hash = "ip-port").
	HashIPOnly bool
	// Seed seeds the packet hash; the same on every node.
	Seed uint32
	// SelfSlot is this node's slot (0..7) in the group.
	SelfSlot uint8
	// Owners holds the owner slot of each of the NumBuckets buckets (NoOwner
	// when no member is alive).
	Owners []uint8
	// Prev holds each bucket's owner before the latest view change and
	// PrevAlive says which slots are still alive: a bucket whose previous
	// owner is alive and is not this node is being handed over, so this node
	// leaves its non-SYN packets without a local socket to that owner.
	Prev      []uint8
	PrevAlive uint8 // bit s set = slot s alive now
}
