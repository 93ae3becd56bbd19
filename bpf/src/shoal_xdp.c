// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// shoal_xdp keeps this node's share of the traffic to multi-hosted IPs.
//
// Every node of a multi-hosted group receives every frame sent to the group's
// multicast MAC. For a packet addressed to a configured multi-hosted IP the
// program hashes the flow (src ip, src port, dst ip, dst port; or the source
// IP only) with a seeded murmur3-style hash, maps it to one of 40320 buckets by
// multiply-shift and keeps the packet only when this node owns the bucket or
// holds a socket for the exact connection. Everything else passes untouched.
//
// The hash is defined over the packet bytes read as little-endian 32-bit
// words; the Go reference implementation (bpf.Hash, bpf.Bucket) computes the
// same value and the tests compare both.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MH_BUCKETS 40320
#define MH_CHUNK 64
#define MH_CHUNKS (MH_BUCKETS / MH_CHUNK)
#define MH_MAX_GROUPS 32
#define MH_MAX_ADDRS 1024 // per family
#define MH_ADDR_BITS 13
#define MH_ADDR_SLOTS (1 << MH_ADDR_BITS) // per half: load <= 1/4
#define MH_ADDR_PROBES 16
#define MH_MAX_SLOTS 8
#define MH_TCP_LISTEN 10
#define MH_IPV6_EXT_MAX 4

#define MH_F_VALID 1
#define MH_F_IP_ONLY 2

enum mh_counter {
	MH_C_PASSED_OWNER = 0,
	MH_C_PASSED_SOCKET,
	MH_C_DROPPED_NOT_OWNER,
	MH_C_DROPPED_HANDOVER,
	MH_C_PASSED_NOT_OURS,
	MH_C_PARSE_ERRORS,
	MH_C_ICMP_STEERED,
	MH_C_FRAGMENTS,
	MH_C_MAX,
};

// mh_group is one half of a group's configuration.
struct mh_group {
	__u32 seed;
	__u32 ifindex; // 0 = any ingress interface
	__u8 mac[6];   // rewritten Ethernet destination (the interface's own MAC)
	__u8 flags;    // MH_F_*
	__u8 self_slot;
	__u8 prev_alive; // bit s = slot s alive
	__u8 pad[3];
};

// mh_chunk holds the owner and previous owner of 64 consecutive buckets, and
// which of them this node may hold connections of: bit i of held is set while
// bucket i is owned here, was owned here since the last prune, or has a live
// local socket (user space clears it from a socket dump). A packet of a
// bucket that is neither owned nor held is dropped without a socket lookup:
// the common case of a not-owned packet costs a table read, not a lookup.
struct mh_chunk {
	__u8 owner[MH_CHUNK];
	__u8 prev[MH_CHUNK];
	__u64 held;
};

// mh_addr_slot is one slot of the multi-hosted address table, an
// open-addressing hash table of array-map slots: an array lookup is inlined
// by the JIT, where a hash-map lookup is a call that hashes the key and
// walks a bucket list (about 20 ns a packet on a 2-core VM, paid by every
// packet on the interface, most of which are not multi-hosted).
struct mh_addr_slot {
	__u32 addr[4]; // IPv4: addr[0] as in the packet, the rest 0
	__u32 group;   // group index + 1; 0 = empty slot, which ends a probe
	__u32 v6;      // 1 for an IPv6 address
};

// mh_addr_cfg says which half of mh_addr_slots is active and each half's
// hash salt (user space changes the salt until every address sits within
// MH_ADDR_PROBES slots of its home). User space fills the inactive half and
// its salt, then rewrites the value with the other half: an address change
// is seen all at once, as the partition tables are. Reading the half and its
// salt from one value costs one lookup.
struct mh_addr_cfg {
	__u32 half;
	__u32 salt[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mh_addr_cfg);
} mh_addr_config SEC(".maps");

// half*MH_ADDR_SLOTS + slot -> address and group.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MH_ADDR_SLOTS);
	__type(key, __u32);
	__type(value, struct mh_addr_slot);
} mh_addr_slots SEC(".maps");

// mh_group_cfg is a group's configuration in two halves and which one is
// active. User space writes the inactive half (and its partition table in
// mh_table), then flips half: the program sees the old configuration and
// table or the new ones, never a mix. Rewriting the value leaves the bytes of
// the active half unchanged, so a concurrent reader never sees them torn.
struct mh_group_cfg {
	__u32 half;
	__u32 pad;
	struct mh_group cfg[2];
};

// group index -> its configuration halves.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MH_MAX_GROUPS);
	__type(key, __u32);
	__type(value, struct mh_group_cfg);
} mh_groups SEC(".maps");

