package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/rs/zerolog"
)

// cmpAddrs compares netip values by ==.
var cmpAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

var (
	eth0 = LinkInfo{Index: 2, Name: "eth0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, MTU: 1500, Up: true}
	eth1 = LinkInfo{Index: 3, Name: "eth1", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, MTU: 1500, Up: true}
)

var (
	ipA  = netip.MustParseAddr("192.0.2.10")
	ipB  = netip.MustParseAddr("192.0.2.11")
	ipC  = netip.MustParseAddr("198.51.100.7")
	ip6A = netip.MustParseAddr("2001:db8::10")
	ip6B = netip.MustParseAddr("2001:db8::11")
)

// quiet is an announce config that sends one round and no refresh.
var quiet = Announce{Count: 1, Spread: time.Millisecond}

func addr(group string, ip netip.Addr, iface string) Address {
	return Address{Group: group, IP: ip, Interface: iface, Announce: quiet}
}

type harness struct {
	t    *testing.T
	m    *Manager
	k    *FakeKernel
	a    *FakeAnnouncer
	dir  string
	done chan error
}

// start runs a Manager on k with a fresh announcer; dir "" = a temp dir.
func start(t *testing.T, k *FakeKernel, dir string, mod func(*Options)) *harness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	h := &harness{t: t, k: k, a: &FakeAnnouncer{}, dir: dir, done: make(chan error, 1)}
	opts := Options{
		StateDir: dir, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		Kernel: k, Announcer: h.a, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	h.m = m
	go func() { h.done <- m.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run() = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after Close")
		}
	})
	return h
}

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 10s: %s", what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kernelIs waits for the fake kernel to hold exactly want.
func (h *harness) kernelIs(what string, want []KernelAddr) {
	h.t.Helper()
	eventually(h.t, what, func() string {
		return cmp.Diff(want, h.k.Snapshot(), cmpopts.EquateEmpty(), cmpAddrs)
	})
}

func (h *harness) converged(what string) Status {
	h.t.Helper()
	var st Status
	eventually(h.t, what, func() string {
		st = h.m.Status()
		if !st.Converged {
			return "not converged; last error: " + st.LastError
		}
		return ""
	})
	return st
}

func ka(link LinkInfo, p string, label string, flags int) KernelAddr {
	return KernelAddr{LinkIndex: link.Index, Prefix: netip.MustParsePrefix(p), Label: label, Flags: flags}
}

