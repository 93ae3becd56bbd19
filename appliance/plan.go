package appliance

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/confsync/config"
	"github.com/shoal-project/shoal/dataplane"
	"github.com/shoal-project/shoal/dataplane/multihost"
)

// GroupFailedPrefix starts a health reason that says this node cannot serve
// one traffic IP group (its interface is gone, raising keeps failing). Peers
// read it from heartbeats and leave the node out of that group only.
const GroupFailedPrefix = "group-failed:"

// DefaultHandoffGrace is how long a node keeps an IP it lost to another
// alive member (failback, rebalance, config change) so that the new owner
// raises and announces it before the old holder drops it (make-before-break).
const DefaultHandoffGrace = time.Second

// multiTakeMax bounds how long a node that starts serving a multi-hosted
// group while other members serve it (it returned, recovered, or the group
// recovered on it) leaves its share to them. It takes its share when every
// other member serving the group shows, in its heartbeats, a table that
// lets that share go: they let go when they hear it, one heartbeat and one
// table write later (a few ms), and publish the new table's digest at once.
// Taking first would give a bucket two owners for that moment: both would
// answer a SYN, and the client's connection would be reset by the one it
// did not pick. Taking after leaves no owner for a moment instead: a SYN
// that arrives then is lost and resent by the client after 1 s. A member
// that never shows such a table (its table write keeps failing) holds the
// share back for this long at most.
const multiTakeMax = time.Second

// peerGroupFailHold is how long a peer must keep reporting that it cannot
// serve a group (GroupFailedPrefix reasons) before the others take the
// group's IPs and buckets over. A peer whose port flapped sends, in its
// first packets after the port came back, the failure it had while it was
// down, until its own dataplane sees the link up again (a few ms): acting
// on that at once moved its IPs away and back on every flap (chaos runs,
// docs/RELIABILITY.md finding 14). A lasting failure is taken over after
// this hold, a heartbeat interval at the default settings.
const peerGroupFailHold = 500 * time.Millisecond

// planner turns (config, view, time) into the desired dataplane state. It
// keeps the little state that needs memory: when members came up (for
// failback_delay), IPs being handed off, and the previous multi-hosted
// tables. It does no I/O and is driven by the agent loop goroutine only.
type planner struct {
	self      string
	cfg       *config.Cluster
	plans     []*allocate.Plan
	grace     time.Duration
	startedAt time.Time
	settle    time.Duration
	settleBy  time.Time // members first seen up before this are not "recovered"
	selfWasUp bool

	upSince map[string]time.Time // when each member entered the view (zero = initial)
	lastUp  map[string]bool
	handoff map[netip.Addr]time.Time // IP -> drop deadline
	held    map[netip.Addr]bool      // IPs in the last desired state
	multi   map[string]*multiTables  // multi-hosted groups this node serves
	served  map[string]bool          // multi-hosted groups this node has served
	takeAt  map[string]time.Time     // multi-hosted groups: when to take the share at the latest (multiTakeMax)
	// failSince is when each peer (then group) began reporting the group
	// failed, for peerGroupFailHold.
	failSince map[string]map[string]time.Time
}

// multiTables is one multi-hosted group's partition as this node last
// applied it: the owner of every bucket, and the owner each bucket had
// before it last changed hands. prev is sticky: it changes only when the
// bucket's owner does, so a node that took a bucket over keeps leaving the
// previous (alive) owner's connections to it across later passes and view
// changes that do not move the bucket again.
type multiTables struct {
	slots map[string]int // the config's slot assignment the tables use
	seed  uint32
	cur   []uint8
	prev  []uint8
}

// planInput is everything the planner needs from the outside on one pass.
type planInput struct {
	now time.Time
	up  []string // the view: members up (includes self while healthy)
	// peerFailedGroups maps a member to the groups it reports it cannot
	// serve (GroupFailedPrefix reasons in its heartbeats).
	peerFailedGroups map[string]map[string]bool
	// selfFailedGroups are the groups this node cannot serve.
	selfFailedGroups map[string]bool
	// peerStart is when each peer's agent started (its boot epoch).
	peerStart map[string]time.Time
	// released maps a peer to the tables (TableDigestHex) outside whose
	// share it has just confirmed it holds no connection (ReleaseQuery).
	// Each confirmation is passed once.
	released map[string][]string
	// peerTables maps a peer to the digests of the partition tables it
	// has applied (gossip.Agent.SetTables, low 48 bits).
	peerTables map[string][]uint64
}

