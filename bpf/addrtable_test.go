package bpf

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// lookupAddr is the program's probe, in Go, over a table built by
// buildAddrTable.
func lookupAddr(salt uint32, slots []shoalMhAddrSlot, a netip.Addr) (int, bool) {
	w, v6 := addrWords(a)
	home := addrHome(salt, w, v6)
	for i := range uint32(addrProbes) {
		s := slots[(home+i)&(addrSlots-1)]
		if s.Group == 0 {
			return 0, false
		}
		if s.V6 == v6 && s.Addr == w {
			return int(s.Group) - 1, true
		}
	}
	return 0, false
}

// colliding returns n IPv4 addresses whose probes all start at one slot
// under salt 0: more than addrProbes of them cannot be placed with it.
func colliding(n int) []netip.Addr {
	var out []netip.Addr
	var want uint32
	for i := uint32(0); len(out) < n; i++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], 0x0a000000+i)
		a := netip.AddrFrom4(b)
		w, _ := addrWords(a)
		h := addrHome(0, w, 0)
		if len(out) == 0 {
			want = h
		}
		if h == want {
			out = append(out, a)
		}
	}
	return out
}

func TestAddrTableFull(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	owner := map[netip.Addr]int{}
	for len(owner) < 2*MaxAddrs {
		a := randAddr(r, len(owner)%2 == 1)
		owner[a] = len(owner) % MaxGroups
	}
	salt, slots, err := buildAddrTable(owner)
	if err != nil {
		t.Fatalf("buildAddrTable(%d addresses) = %v", len(owner), err)
	}
	for a, g := range owner {
		if got, ok := lookupAddr(salt, slots, a); !ok || got != g {
			t.Errorf("lookup %s = %d, %v; want %d, true", a, got, ok, g)
		}
	}
	for range 1000 {
		a := randAddr(r, r.IntN(2) == 0)
		if _, in := owner[a]; in {
			continue
		}
		if g, ok := lookupAddr(salt, slots, a); ok {
			t.Errorf("lookup %s (not configured) = group %d", a, g)
		}
	}
}

func TestAddrTableResalts(t *testing.T) {
	owner := map[netip.Addr]int{}
	for i, a := range colliding(addrProbes + 4) {
		owner[a] = i % 3
	}
	if _, ok := placeAddrs(owner, 0); ok {
		t.Fatalf("%d addresses with one home slot placed with salt 0, want refused", len(owner))
	}
	salt, slots, err := buildAddrTable(owner)
	if err != nil {
		t.Fatalf("buildAddrTable() = %v", err)
	}
	if salt == 0 {
		t.Fatalf("buildAddrTable kept salt 0")
	}
	for a, g := range owner {
		if got, ok := lookupAddr(salt, slots, a); !ok || got != g {
			t.Errorf("lookup %s = %d, %v; want %d, true", a, got, ok, g)
		}
	}
}