func TestRaiseAndDrop(t *testing.T) {
	tests := []struct {
		name string
		addr Address
		want KernelAddr
	}{
		{"ipv4 host", addr("web", ipA, "eth0"), ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)},
		{"ipv6 host", addr("web", ip6A, "eth0"), ka(eth0, "2001:db8::10/128", "", FlagNoPrefixRoute|FlagNoDAD)},
		{"ipv4 prefix route", Address{Group: "web", IP: ipB, Interface: "eth1", PrefixLen: 24, PrefixRoute: true, Announce: quiet},
			ka(eth1, "192.0.2.11/24", "eth1:sh", 0)},
		{"ipv6 prefix no route", Address{Group: "web", IP: ip6B, Interface: "eth1", PrefixLen: 64, Announce: quiet},
			ka(eth1, "2001:db8::11/64", "", FlagNoPrefixRoute|FlagNoDAD)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, NewFakeKernel(eth0, eth1), "", nil)
			h.m.Apply(Desired{Addresses: []Address{tc.addr}})
			h.kernelIs("raise", []KernelAddr{tc.want})
			st := h.converged("raise")
			if len(st.Held) != 1 || st.Held[0].Prefix != tc.want.Prefix || st.Held[0].Group != "web" || st.Held[0].Since.IsZero() {
				t.Errorf("Status().Held = %+v, want one held %s of group web with a since-time", st.Held, tc.want.Prefix)
			}
			eventually(t, "announce", func() string {
				if n := len(h.a.Calls(tc.addr.IP)); n != 1 {
					return "announcement rounds: " + itoa(n)
				}
				return ""
			})
			h.m.Apply(Desired{})
			h.kernelIs("drop", nil)
			if st := h.converged("drop"); len(st.Held) != 0 {
				t.Errorf("Status().Held after drop = %+v, want none", st.Held)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestOnlyFirstOfDuplicatesAndOtherAddressesKept(t *testing.T) {
	k := NewFakeKernel(eth0)
	foreign := ka(eth0, "10.0.0.1/24", "eth0", 0x80)
	k.InjectAddr(foreign)
	h := start(t, k, "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("a", ipA, "eth0"), addr("b", ipA, "eth0")}})
	h.kernelIs("raise", []KernelAddr{foreign, ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)})
	if st := h.converged("raise"); st.Held[0].Group != "a" {
		t.Errorf("held group = %q, want the first duplicate's %q", st.Held[0].Group, "a")
	}
	h.m.Apply(Desired{})
	h.kernelIs("drop keeps the foreign address", []KernelAddr{foreign})
}

func TestRestoreRemovedByHand(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0"), addr("web", ip6A, "eth0")}})
	want := []KernelAddr{ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute), ka(eth0, "2001:db8::10/128", "", FlagNoPrefixRoute|FlagNoDAD)}
	h.kernelIs("raise", want)
	h.converged("raise")
	for i, ip := range []netip.Addr{ipA, ip6A} {
		if !h.k.RemoveAddr(ip) {
			t.Fatalf("RemoveAddr(%s) found nothing", ip)
		}
		h.kernelIs("restore "+ip.String(), want)
		eventually(t, "restored counter", func() string {
			if got := h.m.Status().Restored; got != uint64(i+1) {
				return "Restored = " + itoa(int(got))
			}
			return ""
		})
	}
	// A restored address is announced again.
	eventually(t, "re-announce", func() string {
		if n := len(h.a.Calls(ipA)); n < 2 {
			return "rounds for " + ipA.String() + ": " + itoa(n)
		}
		return ""
	})
}

func TestRestoreFightIsRateLimited(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", func(o *Options) {
		o.RetryMin, o.RetryMax = 100*time.Millisecond, time.Second
	})
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	h.converged("raise")
	// Something removes the address as fast as it can for a second.
	stop := time.Now().Add(time.Second)
	for time.Now().Before(stop) {
		h.k.RemoveAddr(ipA)
		time.Sleep(2 * time.Millisecond)
	}
	adds, _ := h.k.Ops()
	// Unthrottled, every removal (~hundreds) would be answered by an add.
	// With backoff from 100ms doubling, a second allows about 5.
	if adds > 15 {
		t.Errorf("AddrAdd calls during a 1s removal fight = %d, want <= 15 (backoff)", adds)
	}
	if adds < 2 {
		t.Errorf("AddrAdd calls during a 1s removal fight = %d, want >= 2 (restoring)", adds)
	}
	h.kernelIs("restored after the fight", []KernelAddr{ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)})
}

func TestDADFailedReRaised(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ip6A, "eth0")}})
	want := []KernelAddr{ka(eth0, "2001:db8::10/128", "", FlagNoPrefixRoute|FlagNoDAD)}
	h.kernelIs("raise", want)
	h.converged("raise")
	h.k.SetAddrFlags(ip6A, FlagNoPrefixRoute|FlagNoDAD|FlagDADFailed)
	h.kernelIs("re-raised without dadfailed", want)
	eventually(t, "restored counter", func() string {
		if got := h.m.Status().Restored; got != 1 {
			return "Restored = " + itoa(int(got))
		}
		return ""
	})
}