// (group*2+half)*MH_CHUNKS + bucket/64 -> owners of 64 buckets.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MH_MAX_GROUPS * 2 * MH_CHUNKS);
	__type(key, __u32);
	__type(value, struct mh_chunk);
} mh_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MH_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mh_counters SEC(".maps");

// From linux/icmp.h, which pulls in libc headers.
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct frag6_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

// flow is the tuple a packet is steered by, in the direction client -> us.
struct flow {
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 v6;
	__u8 frag;    // hashed with ports 0, no socket lookup
	__u8 syn;     // TCP SYN without ACK
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mh_counters, &idx);
	if (v)
		*v += 1;
}

// find_group returns the group index of a multi-hosted destination (four
// words for IPv6, one for IPv4), or -1. The slot hash is multiplicative over
// the address words and the half's salt; probing is linear and stops at an
// empty slot, so a packet to any other address costs one slot read unless
// its home slot is taken.
static __always_inline int find_group(const __u32 *dst, __u32 v6)
{
	__u32 zero = 0, hf, h, k;
	struct mh_addr_cfg *ac;
	struct mh_addr_slot *s;

	ac = bpf_map_lookup_elem(&mh_addr_config, &zero);
	if (!ac)
		return -1;
	hf = ac->half & 1;
	h = (ac->salt[hf] ^ dst[0]) * 0x9e3779b1;
	if (v6) {
		h = (h ^ dst[1]) * 0x9e3779b1;
		h = (h ^ dst[2]) * 0x9e3779b1;
		h = (h ^ dst[3]) * 0x9e3779b1;
	}
	h >>= 32 - MH_ADDR_BITS;
#pragma unroll
	for (int i = 0; i < MH_ADDR_PROBES; i++) {
		k = hf * MH_ADDR_SLOTS + ((h + i) & (MH_ADDR_SLOTS - 1));
		s = bpf_map_lookup_elem(&mh_addr_slots, &k);
		if (!s || !s->group)
			return -1;
		if (s->v6 != v6 || s->addr[0] != dst[0])
			continue;
		if (!v6 || (s->addr[1] == dst[1] && s->addr[2] == dst[2] && s->addr[3] == dst[3]))
			return s->group - 1;
	}
	return -1;
}

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 fmix(__u32 h, __u32 len)
{
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 flow_hash(const struct flow *f, __u32 seed, int ip_only)
{
	__u32 h = seed;
	__u32 ports = (__u32)f->sport | ((__u32)f->dport << 16);

	if (!f->v6) {
		h = mix(h, f->src[0]);
		if (ip_only)
			return fmix(h, 4);
		h = mix(h, f->dst[0]);
		h = mix(h, ports);
		return fmix(h, 12);
	}
	h = mix(h, f->src[0]);
	h = mix(h, f->src[1]);
	h = mix(h, f->src[2]);
	h = mix(h, f->src[3]);
	if (ip_only)
		return fmix(h, 16);
	// The destination is one of the group's few multi-hosted IPs: its four
	// words are folded into one, three mixing rounds fewer per packet.
	h = mix(h, f->dst[0] ^ f->dst[1] ^ f->dst[2] ^ f->dst[3]);
	h = mix(h, ports);
	return fmix(h, 24);
}

// has_socket reports whether this host holds a non-listening TCP socket
// (established, request or time-wait) for the flow.
static __always_inline int has_socket(struct xdp_md *ctx, const struct flow *f)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	int found = 0;

	if (!f->v6) {
		t.ipv4.saddr = f->src[0];
		t.ipv4.daddr = f->dst[0];
		t.ipv4.sport = f->sport;
		t.ipv4.dport = f->dport;
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, f->src, 16);
		__builtin_memcpy(t.ipv6.daddr, f->dst, 16);
		t.ipv6.sport = f->sport;
		t.ipv6.dport = f->dport;
		size = sizeof(t.ipv6);
	}
	sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state != MH_TCP_LISTEN)
		found = 1;
	bpf_sk_release(sk);
	return found;
}

static __always_inline int pass_ours(struct ethhdr *eth, const struct mh_group *cfg, __u32 counter)
{
	__builtin_memcpy(eth->h_dest, cfg->mac, ETH_ALEN);
	count(counter);
	return XDP_PASS;
}