// TestProgramAddrTable runs the program on frames to every address of a
// full table (1024 IPv4 and 1024 IPv6 over two groups) and to addresses not
// in it, then after the table shrinks, and with a set that needs a salt
// other than 0: the program's hash and probe agree with the Go ones.
func TestProgramAddrTable(t *testing.T) {
	o := load(t)
	r := rand.New(rand.NewPCG(3, 4))
	var ips [2][]netip.Addr
	seen := map[netip.Addr]bool{}
	for n := 0; n < 2*MaxAddrs; {
		a := randAddr(r, n%2 == 1)
		if seen[a] || a == client4 || a == client6 {
			continue
		}
		seen[a] = true
		ips[n%4/2] = append(ips[n%4/2], a)
		n++
	}
	set := func(index int, addrs []netip.Addr, self uint8) {
		t.Helper()
		g := group(fill(0), nil, 1, false)
		g.IPs, g.SelfSlot = addrs, self
		if err := o.SetGroup(index, g); err != nil {
			t.Fatalf("SetGroup(%d, %d addresses) = %v", index, len(addrs), err)
		}
	}
	// Group 0 owns every bucket (frames to its addresses pass as ours);
	// group 1 owns none (dropped).
	set(0, ips[0], 0)
	set(1, ips[1], 1)
	frameTo := func(a netip.Addr) []byte {
		if a.Is4() {
			return ether(testMcastMAC, 0, ipv4(client4, a, 0, tcpSeg(1000, 80, tcpSYN)))
		}
		return ether(testMcastMAC, 0, ipv6(client6, a, nil, tcpSeg(1000, 80, tcpSYN)))
	}
	// Writes go to the slots that differ from a mirror of each half: the
	// mirror must say what the kernel holds.
	mirrorMatches := func(stage string) {
		t.Helper()
		var k uint32
		var v shoalMhAddrSlot
		it := o.objs.MhAddrSlots.Iterate()
		bad := 0
		for it.Next(&k, &v) {
			if m := o.addrHalves[k/addrSlots]; m != nil && m[k%addrSlots] != v {
				bad++
			}
		}
		if err := it.Err(); err != nil {
			t.Fatalf("%s: read address slots: %v", stage, err)
		}
		if bad > 0 {
			t.Errorf("%s: %d address slots differ from the mirror the next write is diffed against", stage, bad)
		}
	}
	check := func(stage string, a netip.Addr, wantVerdict uint32, wantOurs bool) {
		t.Helper()
		if v, ours := run(t, o, frameTo(a)); v != wantVerdict || ours != wantOurs {
			t.Errorf("%s: frame to %s: verdict %d ours %v, want %d ours %v", stage, a, v, ours, wantVerdict, wantOurs)
		}
	}
	mirrorMatches("full table")
	for _, a := range ips[0] {
		check("full table", a, xdpPass, true)
	}
	for _, a := range ips[1] {
		check("full table", a, xdpDrop, false)
	}
	for range 200 {
		a := randAddr(r, r.IntN(2) == 0)
		if !seen[a] {
			check("full table, not configured", a, xdpPass, false)
		}
	}
	// Shrink group 1 to ten addresses: the others pass untouched.
	set(1, ips[1][:10], 1)
	mirrorMatches("shrunk")
	for i, a := range ips[1] {
		if i < 10 {
			check("shrunk", a, xdpDrop, false)
		} else {
			check("shrunk", a, xdpPass, false)
		}
	}
	// A set that salt 0 cannot place.
	if err := o.ClearGroup(1); err != nil {
		t.Fatalf("ClearGroup(1) = %v", err)
	}
	coll := colliding(addrProbes + 4)
	set(0, coll, 0)
	if o.addrCfg.Salt[o.addrCfg.Half] == 0 {
		t.Fatalf("colliding set written with salt 0")
	}
	mirrorMatches("colliding set")
	for _, a := range coll {
		check("colliding set", a, xdpPass, true)
	}
	for _, a := range ips[0][:20] {
		check("colliding set, old address", a, xdpPass, false)
	}
}

// TestHandoverCount: Handover counts the buckets owned here whose previous
// owner is another, alive slot.
func TestHandoverCount(t *testing.T) {
	o := load(t)
	owners, prev := fill(0), fill(1)
	for b := range NumBuckets / 4 {
		prev[b] = 0 // owned before too: no handover
	}
	want := NumBuckets - NumBuckets/4
	setGroup(t, o, group(owners, prev, 0b011, false))
	if got := o.Handover(0); got != want {
		t.Errorf("Handover() with slot 1 alive = %d, want %d", got, want)
	}
	setGroup(t, o, group(owners, prev, 0b001, false))
	if got := o.Handover(0); got != 0 {
		t.Errorf("Handover() with slot 1 dead = %d, want 0", got)
	}
	setGroup(t, o, group(owners, nil, 0b011, false))
	if got := o.Handover(0); got != 0 {
		t.Errorf("Handover() without previous owners = %d, want 0", got)
	}
}
