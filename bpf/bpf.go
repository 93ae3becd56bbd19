package bpf

import (
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Limits of the program's maps.
const (
	// MaxGroups is the number of multi-hosted groups one program serves.
	MaxGroups = 32
	// MaxAddrs is the number of IPv4 (and, separately, IPv6) multi-hosted
	// addresses over all groups (the address table holds 4x as many slots).
	MaxAddrs = 1024
	// MaxSlots is the number of member slots in a group.
	MaxSlots = 8
	// NoOwner marks a bucket without an alive owner.
	NoOwner = 0xff
	// ProgramName is the kernel name of the XDP program, used to find stale
	// attachments left by an earlier run.
	ProgramName = "shoal_xdp"
)

const (
	chunk      = 64
	chunks     = NumBuckets / chunk
	flagValid  = 1
	flagIPOnly = 2
)

// Mode is how the program is attached to an interface.
type Mode int

const (
	// ModeAuto lets the kernel pick: native when the driver supports it,
	// otherwise generic.
	ModeAuto Mode = iota
	// ModeNative runs in the driver (fails when the driver lacks XDP).
	ModeNative
	// ModeGeneric runs on the skb after the driver (always available,
	// slower). Use it on veth.
	ModeGeneric
)

// ParseMode parses "auto", "native" or "generic".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "auto":
		return ModeAuto, nil
	case "native":
		return ModeNative, nil
	case "generic":
		return ModeGeneric, nil
	}
	return ModeAuto, fmt.Errorf("parse xdp mode %q: want auto, native or generic", s)
}

func (m Mode) String() string {
	switch m {
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	default:
		return "auto"
	}
}

// Counters are the program's per-CPU counters summed over CPUs.
type Counters struct {
	PassedOwner     uint64 // this node owns the bucket
	PassedSocket    uint64 // not (or handed-over) owner, but a local socket holds the connection
	DroppedNotOwner uint64 // another node owns the bucket and no local socket
	DroppedHandover uint64 // owner, but the alive previous owner keeps non-SYN packets without a local socket
	PassedNotOurs   uint64 // not addressed to a multi-hosted IP (or its group is not configured)
	ParseErrors     uint64 // truncated or malformed headers (passed when not ours, dropped when ours)
	ICMPSteered     uint64 // ICMP errors steered by their embedded header
	Fragments       uint64 // IP fragments to a multi-hosted IP (hashed with ports 0)
}

// Group is the state of one multi-hosted group written by SetGroup.
type Group struct {
	IPs        []netip.Addr
	Seed       uint32
	HashIPOnly bool
	SelfSlot   uint8
	// Owners holds the owner slot of each bucket (NumBuckets entries;
	// NoOwner for none).
	Owners []uint8
	// Prev holds each bucket's owner before the latest view change
	// (NumBuckets entries, or nil when equal to Owners).
	Prev []uint8
	// PrevAlive: bit s set = slot s alive now.
	PrevAlive uint8
	// Ifindex restricts the group to frames received on this interface
	// (0 = any).
	Ifindex int
	// MAC is written as Ethernet destination of frames passed as ours (the
	// receiving interface's own MAC: Linux TCP drops frames sent to a
	// multicast MAC).
	MAC net.HardwareAddr
}

// Objects is the loaded program and its maps. Methods are safe for
// concurrent use.
type Objects struct {
	mu   sync.Mutex
	objs shoalObjects
	// groups mirrors the program's mh_groups values (both halves and the
	// active one), so a write changes only the inactive half.
	groups [MaxGroups]shoalMhGroupCfg
	addrs  [MaxGroups]map[netip.Addr]struct{}
	// owner maps every multi-hosted address to its group index, as the
	// program's address table holds it; addrCfg mirrors mh_addr_config.
	owner   map[netip.Addr]int
	addrCfg shoalMhAddrCfg
	// addrHalves mirrors mh_addr_slots, half by half (all empty after
	// Load), so a rewrite of the inactive half writes only the slots that
	// change: one address added writes one slot, not all 8192.
	addrHalves [2][]shoalMhAddrSlot
	// written is each group's configuration and table as last written
	// (nil = not configured): Prune rewrites it with fewer held buckets.
	written [MaxGroups]*written
}

