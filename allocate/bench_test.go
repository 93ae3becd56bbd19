package allocate

import (
	"fmt"
	"net/netip"
	"testing"
)

// bench8x256 is a single-hosted group of 256 IPs over 8 members (2 passive)
// and a multi-hosted group over the same 8 members.
func bench8x256() (single, multi Group) {
	single = Group{Name: "web", Mode: Single}
	multi = Group{Name: "front", Mode: Multi, IPs: []netip.Addr{netip.MustParseAddr("198.51.100.10")}}
	for i := range 256 {
		single.IPs = append(single.IPs, netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}))
	}
	for i := range 8 {
		m := Member{Name: fmt.Sprintf("node-%d", i), Slot: i, Passive: i >= 6}
		single.Members = append(single.Members, m)
		multi.Members = append(multi.Members, m)
	}
	return single, multi
}

// BenchmarkAllocate8x256 measures one view change: the alive set changes and
// a node recomputes the owners of 256 single-hosted IPs over 8 members plus
// the 40320-bucket table of an 8-member multi-hosted group ("view-change").
// "compile" is the once-per-config-change cost of building the preference
// lists; "config-change" is compile plus a view change.
func BenchmarkAllocate8x256(b *testing.B) {
	sg, mg := bench8x256()
	ps, err := Compile(sg)
	if err != nil {
		b.Fatal(err)
	}
	pm, err := Compile(mg)
	if err != nil {
		b.Fatal(err)
	}
	views := []Alive{
		AliveOf("node-0", "node-1", "node-2", "node-3", "node-4", "node-5", "node-6", "node-7"),
		AliveOf("node-0", "node-1", "node-2", "node-4", "node-5", "node-6", "node-7"),
		AliveOf("node-0", "node-2", "node-4", "node-5", "node-6", "node-7"),
	}
	b.Run("view-change", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			v := views[i%len(views)]
			i++
			_ = ps.Allocate(v)
			_ = pm.Allocate(v)
		}
	})
	b.Run("view-change-single-only", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			_ = ps.Allocate(views[i%len(views)])
			i++
		}
	})
	b.Run("compile", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Compile(sg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("config-change", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p1, _ := Compile(sg)
			p2, _ := Compile(mg)
			_ = p1.Allocate(views[1])
			_ = p2.Allocate(views[1])
		}
	})
}
