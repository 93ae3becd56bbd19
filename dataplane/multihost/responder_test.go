package multihost

import (
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

var (
	rIfMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	rClientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x64}
	rClient4   = netip.MustParseAddr("10.77.0.100")
	rClient6   = netip.MustParseAddr("2001:db8:1::100")
)

func rAnswers() answers {
	mac := MulticastMAC(testGroup)
	return answers{testVIP4: mac, testVIP6: IPv6MulticastMAC(mac)}
}

func arpRequest(t testing.TB, target netip.Addr, op arp.Operation) []byte {
	t.Helper()
	p, err := arp.NewPacket(op, rClientMAC, rClient4, ethernet.Broadcast, target)
	if err != nil {
		t.Fatal(err)
	}
	f, err := marshalEthernet(ethernet.Broadcast, rClientMAC, etherTypeARP, p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func nsFrame(t testing.TB, src, target netip.Addr, hop byte) []byte {
	t.Helper()
	ns := &ndp.NeighborSolicitation{TargetAddress: target, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: rClientMAC}}}
	dst := netip.MustParseAddr("ff02::1:ff00:10")
	body, err := ndp.MarshalMessageChecksum(ns, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 40)
	hdr[0] = 0x60
	hdr[4], hdr[5] = byte(len(body)>>8), byte(len(body))
	hdr[6], hdr[7] = 58, hop
	s, d := src.As16(), dst.As16()
	copy(hdr[8:], s[:])
	copy(hdr[24:], d[:])
	f := ethernet.Frame{Destination: solicitedNodeMAC(target), Source: rClientMAC, EtherType: etherTypeIPv6, Payload: append(hdr, body...)}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestARPReply(t *testing.T) {
	out, err := arpReply(arpRequest(t, testVIP4, arp.OperationRequest), rAnswers(), rIfMAC)
	if err != nil {
		t.Fatalf("arpReply() = %v", err)
	}
	var f ethernet.Frame
	var p arp.Packet
	if err := f.UnmarshalBinary(out); err != nil {
		t.Fatal(err)
	}
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatal(err)
	}
	type got struct {
		EthDst, EthSrc, Sender, Target string
		Op                             arp.Operation
		SenderIP, TargetIP             netip.Addr
	}
	want := got{rClientMAC.String(), rIfMAC.String(), "01:00:5e:4d:53:01", rClientMAC.String(), arp.OperationReply, testVIP4, rClient4}
	if diff := cmp.Diff(want, got{f.Destination.String(), f.Source.String(), p.SenderHardwareAddr.String(), p.TargetHardwareAddr.String(), p.Operation, p.SenderIP, p.TargetIP}, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("arp reply (-want +got):\n%s", diff)
	}

	ignored := map[string][]byte{
		"other target": arpRequest(t, netip.MustParseAddr("192.0.2.99"), arp.OperationRequest),
		"reply":        arpRequest(t, testVIP4, arp.OperationReply),
	}
	for name, frame := range ignored {
		t.Run(name, func(t *testing.T) {
			if _, err := arpReply(frame, rAnswers(), rIfMAC); !errors.Is(err, errNotForUs) {
				t.Errorf("arpReply() = %v, want errNotForUs", err)
			}
		})
	}
	req := arpRequest(t, testVIP4, arp.OperationRequest)
	for n := 0; n < 14+28; n++ {
		if _, err := arpReply(req[:n], rAnswers(), rIfMAC); err == nil || errors.Is(err, errNotForUs) {
			t.Errorf("arpReply(cut at %d) = %v, want a malformed error", n, err)
		}
	}
}

