package allocate

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
)

// Mode says how a group's IPs are held.
type Mode uint8

const (
	// Single: each IP is raised by exactly one member.
	Single Mode = iota
	// Multi: every IP is raised by all alive members, which split the
	// packet hash space.
	Multi
)

func (m Mode) String() string {
	switch m {
	case Single:
		return "single"
	case Multi:
		return "multi"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

const (
	// NumBuckets is the size of a multi-hosted group's hash space: 8!, one
	// bucket per permutation of the 8 slots.
	NumBuckets = 40320
	// MaxMultiMembers is the most members a multi-hosted group may have.
	MaxMultiMembers = 8
	// MaxSingleMembers is the most members a single-hosted group may have.
	MaxSingleMembers = 64
	// NoOwner marks a bucket with no alive owner.
	NoOwner uint8 = 0xff
)

// Member is one member of a group.
type Member struct {
	Name string
	// Slot is the member's stable slot 0..7 in a multi-hosted group; ignored
	// for single-hosted groups.
	Slot int
	// Passive members are standbys: they hold IPs (single) or buckets
	// (multi) only when an active member is down (single) or when no active
	// member is alive (multi).
	Passive bool
}

// Group is one traffic IP group as the allocator sees it.
type Group struct {
	Name    string
	Mode    Mode
	IPs     []netip.Addr // in configuration order: appending keeps earlier IPs in place
	Members []Member     // any order: members are sorted by name internally
	// KeepTogether (single only) makes the group one unit: every IP follows
	// the owner of the group's first preference list.
	KeepTogether bool
}

// Alive is the set of members considered up. Names not in a group are
// ignored.
type Alive map[string]bool

// AliveOf returns the set holding the given names.
func AliveOf(names ...string) Alive {
	a := make(Alive, len(names))
	for _, n := range names {
		a[n] = true
	}
	return a
}

// Plan is a group compiled for allocation. Compile it once per configuration;
// Allocate, Owners, Buckets and Shares are cheap and run on every view change.
// A Plan is immutable and safe for concurrent use.
type Plan struct {
	g       Group
	members []Member // sorted by name
	index   map[string]int

	// single-hosted: pref[u] lists member indexes for unit u (one unit per
	// IP, or one unit for a keep-together group).
	pref [][]uint8

	// multi-hosted: slotMember[s] is the member index in slot s, or -1.
	slotMember [MaxMultiMembers]int
}

// Errors returned by Compile.
var (
	ErrNoMembers  = errors.New("group has no members")
	ErrNoActive   = errors.New("group has no active member")
	ErrTooMany    = errors.New("group has too many members")
	ErrDuplicate  = errors.New("duplicate member")
	ErrBadSlot    = errors.New("bad slot")
	ErrMode       = errors.New("unknown mode")
	ErrNotInGroup = errors.New("address not in group")
)

// Compile checks g and computes its preference lists. The result depends on
// the member set (not its order), the IP list order, the group name and the
// mode; see docs/ALLOCATION.md.
func Compile(g Group) (*Plan, error) {
	if len(g.Members) == 0 {
		return nil, fmt.Errorf("compile group %q: %w", g.Name, ErrNoMembers)
	}
	p := &Plan{g: g, index: make(map[string]int, len(g.Members))}
	p.members = append([]Member(nil), g.Members...)
	sort.Slice(p.members, func(i, j int) bool { return p.members[i].Name < p.members[j].Name })
	actives := 0
	for i, m := range p.members {
		if _, dup := p.index[m.Name]; dup {
			return nil, fmt.Errorf("compile group %q: %w %q", g.Name, ErrDuplicate, m.Name)
		}
		p.index[m.Name] = i
		if !m.Passive {
			actives++
		}
	}
	if actives == 0 {
		return nil, fmt.Errorf("compile group %q: %w", g.Name, ErrNoActive)
	}
	p.g.IPs = append([]netip.Addr(nil), g.IPs...)
	p.g.Members = append([]Member(nil), p.members...)
	switch g.Mode {
	case Single:
		if len(p.members) > MaxSingleMembers {
			return nil, fmt.Errorf("compile group %q: %w: %d > %d", g.Name, ErrTooMany, len(p.members), MaxSingleMembers)
		}
		p.compileSingle()
	case Multi:
		if len(p.members) > MaxMultiMembers {
			return nil, fmt.Errorf("compile group %q: %w: %d > %d", g.Name, ErrTooMany, len(p.members), MaxMultiMembers)
		}
		for s := range p.slotMember {
			p.slotMember[s] = -1
		}
		for i, m := range p.members {
			if m.Slot < 0 || m.Slot >= MaxMultiMembers {
				return nil, fmt.Errorf("compile group %q: %w %d for %q (want 0..%d)", g.Name, ErrBadSlot, m.Slot, m.Name, MaxMultiMembers-1)
			}
			if o := p.slotMember[m.Slot]; o >= 0 {
				return nil, fmt.Errorf("compile group %q: %w %d used by %q and %q", g.Name, ErrBadSlot, m.Slot, p.members[o].Name, m.Name)
			}
			p.slotMember[m.Slot] = i
		}
	default:
		return nil, fmt.Errorf("compile group %q: %w %d", g.Name, ErrMode, g.Mode)
	}
	return p, nil
}

// Group returns the compiled group (members sorted by name).
func (p *Plan) Group() Group { return p.g }

// Result is a group's allocation for one alive set.
type Result struct {
	Group string
	Mode  Mode
	// Owners (single) holds the owner of each IP, in Group.IPs order; ""
	// when no member is alive.
	Owners []string
	// Buckets (multi) holds the owner slot of each of the NumBuckets
	// buckets, NoOwner when no member is alive.
	Buckets []uint8
	// Shares counts, for every member, the IPs (single) or buckets (multi)
	// it holds.
	Shares map[string]int
}

// Allocate computes the allocation for the alive set. It is what a node runs
// on a view change.
func (p *Plan) Allocate(alive Alive) Result {
	r := Result{Group: p.g.Name, Mode: p.g.Mode, Shares: make(map[string]int, len(p.members))}
	for _, m := range p.members {
		r.Shares[m.Name] = 0
	}
	if p.g.Mode == Multi {
		r.Buckets = p.Buckets(alive)
		var per [MaxMultiMembers + 1]int
		for _, s := range r.Buckets {
			per[min(s, MaxMultiMembers)]++
		}
		for s, i := range p.slotMember {
			if i >= 0 {
				r.Shares[p.members[i].Name] = per[s]
			}
		}
		return r
	}
	r.Owners = p.Owners(alive)
	for _, o := range r.Owners {
		if o != "" {
			r.Shares[o]++
		}
	}
	return r
}

// mask converts an alive set to a bitmask over sorted member indexes.
func (p *Plan) mask(alive Alive) uint64 {
	var m uint64
	for i, mem := range p.members {
		if alive[mem.Name] {
			m |= 1 << uint(i)
		}
	}
	return m
}

// Owners returns the owner of each IP of a single-hosted group in Group.IPs
// order ("" when no member is alive). It returns nil for a multi-hosted group.
func (p *Plan) Owners(alive Alive) []string {
	if p.g.Mode != Single {
		return nil
	}
	mask := p.mask(alive)
	out := make([]string, len(p.g.IPs))
	for i := range p.g.IPs {
		if o := p.ownerIdx(i, mask); o >= 0 {
			out[i] = p.members[o].Name
		}
	}
	return out
}

// unit returns the preference-list index used by IP i.
func (p *Plan) unit(i int) int {
	if p.g.KeepTogether {
		return 0
	}
	return i
}

// ownerIdx returns the member index owning IP i under mask, or -1.
func (p *Plan) ownerIdx(i int, mask uint64) int {
	for _, x := range p.pref[p.unit(i)] {
		if mask>>x&1 != 0 {
			return int(x)
		}
	}
	return -1
}

// Preference returns the preference list of IP i of a single-hosted group:
// its owner is the first alive member in it.
func (p *Plan) Preference(i int) []string {
	if p.g.Mode != Single || i < 0 || i >= len(p.g.IPs) {
		return nil
	}
	pref := p.pref[p.unit(i)]
	out := make([]string, len(pref))
	for k, x := range pref {
		out[k] = p.members[x].Name
	}
	return out
}

// fnvKey hashes (group, unit key, member) with FNV-1a (64 bit) for
// deterministic tie-breaks.
func fnvKey(group, unit, member string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for _, s := range [...]string{group, "\x00", unit, "\x00", member} {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= prime
		}
	}
	return h
}

func groupOffset(name string, n int) int {
	return int(fnvKey(name, "", "") % uint64(n))
}

// compileSingle builds the preference lists.
//
// Level 0: unit u's first choice is active (u+off) mod n, off a hash of the
// group name, so all-up shares differ by at most one and appending an IP
// never changes an earlier IP's first choice.
//
// Level k >= 1: units are grouped by the set D of their first k entries. In
// the alive set "all members but D" exactly those units are orphaned; every
// other unit's owner there is already fixed. The orphans of D are handed out
// one by one (in IP order) to the member of that alive set with the fewest
// IPs (water-filling), ties broken by a hash of (group, IP, member).
func (p *Plan) compileSingle() {
	m := len(p.members)
	units := len(p.g.IPs)
	if p.g.KeepTogether && units > 0 {
		units = 1
	}
	var actives []uint8
	for i, mem := range p.members {
		if !mem.Passive {
			actives = append(actives, uint8(i))
		}
	}
	off := groupOffset(p.g.Name, len(actives))
	unitKey := make([]string, units)
	for u := range units {
		if !p.g.KeepTogether {
			unitKey[u] = p.g.IPs[u].String()
		}
	}
	// Tie-break order per unit: member indexes by hash.
	p.pref = make([][]uint8, units)
	used := make([]uint64, units)
	for u := range units {
		p.pref[u] = make([]uint8, 1, m)
		p.pref[u][0] = actives[(u+off)%len(actives)]
		used[u] = 1 << p.pref[u][0]
	}
	all := uint64(1)<<uint(m) - 1
	if m == 64 {
		all = ^uint64(0)
	}
	counts := make([]int, m)
	hashes := make([]uint64, m)
	levelUse := make([]int, m)
	for k := 1; k < m; k++ {
		clear(levelUse)
		// Classes in order of first appearance: deterministic.
		classOf := make(map[uint64][]int)
		var order []uint64
		for u := range units {
			d := used[u]
			if _, ok := classOf[d]; !ok {
				order = append(order, d)
			}
			classOf[d] = append(classOf[d], u)
		}
		for _, d := range order {
			alive := all &^ d
			clear(counts)
			for j := range units {
				if used[j] == d {
					continue
				}
				for _, x := range p.pref[j] {
					if alive>>x&1 != 0 {
						counts[x]++
						break
					}
				}
			}
			for _, u := range classOf[d] {
				for x := range m {
					if alive>>uint(x)&1 != 0 {
						hashes[x] = fnvKey(p.g.Name, unitKey[u], p.members[x].Name)
					}
				}
				best := -1
				for x := range m {
					if alive>>uint(x)&1 == 0 {
						continue
					}
					if best < 0 || counts[x] < counts[best] ||
						(counts[x] == counts[best] && (levelUse[x] < levelUse[best] ||
							(levelUse[x] == levelUse[best] && hashes[x] < hashes[best]))) {
						best = x
					}
				}
				counts[best]++
				levelUse[best]++
				p.pref[u] = append(p.pref[u], uint8(best))
			}
		}
		for u := range units {
			used[u] |= 1 << p.pref[u][k]
		}
	}
}