type written struct {
	cfg   shoalMhGroup
	table []shoalMhChunk
}

// heldFull marks every bucket of a chunk as possibly holding connections.
const heldFull = ^uint64(0)

// Load loads the program and creates its maps in the kernel.
func Load() (*Objects, error) {
	o := &Objects{owner: map[netip.Addr]int{}}
	for h := range o.addrHalves {
		o.addrHalves[h] = make([]shoalMhAddrSlot, addrSlots)
	}
	if err := loadShoalObjects(&o.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load xdp program: %+v", ve)
		}
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	return o, nil
}

// Close unloads the program and its maps. Attachments made with Attach must
// be detached first (the kernel keeps an attached program alive).
func (o *Objects) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.objs.Close(); err != nil {
		return fmt.Errorf("close xdp objects: %w", err)
	}
	return nil
}

// Detacher removes one attachment.
type Detacher interface {
	Detach() error
}

type xdpLink struct{ l link.Link }

func (x xdpLink) Detach() error {
	if err := x.l.Close(); err != nil {
		return fmt.Errorf("detach xdp: %w", err)
	}
	return nil
}

// Attach attaches the program to the interface ifindex with a bpf_link; the
// kernel detaches it when the link is closed or the process exits. The
// index is resolved in the calling thread's network namespace.
func (o *Objects) Attach(ifindex int, mode Mode) (Detacher, error) {
	var flags link.XDPAttachFlags
	switch mode {
	case ModeNative:
		flags = link.XDPDriverMode
	case ModeGeneric:
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: o.objs.ShoalXdp, Interface: ifindex, Flags: flags})
	if err != nil {
		return nil, fmt.Errorf("attach xdp to ifindex %d (%s): %w", ifindex, mode, err)
	}
	return xdpLink{l}, nil
}

// ProgramNameByID returns the kernel name of the program with the given ID
// (as reported by netlink for an interface's XDP attachment).
func ProgramNameByID(id uint32) (string, error) {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return "", fmt.Errorf("open program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return "", fmt.Errorf("program %d info: %w", id, err)
	}
	return info.Name, nil
}

func (o *Objects) validate(index int, g *Group) error {
	if index < 0 || index >= MaxGroups {
		return fmt.Errorf("group index %d out of range 0..%d", index, MaxGroups-1)
	}
	if len(g.Owners) != NumBuckets {
		return fmt.Errorf("owners: %d entries, want %d", len(g.Owners), NumBuckets)
	}
	if g.Prev != nil && len(g.Prev) != NumBuckets {
		return fmt.Errorf("prev: %d entries, want %d or none", len(g.Prev), NumBuckets)
	}
	if g.SelfSlot >= MaxSlots {
		return fmt.Errorf("self slot %d out of range 0..%d", g.SelfSlot, MaxSlots-1)
	}
	if len(g.MAC) != 6 {
		return fmt.Errorf("interface mac %q is not 6 bytes", g.MAC)
	}
	if g.Ifindex < 0 {
		return fmt.Errorf("ifindex %d is negative", g.Ifindex)
	}
	var n4, n6 int
	for a, i := range o.owner {
		if i != index {
			if a.Is4() {
				n4++
			} else {
				n6++
			}
		}
	}
	for _, a := range g.IPs {
		if !a.IsValid() {
			return errors.New("invalid ip address")
		}
		a = a.Unmap()
		if i, ok := o.owner[a]; ok && i != index {
			return fmt.Errorf("ip %s already belongs to group index %d", a, i)
		}
		if a.Is4() {
			n4++
		} else {
			n6++
		}
	}
	if n4 > MaxAddrs || n6 > MaxAddrs {
		return fmt.Errorf("too many multi-hosted addresses (max %d per family)", MaxAddrs)
	}
	return nil
}