func TestWrongPrefixReRaised(t *testing.T) {
	k := NewFakeKernel(eth0)
	k.InjectAddr(ka(eth0, "192.0.2.10/24", "eth0:sh", 0))
	h := start(t, k, "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	h.kernelIs("re-raised as host address", []KernelAddr{ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)})
}

func TestStaleCleanupOnStart(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	err := writeRecord(dir, []recordEntry{
		{Group: "old", Interface: "eth0", Prefix: netip.MustParsePrefix("2001:db8::11/128"), Since: since}, // stale, v6: record only
		{Group: "web", Interface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.10/32"), Since: since},    // desired: adopted
		{Group: "gone", Interface: "eth7", Prefix: netip.MustParsePrefix("192.0.2.99/32"), Since: since},   // interface gone
	})
	if err != nil {
		t.Fatal(err)
	}
	k := NewFakeKernel(eth0, eth1)
	foreign := ka(eth0, "10.0.0.1/24", "eth0", 0x80)
	foreign6 := ka(eth1, "2001:db8::99/64", "", 0x80)
	keep := ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)
	for _, a := range []KernelAddr{
		foreign, foreign6, keep,
		ka(eth0, "2001:db8::11/128", "", FlagNoPrefixRoute|FlagNoDAD), // stale by record
		ka(eth1, "198.51.100.7/32", "eth1:sh", FlagNoPrefixRoute),     // stale by label
	} {
		k.InjectAddr(a)
	}
	h := start(t, k, dir, nil)
	// Nothing is touched before the first desired state.
	time.Sleep(50 * time.Millisecond)
	if adds, dels := k.Ops(); adds+dels != 0 {
		t.Fatalf("kernel operations before the first Apply: %d adds, %d deletes; want none", adds, dels)
	}
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	h.kernelIs("stale dropped", []KernelAddr{foreign, keep, foreign6})
	st := h.converged("stale dropped")
	if len(st.Held) != 1 || !st.Held[0].Since.Equal(since) {
		t.Errorf("Status().Held = %+v, want the adopted %s with since %v from the record", st.Held, ipA, since)
	}
	if adds, _ := k.Ops(); adds != 0 {
		t.Errorf("AddrAdd calls = %d, want 0 (the desired address was adopted)", adds)
	}
	rec, err := readRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []recordEntry{{Group: "web", Interface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.10/32"), Since: since}}
	if d := cmp.Diff(want, rec, cmpAddrs); d != "" {
		t.Errorf("state record after cleanup (-want +got):\n%s", d)
	}
}

func TestRestartRecognisesOwnIPv6(t *testing.T) {
	dir := t.TempDir()
	k := NewFakeKernel(eth0)
	h := start(t, k, dir, nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ip6A, "eth0"), addr("web", ipA, "eth0")}})
	h.converged("raise")
	// Crash-like stop: nothing dropped.
	if err := h.m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(k.Snapshot()); n != 2 {
		t.Fatalf("addresses after Close = %d, want 2 (Close must not drop)", n)
	}
	h2 := start(t, k, dir, nil)
	h2.m.Apply(Desired{})
	h2.kernelIs("restart drops both, v6 known from the record", nil)
}

