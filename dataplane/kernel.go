package dataplane

import (
	"errors"
	"net"
	"net/netip"
)

// Address flags as the kernel reports them (linux/if_addr.h). Only the ones
// the reconcile loop reads or sets are named here.
const (
	// FlagNoDAD is IFA_F_NODAD: the IPv6 address skips duplicate address
	// detection and is usable at once.
	FlagNoDAD = 0x02
	// FlagDADFailed is IFA_F_DADFAILED: DAD found a duplicate; the address
	// is unusable until removed and added again.
	FlagDADFailed = 0x08
	// FlagTentative is IFA_F_TENTATIVE: DAD has not finished.
	FlagTentative = 0x40
	// FlagNoPrefixRoute is IFA_F_NOPREFIXROUTE: the kernel adds no route
	// for the address's prefix.
	FlagNoPrefixRoute = 0x200
)

// ErrLinkNotFound is returned by Kernel.Link when no interface has the name.
var ErrLinkNotFound = errors.New("link not found")

// LinkInfo is what the reconcile loop needs to know about an interface.
type LinkInfo struct {
	Index int
	Name  string
	MAC   net.HardwareAddr
	MTU   int
	// Up is true when the interface is administratively up and its
	// operational state is up (or unknown, as for dummy and loopback
	// devices, which have no carrier).
	Up bool
}

// KernelAddr is one address as the kernel holds it.
type KernelAddr struct {
	LinkIndex int
	Prefix    netip.Prefix // address and prefix length
	Label     string       // IPv4 only; empty for IPv6
	Flags     int          // IFA_F_* flags
}

// Kernel is the seam over the few netlink calls the reconcile loop makes.
// The real implementation (NewNetlinkKernel) uses vishvananda/netlink on a
// handle bound to one network namespace; FakeKernel is an in-memory stand-in
// for unit tests. Implementations must be safe for concurrent use.
type Kernel interface {
	// Link returns the named interface; an error wrapping ErrLinkNotFound
	// when there is none.
	Link(name string) (LinkInfo, error)
	// Addrs lists every IPv4 and IPv6 address in the namespace.
	Addrs() ([]KernelAddr, error)
	// AddrAdd adds an address (label, flags and prefix as given).
	AddrAdd(a KernelAddr) error
	// AddrDel removes an address; an error wrapping ErrAddrNotFound when
	// the kernel does not hold it.
	AddrDel(a KernelAddr) error
	// Watch subscribes to address and link changes. The returned channel
	// receives a value (coalesced, never blocking the sender) after any
	// change and is closed when the subscription ends: when done is
	// closed, or on a subscription error (the caller subscribes again).
	Watch(done <-chan struct{}) (<-chan struct{}, error)
	// Close releases the kernel handle.
	Close() error
}

// ErrAddrNotFound is returned by Kernel.AddrDel for an address the kernel
// does not hold.
var ErrAddrNotFound = errors.New("address not found")

// Announcer is the seam over the packet sockets that tell neighbours where a
// traffic IP now lives. One call is one announcement round: for IPv4 a
// gratuitous ARP request and a gratuitous ARP reply, both to the Ethernet
// broadcast address; for IPv6 one unsolicited neighbour advertisement with
// the override flag to all-nodes (ff02::1). Implementations must be safe for
// concurrent use.
type Announcer interface {
	Announce(link LinkInfo, ip netip.Addr) error
}