// decide applies the partition table to a parsed flow of group g.
static __always_inline int decide(struct xdp_md *ctx, struct ethhdr *eth, __u32 g, struct flow *f)
{
	struct mh_group_cfg *gc;
	struct mh_group *cfg;
	struct mh_chunk *c;
	__u32 hf, gi, b, ck;
	__u8 owner, prev, self;
	int tcp;

	gc = bpf_map_lookup_elem(&mh_groups, &g);
	if (!gc)
		goto not_ours;
	hf = gc->half & 1;
	gi = g * 2 + hf;
	cfg = &gc->cfg[hf];
	if (!(cfg->flags & MH_F_VALID))
		goto not_ours;
	if (cfg->ifindex && cfg->ifindex != ctx->ingress_ifindex)
		goto not_ours;

	b = (__u32)(((__u64)flow_hash(f, cfg->seed, cfg->flags & MH_F_IP_ONLY) * MH_BUCKETS) >> 32);
	ck = gi * MH_CHUNKS + b / MH_CHUNK;
	c = bpf_map_lookup_elem(&mh_table, &ck);
	if (!c) {
		count(MH_C_PARSE_ERRORS);
		return XDP_DROP;
	}
	owner = c->owner[b & (MH_CHUNK - 1)];
	prev = c->prev[b & (MH_CHUNK - 1)];
	self = cfg->self_slot;
	tcp = f->proto == IPPROTO_TCP && !f->frag;

	if (owner == self) {
		// Handover: the bucket's previous owner is alive and still holds
		// its connections; leave them to it and take only new ones.
		if (tcp && !f->syn && prev != self && prev < MH_MAX_SLOTS &&
		    ((cfg->prev_alive >> prev) & 1)) {
			if (has_socket(ctx, f))
				return pass_ours(eth, cfg, MH_C_PASSED_SOCKET);
			count(MH_C_DROPPED_HANDOVER);
			return XDP_DROP;
		}
		return pass_ours(eth, cfg, MH_C_PASSED_OWNER);
	}
	if (tcp && !f->syn && ((c->held >> (b & (MH_CHUNK - 1))) & 1) && has_socket(ctx, f))
		return pass_ours(eth, cfg, MH_C_PASSED_SOCKET);
	count(MH_C_DROPPED_NOT_OWNER);
	return XDP_DROP;

not_ours:
	count(MH_C_PASSED_NOT_OURS);
	return XDP_PASS;
}

static __always_inline int is_icmp4_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

static __always_inline int is_icmp6_error(__u8 type)
{
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG || type == ICMPV6_TIME_EXCEED ||
	       type == ICMPV6_PARAMPROB;
}

// icmp4_inner fills f from the header embedded in an ICMP error: the packet
// this host sent, so its tuple is reversed to the client -> us direction.
// Returns 0 on success, -1 when the embedded headers are truncated.
static __always_inline int icmp4_inner(void *p, void *end, struct flow *f)
{
	struct iphdr *in = p;
	__u16 *ports;
	__u32 ihl;

	if ((void *)(in + 1) > end)
		return -1;
	ihl = in->ihl;
	if (in->version != 4 || ihl < 5)
		return -1;
	f->src[0] = in->daddr;
	f->dst[0] = in->saddr;
	f->proto = in->protocol;
	f->sport = 0;
	f->dport = 0;
	// Ports exist only in a first fragment (offset 0).
	if (in->frag_off & bpf_htons(0x1fff))
		return 0;
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return 0;
	ports = p + ihl * 4;
	if ((void *)(ports + 2) > end)
		return -1;
	f->sport = ports[1];
	f->dport = ports[0];
	return 0;
}

static __always_inline int handle4(struct xdp_md *ctx, struct ethhdr *eth, void *l3, void *end)
{
	struct iphdr *ip = l3;
	struct flow f = {};
	__u32 ihl, daddr;
	void *l4;
	int g;

	if ((void *)(ip + 1) > end) {
		count(MH_C_PARSE_ERRORS);
		return XDP_PASS;
	}
	daddr = ip->daddr;
	g = find_group(&daddr, 0);
	if (g < 0) {
		count(MH_C_PASSED_NOT_OURS);
		return XDP_PASS;
	}
	// Addressed to a multi-hosted IP: from here on a malformed packet is
	// dropped, never passed as ours.
	ihl = ip->ihl;
	if (ip->version != 4 || ihl < 5)
		goto bad;
	l4 = l3 + ihl * 4;
	if (l4 > end)
		goto bad;
	f.src[0] = ip->saddr;
	f.dst[0] = ip->daddr;
	f.proto = ip->protocol;

	if (ip->frag_off & bpf_htons(0x3fff)) { // MF set or offset != 0
		f.frag = 1;
		count(MH_C_FRAGMENTS);
		return decide(ctx, eth, g, &f);
	}
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			goto bad;
		f.sport = th->source;
		f.dport = th->dest;
		f.syn = th->syn && !th->ack;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			goto bad;
		f.sport = uh->source;
		f.dport = uh->dest;
	} else if (ip->protocol == IPPROTO_ICMP) {
		struct icmphdr *ih = l4;
		if ((void *)(ih + 1) > end)
			goto bad;
		if (is_icmp4_error(ih->type)) {
			if (icmp4_inner((void *)(ih + 1), end, &f) < 0)
				goto bad;
			count(MH_C_ICMP_STEERED);
		}
	}
	return decide(ctx, eth, g, &f);