// SetGroup writes group index's configuration and partition table. The
// inactive half is written first, then the group's value is rewritten with
// that half active (the active half's bytes unchanged, only the index word
// differs), so the program sees either the old or the new table, never a mix: at
// no moment two owners, never a bucket without owner. When the group's
// addresses changed, the address table is then rewritten and flipped the
// same way, so an address appears with its table in place.
func (o *Objects) SetGroup(index int, g Group) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.validate(index, &g); err != nil {
		return fmt.Errorf("set group %d: %w", index, err)
	}
	cfg := shoalMhGroup{Seed: g.Seed, Ifindex: uint32(g.Ifindex), Flags: flagValid, SelfSlot: g.SelfSlot, PrevAlive: g.PrevAlive}
	if g.HashIPOnly {
		cfg.Flags |= flagIPOnly
	}
	copy(cfg.Mac[:], g.MAC)
	prev := g.Prev
	if prev == nil {
		prev = g.Owners
	}
	// Held buckets: those owned now or before, plus those held already.
	// A group seen for the first time (or rehashed) may have connections
	// anywhere (an agent restarted under live connections): all held until
	// the first Prune.
	old := o.written[index]
	rehash := old == nil || old.cfg.Seed != cfg.Seed || old.cfg.Flags != cfg.Flags || old.cfg.SelfSlot != cfg.SelfSlot
	table := make([]shoalMhChunk, chunks)
	for b := range NumBuckets {
		c := &table[b/chunk]
		c.Owner[b%chunk] = g.Owners[b]
		c.Prev[b%chunk] = prev[b]
		if g.Owners[b] == g.SelfSlot || prev[b] == g.SelfSlot {
			c.Held |= 1 << (b % chunk)
		}
	}
	for i := range table {
		if rehash {
			table[i].Held = heldFull
		} else {
			table[i].Held |= old.table[i].Held
		}
	}
	if err := o.commit(index, &cfg, table); err != nil {
		return fmt.Errorf("set group %d: %w", index, err)
	}

	want := make(map[netip.Addr]struct{}, len(g.IPs))
	for _, a := range g.IPs {
		want[a.Unmap()] = struct{}{}
	}
	if err := o.setAddrs(index, want); err != nil {
		return fmt.Errorf("set group %d: %w", index, err)
	}
	return nil
}

// setAddrs makes want the addresses of group index, rewriting the program's
// address table only when they changed.
func (o *Objects) setAddrs(index int, want map[netip.Addr]struct{}) error {
	if maps.Equal(want, o.addrs[index]) {
		return nil
	}
	owner := make(map[netip.Addr]int, len(o.owner)+len(want))
	for a, i := range o.owner {
		if i != index {
			owner[a] = i
		}
	}
	for a := range want {
		owner[a] = index
	}
	if err := o.writeAddrs(owner); err != nil {
		return err
	}
	o.owner = owner
	o.addrs[index] = want
	return nil
}

// ClearGroup removes group index: its addresses first, then its
// configuration (both halves end up invalid).
func (o *Objects) ClearGroup(index int) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if index < 0 || index >= MaxGroups {
		return fmt.Errorf("clear group %d: index out of range", index)
	}
	if err := o.setAddrs(index, nil); err != nil {
		return fmt.Errorf("clear group %d: %w", index, err)
	}
	gc := shoalMhGroupCfg{Half: o.groups[index].Half} // both halves invalid
	if err := o.objs.MhGroups.Put(uint32(index), &gc); err != nil {
		return fmt.Errorf("clear group %d: %w", index, err)
	}
	o.groups[index] = gc
	o.written[index] = nil
	return nil
}

// commit writes cfg and table to the inactive half of group index and flips
// the group to it.
func (o *Objects) commit(index int, cfg *shoalMhGroup, table []shoalMhChunk) error {
	gc := o.groups[index]
	next := 1 - gc.Half
	base := (uint32(index)*2 + next) * chunks
	keys := make([]uint32, chunks)
	for i := range keys {
		keys[i] = base + uint32(i)
	}
	if err := batchPut(o.objs.MhTable, keys, table); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	gc.Cfg[next] = *cfg
	if err := o.objs.MhGroups.Put(uint32(index), &gc); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	gc.Half = next
	if err := o.objs.MhGroups.Put(uint32(index), &gc); err != nil {
		return fmt.Errorf("flip table: %w", err)
	}
	o.groups[index] = gc
	o.written[index] = &written{cfg: *cfg, table: table}
	return nil
}

// Conn is a local TCP socket as a socket dump reports it: the client's
// address and port, and the local (multi-hosted) ones.
type Conn struct {
	Remote, Local netip.AddrPort
}

