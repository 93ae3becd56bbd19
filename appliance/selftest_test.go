package appliance

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestSelfTestDebounce(t *testing.T) {
	st := newSelfTester(SelfTestConfig{FailAfter: 2, RecoverAfter: 3}, nil, nil)
	steps := []struct {
		reasons []string
		wantOK  bool
		changed bool
	}{
		{nil, true, false},
		{[]string{"x"}, true, false}, // one failed round is not enough
		{[]string{"x"}, false, true}, // two are
		{nil, false, false},
		{nil, false, false},
		{nil, true, true}, // three passes recover
		{[]string{"y"}, true, false},
		{nil, true, false}, // a pass resets the failure run
		{[]string{"y"}, true, false},
	}
	for i, s := range steps {
		res, changed := st.record(s.reasons)
		if res.OK != s.wantOK || changed != s.changed {
			t.Errorf("round %d record(%v) = ok %v changed %v, want ok %v changed %v", i, s.reasons, res.OK, changed, s.wantOK, s.changed)
		}
	}
}

func TestSelfTestRound(t *testing.T) {
	links := map[string]bool{"eth0": true, "eth1": false}
	st := newSelfTester(SelfTestConfig{
		Gateway:  netip.MustParseAddr("192.0.2.1"),
		CheckIPs: []netip.Addr{netip.MustParseAddr("192.0.2.2")},
		Links:    []string{"eth0", "eth1", "eth2"},
	}, func(name string) (bool, error) {
		up, ok := links[name]
		if !ok {
			return false, errors.New("no such interface")
		}
		return up, nil
	}, func() time.Time { return time.Now().Add(-time.Minute) })
	st.pinger = func(_ context.Context, ip netip.Addr, _ time.Duration) error {
		if ip.String() == "192.0.2.1" {
			return nil
		}
		return errors.New("timeout")
	}
	got := st.round(context.Background())
	want := []string{
		"agent loop stalled",
		"check ip 192.0.2.2 unreachable",
		"link eth1 is down",
		"link eth2: no such interface",
	}
	if len(got) != len(want) {
		t.Fatalf("round() = %q, want %d reasons like %q", got, len(want), want)
	}
	for i := range want {
		if len(got[i]) < len(want[i]) || got[i][:len(want[i])] != want[i] {
			t.Errorf("reason %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

// A link down in two rounds but seen up in between (a flap) does not fail
// the node; down in two rounds with no sighting in between does.
func TestSelfTestLinkFlap(t *testing.T) {
	up := false
	st := newSelfTester(SelfTestConfig{FailAfter: 2, RecoverAfter: 3, Links: []string{"eth0"}},
		func(string) (bool, error) { return up, nil }, nil)
	roundOK := func(what string, want bool) {
		t.Helper()
		if res, _ := st.record(st.round(context.Background())); res.OK != want {
			t.Fatalf("%s: OK = %v, want %v (reasons %q)", what, res.OK, want, res.Reasons)
		}
	}
	roundOK("first round with the link down", true)
	up = true
	st.pollLinks() // up between the rounds
	up = false
	roundOK("down again in the next round, up in between", true)
	st.pollLinks() // still down
	roundOK("down for a whole interval", false)
}

// The TCP fallback treats a refused connection as proof of reachability.
func TestPingTCPFallbackRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // nothing listens now: connecting is refused
	d := net.Dialer{Timeout: time.Second}
	_, err = d.Dial("tcp", ln.Addr().String())
	if err == nil {
		t.Skip("port unexpectedly open")
	}
	if err := ping(context.Background(), netip.MustParseAddr("127.0.0.1"), time.Second); err != nil {
		t.Errorf("ping(127.0.0.1) = %v, want reachable", err)
	}
}
