package allocate

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ips(n int, base byte) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 51, 100, base + byte(i)})
	}
	return out
}

func members(names ...string) []Member {
	var out []Member
	for _, n := range names {
		out = append(out, Member{Name: n})
	}
	return out
}

// diffOwners lists the IPs whose owner changed.
func diffOwners(a, b []string) []int {
	var out []int
	for i := range a {
		if a[i] != b[i] {
			out = append(out, i)
		}
	}
	return out
}

// TestSeedFourTrafficManagers: group 1 has 3 IPs over tm1..tm3, group 2 has
// 2 IPs over tm3, tm4. tm3 fails, then tm2 fails.
func TestSeedFourTrafficManagers(t *testing.T) {
	g1 := mustCompile(t, Group{Name: "group1", IPs: ips(3, 10), Members: members("tm1", "tm2", "tm3")})
	g2 := mustCompile(t, Group{Name: "group2", IPs: ips(2, 20), Members: members("tm3", "tm4")})
	all := AliveOf("tm1", "tm2", "tm3", "tm4")
	if diff := cmp.Diff(map[string]int{"tm1": 1, "tm2": 1, "tm3": 1}, g1.Allocate(all).Shares); diff != "" {
		t.Errorf("group1 all up (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"tm3": 1, "tm4": 1}, g2.Allocate(all).Shares); diff != "" {
		t.Errorf("group2 all up (-want +got):\n%s", diff)
	}
	noTM3 := AliveOf("tm1", "tm2", "tm4")
	for _, g := range []*Plan{g1, g2} {
		before, after := g.Owners(all), g.Owners(noTM3)
		for _, i := range diffOwners(before, after) {
			if before[i] != "tm3" {
				t.Errorf("%s: tm3 fails: IP %d moved from %s", g.g.Name, i, before[i])
			}
		}
		for i, o := range after {
			if o == "tm3" || o == "" {
				t.Errorf("%s: tm3 fails: IP %d on %q", g.g.Name, i, o)
			}
		}
	}
	if diff := cmp.Diff([]string{"tm4", "tm4"}, g2.Owners(noTM3)); diff != "" {
		t.Errorf("group2 after tm3 fails (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"tm1", "tm1", "tm1"}, g1.Owners(AliveOf("tm1", "tm4"))); diff != "" {
		t.Errorf("group1 after tm2 fails too (-want +got):\n%s", diff)
	}
}

func TestRecipes(t *testing.T) {
	t.Run("active-standby", func(t *testing.T) {
		for _, passive := range []bool{false, true} {
			p := mustCompile(t, Group{Name: "svc", IPs: ips(1, 10), Members: []Member{{Name: "x"}, {Name: "y", Passive: passive}}})
			first := p.Owners(AliveOf("x", "y"))[0]
			other := map[string]string{"x": "y", "y": "x"}[first]
			if passive && first != "x" {
				t.Errorf("standby y passive: all up owner %s, want x", first)
			}
			if got := p.Owners(AliveOf(other))[0]; got != other {
				t.Errorf("passive=%v: %s fails: owner %s, want %s", passive, first, got, other)
			}
			if got := p.Owners(AliveOf("x", "y"))[0]; got != first {
				t.Errorf("passive=%v: %s recovers: owner %s, want it back on %s", passive, first, got, first)
			}
		}
	})
	t.Run("active-active", func(t *testing.T) {
		p := mustCompile(t, Group{Name: "svc", IPs: ips(2, 10), Members: members("x", "y")})
		up := p.Owners(AliveOf("x", "y"))
		if up[0] == up[1] {
			t.Fatalf("all up: both IPs on %s", up[0])
		}
		if diff := cmp.Diff([]string{"y", "y"}, p.Owners(AliveOf("y"))); diff != "" {
			t.Errorf("x fails (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(up, p.Owners(AliveOf("x", "y"))); diff != "" {
			t.Errorf("x recovers (-want +got):\n%s", diff)
		}
	})
	t.Run("N+M", func(t *testing.T) {
		// 3 IPs over 5 nodes, 2 of them passive.
		g := Group{Name: "svc", IPs: ips(3, 10), Members: []Member{
			{Name: "n1"}, {Name: "n2"}, {Name: "n3"}, {Name: "s1", Passive: true}, {Name: "s2", Passive: true}}}
		p := mustCompile(t, g)
		all := AliveOf("n1", "n2", "n3", "s1", "s2")
		up := p.Owners(all)
		got := slices.Sorted(slices.Values(up))
		if diff := cmp.Diff([]string{"n1", "n2", "n3"}, got); diff != "" {
			t.Fatalf("all up: owners (-want +got):\n%s", diff)
		}
		for _, failed := range []string{"n1", "n2", "n3", "s1", "s2"} {
			alive := AliveOf("n1", "n2", "n3", "s1", "s2")
			delete(alive, failed)
			after := p.Owners(alive)
			moved := diffOwners(up, after)
			wantMoved := 1
			if failed[0] == 's' {
				wantMoved = 0
			}
			if len(moved) != wantMoved {
				t.Errorf("%s fails: %d IPs moved (%v -> %v), want %d", failed, len(moved), up, after, wantMoved)
				continue
			}
			for _, i := range moved {
				if up[i] != failed || after[i][0] != 's' {
					t.Errorf("%s fails: IP %d moved %s -> %s, want a passive node to take it", failed, i, up[i], after[i])
				}
			}
		}
	})
}

// TestExplain checks the preference order and skip reasons.
func TestExplain(t *testing.T) {
	p := mustCompile(t, Group{Name: "web", IPs: ips(3, 10), Members: []Member{{Name: "a"}, {Name: "b"}, {Name: "c", Passive: true}}})
	for i, ip := range p.g.IPs {
		pref := p.Preference(i)
		alive := AliveOf(pref[1], pref[2]) // first choice down
		e, err := p.Explain(ip, alive)
		if err != nil {
			t.Fatalf("Explain(%s) = %v", ip, err)
		}
		var got []string
		for _, c := range e.Candidates {
			got = append(got, fmt.Sprintf("%s:%s", c.Member, c.Status))
		}
		want := []string{pref[0] + ":down", pref[1] + ":owner", pref[2] + ":not reached"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Explain(%s) (-want +got):\n%s", ip, diff)
		}
		if e.Owner != pref[1] || e.Owner != p.Owners(alive)[i] {
			t.Errorf("Explain(%s).Owner = %s, want %s", ip, e.Owner, pref[1])
		}
	}
	if _, err := p.Explain(netip.MustParseAddr("203.0.113.1"), nil); err == nil {
		t.Errorf("Explain(unknown IP) = nil error")
	}
	m := mustCompile(t, Group{Name: "f", Mode: Multi, IPs: ips(1, 50), Members: []Member{{Name: "a", Slot: 0}, {Name: "b", Slot: 1}, {Name: "s", Slot: 2, Passive: true}}})
	e, err := m.Explain(m.g.IPs[0], AliveOf("a", "s"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range e.Candidates {
		got = append(got, fmt.Sprintf("%d:%s:%s:%d", c.Slot, c.Member, c.Status, c.Share))
	}
	want := []string{"0:a:sharing:40320", "1:b:down:0", "2:s:passive while an active member is alive:0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("multi Explain (-want +got):\n%s", diff)
	}
}

// TestConfigEditMovement measures how many existing IPs change owner when
// the IP list is edited: appended, inserted in the middle, removed. An
// appended IP must move nothing while all members are up.
func TestConfigEditMovement(t *testing.T) {
	type tally struct{ moved, total, worst int }
	var appendUp, appendOne, insertUp, insertOne, removeUp, removeOne tally
	add := func(tl *tally, moved, total int) {
		tl.moved += moved
		tl.total += total
		tl.worst = max(tl.worst, moved)
	}
	// movedBetween counts IPs present in both plans whose owner differs.
	movedBetween := func(a, b *Plan, alive Alive) (moved, common int) {
		oa, ob := a.Owners(alive), b.Owners(alive)
		pos := map[netip.Addr]int{}
		for i, ip := range b.g.IPs {
			pos[ip] = i
		}
		for i, ip := range a.g.IPs {
			j, ok := pos[ip]
			if !ok {
				continue
			}
			common++
			if oa[i] != ob[j] {
				moved++
			}
		}
		return moved, common
	}
	for m := 2; m <= 8; m++ {
		for _, pc := range passiveCounts(m) {
			for n := 2; n <= 32; n++ {
				base := makeGroup("web", shape{m: m, p: pc, n: n})
				pb := mustCompile(t, base)
				extra := netip.AddrFrom4([4]byte{203, 0, 113, byte(n)})
				appended, inserted, removed := base, base, base
				appended.IPs = append(slices.Clone(base.IPs), extra)
				inserted.IPs = slices.Insert(slices.Clone(base.IPs), n/2, extra)
				removed.IPs = slices.Delete(slices.Clone(base.IPs), n/2, n/2+1)
				edits := []struct {
					g       Group
					up, one *tally
				}{{appended, &appendUp, &appendOne}, {inserted, &insertUp, &insertOne}, {removed, &removeUp, &removeOne}}
				for ei, e := range edits {
					pe := mustCompile(t, e.g)
					all := Alive{}
					for _, mem := range base.Members {
						all[mem.Name] = true
					}
					mv, common := movedBetween(pb, pe, all)
					if ei == 0 && mv != 0 {
						t.Errorf("m%d p%d n%d: appending an IP moved %d IPs with all members up", m, pc, n, mv)
					}
					add(e.up, mv, common)
					for _, mem := range base.Members {
						delete(all, mem.Name)
						mv, common := movedBetween(pb, pe, all)
						add(e.one, mv, common)
						all[mem.Name] = true
					}
				}
			}
		}
	}
	pct := func(tl tally) string {
		return fmt.Sprintf("%5.1f%% moved, worst %2d", 100*float64(tl.moved)/float64(tl.total), tl.worst)
	}
	t.Logf("IPs moved by a config edit (2..8 members, 2..32 IPs, passive counts 0,1,m/2,m-1):")
	t.Logf("%-22s %-26s %-26s", "edit", "all up", "one member down")
	t.Logf("%-22s %-26s %-26s", "append one IP", pct(appendUp), pct(appendOne))
	t.Logf("%-22s %-26s %-26s", "insert one IP (middle)", pct(insertUp), pct(insertOne))
	t.Logf("%-22s %-26s %-26s", "remove one IP (middle)", pct(removeUp), pct(removeOne))
}
