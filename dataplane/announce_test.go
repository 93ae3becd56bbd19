package dataplane

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// loopConn is a loopback net.PacketConn: it keeps what is written.
type loopConn struct {
	mu     sync.Mutex
	frames [][]byte
	dsts   []net.Addr
}

func (c *loopConn) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (c *loopConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames = append(c.frames, append([]byte(nil), b...))
	c.dsts = append(c.dsts, a)
	return len(b), nil
}
func (c *loopConn) Close() error                     { return nil }
func (c *loopConn) LocalAddr() net.Addr              { return nil }
func (c *loopConn) SetDeadline(time.Time) error      { return nil }
func (c *loopConn) SetReadDeadline(time.Time) error  { return nil }
func (c *loopConn) SetWriteDeadline(time.Time) error { return nil }

func TestGratuitousARPFrames(t *testing.T) {
	// arp.New wants an interface with an IPv4 address; the loopback
	// interface has one. Frames go to loopConn, not to the interface.
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skipf("no loopback interface: %v", err)
	}
	mac := net.HardwareAddr{0x02, 0x53, 0x48, 0, 0, 0x01}
	ifi := &net.Interface{Index: lo.Index, Name: "lo", HardwareAddr: mac}
	conn := &loopConn{}
	c, err := arp.New(ifi, conn)
	if err != nil {
		t.Skipf("arp.New on lo: %v (loopback has no IPv4 address)", err)
	}
	ip := netip.MustParseAddr("192.0.2.10")
	if err := sendGratuitousARP(c, mac, ip); err != nil {
		t.Fatalf("sendGratuitousARP() = %v", err)
	}

	type arpView struct {
		EthDst, EthSrc string
		EtherType      ethernet.EtherType
		Op             arp.Operation
		SHA, THA       string
		SPA, TPA       netip.Addr
	}
	want := []arpView{
		{"ff:ff:ff:ff:ff:ff", mac.String(), ethernet.EtherTypeARP, arp.OperationRequest, mac.String(), "00:00:00:00:00:00", ip, ip},
		{"ff:ff:ff:ff:ff:ff", mac.String(), ethernet.EtherTypeARP, arp.OperationReply, mac.String(), "ff:ff:ff:ff:ff:ff", ip, ip},
	}
	var got []arpView
	for _, b := range conn.frames {
		var f ethernet.Frame
		if err := f.UnmarshalBinary(b); err != nil {
			t.Fatalf("decode ethernet frame % x: %v", b, err)
		}
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			t.Fatalf("decode arp packet % x: %v", f.Payload, err)
		}
		got = append(got, arpView{f.Destination.String(), f.Source.String(), f.EtherType, p.Operation,
			p.SenderHardwareAddr.String(), p.TargetHardwareAddr.String(), p.SenderIP, p.TargetIP})
	}
	if d := cmp.Diff(want, got, cmpAddrs); d != "" {
		t.Errorf("gratuitous arp frames (-want +got):\n%s", d)
	}
	for i, a := range conn.dsts {
		if a.String() != "ff:ff:ff:ff:ff:ff" {
			t.Errorf("frame %d socket destination = %v, want broadcast", i, a)
		}
	}
}

func TestUnsolicitedNA(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x53, 0x48, 0, 0, 0x01}
	ip := netip.MustParseAddr("2001:db8::10")
	b, err := ndp.MarshalMessage(unsolicitedNA(mac, ip))
	if err != nil {
		t.Fatalf("MarshalMessage() = %v", err)
	}
	// RFC 4861 section 4.4: type 136, code 0, checksum (filled by the
	// kernel), flags R|S|O in the top bits, target address, then the
	// target link-layer address option (type 2, length 1 = 8 bytes).
	want := []byte{136, 0, 0, 0, 0x20, 0, 0, 0}
	want = append(want, ip.AsSlice()...)
	want = append(want, 2, 1)
	want = append(want, mac...)
	if d := cmp.Diff(want, b); d != "" {
		t.Errorf("neighbour advertisement bytes (-want +got):\n%s", d)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatalf("ParseMessage() = %v", err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok || !na.Override || na.Solicited || na.Router || na.TargetAddress != ip {
		t.Errorf("parsed message = %+v, want unsolicited override NA for %s", m, ip)
	}
}

func TestAnnounceRejectsLinkWithoutMAC(t *testing.T) {
	a := &packetAnnouncer{}
	if err := a.Announce(LinkInfo{Name: "tun0", Index: 1}, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Errorf("Announce on a link without an ethernet address = nil, want error")
	}
}