// Handover reports how many buckets of group index this node owns while
// their previous owner, alive, keeps its connections there: non-SYN TCP
// packets of these buckets cost a socket lookup. 0 for an unconfigured
// group.
func (o *Objects) Handover(index int) int {
	return o.countBuckets(index, func(cfg *shoalMhGroup, c *shoalMhChunk, i int) bool {
		prev := c.Prev[i]
		return c.Owner[i] == cfg.SelfSlot && prev != cfg.SelfSlot && prev < MaxSlots && cfg.PrevAlive>>prev&1 == 1
	})
}

// Held reports how many buckets of group index the program treats as
// possibly holding this node's connections without being owned here (each
// costs a socket lookup per packet); 0 for an unconfigured group.
func (o *Objects) Held(index int) int {
	return o.countBuckets(index, func(cfg *shoalMhGroup, c *shoalMhChunk, i int) bool {
		return c.Held>>i&1 == 1 && c.Owner[i] != cfg.SelfSlot
	})
}

// countBuckets counts the buckets of group index, as last written, for
// which match (given the bucket's chunk and its index in it) is true.
func (o *Objects) countBuckets(index int, match func(cfg *shoalMhGroup, c *shoalMhChunk, i int) bool) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if index < 0 || index >= MaxGroups || o.written[index] == nil {
		return 0
	}
	w := o.written[index]
	n := 0
	for b := range NumBuckets {
		if match(&w.cfg, &w.table[b/chunk], b%chunk) {
			n++
		}
	}
	return n
}

// Prune shrinks group index's held buckets to those owned here and those
// with a live local socket. When some bucket is held without being owned, it
// calls conns for the node's current TCP sockets (any state; a dump taken
// while Prune holds the table lock, so no table change races with it) and
// rewrites the table. It returns the held-not-owned buckets left.
func (o *Objects) Prune(index int, conns func() ([]Conn, error)) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if index < 0 || index >= MaxGroups {
		return 0, fmt.Errorf("prune group %d: index out of range", index)
	}
	w := o.written[index]
	if w == nil {
		return 0, nil
	}
	self := w.cfg.SelfSlot
	extra := false
	for i := range w.table {
		if w.table[i].Held&^ownedBits(&w.table[i], self) != 0 {
			extra = true
			break
		}
	}
	if !extra {
		return 0, nil
	}
	cs, err := conns()
	if err != nil {
		return 0, fmt.Errorf("prune group %d: %w", index, err)
	}
	live := make([]uint64, chunks)
	ipOnly := w.cfg.Flags&flagIPOnly != 0
	for _, c := range cs {
		l := c.Local.Addr().Unmap()
		if _, ok := o.addrs[index][l]; !ok {
			continue
		}
		b := Bucket(c.Remote.Addr().Unmap(), l, c.Remote.Port(), c.Local.Port(), w.cfg.Seed, ipOnly)
		live[b/chunk] |= 1 << (b % chunk)
	}
	table := slices.Clone(w.table)
	left := 0
	for i := range table {
		own := ownedBits(&table[i], self)
		kept := table[i].Held &^ own & live[i]
		table[i].Held = own | kept
		left += bits.OnesCount64(kept)
	}
	cfg := w.cfg
	if err := o.commit(index, &cfg, table); err != nil {
		return 0, fmt.Errorf("prune group %d: %w", index, err)
	}
	return left, nil
}

// ownedBits returns the bits of the buckets of c owned by slot self.
func ownedBits(c *shoalMhChunk, self uint8) uint64 {
	var m uint64
	for i, o := range c.Owner {
		if o == self {
			m |= 1 << i
		}
	}
	return m
}

// Counters reads the program's counters, summed over CPUs.
func (o *Objects) Counters() (Counters, error) {
	var vals [8]uint64
	for i := range vals {
		var per []uint64
		if err := o.objs.MhCounters.Lookup(uint32(i), &per); err != nil {
			return Counters{}, fmt.Errorf("read xdp counters: %w", err)
		}
		for _, v := range per {
			vals[i] += v
		}
	}
	return Counters{
		PassedOwner:     vals[0],
		PassedSocket:    vals[1],
		DroppedNotOwner: vals[2],
		DroppedHandover: vals[3],
		PassedNotOurs:   vals[4],
		ParseErrors:     vals[5],
		ICMPSteered:     vals[6],
		Fragments:       vals[7],
	}, nil
}