func TestFailedApplyKeepsLastGoodState(t *testing.T) {
	k := NewFakeKernel(eth0)
	h := start(t, k, "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	good := ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)
	h.kernelIs("raise", []KernelAddr{good})
	h.converged("raise")

	errPerm := errors.New("operation not permitted")
	k.FailAdd(func(a KernelAddr) error {
		if a.Prefix.Addr() == ipB {
			return errPerm
		}
		return nil
	})
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0"), addr("api", ipB, "eth0")}})
	f := recvFailure(t, h.m)
	if d := cmp.Diff(GroupFailure{Group: "api", Interface: "eth0", Failed: true}, f,
		cmpopts.IgnoreFields(GroupFailure{}, "Since", "Reason")); d != "" {
		t.Errorf("failure (-want +got):\n%s", d)
	}
	st := h.m.Status()
	if st.Converged || st.LastError == "" {
		t.Errorf("Status() = converged %v, last error %q; want not converged with an error", st.Converged, st.LastError)
	}
	if d := cmp.Diff([]KernelAddr{good}, k.Snapshot(), cmpAddrs); d != "" {
		t.Errorf("kernel after failed raise (-want +got):\n%s", d)
	}

	// A failed delete keeps the address held and is retried.
	k.FailDel(func(KernelAddr) error { return errPerm })
	h.m.Apply(Desired{})
	eventually(t, "delete retried", func() string {
		if _, dels := k.Ops(); dels < 2 {
			return "deletes: " + itoa(dels)
		}
		return ""
	})
	if st := h.m.Status(); len(st.Held) != 1 || st.Converged {
		t.Errorf("Status() after failed delete: held %+v converged %v; want the address still held, not converged", st.Held, st.Converged)
	}
	k.FailDel(nil)
	h.kernelIs("delete succeeds on retry", nil)
	h.converged("dropped")
}

func recvFailure(t *testing.T, m *Manager) GroupFailure {
	t.Helper()
	select {
	case f := <-m.Failures():
		return f
	case <-time.After(10 * time.Second):
		t.Fatalf("no group failure delivered within 10s; status %+v", m.Status())
		return GroupFailure{}
	}
}

func TestBackoffNoHotLoop(t *testing.T) {
	k := NewFakeKernel(eth0)
	h := start(t, k, "", func(o *Options) {
		o.RetryMin, o.RetryMax = 100*time.Millisecond, 400*time.Millisecond
	})
	k.FailAdd(func(KernelAddr) error { return errors.New("no buffer space") })
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	// Unrelated kernel changes wake the loop often; they must not bypass
	// the backoff.
	stop := time.Now().Add(1500 * time.Millisecond)
	for i := 0; time.Now().Before(stop); i++ {
		k.SetLinkUp("eth0", true)
		time.Sleep(5 * time.Millisecond)
	}
	adds, _ := k.Ops()
	// 100, 200, 400, 400... ms: about 5 attempts in 1.5s.
	if adds < 2 || adds > 15 {
		t.Errorf("AddrAdd attempts in 1.5s with backoff 100ms..400ms = %d, want 2..15", adds)
	}
	k.FailAdd(nil)
	h.kernelIs("raised once the kernel accepts", []KernelAddr{ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)})
}

func TestListFailureRetried(t *testing.T) {
	k := NewFakeKernel(eth0)
	k.FailList(errors.New("dump interrupted"))
	h := start(t, k, "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	eventually(t, "error reported", func() string {
		if h.m.Status().LastError == "" {
			return "no last error"
		}
		return ""
	})
	k.FailList(nil)
	h.kernelIs("raised after list recovers", []KernelAddr{ka(eth0, "192.0.2.10/32", "eth0:sh", FlagNoPrefixRoute)})
}

func TestMissingAndDownInterface(t *testing.T) {
	k := NewFakeKernel(eth0)
	h := start(t, k, "", nil)
	h.m.Apply(Desired{
		Addresses: []Address{addr("web", ipA, "eth1")},
		Links:     []GroupLink{{Group: "api", Interface: "eth0"}},
	})
	f := recvFailure(t, h.m)
	if !f.Failed || f.Group != "web" || f.Interface != "eth1" {
		t.Fatalf("failure = %+v, want web failed on eth1", f)
	}
	// The interface appears: the address is raised and the group recovers.
	k.SetLink(eth1)
	h.kernelIs("raised on new interface", []KernelAddr{ka(eth1, "192.0.2.10/32", "eth1:sh", FlagNoPrefixRoute)})
	if f := recvFailure(t, h.m); f.Failed || f.Group != "web" {
		t.Errorf("failure = %+v, want web recovered", f)
	}
	// A watched group holding nothing here: its interface goes down.
	k.SetLinkUp("eth0", false)
	if f := recvFailure(t, h.m); !f.Failed || f.Group != "api" || f.Interface != "eth0" {
		t.Errorf("failure = %+v, want api failed on eth0", f)
	}
	k.SetLinkUp("eth0", true)
	if f := recvFailure(t, h.m); f.Failed || f.Group != "api" {
		t.Errorf("failure = %+v, want api recovered", f)
	}
	st := h.m.Status()
	want := []GroupFailure{{Group: "api", Interface: "eth0"}, {Group: "web", Interface: "eth1"}}
	if d := cmp.Diff(want, st.Groups, cmpopts.IgnoreFields(GroupFailure{}, "Since")); d != "" {
		t.Errorf("Status().Groups (-want +got):\n%s", d)
	}
}

