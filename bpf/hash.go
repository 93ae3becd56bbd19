package bpf

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// NumBuckets is the size of a group's hash space (8!).
const NumBuckets = 40320

// Hash is the Go reference of the program's flow hash: a murmur3-style
// 32-bit hash seeded with seed over the packet bytes read as little-endian
// 32-bit words: source address, then (unless ipOnly) destination address and
// the word made of the source and destination ports as they sit in the
// packet. An IPv6 destination is first folded to one word (XOR of its four):
// it is one of a group's few multi-hosted IPs. src and dst must be the same family; IPv4-mapped IPv6 addresses
// are hashed as IPv4. Ports are in host order. The tuple is always the one of
// a packet from the client to this node (sport = client port).
func Hash(src, dst netip.Addr, sport, dport uint16, seed uint32, ipOnly bool) uint32 {
	src, dst = src.Unmap(), dst.Unmap()
	h := seed
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		h = mix(h, binary.LittleEndian.Uint32(s[:]))
		if ipOnly {
			return fmix(h, 4)
		}
		h = mix(h, binary.LittleEndian.Uint32(d[:]))
		h = mix(h, portsWord(sport, dport))
		return fmix(h, 12)
	}
	s, d := src.As16(), dst.As16()
	for i := 0; i < 16; i += 4 {
		h = mix(h, binary.LittleEndian.Uint32(s[i:]))
	}
	if ipOnly {
		return fmix(h, 16)
	}
	var fold uint32
	for i := 0; i < 16; i += 4 {
		fold ^= binary.LittleEndian.Uint32(d[i:])
	}
	h = mix(h, fold)
	h = mix(h, portsWord(sport, dport))
	return fmix(h, 24)
}

// Bucket maps a flow to one of NumBuckets buckets exactly as the program
// does: multiply-shift of Hash, free of modulo bias.
func Bucket(src, dst netip.Addr, sport, dport uint16, seed uint32, ipOnly bool) int {
	return BucketOf(Hash(src, dst, sport, dport, seed, ipOnly))
}

// BucketOf maps a hash value to its bucket: (h * NumBuckets) >> 32.
func BucketOf(h uint32) int {
	return int((uint64(h) * NumBuckets) >> 32)
}

// portsWord is the 32-bit little-endian load of the 4 port bytes
// (source port then destination port, both big-endian in the packet).
func portsWord(sport, dport uint16) uint32 {
	return uint32(bits.ReverseBytes16(sport)) | uint32(bits.ReverseBytes16(dport))<<16
}

func mix(h, k uint32) uint32 {
	k *= 0xcc9e2d51
	k = bits.RotateLeft32(k, 15)
	k *= 0x1b873593
	h ^= k
	h = bits.RotateLeft32(h, 13)
	return h*5 + 0xe6546b64
}

func fmix(h, n uint32) uint32 {
	h ^= n
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
