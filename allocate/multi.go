package allocate

import (
	"math/bits"
	"sync"
)

var (
	permsOnce sync.Once
	perms     [][MaxMultiMembers]uint8 // perms[b] is the b-th permutation of the slots
)

// Permutation returns the permutation of the 8 slots carried by bucket b
// (factorial number system: the first digit, b / 7!, picks the first slot
// among those left, and so on).
func Permutation(b int) [MaxMultiMembers]uint8 {
	permsOnce.Do(buildPerms)
	return perms[b]
}

func buildPerms() {
	perms = make([][MaxMultiMembers]uint8, NumBuckets)
	var fact [MaxMultiMembers]int
	fact[MaxMultiMembers-1] = 1
	for i := MaxMultiMembers - 2; i >= 0; i-- {
		fact[i] = fact[i+1] * (MaxMultiMembers - 1 - i)
	}
	for b := range NumBuckets {
		left := []uint8{0, 1, 2, 3, 4, 5, 6, 7}
		r := b
		for i := range MaxMultiMembers {
			d := r / fact[i]
			r %= fact[i]
			perms[b][i] = left[d]
			left = append(left[:d], left[d+1:]...)
		}
	}
}

// slotMasks returns the alive active and alive passive slots as bitmasks.
func (p *Plan) slotMasks(alive Alive) (active, passive uint8) {
	for s, i := range p.slotMember {
		if i < 0 || !alive[p.members[i].Name] {
			continue
		}
		if p.members[i].Passive {
			passive |= 1 << uint(s)
		} else {
			active |= 1 << uint(s)
		}
	}
	return active, passive
}

// Buckets returns the owner slot of each of the NumBuckets buckets of a
// multi-hosted group (NoOwner when no member is alive): the first alive
// active slot in the bucket's permutation, or, when no active member is
// alive, the first alive passive slot. It returns nil for a single-hosted
// group.
func (p *Plan) Buckets(alive Alive) []uint8 {
	if p.g.Mode != Multi {
		return nil
	}
	active, passive := p.slotMasks(alive)
	return bucketsFor(active, passive)
}

func bucketsFor(active, passive uint8) []uint8 {
	out := make([]uint8, NumBuckets)
	use := active
	if use == 0 {
		use = passive
	}
	if use == 0 {
		for b := range out {
			out[b] = NoOwner
		}
		return out
	}
	fillBuckets(out, 0xff, use)
	return out
}

// fillBuckets assigns the buckets in out, whose permutations all start with
// the slots not in left (a bitmask of the slots still to come), in the
// order of the factorial number system: the bucket range splits into one
// sub-range per remaining slot, in ascending slot order. A sub-range whose
// next slot is in use belongs wholly to that slot.
func fillBuckets(out []uint8, left, use uint8) {
	size := len(out) / bits.OnesCount8(left)
	i := 0
	for s := uint8(0); s < MaxMultiMembers; s++ {
		if left>>s&1 == 0 {
			continue
		}
		sub := out[i*size : (i+1)*size]
		i++
		if use>>s&1 != 0 {
			for b := range sub {
				sub[b] = s
			}
			continue
		}
		fillBuckets(sub, left&^(1<<s), use)
	}
}

// Slots returns the slot of every member of a multi-hosted group (nil for a
// single-hosted group).
func (p *Plan) Slots() map[string]int {
	if p.g.Mode != Multi {
		return nil
	}
	out := make(map[string]int, len(p.members))
	for _, m := range p.members {
		out[m.Name] = m.Slot
	}
	return out
}