func TestLinkUpAgainReannounces(t *testing.T) {
	k := NewFakeKernel(eth0)
	h := start(t, k, "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	h.converged("raise")
	eventually(t, "first burst", func() string {
		if n := len(h.a.Calls(ipA)); n != 1 {
			return "rounds: " + itoa(n)
		}
		return ""
	})
	k.SetLinkUp("eth0", false)
	if f := recvFailure(t, h.m); !f.Failed {
		t.Fatalf("failure = %+v, want web failed", f)
	}
	k.SetLinkUp("eth0", true)
	if f := recvFailure(t, h.m); f.Failed {
		t.Fatalf("failure = %+v, want web recovered", f)
	}
	eventually(t, "burst after link up", func() string {
		if n := len(h.a.Calls(ipA)); n != 2 {
			return "rounds: " + itoa(n)
		}
		return ""
	})
}

func TestDropAll(t *testing.T) {
	k := NewFakeKernel(eth0, eth1)
	foreign := ka(eth0, "10.0.0.1/24", "eth0", 0x80)
	k.InjectAddr(foreign)
	mh := &fakeMulti{}
	h := start(t, k, "", func(o *Options) { o.Multi = mh })
	groups := []MultiGroup{{Name: "m", Interface: "eth1", IPs: []netip.Addr{ipC}}}
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0"), addr("web", ip6A, "eth1")}, Multi: groups})
	h.converged("raise")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.m.DropAll(ctx); err != nil {
		t.Fatalf("DropAll() = %v", err)
	}
	if d := cmp.Diff([]KernelAddr{foreign}, k.Snapshot(), cmpAddrs); d != "" {
		t.Errorf("kernel after DropAll (-want +got):\n%s", d)
	}
	if got := mh.last(); len(got) != 0 {
		t.Errorf("last MultiHoster.Apply after DropAll = %v, want none", got)
	}
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	time.Sleep(100 * time.Millisecond)
	if d := cmp.Diff([]KernelAddr{foreign}, k.Snapshot(), cmpAddrs); d != "" {
		t.Errorf("kernel after Apply following DropAll (-want +got):\n%s", d)
	}
	if st := h.m.Status(); !st.Dropped || len(st.Held) != 0 {
		t.Errorf("Status() = dropped %v held %v; want dropped, nothing held", st.Dropped, st.Held)
	}
}

func TestDropAllTimesOut(t *testing.T) {
	k := NewFakeKernel(eth0)
	h := start(t, k, "", nil)
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0")}})
	h.converged("raise")
	k.FailDel(func(KernelAddr) error { return errors.New("operation not permitted") })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := h.m.DropAll(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DropAll() = %v, want deadline exceeded", err)
	}
}

func TestDropAllNeedsRun(t *testing.T) {
	m, err := New(Options{Kernel: NewFakeKernel(), Announcer: &FakeAnnouncer{}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.DropAll(context.Background()); !errors.Is(err, errNotRunning) {
		t.Errorf("DropAll() before Run = %v, want %v", err, errNotRunning)
	}
}

func TestAnnounceBurstRefreshReannounce(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", nil)
	a := Address{Group: "web", IP: ipA, Interface: "eth0",
		Announce: Announce{Count: 3, Spread: 200 * time.Millisecond, Refresh: 300 * time.Millisecond}}
	applied := time.Now()
	h.m.Apply(Desired{Addresses: []Address{a}})
	eventually(t, "burst and a refresh", func() string {
		if n := len(h.a.Calls(ipA)); n < 4 {
			return "rounds: " + itoa(n)
		}
		return ""
	})
	calls := h.a.Calls(ipA)
	// The first round goes at once (generous bound for a loaded machine),
	// the burst's rounds are spread, not sent back to back.
	if d := calls[0].At.Sub(applied); d > 2*time.Second {
		t.Errorf("first round %v after Apply, want immediate", d)
	}
	if d := calls[2].At.Sub(calls[0].At); d < 150*time.Millisecond {
		t.Errorf("burst of 3 over 200ms took %v, want spread (>= 150ms)", d)
	}
	if d := calls[3].At.Sub(calls[2].At); d < 250*time.Millisecond {
		t.Errorf("refresh came %v after the burst, want >= 250ms (Refresh 300ms)", d)
	}
	before := len(h.a.Calls(ipA))
	h.m.Reannounce()
	eventually(t, "reannounce burst", func() string {
		if n := len(h.a.Calls(ipA)); n < before+3 {
			return "rounds: " + itoa(n)
		}
		return ""
	})
	st := h.m.Status()
	if st.Announcements < uint64(before+3) || st.Held[0].Announcements < uint64(before+3) || st.Held[0].LastAnnounce.IsZero() {
		t.Errorf("Status() announcements = %d, held %+v; want >= %d", st.Announcements, st.Held[0], before+3)
	}
}

// An address in hand-off (make-before-break after a failback) stays raised
// but goes quiet at once: its burst stops, a Reannounce made right after
// the Apply that put it in hand-off skips it, and calling the hand-off off
// announces it afresh. The old holder's announcements would otherwise pull
// clients back from the new owner just before the old holder drops it.
func TestHandoffStopsAnnouncing(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", nil)
	a := Address{Group: "web", IP: ipA, Interface: "eth0",
		Announce: Announce{Count: 5, Spread: 2 * time.Second}}
	h.m.Apply(Desired{Addresses: []Address{a}})
	eventually(t, "first round", func() string {
		if n := len(h.a.Calls(ipA)); n < 1 {
			return "rounds: " + itoa(n)
		}
		return ""
	})
	ho := a
	ho.Handoff = true
	h.m.Apply(Desired{Addresses: []Address{ho}})
	h.m.Reannounce()
	eventually(t, "address still raised", func() string {
		if st := h.m.Status(); len(st.Held) != 1 {
			return fmt.Sprintf("held %+v", st.Held)
		}
		return ""
	})
	time.Sleep(50 * time.Millisecond) // let the loop take both requests
	quiet := len(h.a.Calls(ipA))
	time.Sleep(1200 * time.Millisecond) // > two rounds of the 5-over-2s burst
	if n := len(h.a.Calls(ipA)); n != quiet {
		t.Errorf("address in hand-off announced %d more rounds, want none", n-quiet)
	}
	if adds, dels := h.k.Ops(); adds != 1 || dels != 0 {
		t.Errorf("kernel ops during hand-off: %d adds, %d deletes; want the address kept (1 add, 0 deletes)", adds, dels)
	}
	h.m.Apply(Desired{Addresses: []Address{a}})
	eventually(t, "fresh burst after the hand-off is called off", func() string {
		if n := len(h.a.Calls(ipA)); n <= quiet {
			return "rounds: " + itoa(n)
		}
		return ""
	})
}

func TestAnnounceErrorsCountedAndRetried(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", nil)
	h.a.Fail(errors.New("network is down"))
	h.m.Apply(Desired{Addresses: []Address{{Group: "web", IP: ipA, Interface: "eth0", Announce: Announce{Count: 3, Spread: 200 * time.Millisecond}}}})
	eventually(t, "errors counted", func() string {
		if st := h.m.Status(); st.AnnounceErrors < 2 {
			return "errors " + itoa(int(st.AnnounceErrors))
		}
		return ""
	})
	// The link works again: the burst still delivers its 3 rounds.
	h.a.Fail(nil)
	eventually(t, "burst completed after errors", func() string {
		if n := len(h.a.Calls(ipA)); n != 3 {
			return "rounds: " + itoa(n)
		}
		return ""
	})
}

func TestAnnounceFailedBurstGivesUp(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", nil)
	h.a.Fail(errors.New("network is down"))
	h.m.Apply(Desired{Addresses: []Address{{Group: "web", IP: ipA, Interface: "eth0", Announce: Announce{Count: 2, Spread: 10 * time.Millisecond}}}})
	want := uint64(2 + burstExtraTries)
	eventually(t, "all tries spent", func() string {
		if st := h.m.Status(); st.AnnounceErrors != want {
			return "errors " + itoa(int(st.AnnounceErrors))
		}
		return ""
	})
	time.Sleep(100 * time.Millisecond)
	if st := h.m.Status(); st.AnnounceErrors != want || st.Announcements != 0 {
		t.Errorf("Status() errors %d, sent %d; want %d tries then nothing", st.AnnounceErrors, st.Announcements, want)
	}
}

type fakeMulti struct {
	mu     sync.Mutex
	calls  [][]MultiGroup
	err    error
	closed bool
}

func (f *fakeMulti) Apply(g []MultiGroup) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, g)
	return f.err
}

func (f *fakeMulti) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeMulti) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeMulti) last() []MultiGroup {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return nil
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeMulti) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func TestMultiHoster(t *testing.T) {
	k := NewFakeKernel(eth0)
	mh := &fakeMulti{}
	h := start(t, k, "", func(o *Options) { o.Multi = mh })
	g := []MultiGroup{{Name: "m", Interface: "eth0", IPs: []netip.Addr{ipC}, Owners: make([]uint8, NumBuckets)}}
	h.m.Apply(Desired{Multi: g})
	h.converged("multi applied")
	if d := cmp.Diff(g, mh.last(), cmpAddrs); d != "" || mh.n() != 1 {
		t.Fatalf("MultiHoster.Apply calls = %d, last (-want +got):\n%s", mh.n(), d)
	}
	// An equal desired state does not call it again; a changed one does.
	h.m.Apply(Desired{Multi: g})
	h.converged("same again")
	if mh.n() != 1 {
		t.Errorf("MultiHoster.Apply calls after an equal Apply = %d, want 1", mh.n())
	}
	mh.fail(errors.New("map update failed"))
	g2 := []MultiGroup{{Name: "m", Interface: "eth0", IPs: []netip.Addr{ipC}, SelfSlot: 1}}
	h.m.Apply(Desired{Multi: g2})
	f := recvFailure(t, h.m)
	if !f.Failed || f.Group != "m" {
		t.Errorf("failure = %+v, want m failed", f)
	}
	mh.fail(nil)
	h.converged("multi retried")
	if d := cmp.Diff(g2, mh.last(), cmpAddrs); d != "" {
		t.Errorf("last MultiHoster.Apply (-want +got):\n%s", d)
	}
	if f := recvFailure(t, h.m); f.Failed {
		t.Errorf("failure = %+v, want m recovered", f)
	}
	if err := h.m.Close(); err != nil {
		t.Fatal(err)
	}
	mh.mu.Lock()
	defer mh.mu.Unlock()
	if !mh.closed {
		t.Errorf("MultiHoster not closed by Manager.Close")
	}
}

