package gossip

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/shoal-project/shoal/gossip/wire"
)

// Bad packets are dropped and counted by reason; the receiver keeps working
// and none of them changes its view (most are leave packets that would
// remove n1 if accepted).
func TestRejections(t *testing.T) {
	c := newTestCluster(t, 3, testInterval)
	all := seq(3)
	c.waitViews(all, names(all...), 10*time.Second)

	// Capture one real heartbeat of n1 to replay it.
	tap := c.net.Tap(netip.MustParseAddr("198.51.100.250"))
	var captured []byte
	waitFor(t, 5*time.Second, "a heartbeat of n1 on the tap", func() (bool, string) {
		for {
			select {
			case p := <-tap.Recv():
				if d, err := wire.Decode(p.Data); err == nil && d.Node == "n1" && d.Type == wire.TypeHeartbeat {
					captured = p.Data
					return true, ""
				}
			default:
				return false, "no packet yet"
			}
		}
	})
	tap.Close()

	n1 := c.agent(0)
	epoch := n1.BootEpoch()
	leave := func(mut func(p *wire.Packet), key ed25519.PrivateKey) []byte {
		p := &wire.Packet{Type: wire.TypeLeave, Cluster: "test", Node: "n1", BootEpoch: epoch, Seq: 1 << 40,
			SendTime: time.Now().UnixNano(), Health: wire.Health{OK: true}}
		mut(p)
		b, err := wire.Encode(p, key)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return b
	}
	stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xee}, 32))
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"forged leave (wrong key)", leave(func(*wire.Packet) {}, stranger), RejectBadSignature},
		{"replayed heartbeat", captured, RejectReplay},
		{"old boot epoch", leave(func(p *wire.Packet) { p.BootEpoch = epoch - 1 }, testKey(0)), RejectReplay},
		{"wrong cluster", leave(func(p *wire.Packet) { p.Cluster = "other" }, testKey(0)), RejectWrongCluster},
		{"unknown node", leave(func(p *wire.Packet) { p.Node = "intruder" }, stranger), RejectUnknownNode},
		{"send time an hour old", leave(func(p *wire.Packet) { p.SendTime = time.Now().Add(-time.Hour).UnixNano() }, testKey(0)), RejectClock},
		{"send time in the future", leave(func(p *wire.Packet) { p.SendTime = time.Now().Add(time.Hour).UnixNano() }, testKey(0)), RejectClock},
		{"oversize", make([]byte, wire.MaxSize+100), RejectOversize},
		{"garbage", []byte("hello, world"), RejectMalformed},
		{"truncated", captured[:len(captured)/2], RejectMalformed},
	}
	n2 := c.agent(1)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := n2.Stats().Rejected[tc.reason]
			c.net.Inject(testAddr(0), testAddr(1), tc.data)
			waitFor(t, 2*time.Second, fmt.Sprintf("Rejected[%s] to increase", tc.reason), func() (bool, string) {
				got := n2.Stats().Rejected[tc.reason]
				return got > before, fmt.Sprintf("Rejected[%s] = %d, was %d", tc.reason, got, before)
			})
		})
	}
	// Still working: n1 stays up at n2 and heartbeats keep flowing.
	acc := n2.Stats().Accepted
	waitFor(t, 2*time.Second, "n2 to accept new packets", func() (bool, string) {
		return n2.Stats().Accepted > acc+2, "no new packets accepted"
	})
	c.waitViews(all, names(all...), time.Second)
	if ms := n2.Members(); ms[0].State != "up" {
		t.Errorf("n2 sees n1 as %q after bad packets, want up", ms[0].State)
	}
}

func TestReplayWindow(t *testing.T) {
	type step struct {
		epoch, seq uint64
		ok         bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{1, 1, true}, {1, 2, true}, {1, 3, true}}},
		{"duplicate", []step{{1, 5, true}, {1, 5, false}}},
		{"reordered within window", []step{{1, 10, true}, {1, 8, true}, {1, 9, true}, {1, 8, false}, {1, 11, true}}},
		{"too old", []step{{1, 100, true}, {1, 36, false}, {1, 37, true}}},
		{"big jump clears window", []step{{1, 1, true}, {1, 1000, true}, {1, 999, true}, {1, 1, false}}},
		{"new epoch resets", []step{{1, 50, true}, {2, 1, true}, {1, 51, false}, {2, 1, false}, {2, 2, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p peer
			for i, s := range tc.steps {
				newEpoch, ok := p.checkReplay(s.epoch, s.seq)
				if ok != s.ok {
					t.Fatalf("step %d: checkReplay(%d, %d) = %v, want %v", i, s.epoch, s.seq, ok, s.ok)
				}
				if ok {
					p.commitReplay(s.epoch, s.seq, newEpoch)
					p.heard = true
				}
			}
		})
	}
}

