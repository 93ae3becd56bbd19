package allocate

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// names are deliberately not in alphabetical order of listing.
var testNames = []string{"hobart", "ash", "fir", "cedar", "elm", "birch", "gum", "dogwood"}

// shape describes one group used by the exhaustive tests.
type shape struct {
	m, p, n int // members, passive members, IPs
	kt      bool
}

func (s shape) String() string {
	return fmt.Sprintf("m%d/p%d/n%d/kt%v", s.m, s.p, s.n, s.kt)
}

// passiveCounts is the family of passive counts tested for m members:
// none, one, half and all but one (at least one member stays active).
func passiveCounts(m int) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range []int{0, 1, m / 2, m - 1} {
		if p >= 0 && p < m && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func testIPs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
	}
	return out
}

// isPassive spreads the p passive members over the listing of m members.
func isPassive(i, m, p int) bool {
	k := 0
	for _, x := range []int{3, 0, 6, 1, 7, 4, 2, 5} {
		if x >= m {
			continue
		}
		if x == i {
			return k < p
		}
		k++
	}
	return false
}

// makeGroup builds a group for s with passive members spread over the listing.
func makeGroup(name string, s shape) Group {
	g := Group{Name: name, Mode: Single, IPs: testIPs(s.n), KeepTogether: s.kt}
	for i := range s.m {
		g.Members = append(g.Members, Member{Name: testNames[i], Slot: i, Passive: isPassive(i, s.m, s.p)})
	}
	return g
}

func mustCompile(t testing.TB, g Group) *Plan {
	t.Helper()
	p, err := Compile(g)
	if err != nil {
		t.Fatalf("Compile(%q) = %v", g.Name, err)
	}
	return p
}

// ownerTable returns owners[mask][ip] (member index or -1) for every mask.
func ownerTable(p *Plan) [][]int {
	m := len(p.members)
	t := make([][]int, 1<<m)
	for mask := range t {
		row := make([]int, len(p.g.IPs))
		for i := range row {
			row[i] = p.ownerIdx(i, uint64(mask))
		}
		t[mask] = row
	}
	return t
}

func activeMask(p *Plan) uint64 {
	var a uint64
	for i, m := range p.members {
		if !m.Passive {
			a |= 1 << i
		}
	}
	return a
}

// counts returns IPs held per member index.
func countsOf(row []int, m int) []int {
	c := make([]int, m)
	for _, o := range row {
		if o >= 0 {
			c[o]++
		}
	}
	return c
}

// eligibleMask is the set among which balance is measured: the alive actives
// while every active is up, otherwise every alive member.
func eligibleMask(mask, actives uint64) uint64 {
	if mask&actives == actives {
		return actives
	}
	return mask
}

func spread(c []int, elig uint64) int {
	lo, hi := -1, -1
	for x, v := range c {
		if elig>>x&1 == 0 {
			continue
		}
		if lo < 0 || v < lo {
			lo = v
		}
		if hi < 0 || v > hi {
			hi = v
		}
	}
	if lo < 0 {
		return 0
	}
	return hi - lo
}

type spreadStats struct {
	allUp, single, deeper   int // worst spreads
	singleOver1             int // single-failure cases with spread > 1
	singleCases             int
	deeperExcess            int // worst spread above the best achievable
	deeperOver, deeperCases int
}

// bestSpread is the smallest spread achievable in alive set mask when every
// IP whose first choice is alive stays there (as it must: it never moved)
// and the other IPs may go anywhere eligible: water-fill them.
func bestSpread(up []int, mask, elig uint64, m int) int {
	c := make([]int, m)
	orphans := 0
	for _, o := range up {
		if mask>>o&1 != 0 {
			c[o]++
		} else {
			orphans++
		}
	}
	for range orphans {
		best := -1
		for x := range m {
			if elig>>x&1 != 0 && (best < 0 || c[x] < c[best]) {
				best = x
			}
		}
		c[best]++
	}
	return spread(c, elig)
}