func TestMultiIgnoredWithoutMultiHoster(t *testing.T) {
	h := start(t, NewFakeKernel(eth0), "", nil)
	h.m.Apply(Desired{Multi: []MultiGroup{{Name: "m", Interface: "eth9"}}})
	st := h.converged("converged without a MultiHoster")
	if len(st.Groups) != 0 {
		t.Errorf("Status().Groups = %+v, want none (Multi ignored)", st.Groups)
	}
}

func TestLinkUp(t *testing.T) {
	k := NewFakeKernel(eth0, LinkInfo{Index: 9, Name: "down0"})
	m, err := New(Options{Kernel: k, Announcer: &FakeAnnouncer{}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tc := range []struct {
		name    string
		up      bool
		wantErr error
	}{{"eth0", true, nil}, {"down0", false, nil}, {"nope", false, ErrLinkNotFound}} {
		t.Run(tc.name, func(t *testing.T) {
			up, err := m.LinkUp(tc.name)
			if up != tc.up || !errors.Is(err, tc.wantErr) {
				t.Errorf("LinkUp(%q) = %v, %v; want %v, %v", tc.name, up, err, tc.up, tc.wantErr)
			}
		})
	}
}

func TestCorruptRecordMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, RecordFile)
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{StateDir: dir, Kernel: NewFakeKernel(), Announcer: &FakeAnnouncer{}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("New() with a corrupt record = %v, want it to start", err)
	}
	defer m.Close()
	bad, _ := filepath.Glob(path + ".bad-*")
	if len(bad) != 1 {
		t.Fatalf("moved-aside records = %v, want one", bad)
	}
	if b, _ := os.ReadFile(bad[0]); string(b) != "{not json" {
		t.Errorf("moved-aside record content = %q, want the original", b)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	want := []recordEntry{
		{Group: "b", Interface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.11/32"), Since: since},
		{Group: "a", Interface: "eth0", Prefix: netip.MustParsePrefix("2001:db8::10/128"), Since: since},
	}
	if err := writeRecord(dir, []recordEntry{want[1], want[0]}); err != nil {
		t.Fatal(err)
	}
	got, err := readRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, cmpAddrs); d != "" {
		t.Errorf("record round trip (-want +got):\n%s", d)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestLabel(t *testing.T) {
	for _, tc := range []struct{ ifname, want string }{
		{"eth0", "eth0:sh"},
		{"enp0s31f6", "enp0s31f6:sh"},
		{"abcdefghijkl", "abcdefghijkl:sh"}, // 15 bytes: fits
		{"abcdefghijklm", ""},               // 16 bytes: no label
	} {
		t.Run(tc.ifname, func(t *testing.T) {
			got := Label(tc.ifname)
			if got != tc.want {
				t.Errorf("Label(%q) = %q, want %q", tc.ifname, got, tc.want)
			}
			if got != "" && !isShoalLabel(got) {
				t.Errorf("isShoalLabel(%q) = false", got)
			}
		})
	}
	for _, l := range []string{"eth0", "eth0:1", ":sh", ""} {
		if isShoalLabel(l) {
			t.Errorf("isShoalLabel(%q) = true, want false", l)
		}
	}
}

func TestConflictDetection(t *testing.T) {
	h := start(t, NewFakeKernel(eth0, eth1), "", func(o *Options) { o.DetectConflicts = true })
	h.m.Apply(Desired{Addresses: []Address{addr("web", ipA, "eth0"), addr("web", ip6A, "eth1")}})
	h.converged("raise")
	eventually(t, "watching eth0", func() string {
		if !h.a.Watching("eth0") {
			return "no arp watcher on eth0"
		}
		return ""
	})
	if h.a.Watching("eth1") {
		t.Errorf("arp watcher on eth1, which holds only IPv6")
	}
	other := net.HardwareAddr{2, 9, 9, 9, 9, 9}
	// Not conflicts: our own MAC, an IP we do not hold, another interface.
	h.a.InjectARP("eth0", ipA, eth0.MAC)
	h.a.InjectARP("eth0", ipB, other)
	h.a.InjectARP("eth1", ipA, other)
	// A conflict, reported once within the rate-limit window.
	h.a.InjectARP("eth0", ipA, other)
	h.a.InjectARP("eth0", ipA, other)
	select {
	case c := <-h.m.Conflicts():
		if c.IP != ipA || c.Interface != "eth0" || c.MAC.String() != other.String() {
			t.Errorf("conflict = %+v, want %s on eth0 from %s", c, ipA, other)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no conflict reported")
	}
	if st := h.m.Status(); st.Conflicts != 1 || st.LastConflict == nil || st.LastConflict.IP != ipA {
		t.Errorf("Status() conflicts = %d, last %+v; want 1 for %s", st.Conflicts, st.LastConflict, ipA)
	}
	// Dropped: the watcher stops.
	h.m.Apply(Desired{})
	h.converged("drop")
	eventually(t, "watcher stopped", func() string {
		if h.a.Watching("eth0") {
			return "arp watcher still on eth0"
		}
		return ""
	})
}
