package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// The multi-hosted address table (maps mh_addr_config, mh_addr_slots): an open-addressing hash table in array-map slots, which the
// JIT reads inline. These constants and addrHome mirror the C program.
const (
	addrBits   = 13
	addrSlots  = 1 << addrBits // per half; 2 x MaxAddrs addresses fill at most 1/4
	addrProbes = 16
	// addrSalts bounds the salts tried before an address set is refused.
	addrSalts = 64
)

// addrWords returns a's words as the program reads them from the packet
// (little-endian loads of network-order bytes), and whether it is IPv6.
func addrWords(a netip.Addr) ([4]uint32, uint32) {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[0] = binary.LittleEndian.Uint32(b[:])
		return w, 0
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w, 1
}

// addrHome is the slot where the probe for words w starts.
func addrHome(salt uint32, w [4]uint32, v6 uint32) uint32 {
	const phi = 0x9e3779b1
	h := (salt ^ w[0]) * phi
	if v6 == 1 {
		h = (h ^ w[1]) * phi
		h = (h ^ w[2]) * phi
		h = (h ^ w[3]) * phi
	}
	return h >> (32 - addrBits)
}

// buildAddrTable places every address of owner (address -> group index)
// within addrProbes slots of its home, trying salts until one fits.
func buildAddrTable(owner map[netip.Addr]int) (uint32, []shoalMhAddrSlot, error) {
	for try := range uint32(addrSalts) {
		salt := try * 0x9e3779b9
		slots, ok := placeAddrs(owner, salt)
		if ok {
			return salt, slots, nil
		}
	}
	return 0, nil, errors.New("multi-hosted addresses: no hash salt places them all within the probe limit")
}

func placeAddrs(owner map[netip.Addr]int, salt uint32) ([]shoalMhAddrSlot, bool) {
	slots := make([]shoalMhAddrSlot, addrSlots)
	for a, g := range owner {
		w, v6 := addrWords(a)
		home := addrHome(salt, w, v6)
		placed := false
		for i := range uint32(addrProbes) {
			s := &slots[(home+i)&(addrSlots-1)]
			if s.Group == 0 {
				*s = shoalMhAddrSlot{Addr: w, Group: uint32(g) + 1, V6: v6}
				placed = true
				break
			}
		}
		if !placed {
			return nil, false
		}
	}
	return slots, true
}

// writeAddrs makes owner the program's address table: the slots of the
// inactive half that differ are written with its salt, then the active half
// is flipped, so a packet sees the old set or the new one, never a mix.
func (o *Objects) writeAddrs(owner map[netip.Addr]int) error {
	salt, slots, err := buildAddrTable(owner)
	if err != nil {
		return err
	}
	ac := o.addrCfg
	next := 1 - ac.Half
	have := o.addrHalves[next]
	var keys []uint32
	var vals []shoalMhAddrSlot
	for i := range slots {
		if have == nil || slots[i] != have[i] {
			keys = append(keys, next*addrSlots+uint32(i))
			vals = append(vals, slots[i])
		}
	}
	if len(keys) > 0 {
		// Whatever part of the batch was written, the mirror no longer
		// says what the half holds until this write succeeds: rewrite
		// the whole half next time.
		o.addrHalves[next] = nil
		if err := batchPut(o.objs.MhAddrSlots, keys, vals); err != nil {
			return fmt.Errorf("write address table: %w", err)
		}
		o.addrHalves[next] = slots
	}
	ac.Salt[next] = salt
	if err := o.objs.MhAddrConfig.Put(uint32(0), &ac); err != nil {
		return fmt.Errorf("write address table salt: %w", err)
	}
	ac.Half = next
	if err := o.objs.MhAddrConfig.Put(uint32(0), &ac); err != nil {
		return fmt.Errorf("flip address table: %w", err)
	}
	o.addrCfg = ac
	return nil
}

// batchPut writes vals at keys in one system call where the kernel can.
func batchPut[V any](m *ebpf.Map, keys []uint32, vals []V) error {
	if _, err := m.BatchUpdate(keys, vals, nil); err == nil || !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Put(keys[i], &vals[i]); err != nil {
			return err
		}
	}
	return nil
}