// planOutput is one pass's result.
type planOutput struct {
	desired dataplane.Desired
	groups  []GroupStatus
	wakeAt  time.Time // when to plan again even without input (zero = never)
	grew    bool      // members came back into the view since the last pass
}

func newPlanner(self string, cfg *config.Cluster, plans []*allocate.Plan, now time.Time, settle time.Duration) *planner {
	return &planner{
		self: self, cfg: cfg, plans: plans, grace: DefaultHandoffGrace,
		startedAt: now, settle: settle, settleBy: now.Add(settle),
		upSince: map[string]time.Time{}, lastUp: map[string]bool{},
		handoff: map[netip.Addr]time.Time{}, held: map[netip.Addr]bool{},
		multi: map[string]*multiTables{}, served: map[string]bool{}, takeAt: map[string]time.Time{},
		failSince: map[string]map[string]time.Time{},
	}
}

// setConfig replaces the config (a new version was applied).
func (p *planner) setConfig(cfg *config.Cluster, plans []*allocate.Plan) {
	p.cfg, p.plans = cfg, plans
}

// hashSeed is the seed of a multi-hosted group's packet hash, the same on
// every node: FNV-1a of cluster and group name.
func hashSeed(cluster, group string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(cluster))
	h.Write([]byte{0})
	h.Write([]byte(group))
	return h.Sum32()
}

// ReleaseQuery is the serf query by which a node with buckets in handover
// asks the previous owners whether they still hold connections there. The
// payload lists table digests (TableDigestHex, space-separated); a node
// answers with those of them it has applied and holds no connection
// outside its share of (and, while the table stands, cannot get one). The
// answer is fresh: it is made when the question arrives, so no older news
// about a table applied earlier and since replaced can end a handover.
const ReleaseQuery = "shoal-mh-release"

// TableDigestHex formats a table digest as in ReleaseQuery: 48 bits in
// hex.
func TableDigestHex(d uint64) string {
	return fmt.Sprintf("%012x", d&(1<<48-1))
}

// tableDigest identifies a multi-hosted group's partition: the hash seed,
// the slot of each member and the owner of each bucket (FNV-1a, 64 bits).
func tableDigest(seed uint32, slots map[string]int, owners []uint8) uint64 {
	h := fnv.New64a()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], seed)
	h.Write(b[:])
	for _, m := range slices.Sorted(maps.Keys(slots)) {
		h.Write([]byte(m))
		h.Write([]byte{0, byte(slots[m])})
	}
	h.Write(owners)
	return h.Sum64()
}

// multiPrev records cur as group name's partition and returns each bucket's
// previous owner (see multiTables) and cur's digest. When this node starts
// serving the group after joining a running cluster (agent restart, return
// to the view after a failure, end of failback_delay) or serves it again
// (the group failed here, e.g. its interface went down, and recovered), the
// alive members without it served every bucket until now: the previous
// owners are their allocation, so this node leaves their connections alone
// in the buckets it takes. At a cluster start (every member came up within
// the settle period) nobody had connections: no bucket has a previous owner.
// Neither after a config change that reassigns slots or the hash seed, as
// the old owners cannot be named in the new slots.
//
// A handover ends for the buckets of a previous owner that has just
// confirmed (ReleaseQuery) that it holds no connection outside its share of
// the current table.
func (p *planner) multiPrev(name string, seed uint32, slots map[string]int, plan *allocate.Plan, alive allocate.Alive, cur []uint8, released map[string][]string) ([]uint8, uint64) {
	st := p.multi[name]
	_, joined := p.upSince[p.self]
	joined = joined || p.served[name]
	p.served[name] = true
	switch {
	case st == nil && !joined:
		st = &multiTables{cur: cur, prev: cur}
	case st == nil:
		before := plan.Buckets(without(alive, p.self))
		st = &multiTables{cur: before, prev: before}
	case st.seed != seed || !maps.Equal(st.slots, slots):
		st = &multiTables{cur: cur, prev: cur}
	}
	digest := tableDigest(seed, slots, cur)
	var releasedSlot [256]bool
	want := TableDigestHex(digest)
	for m, ds := range released {
		if slot, ok := slots[m]; ok && m != p.self && slices.Contains(ds, want) {
			releasedSlot[uint8(slot)] = true
		}
	}
	// A previous owner that is no longer alive is forgotten: its
	// connections died with it, and if it comes back it holds none.
	var aliveSlot [256]bool // indexed by slot; NoOwner is never alive
	for m := range alive {
		aliveSlot[uint8(slots[m])] = true
	}
	prev := make([]uint8, len(cur))
	for b := range cur {
		prev[b] = st.prev[b]
		if cur[b] != st.cur[b] {
			prev[b] = st.cur[b]
		}
		if !aliveSlot[prev[b]] || releasedSlot[prev[b]] {
			prev[b] = cur[b]
		}
	}
	p.multi[name] = &multiTables{slots: maps.Clone(slots), seed: seed, cur: cur, prev: prev}
	return prev, digest
}

