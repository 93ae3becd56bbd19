package allocate

import (
	"fmt"
	"net/netip"
	"strings"
)

// Status says what became of a member when an IP was allocated.
type Status string

const (
	// StatusOwner: the member holds the IP (single-hosted).
	StatusOwner Status = "owner"
	// StatusSharing: the member holds a share of the buckets (multi-hosted).
	StatusSharing Status = "sharing"
	// StatusDown: the member was skipped because it is not alive.
	StatusDown Status = "down"
	// StatusPassive: the member is alive but passive, and an active member
	// is alive (multi-hosted).
	StatusPassive Status = "passive while an active member is alive"
	// StatusNotReached: the member comes after the owner in the preference
	// list (single-hosted).
	StatusNotReached Status = "not reached"
)

// Candidate is one member in an explanation.
type Candidate struct {
	Member  string
	Passive bool
	Alive   bool
	Slot    int // multi-hosted slot; -1 for single-hosted groups
	Status  Status
	Share   int // IPs (single: 1 for the owner) or buckets (multi) held
}

// Explanation says why an IP is where it is.
type Explanation struct {
	Group string
	Mode  Mode
	IP    netip.Addr
	Index int // position of the IP in the group's IP list
	// Owner is the single-hosted owner ("" when none is alive).
	Owner string
	// Candidates is the IP's preference list (single-hosted) or the members
	// in slot order (multi-hosted).
	Candidates []Candidate
}

// Explain returns the preference order of ip and why each member before the
// owner was skipped. It returns ErrNotInGroup if ip is not in the group.
func (p *Plan) Explain(ip netip.Addr, alive Alive) (Explanation, error) {
	idx := -1
	for i, a := range p.g.IPs {
		if a == ip {
			idx = i
			break
		}
	}
	if idx < 0 {
		return Explanation{}, fmt.Errorf("explain %s in group %q: %w", ip, p.g.Name, ErrNotInGroup)
	}
	e := Explanation{Group: p.g.Name, Mode: p.g.Mode, IP: ip, Index: idx}
	if p.g.Mode == Multi {
		res := p.Allocate(alive)
		active, _ := p.slotMasks(alive)
		for s, i := range p.slotMember {
			if i < 0 {
				continue
			}
			m := p.members[i]
			c := Candidate{Member: m.Name, Passive: m.Passive, Alive: alive[m.Name], Slot: s, Share: res.Shares[m.Name]}
			switch {
			case !c.Alive:
				c.Status = StatusDown
			case m.Passive && active != 0:
				c.Status = StatusPassive
			default:
				c.Status = StatusSharing
			}
			e.Candidates = append(e.Candidates, c)
		}
		return e, nil
	}
	owner := p.ownerIdx(idx, p.mask(alive))
	reached := false
	for _, x := range p.pref[p.unit(idx)] {
		m := p.members[x]
		c := Candidate{Member: m.Name, Passive: m.Passive, Alive: alive[m.Name], Slot: -1}
		switch {
		case reached:
			c.Status = StatusNotReached
		case int(x) == owner:
			c.Status, c.Share, reached = StatusOwner, 1, true
			e.Owner = m.Name
		default:
			c.Status = StatusDown
		}
		e.Candidates = append(e.Candidates, c)
	}
	return e, nil
}

// String formats the explanation for people, one candidate per line.
func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (group %q, %s-hosted, IP #%d)\n", e.IP, e.Group, e.Mode, e.Index)
	for k, c := range e.Candidates {
		role := "active"
		if c.Passive {
			role = "passive"
		}
		if e.Mode == Multi {
			fmt.Fprintf(&b, "  slot %d  %-12s %-7s %s (%d/%d buckets)\n", c.Slot, c.Member, role, c.Status, c.Share, NumBuckets)
			continue
		}
		fmt.Fprintf(&b, "  %d. %-12s %-7s %s\n", k+1, c.Member, role, c.Status)
	}
	if e.Mode == Single && e.Owner == "" {
		b.WriteString("  no member is alive: the IP is not held\n")
	}
	return b.String()
}
