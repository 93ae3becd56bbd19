package appliance

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/confsync/config"
)

// AllocGroup converts a validated config group into the allocator's input.
// Multi-hosted members get their slots from g.Slots (config assigns a slot to
// every member).
func AllocGroup(g config.Group) allocate.Group {
	ag := allocate.Group{Name: g.Name, IPs: slices.Clone(g.IPs), KeepTogether: g.KeepTogether}
	if g.Mode == config.ModeMulti {
		ag.Mode = allocate.Multi
	}
	for _, m := range g.Members {
		ag.Members = append(ag.Members, allocate.Member{Name: m, Slot: g.Slots[m], Passive: g.IsPassive(m)})
	}
	return ag
}

// AllocPlans compiles every group of c, in config order.
func AllocPlans(c *config.Cluster) ([]*allocate.Plan, error) {
	plans := make([]*allocate.Plan, 0, len(c.Groups))
	for _, g := range c.Groups {
		p, err := allocate.Compile(AllocGroup(g))
		if err != nil {
			return nil, fmt.Errorf("allocation plan: %w", err)
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// Simulation is the allocation of a cluster config for one alive set, as
// printed by `shoal simulate --json`.
type Simulation struct {
	Alive  []string   `json:"alive"`
	Groups []SimGroup `json:"groups"`
}

// SimGroup is one group's allocation.
type SimGroup struct {
	Name         string   `json:"name"`
	Mode         string   `json:"mode"`
	Members      []string `json:"members"`
	Passive      []string `json:"passive"`
	KeepTogether bool     `json:"keep_together"`
	// IPs maps each single-hosted IP to its owner ("" when none is alive).
	IPs map[string]string `json:"ips,omitempty"`
	// IPOrder lists the IPs in config order (the map has none).
	IPOrder []string `json:"ip_order"`
	// Buckets and Shares: multi-hosted hash space and buckets per member;
	// Shares also counts IPs per member for single-hosted groups.
	Buckets int            `json:"buckets,omitempty"`
	Shares  map[string]int `json:"shares"`
	// Slots of multi-hosted members.
	Slots map[string]int `json:"slots,omitempty"`
}

// ErrUnknownMember is returned by Simulate for a down member that is not in
// the config.
var ErrUnknownMember = errors.New("unknown member")

// aliveExcept returns the member names of c minus down, sorted, and checks
// that every down name is a member.
func aliveExcept(c *config.Cluster, down []string) ([]string, allocate.Alive, error) {
	isDown := map[string]bool{}
	for _, d := range down {
		if _, ok := c.MemberByName(d); !ok {
			return nil, nil, fmt.Errorf("simulate: %w %q", ErrUnknownMember, d)
		}
		isDown[d] = true
	}
	names := []string{}
	for _, m := range c.Members {
		if !isDown[m.Name] {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	return names, allocate.AliveOf(names...), nil
}

// Simulate computes the allocation of every group of c with the members in
// down failed and every other member alive.
func Simulate(c *config.Cluster, down []string) (*Simulation, error) {
	names, alive, err := aliveExcept(c, down)
	if err != nil {
		return nil, err
	}
	plans, err := AllocPlans(c)
	if err != nil {
		return nil, err
	}
	sim := &Simulation{Alive: names, Groups: []SimGroup{}}
	for i, p := range plans {
		g := c.Groups[i]
		res := p.Allocate(alive)
		sg := SimGroup{
			Name: g.Name, Mode: g.Mode, Members: slices.Clone(g.Members), Passive: slices.Clone(g.Passive),
			KeepTogether: g.KeepTogether, Shares: res.Shares,
		}
		if sg.Passive == nil {
			sg.Passive = []string{}
		}
		for _, ip := range g.IPs {
			sg.IPOrder = append(sg.IPOrder, ip.String())
		}
		if g.Mode == config.ModeMulti {
			sg.Buckets = allocate.NumBuckets
			sg.Slots = g.Slots
		} else {
			sg.IPs = map[string]string{}
			for j, o := range res.Owners {
				sg.IPs[g.IPs[j].String()] = o
			}
		}
		sim.Groups = append(sim.Groups, sg)
	}
	return sim, nil
}

// ExplainIP explains where ip goes with the members in down failed.
func ExplainIP(c *config.Cluster, down []string, ip netip.Addr) (allocate.Explanation, error) {
	_, alive, err := aliveExcept(c, down)
	if err != nil {
		return allocate.Explanation{}, err
	}
	for _, g := range c.Groups {
		if !slices.Contains(g.IPs, ip) {
			continue
		}
		p, err := allocate.Compile(AllocGroup(g))
		if err != nil {
			return allocate.Explanation{}, fmt.Errorf("explain %s: %w", ip, err)
		}
		return p.Explain(ip, alive)
	}
	return allocate.Explanation{}, fmt.Errorf("explain %s: %w", ip, allocate.ErrNotInGroup)
}