// A packet older than the sender's latest (reordered, or queued behind an
// unresolved neighbour while the sender's link was cut and flushed when it
// came back) is accepted but must not bring back the health it carried:
// n1 failed its self-tests, and a stale "healthy" packet of n1 must not put
// it back into n2's view, not even until n1's next heartbeat.
func TestStalePacketKeepsState(t *testing.T) {
	c := newTestCluster(t, 3, testInterval)
	all := seq(3)
	c.waitViews(all, names(all...), 10*time.Second)
	n1, n2 := c.agent(0), c.agent(1)
	n1.SetHealth(Health{OK: false, Reasons: []string{"test"}})
	c.waitViews([]int{1, 2}, names(1, 2), 5*time.Second)

	// Two packets of n1 with sequence numbers ahead of anything it sent: a
	// newer one that still says failed, then an older one saying healthy
	// (as if delayed). Both are accepted; only the first is n1's state.
	n2.mu.Lock()
	pr := n2.peers["n1"]
	epoch, top := pr.epoch, pr.seqMax+3
	n2.mu.Unlock()
	packet := func(seq uint64, ok bool) []byte {
		b, err := wire.Encode(&wire.Packet{Type: wire.TypeHeartbeat, Cluster: "test", Node: "n1", BootEpoch: epoch, Seq: seq,
			SendTime: time.Now().UnixNano(), Health: wire.Health{OK: ok, Reasons: []string{"test"}}}, testKey(0))
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return b
	}
	before := n2.Stats()
	seen := len(c.eventsOf(1))
	c.net.Inject(testAddr(0), testAddr(1), packet(top, false))
	c.net.Inject(testAddr(0), testAddr(1), packet(top-1, true))
	waitFor(t, 2*time.Second, "n2 to accept the stale packet", func() (bool, string) {
		s := n2.Stats()
		return s.Stale > before.Stale, fmt.Sprintf("stale %d accepted %d", s.Stale, s.Accepted)
	})
	// Let n1's next heartbeats (still failed) arrive, then check that no
	// view n2 had in between held n1. Other view changes (a member of the
	// test cluster briefly suspected on a loaded machine) do not count.
	time.Sleep(2 * testInterval)
	if v := n2.View(); slices.Contains(v.Up, "n1") {
		t.Errorf("after a stale healthy packet n2's view is %v: want n1 out", v.Up)
	}
	for _, ev := range c.eventsOf(1)[seen:] {
		if ev.Type == EventViewChange && ev.View != nil && slices.Contains(ev.View.Up, "n1") {
			t.Errorf("a stale packet put n1 back into n2's view: %v at %s", ev.View.Up, ev.Time.Format("15:04:05.000"))
		}
	}
}

// Packets older than the sender's latest by more than an interval (a backlog
// flushed after a link cut) and replays are dropped before the signature is
// checked: a backlog packet with a bad signature counts as backlog, a replay
// with one as a replay. A merely reordered packet (within an interval) is
// still verified and accepted as stale.
func TestBacklogDroppedBeforeVerification(t *testing.T) {
	c := newTestCluster(t, 2, testInterval)
	all := seq(2)
	c.waitViews(all, names(all...), 10*time.Second)
	n2 := c.agent(1)
	// The send times below reach back 3 intervals: n1 must have booted
	// before them (a packet sent before its sender's boot is refused).
	time.Sleep(4 * testInterval)
	n2.mu.Lock()
	pr := n2.peers["n1"]
	epoch, top := pr.epoch, pr.seqMax+100
	n2.mu.Unlock()
	packet := func(seq uint64, sent time.Time, key int) []byte {
		b, err := wire.Encode(&wire.Packet{Type: wire.TypeHeartbeat, Cluster: "test", Node: "n1", BootEpoch: epoch, Seq: seq,
			SendTime: sent.UnixNano(), Health: wire.Health{OK: true}}, testKey(key))
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return b
	}
	now := time.Now()
	before := n2.Stats()
	c.net.Inject(testAddr(0), testAddr(1), packet(top, now, 0))
	waitFor(t, 2*time.Second, "n2 to accept the newest packet", func() (bool, string) {
		n2.mu.Lock()
		defer n2.mu.Unlock()
		return pr.seqMax == top, fmt.Sprintf("seqMax %d", pr.seqMax)
	})
	c.net.Inject(testAddr(0), testAddr(1), packet(top-1, now.Add(-3*testInterval), 1)) // backlog, forged
	c.net.Inject(testAddr(0), testAddr(1), packet(top, now, 1))                        // replay, forged
	c.net.Inject(testAddr(0), testAddr(1), packet(top-2, now.Add(-testInterval/2), 0)) // reordered
	waitFor(t, 2*time.Second, "n2 to count all three", func() (bool, string) {
		s := n2.Stats()
		return s.Backlog > before.Backlog && s.Rejected[RejectReplay] > before.Rejected[RejectReplay] && s.Stale > before.Stale,
			fmt.Sprintf("backlog %d replay %d stale %d rejected %v accepted %d", s.Backlog, s.Rejected[RejectReplay], s.Stale, s.Rejected, s.Accepted-before.Accepted)
	})
	s := n2.Stats()
	if d := s.Rejected[RejectBadSignature] - before.Rejected[RejectBadSignature]; d != 0 {
		t.Errorf("%d packets rejected for their signature: backlog and replay must be dropped before verification", d)
	}
	if d := s.Backlog - before.Backlog; d != 1 {
		t.Errorf("backlog dropped %d, want 1", d)
	}
}

// serf's "failed" takes a member out of the view only while the heartbeat
// detector does not hear it either; "left" always does.
func TestSerfFailedNeedsSilence(t *testing.T) {
	for _, tc := range []struct {
		serf    string
		suspect bool
		up      bool
	}{
		{"alive", false, true},
		{"failed", false, true}, // heartbeats arrive: memberlist is wrong
		{"failed", true, false}, // silent here too
		{"left", false, false},
		{"", true, true}, // suspicion alone is not down (the window decides)
	} {
		p := &peer{heard: true, health: Health{OK: true}, serfStatus: tc.serf, suspect: tc.suspect}
		if got := p.isUp(); got != tc.up {
			t.Errorf("serf %q, suspect %v: isUp() = %v, want %v (%s)", tc.serf, tc.suspect, got, tc.up, p.whyNotUp())
		}
	}
}
