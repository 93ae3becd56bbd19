package appliance

import (
	"net/netip"
	"testing"
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
