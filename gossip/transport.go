package gossip

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
)

// Packet is one received datagram.
type Packet struct {
	From netip.Addr // source address (informational; identity comes from the signature)
	Data []byte
}

// Transport carries heartbeat-protocol packets. Implementations must be safe
// for concurrent use and must never block the caller for long: Send drops
// rather than waits.
type Transport interface {
	// Send sends b to the member at address to, or to the multicast group
	// when to is the zero Addr.
	Send(to netip.Addr, b []byte) error
	// Recv returns the channel of received packets; it is closed by Close.
	Recv() <-chan Packet
	// Close releases the sockets and closes the Recv channel.
	Close() error
}

// ErrClosed is returned by Send on a closed transport.
var ErrClosed = errors.New("transport closed")

// MemNetwork wires many in-memory transports together in one process, like
// memberlist's MockTransport, with loss and partition injection for tests.
// The zero Addr ("the group") reaches every attached transport but the
// sender.
type MemNetwork struct {
	mu      sync.Mutex
	nodes   map[netip.Addr]*MemTransport
	loss    float64
	blocked map[[2]netip.Addr]bool // one-way cuts: [from, to]
}

// NewMemNetwork returns an empty in-memory network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: map[netip.Addr]*MemTransport{}, blocked: map[[2]netip.Addr]bool{}}
}

// Transport attaches a new transport at addr (replacing any previous one).
func (n *MemNetwork) Transport(addr netip.Addr) *MemTransport {
	t := &MemTransport{net: n, addr: addr, ch: make(chan Packet, 1024)}
	n.mu.Lock()
	n.nodes[addr] = t
	n.mu.Unlock()
	return t
}

// SetLoss drops each delivery with probability p (0..1).
func (n *MemNetwork) SetLoss(p float64) {
	n.mu.Lock()
	n.loss = p
	n.mu.Unlock()
}

// Cut drops every packet from one address to the other (one way).
func (n *MemNetwork) Cut(from, to netip.Addr) {
	n.mu.Lock()
	n.blocked[[2]netip.Addr{from, to}] = true
	n.mu.Unlock()
}

// Partition cuts both ways between every pair of addresses in different
// sides. Addresses absent from all sides are not affected.
func (n *MemNetwork) Partition(sides ...[]netip.Addr) {
	for i, a := range sides {
		for j, b := range sides {
			if i == j {
				continue
			}
			for _, x := range a {
				for _, y := range b {
					n.Cut(x, y)
				}
			}
		}
	}
}

// Heal removes every cut.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	clear(n.blocked)
	n.mu.Unlock()
}

func (n *MemNetwork) deliver(from, to netip.Addr, b []byte) {
	n.mu.Lock()
	var targets []*MemTransport
	if to.IsValid() {
		if t := n.nodes[to]; t != nil {
			targets = append(targets, t)
		}
	} else {
		for a, t := range n.nodes {
			if a != from {
				targets = append(targets, t)
			}
		}
	}
	loss := n.loss
	var out []*MemTransport
	for _, t := range targets {
		if n.blocked[[2]netip.Addr{from, t.addr}] || (loss > 0 && rand.Float64() < loss) {
			continue
		}
		out = append(out, t)
	}
	n.mu.Unlock()
	for _, t := range out {
		t.put(Packet{From: from, Data: append([]byte(nil), b...)})
	}
}

// MemTransport is one node's end of a MemNetwork.
type MemTransport struct {
	net    *MemNetwork
	addr   netip.Addr
	mu     sync.Mutex
	ch     chan Packet
	closed bool
}

var _ Transport = (*MemTransport)(nil)

// Send implements Transport.
func (t *MemTransport) Send(to netip.Addr, b []byte) error {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return ErrClosed
	}
	t.net.deliver(t.addr, to, b)
	return nil
}

func (t *MemTransport) put(p Packet) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	select {
	case t.ch <- p:
	default: // full: drop, like a socket buffer
	}
}

// Recv implements Transport.
func (t *MemTransport) Recv() <-chan Packet { return t.ch }

// Close implements Transport; it also detaches the node from the network.
func (t *MemTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		close(t.ch)
		t.net.mu.Lock()
		if t.net.nodes[t.addr] == t {
			delete(t.net.nodes, t.addr)
		}
		t.net.mu.Unlock()
	}
	return nil
}

// Inject delivers raw bytes to the transport at to as if sent from from
// (tests: forged, replayed or oversize packets).
func (n *MemNetwork) Inject(from, to netip.Addr, b []byte) {
	n.mu.Lock()
	t := n.nodes[to]
	n.mu.Unlock()
	if t != nil {
		t.put(Packet{From: from, Data: append([]byte(nil), b...)})
	}
}

// Tap returns a transport that receives a copy of every packet sent to the
// group (tests: capture packets to replay them).
func (n *MemNetwork) Tap(addr netip.Addr) *MemTransport { return n.Transport(addr) }
