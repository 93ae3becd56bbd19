package allocate

import (
	"fmt"
	"math/bits"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// slotLayouts are the slot assignments tested for m members: contiguous
// from 0, and scattered over the 8 slots.
func slotLayouts(m int) [][]int {
	scattered := []int{7, 2, 5, 0, 3, 6, 1, 4}
	cont := make([]int, m)
	for i := range cont {
		cont[i] = i
	}
	return [][]int{cont, scattered[:m]}
}

func makeMulti(name string, slots []int, passive int) Group {
	g := Group{Name: name, Mode: Multi}
	m := len(slots)
	for i, s := range slots {
		g.Members = append(g.Members, Member{Name: testNames[i], Slot: s, Passive: isPassive(i, m, passive)})
	}
	return g
}

func aliveFromMask(p *Plan, mask uint64) Alive {
	a := Alive{}
	for i, m := range p.members {
		if mask>>i&1 != 0 {
			a[m.Name] = true
		}
	}
	return a
}

// TestMultiExhaustive checks every alive subset of multi-hosted groups of
// 1..8 members: exact shares, coverage and only-orphans-move both ways.
func TestMultiExhaustive(t *testing.T) {
	for m := 1; m <= 8; m++ {
		for _, pc := range passiveCounts(m) {
			for li, slots := range slotLayouts(m) {
				name := fmt.Sprintf("m%d/p%d/layout%d", m, pc, li)
				p := mustCompile(t, makeMulti("front", slots, pc))
				act := activeMask(p)
				tab := make([][]uint8, 1<<m)
				for mask := range tab {
					tab[mask] = p.Buckets(aliveFromMask(p, uint64(mask)))
				}
				for mask := range uint64(1) << m {
					res := tab[mask]
					// Who must share: alive actives, or alive passives when
					// no active is alive.
					sharing := mask & act
					if sharing == 0 {
						sharing = mask
					}
					want := map[uint8]int{}
					if k := bits.OnesCount64(sharing); k > 0 {
						if NumBuckets%k != 0 {
							t.Fatalf("%d does not divide %d", k, NumBuckets)
						}
						for i := range p.members {
							if sharing>>i&1 != 0 {
								want[uint8(p.members[i].Slot)] = NumBuckets / k
							}
						}
					} else {
						want[NoOwner] = NumBuckets
					}
					got := map[uint8]int{}
					for _, s := range res {
						got[s]++
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("%s alive %b: bucket counts per slot (-want +got):\n%s", name, mask, diff)
					}
					for x := range m {
						if mask>>x&1 == 0 {
							continue
						}
						slot := uint8(p.members[x].Slot)
						less := tab[mask&^(1<<x)]
						for b := range res {
							if res[b] != less[b] && res[b] != slot {
								t.Fatalf("%s: %s fails from %b: bucket %d moved %d -> %d", name, p.members[x].Name, mask, b, res[b], less[b])
							}
						}
					}
				}
			}
		}
	}
}

func sharesOf(p *Plan, names ...string) map[string]int {
	return p.Allocate(AliveOf(names...)).Shares
}

// TestWorkedExampleABCD follows the multi-hosted example: D fails, C fails,
// D recovers.
func TestWorkedExampleABCD(t *testing.T) {
	p := mustCompile(t, Group{Name: "front", Mode: Multi, Members: []Member{
		{Name: "A", Slot: 0}, {Name: "B", Slot: 1}, {Name: "C", Slot: 2}, {Name: "D", Slot: 3},
	}})
	steps := []struct {
		name  string
		alive []string
		want  map[string]int
	}{
		{"all up", []string{"A", "B", "C", "D"}, map[string]int{"A": 10080, "B": 10080, "C": 10080, "D": 10080}},
		{"D fails", []string{"A", "B", "C"}, map[string]int{"A": 13440, "B": 13440, "C": 13440, "D": 0}},
		{"C fails", []string{"A", "B"}, map[string]int{"A": 20160, "B": 20160, "C": 0, "D": 0}},
		{"D recovers", []string{"A", "B", "D"}, map[string]int{"A": 13440, "B": 13440, "C": 0, "D": 13440}},
	}
	var tabs [][]uint8
	for _, st := range steps {
		if diff := cmp.Diff(st.want, sharesOf(p, st.alive...)); diff != "" {
			t.Errorf("%s: shares (-want +got):\n%s", st.name, diff)
		}
		tabs = append(tabs, p.Buckets(AliveOf(st.alive...)))
	}
	const A, C, D = 0, 2, 3
	moved := func(from, to []uint8) (n int) {
		for b := range from {
			if from[b] != to[b] {
				n++
			}
		}
		return n
	}
	// Each step moves exactly the failed member's buckets, or exactly the
	// buckets the recovered member takes.
	for i, want := range []int{10080, 13440, 13440} {
		if n := moved(tabs[i], tabs[i+1]); n != want {
			t.Errorf("%s -> %s: %d buckets moved, want %d", steps[i].name, steps[i+1].name, n, want)
		}
	}
	var fromD, fromC, other, aFromD, aFromC, aFromCToD int
	for b := range tabs[0] {
		orig, s3, s4 := tabs[0][b], tabs[2][b], tabs[3][b]
		if s3 == A && orig == D {
			aFromD++
		}
		if s3 == A && orig == C {
			aFromC++
			if s4 == D {
				aFromCToD++
			}
		}
		if s4 != D {
			if s3 != s4 {
				t.Fatalf("bucket %d moved %d -> %d on D's recovery, not to D", b, s3, s4)
			}
			if orig == D {
				t.Fatalf("bucket %d was D's originally but not given back", b)
			}
			continue
		}
		switch orig {
		case D:
			fromD++
		case C:
			fromC++
		default:
			other++
		}
	}
	// D gets back all of its original quarter plus a third of C's quarter.
	if fromD != 10080 || fromC != 3360 || other != 0 {
		t.Errorf("D's buckets after recovery: %d originally D's (want 10080), %d originally C's (want 3360), %d other (want 0)", fromD, fromC, other)
	}
	// A releases everything it inherited from D and a third of what it
	// inherited from C.
	var aToD int
	for b := range tabs[2] {
		if tabs[2][b] == A && tabs[3][b] == D {
			aToD++
		}
	}
	if aFromD != 5040 || aFromC != 5040 || aFromCToD != 1680 || aToD != 5040+1680 {
		t.Errorf("A inherited %d from D (want 5040) and %d from C (want 5040); released %d of C's (want 1680), %d in all (want 6720)",
			aFromD, aFromC, aFromCToD, aToD)
	}
}

// TestMultiMembershipChange: adding or removing a member (slots stable)
// moves only that member's buckets.
func TestMultiMembershipChange(t *testing.T) {
	three := mustCompile(t, Group{Name: "f", Mode: Multi, Members: []Member{{Name: "a", Slot: 0}, {Name: "b", Slot: 1}, {Name: "c", Slot: 2}}})
	four := mustCompile(t, Group{Name: "f", Mode: Multi, Members: []Member{{Name: "a", Slot: 0}, {Name: "b", Slot: 1}, {Name: "c", Slot: 2}, {Name: "d", Slot: 5}}})
	before := three.Buckets(AliveOf("a", "b", "c", "d"))
	after := four.Buckets(AliveOf("a", "b", "c", "d"))
	n := 0
	for b := range before {
		if before[b] != after[b] {
			n++
			if after[b] != 5 {
				t.Fatalf("bucket %d moved %d -> %d, not to the new member", b, before[b], after[b])
			}
		}
	}
	if n != NumBuckets/4 {
		t.Errorf("adding d moved %d buckets, want %d", n, NumBuckets/4)
	}
}

func TestPermutationsDistinct(t *testing.T) {
	seen := make(map[[8]uint8]bool, NumBuckets)
	for b := range NumBuckets {
		pm := Permutation(b)
		var used uint8
		for _, s := range pm {
			used |= 1 << s
		}
		if used != 0xff {
			t.Fatalf("bucket %d: %v is not a permutation", b, pm)
		}
		if seen[pm] {
			t.Fatalf("bucket %d: permutation %v repeated", b, pm)
		}
		seen[pm] = true
	}
	if got, want := Permutation(0), [8]uint8{0, 1, 2, 3, 4, 5, 6, 7}; got != want {
		t.Errorf("Permutation(0) = %v, want %v", got, want)
	}
	if got, want := Permutation(NumBuckets-1), [8]uint8{7, 6, 5, 4, 3, 2, 1, 0}; got != want {
		t.Errorf("Permutation(last) = %v, want %v", got, want)
	}
}

func TestMultiPassive(t *testing.T) {
	p := mustCompile(t, Group{Name: "f", Mode: Multi, Members: []Member{{Name: "a", Slot: 0}, {Name: "b", Slot: 1}, {Name: "s", Slot: 2, Passive: true}}})
	tests := []struct {
		alive []string
		want  map[string]int
	}{
		{[]string{"a", "b", "s"}, map[string]int{"a": 20160, "b": 20160, "s": 0}},
		{[]string{"a", "s"}, map[string]int{"a": 40320, "b": 0, "s": 0}},
		{[]string{"s"}, map[string]int{"a": 0, "b": 0, "s": 40320}},
		{nil, map[string]int{"a": 0, "b": 0, "s": 0}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, sharesOf(p, tc.alive...)); diff != "" {
			t.Errorf("alive %v: shares (-want +got):\n%s", tc.alive, diff)
		}
	}
}