func TestNDPReply(t *testing.T) {
	out, err := ndpReply(nsFrame(t, rClient6, testVIP6, 255), rAnswers(), rIfMAC)
	if err != nil {
		t.Fatalf("ndpReply() = %v", err)
	}
	var f ethernet.Frame
	if err := f.UnmarshalBinary(out); err != nil {
		t.Fatal(err)
	}
	msg, err := ndp.ParseMessage(f.Payload[40:])
	if err != nil {
		t.Fatalf("parse advertisement: %v", err)
	}
	na, ok := msg.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("reply is %T, want advertisement", msg)
	}
	want := &ndp.NeighborAdvertisement{Solicited: true, Override: true, TargetAddress: testVIP6,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: net.HardwareAddr{0x33, 0x33, 0x5e, 0x4d, 0x53, 0x01}}}}
	if diff := cmp.Diff(want, na, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("advertisement (-want +got):\n%s", diff)
	}
	if f.Destination.String() != rClientMAC.String() || f.Source.String() != rIfMAC.String() {
		t.Errorf("ethernet %s -> %s, want %s -> %s", f.Source, f.Destination, rIfMAC, rClientMAC)
	}
	if got := netip.AddrFrom16([16]byte(f.Payload[24:40])); got != rClient6 {
		t.Errorf("ipv6 destination %s, want %s", got, rClient6)
	}
	if _, err := ndpReply(nsFrame(t, rClient6, netip.MustParseAddr("2001:db8::99"), 255), rAnswers(), rIfMAC); !errors.Is(err, errNotForUs) {
		t.Errorf("ndpReply(other target) = %v, want errNotForUs", err)
	}
	if _, err := ndpReply(nsFrame(t, rClient6, testVIP6, 64), rAnswers(), rIfMAC); err == nil || errors.Is(err, errNotForUs) {
		t.Errorf("ndpReply(hop limit 64) = %v, want a malformed error", err)
	}
	full := nsFrame(t, rClient6, testVIP6, 255)
	for n := 14; n < len(full)-8; n++ { // the last 8 bytes are the optional source link-layer option
		if out, err := ndpReply(full[:n], rAnswers(), rIfMAC); err == nil {
			t.Errorf("ndpReply(cut at %d) answered %x, want an error", n, out)
		}
	}
}

// seeds reads hex-encoded frames from testdata/<name>, one per line.
func seeds(f *testing.F, name string) {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		frame, err := hex.DecodeString(line)
		if err != nil {
			f.Fatalf("%s: %v", name, err)
		}
		f.Add(frame)
	}
}

func FuzzARPReply(f *testing.F) {
	seeds(f, "arp_frames.hex")
	f.Fuzz(func(t *testing.T, frame []byte) {
		out, err := arpReply(frame, rAnswers(), rIfMAC)
		if err != nil {
			return
		}
		var e ethernet.Frame
		var p arp.Packet
		if err := e.UnmarshalBinary(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if err := p.UnmarshalBinary(e.Payload); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if _, ok := rAnswers()[p.SenderIP]; !ok || p.Operation != arp.OperationReply {
			t.Fatalf("answered for %s op %v", p.SenderIP, p.Operation)
		}
	})
}

func FuzzNDPReply(f *testing.F) {
	seeds(f, "ndp_frames.hex")
	f.Fuzz(func(t *testing.T, frame []byte) {
		out, err := ndpReply(frame, rAnswers(), rIfMAC)
		if err != nil {
			return
		}
		var e ethernet.Frame
		if err := e.UnmarshalBinary(out); err != nil || len(e.Payload) < 40 {
			t.Fatalf("reply does not parse: %v", err)
		}
		msg, err := ndp.ParseMessage(e.Payload[40:])
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if na, ok := msg.(*ndp.NeighborAdvertisement); !ok || rAnswers()[na.TargetAddress] == nil {
			t.Fatalf("answered %+v", msg)
		}
	})
}

// TestWriteSeeds regenerates testdata when SHOAL_WRITE_SEEDS=1.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("SHOAL_WRITE_SEEDS") != "1" {
		t.Skip("set SHOAL_WRITE_SEEDS=1 to regenerate testdata")
	}
	arpReq := arpRequest(t, testVIP4, arp.OperationRequest)
	arpLines := []string{"# hex Ethernet frames seeding FuzzARPReply", hex.EncodeToString(arpReq), hex.EncodeToString(arpReq[:30]),
		hex.EncodeToString(arpRequest(t, testVIP4, arp.OperationReply))}
	ns := nsFrame(t, rClient6, testVIP6, 255)
	ndpLines := []string{"# hex Ethernet frames seeding FuzzNDPReply", hex.EncodeToString(ns), hex.EncodeToString(ns[:60]),
		hex.EncodeToString(nsFrame(t, netip.IPv6Unspecified(), testVIP6, 255))}
	for name, lines := range map[string][]string{"testdata/arp_frames.hex": arpLines, "testdata/ndp_frames.hex": ndpLines} {
		if err := os.WriteFile(name, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
