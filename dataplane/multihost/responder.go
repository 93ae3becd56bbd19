package multihost

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/rs/zerolog"
	"golang.org/x/net/bpf"
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	ipv6HeaderLen = 40
	ethHeaderLen  = 14
)

var errNotForUs = errors.New("not for us")

// answers maps a multi-hosted address to the multicast MAC answered for it.
type answers map[netip.Addr]net.HardwareAddr

// arpReply answers an ARP request frame for one of ans with the address's
// multicast MAC: Ethernet source ifMAC, destination the requester. It returns
// errNotForUs for frames it ignores and another error for malformed ones.
func arpReply(frame []byte, ans answers, ifMAC net.HardwareAddr) ([]byte, error) {
	var eth ethernet.Frame
	if err := eth.UnmarshalBinary(frame); err != nil {
		return nil, err
	}
	if eth.EtherType != etherTypeARP {
		return nil, errNotForUs
	}
	var req arp.Packet
	if err := req.UnmarshalBinary(eth.Payload); err != nil {
		return nil, err
	}
	if req.Operation != arp.OperationRequest {
		return nil, errNotForUs
	}
	mac, ok := ans[req.TargetIP]
	if !ok {
		return nil, errNotForUs
	}
	if !req.SenderIP.Is4() || len(req.SenderHardwareAddr) != 6 || req.SenderHardwareAddr[0]&1 != 0 {
		return nil, errors.New("arp request from a bad sender")
	}
	if req.SenderIP == req.TargetIP {
		return nil, errNotForUs // someone else's gratuitous ARP or probe for it
	}
	rep, err := arp.NewPacket(arp.OperationReply, mac, req.TargetIP, req.SenderHardwareAddr, req.SenderIP)
	if err != nil {
		return nil, err
	}
	return marshalEthernet(req.SenderHardwareAddr, ifMAC, etherTypeARP, rep)
}

// gratuitousARP announces ip at mac (a broadcast ARP reply).
func gratuitousARP(ip netip.Addr, mac, ifMAC net.HardwareAddr) ([]byte, error) {
	p, err := arp.NewPacket(arp.OperationReply, mac, ip, ethernet.Broadcast, ip)
	if err != nil {
		return nil, err
	}
	return marshalEthernet(ethernet.Broadcast, ifMAC, etherTypeARP, p)
}

func marshalEthernet(dst, src net.HardwareAddr, et ethernet.EtherType, p interface{ MarshalBinary() ([]byte, error) }) ([]byte, error) {
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := ethernet.Frame{Destination: dst, Source: src, EtherType: et, Payload: pb}
	return f.MarshalBinary()
}

// ndpReply answers a neighbour solicitation frame (Ethernet + IPv6 +
// ICMPv6) for one of ans with a solicited advertisement whose target
// link-layer address is the address's multicast MAC.
func ndpReply(frame []byte, ans answers, ifMAC net.HardwareAddr) ([]byte, error) {
	var eth ethernet.Frame
	if err := eth.UnmarshalBinary(frame); err != nil {
		return nil, err
	}
	if eth.EtherType != etherTypeIPv6 {
		return nil, errNotForUs
	}
	ip := eth.Payload
	if len(ip) < ipv6HeaderLen || ip[0]>>4 != 6 {
		return nil, errors.New("short or bad ipv6 header")
	}
	if ip[6] != 58 {
		return nil, errNotForUs
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen > len(ip)-ipv6HeaderLen {
		return nil, errors.New("ipv6 payload length beyond frame")
	}
	src, _ := netip.AddrFromSlice(ip[8:24])
	msg, err := ndp.ParseMessage(ip[ipv6HeaderLen : ipv6HeaderLen+plen])
	if err != nil {
		return nil, err
	}
	ns, ok := msg.(*ndp.NeighborSolicitation)
	if !ok {
		return nil, errNotForUs
	}
	mac, ok := ans[ns.TargetAddress]
	if !ok {
		return nil, errNotForUs
	}
	if ip[7] != 255 {
		return nil, errors.New("neighbour solicitation with hop limit != 255")
	}
	dstMAC := eth.Source
	for _, o := range ns.Options {
		if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Source {
			dstMAC = l.Addr
		}
	}
	na := &ndp.NeighborAdvertisement{
		Solicited:     true,
		Override:      true,
		TargetAddress: ns.TargetAddress,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	dst := src
	if src.IsUnspecified() { // duplicate address detection: answer all nodes
		dst = netip.MustParseAddr("ff02::1")
		dstMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
		na.Solicited = false
	}
	if len(dstMAC) != 6 {
		return nil, errors.New("bad source link-layer address")
	}
	body, err := ndp.MarshalMessageChecksum(na, ns.TargetAddress, dst)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(body))
	hdr[0] = 0x60
	binary.BigEndian.PutUint16(hdr[4:], uint16(len(body)))
	hdr[6], hdr[7] = 58, 255
	s, d := ns.TargetAddress.As16(), dst.As16()
	copy(hdr[8:], s[:])
	copy(hdr[24:], d[:])
	f := ethernet.Frame{Destination: dstMAC, Source: ifMAC, EtherType: etherTypeIPv6, Payload: append(hdr, body...)}
	return f.MarshalBinary()
}

// nsFilter passes only ICMPv6 neighbour solicitations without extension
// headers to the NDP packet socket, so it never copies data traffic.
func nsFilter() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv6, SkipFalse: 4},
		bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 58, SkipFalse: 2},
		bpf.LoadAbsolute{Off: ethHeaderLen + ipv6HeaderLen, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 135, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 1500},
	})
}