// othersLetGo reports whether every other alive member shows, in its
// heartbeats, a table in which it owns none of the buckets full gives self:
// full itself, or (a member that is itself waiting to take its share) the
// table of the others without it, in which it owns nothing.
func othersLetGo(plan *allocate.Plan, seed uint32, slots map[string]int, alive allocate.Alive, self string, full []uint8, peerTables map[string][]uint64) bool {
	const mask = 1<<multihost.TableDigestBits - 1
	want := tableDigest(seed, slots, full) & mask
	for m := range alive {
		if m == self {
			continue
		}
		ds := peerTables[m]
		if slices.Contains(ds, want) {
			continue
		}
		if !slices.Contains(ds, tableDigest(seed, slots, plan.Buckets(without(alive, m)))&mask) {
			return false
		}
	}
	return true
}

// holdPeerFailures returns the group failures peers have reported for at
// least peerGroupFailHold, and asks to plan again when a younger one
// reaches it.
func (p *planner) holdPeerFailures(now time.Time, reported map[string]map[string]bool, wake func(time.Time)) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for m, since := range p.failSince {
		for g := range since {
			if !reported[m][g] {
				delete(since, g)
			}
		}
		if len(since) == 0 {
			delete(p.failSince, m)
		}
	}
	for m, groups := range reported {
		for g, failed := range groups {
			if !failed {
				continue
			}
			if p.failSince[m] == nil {
				p.failSince[m] = map[string]time.Time{}
			}
			since, ok := p.failSince[m][g]
			if !ok {
				since = now
				p.failSince[m][g] = now
			}
			if until := since.Add(peerGroupFailHold); now.Before(until) {
				wake(until)
				continue
			}
			if out[m] == nil {
				out[m] = map[string]bool{}
			}
			out[m][g] = true
		}
	}
	return out
}

// without returns alive without member m.
func without(alive allocate.Alive, m string) allocate.Alive {
	out := allocate.Alive{}
	for n := range alive {
		if n != m {
			out[n] = true
		}
	}
	return out
}