// checkSingle proves the single-hosted properties of one compiled plan over
// every alive subset and returns the worst spreads seen.
func checkSingle(t *testing.T, s shape, p *Plan) spreadStats {
	t.Helper()
	m := len(p.members)
	all := uint64(1)<<m - 1
	act := activeMask(p)
	tab := ownerTable(p)
	var st spreadStats
	for mask := range uint64(1) << m {
		row := tab[mask]
		for i, o := range row {
			// Coverage: held iff some member is alive, and by an alive one.
			if mask == 0 && o != -1 {
				t.Fatalf("%v: IP %d owned by %d with nobody alive", s, i, o)
			}
			if mask != 0 && (o < 0 || mask>>o&1 == 0) {
				t.Fatalf("%v alive %b: IP %d owner %d not alive", s, mask, i, o)
			}
			// Passives hold nothing while all actives are up.
			if mask&act == act && o >= 0 && p.members[o].Passive {
				t.Fatalf("%v alive %b: passive %s holds IP %d while all actives are up", s, mask, p.members[o].Name, i)
			}
			// Keep together: every IP follows the first.
			if s.kt && o != row[0] {
				t.Fatalf("%v alive %b: keep_together IP %d on %d, IP 0 on %d", s, mask, i, o, row[0])
			}
		}
		// Only orphans move, both directions.
		for x := range m {
			if mask>>x&1 == 0 {
				continue
			}
			less := tab[mask&^(1<<x)]
			for i := range row {
				if row[i] != x && less[i] != row[i] {
					t.Fatalf("%v: %b -> %b (%s fails): IP %d moved %d -> %d", s, mask, mask&^(1<<x), p.members[x].Name, i, row[i], less[i])
				}
				if less[i] != row[i] && row[i] != x {
					t.Fatalf("%v: %b -> %b (%s returns): IP %d moved to %d, not the returning member", s, mask&^(1<<x), mask, p.members[x].Name, i, row[i])
				}
			}
		}
		if s.kt {
			continue
		}
		c := countsOf(row, m)
		sp := spread(c, eligibleMask(mask, act))
		down := bits.OnesCount64(all &^ mask)
		switch {
		case mask == 0:
		case down == 0:
			if sp > 1 {
				t.Fatalf("%v all up: spread %d > 1, counts %v", s, sp, c)
			}
			st.allUp = max(st.allUp, sp)
		case down == 1:
			st.singleCases++
			st.single = max(st.single, sp)
			if sp > 1 {
				st.singleOver1++
			}
			// Water-filling optimum: every member that received an orphan
			// ends at most one above the least-loaded eligible member, so
			// no orphan could go elsewhere to reduce the spread.
			up := tab[all]
			elig := eligibleMask(mask, act)
			lo := -1
			for x := range m {
				if elig>>x&1 != 0 && (lo < 0 || c[x] < lo) {
					lo = c[x]
				}
			}
			for i := range row {
				if row[i] != up[i] && c[row[i]] > lo+1 {
					t.Fatalf("%v alive %b: orphan IP %d went to %s with %d IPs while an eligible member has %d (counts %v)",
						s, mask, i, p.members[row[i]].Name, c[row[i]], lo, c)
				}
			}
		default:
			st.deeper = max(st.deeper, sp)
			ex := sp - bestSpread(tab[all], mask, eligibleMask(mask, act), m)
			if ex < 0 {
				t.Fatalf("%v alive %b: spread %d below the computed optimum", s, mask, sp)
			}
			st.deeperExcess = max(st.deeperExcess, ex)
			st.deeperCases++
			if ex > 0 {
				st.deeperOver++
			}
		}
	}
	return st
}

// TestSingleExhaustive checks every alive subset of groups with 1..8
// members, 1..32 IPs and the passive-count family (0, 1, half, all but one).
func TestSingleExhaustive(t *testing.T) {
	type row struct{ m, allUp, single, deeper, over1, cases, excess, dover, dcases int }
	var rows []row
	for m := 1; m <= 8; m++ {
		r := row{m: m}
		for _, pc := range passiveCounts(m) {
			for n := 1; n <= 32; n++ {
				s := shape{m: m, p: pc, n: n}
				st := checkSingle(t, s, mustCompile(t, makeGroup("web", s)))
				r.allUp = max(r.allUp, st.allUp)
				r.single = max(r.single, st.single)
				r.deeper = max(r.deeper, st.deeper)
				r.over1 += st.singleOver1
				r.cases += st.singleCases
				r.excess = max(r.excess, st.deeperExcess)
				r.dover += st.deeperOver
				r.dcases += st.deeperCases
			}
		}
		rows = append(rows, r)
	}
	t.Logf("worst spread of IP counts among eligible members (1..32 IPs, passive counts %s):", "0,1,m/2,m-1")
	t.Logf("(single failures are always the water-filling optimum; \"excess\" is the spread above the best achievable")
	t.Logf(" when IPs on an alive first choice stay put)")
	t.Logf("%7s %6s %7s %19s %7s %7s %22s", "members", "all-up", "single", "single spread >1", "deeper", "excess", "deeper with excess>0")
	for _, r := range rows {
		t.Logf("%7d %6d %7d %10d of %5d %7d %7d %11d of %6d", r.m, r.allUp, r.single, r.over1, r.cases, r.deeper, r.excess, r.dover, r.dcases)
	}
}

// TestSingleNoPassiveSingleFailureSpread: without passive members the
// orphans of one failure can always be spread to within one.
func TestSingleNoPassiveSingleFailureSpread(t *testing.T) {
	for m := 1; m <= 8; m++ {
		for n := 1; n <= 32; n++ {
			s := shape{m: m, n: n}
			p := mustCompile(t, makeGroup("web", s))
			all := uint64(1)<<m - 1
			for x := range m {
				mask := all &^ (1 << x)
				row := make([]int, n)
				for i := range row {
					row[i] = p.ownerIdx(i, mask)
				}
				if sp := spread(countsOf(row, m), mask); sp > 1 {
					t.Errorf("%v: %s fails: spread %d > 1", s, p.members[x].Name, sp)
				}
			}
		}
	}
}