// responder answers ARP or NDP on one interface from one packet socket.
type responder struct {
	kind    string // "arp" or "ndp"
	conn    *packet.Conn
	ifMAC   net.HardwareAddr
	reply   func([]byte, answers, net.HardwareAddr) ([]byte, error)
	log     zerolog.Logger
	mu      sync.Mutex
	ans     answers
	joined  map[string]bool
	done    chan struct{}
	closing atomic.Bool // close called: a read error is the end, not news
	replies atomic.Uint64
	bad     atomic.Uint64
}

func newResponder(kind string, ifi *net.Interface, log zerolog.Logger) (*responder, error) {
	r := &responder{kind: kind, ifMAC: ifi.HardwareAddr, log: log, ans: answers{}, joined: map[string]bool{}, done: make(chan struct{})}
	proto := etherTypeARP
	r.reply = arpReply
	if kind == "ndp" {
		proto = etherTypeIPv6
		r.reply = ndpReply
	}
	c, err := packet.Listen(ifi, packet.Raw, proto, nil)
	if err != nil {
		return nil, err
	}
	if kind == "ndp" {
		f, err := nsFilter()
		if err == nil {
			err = c.SetBPF(f)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	r.conn = c
	go r.loop()
	return r, nil
}

// set replaces the answered addresses and joins/leaves multicast MACs so
// the interface accepts frames sent to them.
func (r *responder) set(ans answers, macs []net.HardwareAddr) error {
	want := map[string]net.HardwareAddr{}
	for _, m := range macs {
		want[m.String()] = m
	}
	var errs []error
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, m := range want {
		if !r.joined[k] {
			if err := r.conn.JoinGroup(m); err != nil {
				errs = append(errs, err)
				continue
			}
			r.joined[k] = true
		}
	}
	for k := range r.joined {
		if _, ok := want[k]; !ok {
			m, _ := net.ParseMAC(k)
			if err := r.conn.LeaveGroup(m); err != nil {
				errs = append(errs, err)
			}
			delete(r.joined, k)
		}
	}
	r.ans = ans
	return errors.Join(errs...)
}

func (r *responder) announce(ip netip.Addr, mac net.HardwareAddr) {
	if r.kind != "arp" {
		return
	}
	f, err := gratuitousARP(ip, mac, r.ifMAC)
	if err == nil {
		_, err = r.conn.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast})
	}
	if err != nil {
		r.log.Warn().Err(err).Stringer("ip", ip).Msg("gratuitous arp")
	}
}

func (r *responder) loop() {
	defer close(r.done)
	buf := make([]byte, 2048)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.closing.Load() {
				return
			}
			r.log.Warn().Err(err).Str("proto", r.kind).Msg("read")
			return
		}
		r.mu.Lock()
		ans := r.ans
		r.mu.Unlock()
		out, err := r.reply(buf[:n], ans, r.ifMAC)
		switch {
		case errors.Is(err, errNotForUs):
			continue
		case err != nil:
			r.bad.Add(1)
			r.log.Debug().Err(err).Str("proto", r.kind).Msg("malformed frame dropped")
			continue
		}
		if _, err := r.conn.WriteTo(out, &packet.Addr{HardwareAddr: net.HardwareAddr(out[0:6])}); err != nil {
			r.log.Warn().Err(err).Str("proto", r.kind).Msg("send reply")
			continue
		}
		r.replies.Add(1)
	}
}

func (r *responder) close() error {
	r.closing.Store(true)
	err := r.conn.Close()
	<-r.done
	return err
}
