package appliance

import (
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestLinkUpFunc(t *testing.T) {
	// The loopback interface is up and running in any namespace a test
	// runs in; an address nobody holds reports up (no judgement).
	if !linkUpFunc("", netip.MustParseAddr("127.0.0.1"))() {
		t.Error("lo (found by 127.0.0.1) reported down")
	}
	if !linkUpFunc("", netip.MustParseAddr("192.0.2.254"))() {
		t.Error("an address held by no interface reported down, want up (unknown)")
	}
	if !linkUpFunc("no-such-if0", netip.Addr{})() {
		t.Error("a missing interface reported down, want up (unknown)")
	}
}

// A link that is up but has no carrier (a veth whose peer is down) reports
// down; it reports up once the carrier is there, by name and found by its
// address.
func TestLinkUpFuncCarrier(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a veth pair")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // switches this thread
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("restore network namespace: " + err.Error()) // never run on in the wrong namespace
		}
	}()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hb0"}, PeerName: "hb1"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	hb0, err := h.LinkByName("hb0")
	if err != nil {
		t.Fatalf("hb0: %v", err)
	}
	hb1, err := h.LinkByName("hb1")
	if err != nil {
		t.Fatalf("hb1: %v", err)
	}
	addr, _ := netlink.ParseAddr("198.51.100.7/24")
	if err := h.AddrAdd(hb0, addr); err != nil {
		t.Fatalf("add address: %v", err)
	}
	if err := h.LinkSetUp(hb0); err != nil {
		t.Fatalf("hb0 up: %v", err)
	}
	byName := linkUpFunc("hb0", netip.Addr{})
	byAddr := linkUpFunc("", netip.MustParseAddr("198.51.100.7"))
	// IFF_RUNNING follows the operational state, which the kernel's
	// linkwatch updates asynchronously: wait (bounded) for each change.
	settle := func(want bool) {
		deadline := time.Now().Add(3 * time.Second)
		for byName() != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	settle(false)
	if byName() || byAddr() {
		t.Errorf("hb0 up without carrier (peer down): by name %v, by address %v, want down", byName(), byAddr())
	}
	if err := h.LinkSetUp(hb1); err != nil {
		t.Fatalf("hb1 up: %v", err)
	}
	settle(true)
	if !byName() || !byAddr() {
		t.Errorf("hb0 with carrier: by name %v, by address %v, want up", byName(), byAddr())
	}
	if err := h.LinkSetDown(hb1); err != nil {
		t.Fatalf("hb1 down: %v", err)
	}
	settle(false)
	if byName() {
		t.Error("hb0 after its peer went down: reported up, want down")
	}
}
