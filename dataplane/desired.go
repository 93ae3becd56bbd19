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
	// Multi are the multi-hosted groups this node is a member of. Ignored
	// when the Manager has no MultiHoster (Options.Multi nil).
	Multi []MultiGroup
	// Links are the groups this node is a member of and the interface each
	// uses, watched even when this node holds none of the group's IPs: a
	// missing or down interface is reported as a GroupFailure so the agent
	// can report itself failed for the group, and its recovery is reported
	// too. The groups of Addresses and Multi are watched anyway.
	Links []GroupLink
}

// GroupLink names the interface one traffic IP group uses on this node.
type GroupLink struct {
	Group     string
	Interface string
}

// Address is one single-hosted traffic IP to raise on an interface.
type Address struct {
	Group     string     // traffic IP group name, for labels, events and logs
	IP        netip.Addr // IPv4 or IPv6
	Interface string     // interface to raise it on
	// PrefixLen is the prefix length used when raising the address; 0
	// means a host address (/32 or /128). With PrefixRoute false the kernel
	// adds no prefix route (IFA_F_NOPREFIXROUTE).
	PrefixLen   int
	PrefixRoute bool
	// Announce is how to tell the neighbours: a burst on raise and a
	// periodic refresh (Refresh 0 = off).
	Announce Announce
	// Handoff marks an address kept only while its new owner takes it over
	// (make-before-break): it stays raised but is never announced, and a
	// burst or refresh in progress stops, so this node's announcements
	// cannot pull neighbours back from the new owner. Cleared (the hand-off
	// called off), the address is announced afresh.
	Handoff bool
}

// Announce configures gratuitous ARP / unsolicited neighbour advertisements.
// One announcement (a "round") is, for IPv4, a gratuitous ARP request and a
// gratuitous ARP reply; for IPv6, one unsolicited neighbour advertisement.
type Announce struct {
	// Count is the number of rounds in the burst on raise; 0 means
	// DefaultAnnounceCount (5), negative means no burst.
	Count int
	// Spread is the time over which the burst is spread: the first round
	// goes at once, the others at Spread/(Count-1) intervals; 0 means
	// DefaultAnnounceSpread (2s).
	Spread time.Duration
	// Refresh is the period of re-announcement while the address is held;
	// 0 = off. (The cluster config's default, 60s, is filled in by the
	// agent.)
	Refresh time.Duration
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
	// MulticastGroup is the cluster's IPv4 multicast group that MAC is
	// derived from; it is joined by IGMP so snooping switches forward the
	// group's traffic. Zero = derive a 239.x.y.z group from MAC.
	MulticastGroup netip.Addr
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
	// Digest identifies Owners with the seed and the slot assignment: equal
	// on every node that computed the same table. The multi-hoster reports
	// the digest it applied, so peers can be told when this node holds no
	// connection outside its share of that table (docs/MULTIHOST.md,
	// "Handover").
	Digest uint64
}