bad:
	count(MH_C_PARSE_ERRORS);
	return XDP_DROP;
}

// skip6 walks IPv6 extension headers. On return *nh is the upper-layer
// protocol, *frag is 1 for a fragment with offset != 0 or M set. Returns the
// upper-layer header or NULL when truncated.
static __always_inline void *skip6(void *p, void *end, __u8 *nh, __u8 *frag)
{
#pragma unroll
	for (int i = 0; i < MH_IPV6_EXT_MAX; i++) {
		if (*nh == IPPROTO_HOPOPTS || *nh == IPPROTO_ROUTING || *nh == IPPROTO_DSTOPTS) {
			struct ipv6_opt_hdr *oh = p;
			if ((void *)(oh + 1) > end)
				return NULL;
			*nh = oh->nexthdr;
			p += (oh->hdrlen + 1) * 8;
		} else if (*nh == IPPROTO_FRAGMENT) {
			struct frag6_hdr *fh = p;
			if ((void *)(fh + 1) > end)
				return NULL;
			*nh = fh->nexthdr;
			if (fh->frag_off & bpf_htons(0xfff9))
				*frag = 1;
			p += sizeof(*fh);
		} else {
			break;
		}
	}
	return p;
}

static __always_inline int icmp6_inner(void *p, void *end, struct flow *f)
{
	struct ipv6hdr *in = p;
	__u8 nh, frag = 0;
	__u16 *ports;

	if ((void *)(in + 1) > end)
		return -1;
	__builtin_memcpy(f->src, &in->daddr, 16);
	__builtin_memcpy(f->dst, &in->saddr, 16);
	nh = in->nexthdr;
	f->sport = 0;
	f->dport = 0;
	p = skip6((void *)(in + 1), end, &nh, &frag);
	f->proto = nh;
	// A truncated extension chain or a non-first fragment carries no ports.
	if (!p || frag)
		return 0;
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP)
		return 0;
	ports = p;
	if ((void *)(ports + 2) > end)
		return -1;
	f->sport = ports[1];
	f->dport = ports[0];
	return 0;
}

static __always_inline int handle6(struct xdp_md *ctx, struct ethhdr *eth, void *l3, void *end)
{
	struct ipv6hdr *ip = l3;
	struct flow f = {};
	__u8 nh, frag = 0;
	void *l4;
	int g;

	if ((void *)(ip + 1) > end) {
		count(MH_C_PARSE_ERRORS);
		return XDP_PASS;
	}
	__builtin_memcpy(f.dst, &ip->daddr, 16);
	g = find_group(f.dst, 1);
	if (g < 0) {
		count(MH_C_PASSED_NOT_OURS);
		return XDP_PASS;
	}
	if (ip->version != 6)
		goto bad;
	f.v6 = 1;
	__builtin_memcpy(f.src, &ip->saddr, 16);
	nh = ip->nexthdr;
	l4 = skip6((void *)(ip + 1), end, &nh, &frag);
	if (!l4)
		goto bad;
	f.proto = nh;
	if (frag) {
		f.frag = 1;
		count(MH_C_FRAGMENTS);
		return decide(ctx, eth, g, &f);
	}
	if (nh == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			goto bad;
		f.sport = th->source;
		f.dport = th->dest;
		f.syn = th->syn && !th->ack;
	} else if (nh == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			goto bad;
		f.sport = uh->source;
		f.dport = uh->dest;
	} else if (nh == IPPROTO_ICMPV6) {
		struct icmp6hdr *ih = l4;
		if ((void *)(ih + 1) > end)
			goto bad;
		if (is_icmp6_error(ih->icmp6_type)) {
			if (icmp6_inner((void *)(ih + 1), end, &f) < 0)
				goto bad;
			count(MH_C_ICMP_STEERED);
		}
	}
	return decide(ctx, eth, g, &f);
bad:
	count(MH_C_PARSE_ERRORS);
	return XDP_DROP;
}

SEC("xdp")
int shoal_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3;
	__be16 proto;

	if ((void *)(eth + 1) > end) {
		count(MH_C_PARSE_ERRORS);
		return XDP_PASS;
	}
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = l3;
		if ((void *)(vh + 1) > end) {
			count(MH_C_PARSE_ERRORS);
			return XDP_PASS;
		}
		proto = vh->proto;
		l3 = vh + 1;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return handle4(ctx, eth, l3, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle6(ctx, eth, l3, end);
	count(MH_C_PASSED_NOT_OURS);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