func TestSingleKeepTogetherExhaustive(t *testing.T) {
	for m := 1; m <= 8; m++ {
		for _, pc := range passiveCounts(m) {
			for _, n := range []int{1, 2, 5, 32} {
				s := shape{m: m, p: pc, n: n, kt: true}
				checkSingle(t, s, mustCompile(t, makeGroup("web", s)))
			}
		}
	}
}

// TestKeepTogetherGroupsSpread: different keep-together groups start on
// different members (group name hashed into the rotation).
func TestKeepTogetherGroupsSpread(t *testing.T) {
	firsts := map[string]int{}
	for i := range 16 {
		s := shape{m: 4, n: 3, kt: true}
		p := mustCompile(t, makeGroup(fmt.Sprintf("site-%d", i), s))
		firsts[p.Preference(0)[0]]++
	}
	if len(firsts) < 3 {
		t.Errorf("16 keep_together groups over 4 actives start on only %d members: %v", len(firsts), firsts)
	}
	t.Logf("first choices of 16 keep_together groups over 4 actives: %v", firsts)
}

// TestSingleDeterminism: the listing order of members never matters.
func TestSingleDeterminism(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for m := 1; m <= 8; m++ {
		for _, pc := range passiveCounts(m) {
			for _, n := range []int{1, 7, 32} {
				for _, kt := range []bool{false, true} {
					s := shape{m: m, p: pc, n: n, kt: kt}
					g := makeGroup("web", s)
					want := prefs(mustCompile(t, g))
					for range 3 {
						h := g
						h.Members = append([]Member(nil), g.Members...)
						rng.Shuffle(len(h.Members), func(i, j int) { h.Members[i], h.Members[j] = h.Members[j], h.Members[i] })
						if diff := cmp.Diff(want, prefs(mustCompile(t, h))); diff != "" {
							t.Fatalf("%v: shuffled members %v: preference lists differ (-want +got):\n%s", s, h.Members, diff)
						}
					}
				}
			}
		}
	}
}

func prefs(p *Plan) [][]string {
	out := make([][]string, len(p.g.IPs))
	for i := range out {
		out[i] = p.Preference(i)
	}
	return out
}

// TestOwnersMatchesMask: the public map-based API agrees with the mask walk.
func TestOwnersMatchesMask(t *testing.T) {
	s := shape{m: 6, p: 2, n: 20}
	p := mustCompile(t, makeGroup("web", s))
	for mask := range uint64(1) << 6 {
		alive := Alive{}
		var want []string
		for i, m := range p.members {
			if mask>>i&1 != 0 {
				alive[m.Name] = true
			}
		}
		for i := range p.g.IPs {
			o := p.ownerIdx(i, mask)
			if o < 0 {
				want = append(want, "")
			} else {
				want = append(want, p.members[o].Name)
			}
		}
		res := p.Allocate(alive)
		if diff := cmp.Diff(want, res.Owners); diff != "" {
			t.Fatalf("Allocate(%v).Owners (-want +got):\n%s", alive, diff)
		}
		total := 0
		for _, v := range res.Shares {
			total += v
		}
		if mask != 0 && total != len(p.g.IPs) {
			t.Fatalf("Allocate(%v).Shares sum %d, want %d", alive, total, len(p.g.IPs))
		}
	}
}

func TestCompileErrors(t *testing.T) {
	nine := Group{Name: "big", Mode: Multi}
	for i := range 9 {
		nine.Members = append(nine.Members, Member{Name: fmt.Sprint("m", i), Slot: i % 8})
	}
	tests := []struct {
		name string
		g    Group
		want error
	}{
		{"no members", Group{Name: "g"}, ErrNoMembers},
		{"all passive", Group{Name: "g", Members: []Member{{Name: "a", Passive: true}}}, ErrNoActive},
		{"duplicate", Group{Name: "g", Members: []Member{{Name: "a"}, {Name: "a"}}}, ErrDuplicate},
		{"nine multi", nine, ErrTooMany},
		{"slot clash", Group{Name: "g", Mode: Multi, Members: []Member{{Name: "a", Slot: 1}, {Name: "b", Slot: 1}}}, ErrBadSlot},
		{"slot range", Group{Name: "g", Mode: Multi, Members: []Member{{Name: "a", Slot: 8}}}, ErrBadSlot},
		{"mode", Group{Name: "g", Mode: 7, Members: []Member{{Name: "a"}}}, ErrMode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.g)
			if !errors.Is(err, tc.want) {
				t.Errorf("Compile() = %v, want %v", err, tc.want)
			}
		})
	}
}
