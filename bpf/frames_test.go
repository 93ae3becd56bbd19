package bpf

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Hand-built frames for program tests (no checksums: XDP does not check them).

var (
	testMcastMAC = net.HardwareAddr{0x01, 0x00, 0x5e, 0x4d, 0x53, 0x01}
	testIfMAC    = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}
	testPeerMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x99}
)

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

type l4 struct {
	proto        uint8
	sport, dport uint16
	tcpFlags     uint8
	// icmpType/icmpCode for ICMP and ICMPv6; inner is the embedded packet
	// of an error.
	icmpType, icmpCode uint8
	inner              []byte
	payload            []byte
}

func tcpSeg(sport, dport uint16, flags uint8) l4 {
	return l4{proto: 6, sport: sport, dport: dport, tcpFlags: flags}
}

func udpDgram(sport, dport uint16, n int) l4 {
	return l4{proto: 17, sport: sport, dport: dport, payload: make([]byte, n)}
}

func (l l4) bytes() []byte {
	switch l.proto {
	case 6:
		b := make([]byte, 20)
		binary.BigEndian.PutUint16(b[0:], l.sport)
		binary.BigEndian.PutUint16(b[2:], l.dport)
		binary.BigEndian.PutUint32(b[4:], 1000)
		binary.BigEndian.PutUint32(b[8:], 2000)
		b[12] = 5 << 4
		b[13] = l.tcpFlags
		binary.BigEndian.PutUint16(b[14:], 65535)
		return append(b, l.payload...)
	case 17:
		b := make([]byte, 8)
		binary.BigEndian.PutUint16(b[0:], l.sport)
		binary.BigEndian.PutUint16(b[2:], l.dport)
		binary.BigEndian.PutUint16(b[4:], uint16(8+len(l.payload)))
		return append(b, l.payload...)
	case 1, 58:
		b := make([]byte, 8)
		b[0], b[1] = l.icmpType, l.icmpCode
		if l.icmpType == 3 && l.icmpCode == 4 {
			binary.BigEndian.PutUint16(b[6:], 1400) // next-hop MTU
		}
		if l.icmpType == 2 && l.proto == 58 {
			binary.BigEndian.PutUint32(b[4:], 1280)
		}
		b = append(b, l.inner...)
		return append(b, l.payload...)
	}
	return l.payload
}

// ipv4 builds an IPv4 packet; fragOff is the raw flags+offset field.
func ipv4(src, dst netip.Addr, fragOff uint16, p l4) []byte {
	body := p.bytes()
	b := make([]byte, 20, 20+len(body))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(body)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	binary.BigEndian.PutUint16(b[6:], fragOff)
	b[8] = 64
	b[9] = p.proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, body...)
}

// ipv6 builds an IPv6 packet; a non-nil frag adds a fragment header with
// the given offset (in 8-byte units) and M flag.
func ipv6(src, dst netip.Addr, frag *[2]uint16, p l4) []byte {
	body := p.bytes()
	next := p.proto
	if frag != nil {
		fh := make([]byte, 8)
		fh[0] = p.proto
		binary.BigEndian.PutUint16(fh[2:], frag[0]<<3|frag[1])
		binary.BigEndian.PutUint32(fh[4:], 0xabcd)
		body = append(fh, body...)
		next = 44
	}
	b := make([]byte, 40, 40+len(body))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	b[6] = next
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, body...)
}

// ether wraps an IP packet in Ethernet (and one 802.1Q tag when vlan > 0).
func ether(dst net.HardwareAddr, vlan uint16, pkt []byte) []byte {
	b := make([]byte, 0, 18+len(pkt))
	b = append(b, dst...)
	b = append(b, testPeerMAC...)
	if vlan > 0 {
		b = binary.BigEndian.AppendUint16(b, 0x8100)
		b = binary.BigEndian.AppendUint16(b, vlan)
	}
	et := uint16(0x0800)
	if pkt[0]>>4 == 6 {
		et = 0x86dd
	}
	b = binary.BigEndian.AppendUint16(b, et)
	return append(b, pkt...)
}