func (p *planner) plan(in planInput) planOutput {
	var out planOutput
	now := in.now
	upSet := map[string]bool{}
	for _, m := range in.up {
		upSet[m] = true
	}
	// Track recoveries for failback_delay. Members up during the first
	// settle period (cluster start, or our own start) count as initial,
	// except ourselves when we join an already running cluster.
	for m := range upSet {
		if !p.lastUp[m] {
			if m != p.self && now.After(p.settleBy) {
				p.upSince[m] = now
				out.grew = true
			} else if m != p.self {
				out.grew = true
			}
		}
	}
	for m := range p.lastUp {
		if !upSet[m] {
			delete(p.upSince, m)
		}
	}
	if upSet[p.self] && !p.lastUp[p.self] {
		// We (re)entered our own view. Peers hold us back exactly when they
		// saw us come up after their own settle period: after a health
		// failure of ours, or when we started after them.
		recovering := false
		for m := range upSet {
			if m == p.self {
				continue
			}
			if p.selfWasUp {
				recovering = true
			} else if st, ok := in.peerStart[m]; ok && st.Add(p.settle).Before(p.startedAt) {
				recovering = true
			}
		}
		if recovering {
			p.upSince[p.self] = now
		}
		p.selfWasUp = true
	}
	p.lastUp = upSet
	selfUp := upSet[p.self]

	wake := func(t time.Time) {
		if out.wakeAt.IsZero() || t.Before(out.wakeAt) {
			out.wakeAt = t
		}
	}
	peerFailed := p.holdPeerFailures(now, in.peerFailedGroups, wake)
	nowHeld := map[netip.Addr]bool{}
	serving := map[string]bool{}
	for gi, g := range p.cfg.Groups {
		plan := p.plans[gi]
		alive := allocate.Alive{}
		for _, m := range g.Members {
			if !upSet[m] || peerFailed[m][g.Name] {
				continue
			}
			if m == p.self && in.selfFailedGroups[g.Name] {
				continue
			}
			if since, ok := p.upSince[m]; ok && g.FailbackDelay > 0 {
				if until := since.Add(g.FailbackDelay); now.Before(until) {
					wake(until)
					continue
				}
			}
			alive[m] = true
		}
		res := plan.Allocate(alive)
		gs := GroupStatus{Name: g.Name, Mode: g.Mode, Members: slices.Clone(g.Members), Passive: slices.Clone(g.Passive)}
		isMember := slices.Contains(g.Members, p.self)
		if isMember {
			out.desired.Links = append(out.desired.Links, dataplane.GroupLink{Group: g.Name, Interface: g.Interface})
		}
		if g.Mode == config.ModeMulti {
			gs.Shares = res.Shares
			if isMember && alive[p.self] {
				serving[g.Name] = true
				seed := hashSeed(p.cfg.Settings.Name, g.Name)
				cur := res.Buckets
				if _, joined := p.upSince[p.self]; p.multi[g.Name] == nil && (joined || p.served[g.Name]) {
					p.takeAt[g.Name] = now.Add(multiTakeMax)
				}
				if at, ok := p.takeAt[g.Name]; ok {
					if now.Before(at) && !othersLetGo(plan, seed, g.Slots, alive, p.self, cur, in.peerTables) {
						if others := without(alive, p.self); len(others) > 0 {
							cur = plan.Buckets(others)
						}
						wake(at)
					} else {
						delete(p.takeAt, g.Name)
					}
				}
				prev, digest := p.multiPrev(g.Name, seed, g.Slots, plan, alive, cur, in.released)
				var aliveSlots uint8
				for m := range alive {
					aliveSlots |= 1 << uint(g.Slots[m])
				}
				out.desired.Multi = append(out.desired.Multi, dataplane.MultiGroup{
					Name: g.Name, Interface: g.Interface, IPs: slices.Clone(g.IPs),
					MAC:            multihost.MulticastMAC(p.cfg.Settings.MulticastGroup),
					MulticastGroup: p.cfg.Settings.MulticastGroup,
					HashIPOnly:     g.Hash == config.HashIP,
					Seed:           seed,
					SelfSlot:       uint8(g.Slots[p.self]),
					Owners:         cur, Prev: prev, PrevAlive: aliveSlots,
					Digest: digest,
				})
			}
			out.groups = append(out.groups, gs)
			continue
		}
		gs.IPs = map[string]string{}
		for i, ip := range g.IPs {
			owner := res.Owners[i]
			gs.IPs[ip.String()] = owner
			mine := owner == p.self && isMember
			handoff := false
			if !mine && p.held[ip] && selfUp && owner != "" && upSet[owner] && !in.selfFailedGroups[g.Name] {
				// Make-before-break: keep it until the new owner has
				// raised and announced it.
				dl, ok := p.handoff[ip]
				if !ok {
					dl = now.Add(p.grace)
					p.handoff[ip] = dl
				}
				if now.Before(dl) {
					mine, handoff = true, true
					wake(dl)
				}
			} else {
				delete(p.handoff, ip)
			}
			if owner == p.self {
				delete(p.handoff, ip)
			}
			if !mine {
				continue
			}
			nowHeld[ip] = true
			gs.Held = append(gs.Held, ip.String())
			out.desired.Addresses = append(out.desired.Addresses, dataplane.Address{
				Group: g.Name, IP: ip, Interface: g.Interface,
				PrefixLen: g.PrefixLen, PrefixRoute: g.PrefixRoute,
				Announce: dataplane.Announce{Count: announceCount(g.GARPCount), Spread: g.GARPSpread, Refresh: g.GARPRefresh},
				Handoff:  handoff,
			})
		}
		sort.Strings(gs.Held)
		out.groups = append(out.groups, gs)
	}
	for name := range p.multi {
		if !serving[name] {
			delete(p.multi, name)
			delete(p.takeAt, name)
		}
	}
	for ip := range p.handoff {
		if !nowHeld[ip] {
			delete(p.handoff, ip)
		}
	}
	p.held = nowHeld
	return out
}

// announceCount maps the config's garp_count (0 = none) to the dataplane's
// convention (0 = default, negative = none).
func announceCount(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// failedGroupsOf extracts the groups a member says it cannot serve from its
// health reasons.
func failedGroupsOf(reasons []string) map[string]bool {
	var out map[string]bool
	for _, r := range reasons {
		if rest, ok := strings.CutPrefix(r, GroupFailedPrefix); ok {
			name, _, _ := strings.Cut(rest, " ")
			if out == nil {
				out = map[string]bool{}
			}
			out[name] = true
		}
	}
	return out
}
