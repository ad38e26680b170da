// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The XDP program attached to the host's uplink NIC. The NIC stays the
// host's: everything that is not VXLAN for one of our networks goes to the
// kernel's stack untouched (XDP_PASS). VXLAN (UDP port vxlan_port, 4789 by
// default) over IPv4 or IPv6, with at most one 802.1Q/802.1ad tag on the
// outer frame, addressed to one of the local VTEP addresses (local_addrs)
// and carrying a VNI the switch serves (vnis), is validated, stripped down
// to the inner Ethernet frame and handed to the AF_XDP socket of its rx
// queue, with a struct uplink_meta (meta.h) in front of it, in the frame:
// the VNI, the switch's network for it and where it came from.
//
// Outer fragments are not decapsulated here: an XDP program sees one frame
// at a time and cannot reassemble. They are handed to the socket raw (see
// the fragment section below) so that the switch reassembles them before
// decapsulating, and so that every fragment of one datagram takes the same
// path (RFC 8900 section 6.3): all to the switch, or all to the host.
//
// The outer UDP checksum is not checked: VXLAN over IPv4 usually sends
// none, over IPv6 a zero checksum is allowed for tunnels (RFC 6935), and the
// inner frame carries its own checksums. What the host's stack would refuse
// before its VXLAN device saw the datagram is refused here too: a bad IPv4
// header checksum, a source that no VTEP can have (multicast, broadcast,
// unspecified), an IPv6 address that is v4-mapped.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "meta.h"

// Set by the loader before the program is loaded.
volatile const __u16 vxlan_port = 4789;             // host order
volatile const __u64 frag_timeout_ns = 30000000000; // see the fragment section

// Keyed by rx queue index; the value is an AF_XDP socket fd (written from
// user space). Declared with key_size/value_size: an XSKMAP with BTF key
// and value types fails to create on these kernels (errno 524).
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 64);
} xsks SEC(".maps");

// An IPv6 address, or an IPv4 address mapped into IPv6 (::ffff:a.b.c.d).
struct uplink_addr {
	__u8 b[16];
};

// The local VTEP addresses: VXLAN to any other address is not ours.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct uplink_addr);
	__type(value, __u8);
	__uint(max_entries, 64);
} local_addrs SEC(".maps");

// VNI (host order) -> the switch's network id for it.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 16384);
} vnis SEC(".maps");

// An outer datagram whose first fragment was VXLAN for us: RFC 791 and
// RFC 8200 identify a datagram by source, destination, identification (and
// for IPv4 the protocol, which we keep for IPv6 too: the Fragment header's
// next header is the same in every fragment).
struct uplink_frag_key {
	struct uplink_addr src;
	struct uplink_addr dst;
	__u32 id; // the IPv4 id or the IPv6 identification, as on the wire
	__u8 proto;
	__u8 pad[3];
};

// The value is the time the first fragment was seen (bpf_ktime_get_ns).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct uplink_frag_key);
	__type(value, __u64);
	__uint(max_entries, 4096);
} vxlan_frags SEC(".maps");

// Keep in step with uplinkStatNames in uplink.go.
enum uplink_stat {
	UPLINK_STAT_DECAP_V4 = 0,     // decapsulated, handed to a socket (IPv4 underlay)
	UPLINK_STAT_DECAP_V6,         // the same over IPv6
	UPLINK_STAT_PASS_NOT_VXLAN,   // not IP, not UDP, another port, extension headers, two VLAN tags
	UPLINK_STAT_PASS_NOT_LOCAL,   // VXLAN, or a fragment, for an address that is not a local VTEP
	UPLINK_STAT_PASS_UNKNOWN_VNI, // VXLAN for a VNI the switch does not serve
	UPLINK_STAT_PASS_MALFORMED,   // outer headers or VXLAN header fail the checks
	UPLINK_STAT_FRAG_REDIRECTED,  // an outer fragment handed to a socket raw
	UPLINK_STAT_FRAG_PASSED,      // a later fragment with no VXLAN first fragment on record
	UPLINK_STAT_PASS_NO_SOCKET,   // ours, but no socket on this rx queue
	UPLINK_STAT_PASS_NO_ROOM,     // ours, but no headroom for the record
	UPLINK_STAT_DROP_REDIRECT,    // decapsulated, then the socket vanished
	UPLINK_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, UPLINK_STAT_MAX);
} uplink_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&uplink_stats, &stat);

	if (v)
		*v += 1;
}

static __always_inline int pass(__u32 stat)
{
	count(stat);
	return XDP_PASS;
}

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct vxlan_hdr {
	__be32 flags; // I flag 0x08 in the first byte, the other 31 bits reserved
	__be32 vni;   // VNI in the upper 24 bits, 8 reserved bits
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; // offset in 8-byte units << 3, M flag in bit 0
	__be32 identification;
};

#define VXLAN_FLAGS bpf_htonl(0x08000000)
#define VXLAN_HLEN 8

enum frag_kind {
	FRAG_NONE = 0, // a whole datagram
	FRAG_FIRST,    // offset 0, more fragments follow: holds the UDP header
	FRAG_LATER,    // offset > 0: no UDP header
};

// What the outer IP header says, independent of the IP version.
struct outer {
	struct uplink_addr src;
	struct uplink_addr dst;
	__u32 l4off;  // offset of the transport header from ctx->data
	__u32 l4len;  // bytes of IP payload from l4off on, as the IP header says
	__u32 frag_id;
	__u8 l4proto;
	__u8 frag;    // enum frag_kind
	__u8 flags;   // UPLINK_META_OUTER_*
	__u8 ipv6;
};

static __always_inline void map_v4(struct uplink_addr *a, const __be32 *v4)
{
	__builtin_memset(a->b, 0, 10);
	a->b[10] = 0xff;
	a->b[11] = 0xff;
	__builtin_memcpy(&a->b[12], v4, 4);
}

// parse_ipv4 fills o from the IPv4 header at offset off; false when the
// header fails the sanity checks.
static __always_inline int parse_ipv4(struct xdp_md *ctx, __u32 off, struct outer *o)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + off;
	__u32 hlen, tot;
	__u16 fo;

	if ((void *)(ip + 1) > end)
		return 0;
	if (ip->version != 4 || ip->ihl < 5)
		return 0;
	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (tot < hlen || (void *)ip + tot > end)
		return 0;
	map_v4(&o->src, &ip->saddr);
	map_v4(&o->dst, &ip->daddr);
	o->l4off = off + hlen;
	o->l4len = tot - hlen;
	o->l4proto = ip->protocol;
	fo = bpf_ntohs(ip->frag_off);
	if (fo & 0x1fff)
		o->frag = FRAG_LATER;
	else if (fo & 0x2000) // MF
		o->frag = FRAG_FIRST;
	else
		o->frag = FRAG_NONE;
	o->frag_id = ip->id;
	return 1;
}

static __always_inline int is_v4mapped(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == 0 && a->in6_u.u6_addr32[1] == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0xffff);
}

// parse_ipv6 fills o from the IPv6 header at offset off. Of the extension
// headers only a Fragment header right after the fixed header is followed
// (VXLAN senders use no others); any other next header is simply "not UDP".
static __always_inline int parse_ipv6(struct xdp_md *ctx, __u32 off, struct outer *o)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + off;
	struct ipv6_frag_hdr *fh;
	__u32 plen;
	__u16 fo;

	if ((void *)(ip6 + 1) > end)
		return 0;
	if (ip6->version != 6)
		return 0;
	plen = bpf_ntohs(ip6->payload_len);
	if (plen == 0 || (void *)(ip6 + 1) + plen > end) // 0: a jumbogram, never VXLAN
		return 0;
	// IPv4 VTEPs are keyed as v4-mapped addresses; an IPv6 packet to or
	// from one is no host's (RFC 4291 2.5.5.2) and must not pass for it.
	if (is_v4mapped(&ip6->saddr) || is_v4mapped(&ip6->daddr))
		return 0;
	__builtin_memcpy(o->src.b, &ip6->saddr, 16);
	__builtin_memcpy(o->dst.b, &ip6->daddr, 16);
	o->l4off = off + sizeof(*ip6);
	o->l4len = plen;
	o->l4proto = ip6->nexthdr;
	o->frag = FRAG_NONE;
	o->frag_id = 0;
	o->ipv6 = 1;
	o->flags |= UPLINK_META_OUTER_IPV6;
	if (ip6->nexthdr != IPPROTO_FRAGMENT)
		return 1;
	fh = (void *)(ip6 + 1);
	if ((void *)(fh + 1) > end || plen < sizeof(*fh))
		return 0;
	o->l4off += sizeof(*fh);
	o->l4len -= sizeof(*fh);
	o->l4proto = fh->nexthdr;
	fo = bpf_ntohs(fh->frag_off);
	if (fo & 0xfff8)
		o->frag = FRAG_LATER;
	else if (fo & 1)
		o->frag = FRAG_FIRST;
	// else an atomic fragment (RFC 6946): a whole datagram after all.
	o->frag_id = fh->identification;
	return 1;
}

static __always_inline int is_local(struct uplink_addr *a)
{
	return bpf_map_lookup_elem(&local_addrs, a) != 0;
}

// unicast_source: a VTEP sends from a unicast address. The switch learns
// MACs behind the source, so an unspecified, broadcast or multicast one
// is refused, as the switch's own decapsulation of reassembled datagrams
// refuses it.
static __always_inline int unicast_source(struct outer *o)
{
	__u32 w[4];

	__builtin_memcpy(w, o->src.b, sizeof(w));
	if (o->ipv6) // not ff00::/8, not ::
		return o->src.b[0] != 0xff && (w[0] | w[1] | w[2] | w[3]) != 0;
	// not 224.0.0.0/4, 0.0.0.0 or 255.255.255.255
	return (o->src.b[12] & 0xf0) != 0xe0 && w[3] != 0 && w[3] != 0xffffffff;
}

// ipv4_checksum_ok verifies the IPv4 header checksum, which the kernel's
// stack would and XDP does not: hlen is the header's length (20 to 60).
static __always_inline int ipv4_checksum_ok(struct xdp_md *ctx, __u32 off, __u32 hlen)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u16 *w;
	__u32 sum = 0;

	if (off > 18) // Ethernet and at most one tag, for the verifier
		return 0;
	w = data + off;
	for (int i = 0; i < 30; i++) {
		if (i * 2 >= hlen)
			break;
		if ((void *)(w + 1) > end)
			return 0;
		sum += *w++;
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

static __always_inline int has_socket(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;

	return bpf_map_lookup_elem(&xsks, &q) != 0;
}

// write_meta fills the record at the front of the frame, where the data
// was moved back to make room for it.
static __always_inline int write_meta(struct xdp_md *ctx, struct outer *o, __u8 flags,
				      __be16 sport, __u32 vni, __u32 network)
{
	void *end = (void *)(long)ctx->data_end;
	struct uplink_meta *m = (void *)(long)ctx->data;

	if ((void *)(m + 1) > end)
		return 0;
	m->version = UPLINK_META_VERSION;
	m->flags = o->flags | flags;
	m->outer_sport = sport;
	m->vni = vni;
	m->network = network;
	__builtin_memset(m->reserved, 0, sizeof(m->reserved));
	__builtin_memcpy(m->outer_src, o->src.b, sizeof(m->outer_src));
	return 1;
}

// Fragments.
//
// The switch reassembles outer fragments in Go (bounded in memory and time)
// and decapsulates the result. This program only steers: a fragment is
// handed to the socket RAW, outer headers and all, with a metadata record
// that says so (UPLINK_META_RAW_FRAGMENT, vni 0). Only the first fragment
// holds the UDP header, so only it shows that the datagram is VXLAN; it is
// remembered in vxlan_frags, and later fragments of the same datagram follow
// it to the socket. A later fragment with no record passes to the host:
// either it belongs to the host (a fragmented datagram for a host service
// at a VTEP address), or it overtook its first fragment, and then the host
// gets that fragment and the datagram is lost (the switch cannot complete
// it, the host never sees the first fragment). Sending a fragment of
// unknown owner to the switch instead would cut host services off; the
// loss is bounded to reordered fragmented VXLAN, which a sane underlay (MTU
// sized for VXLAN) never produces. The record expires after
// frag_timeout_ns, the reassembly timeout, so an id reused long after
// cannot steal host traffic; a first fragment that is not VXLAN, or not
// for a VNI the switch serves, erases the record of its key at once and
// goes to the host with the rest of its datagram. LRU eviction bounds the
// memory.

static __always_inline void frag_key(struct uplink_frag_key *k, struct outer *o)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->src = o->src;
	k->dst = o->dst;
	k->id = o->frag_id;
	k->proto = o->l4proto;
}

static __always_inline int redirect_raw(struct xdp_md *ctx, struct outer *o, __be16 sport)
{
	// Make room in the headroom and write the record there; the frame
	// itself is not touched, so whatever fails here leaves the host (with
	// the room given back) the frame as it came.
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct uplink_meta)))
		return pass(UPLINK_STAT_PASS_NO_ROOM);
	__u32 stat = UPLINK_STAT_PASS_NO_ROOM;

	if (write_meta(ctx, o, UPLINK_META_RAW_FRAGMENT, sport, 0, 0)) {
		if (bpf_redirect_map(&xsks, ctx->rx_queue_index, 0) == XDP_REDIRECT) {
			count(UPLINK_STAT_FRAG_REDIRECTED);
			return XDP_REDIRECT;
		}
		stat = UPLINK_STAT_PASS_NO_SOCKET; // the socket went since has_socket looked
	}
	return bpf_xdp_adjust_head(ctx, sizeof(struct uplink_meta)) ? XDP_ABORTED : pass(stat);
}

static __always_inline int first_fragment(struct xdp_md *ctx, struct outer *o, __be16 sport)
{
	struct uplink_frag_key k;
	__u64 now = bpf_ktime_get_ns();

	if (!has_socket(ctx))
		return pass(UPLINK_STAT_PASS_NO_SOCKET); // and so will the later fragments
	frag_key(&k, o);
	bpf_map_update_elem(&vxlan_frags, &k, &now, BPF_ANY);
	return redirect_raw(ctx, o, sport);
}

static __always_inline void forget_fragment(struct outer *o)
{
	struct uplink_frag_key k;

	frag_key(&k, o);
	bpf_map_delete_elem(&vxlan_frags, &k);
}

static __always_inline int later_fragment(struct xdp_md *ctx, struct outer *o)
{
	struct uplink_frag_key k;
	__u64 *seen;

	frag_key(&k, o);
	seen = bpf_map_lookup_elem(&vxlan_frags, &k);
	if (!seen)
		return pass(UPLINK_STAT_FRAG_PASSED);
	if (bpf_ktime_get_ns() - *seen > frag_timeout_ns) {
		bpf_map_delete_elem(&vxlan_frags, &k);
		return pass(UPLINK_STAT_FRAG_PASSED);
	}
	if (!has_socket(ctx))
		return pass(UPLINK_STAT_PASS_NO_SOCKET);
	return redirect_raw(ctx, o, 0);
}

// decap strips the outer headers of a validated VXLAN frame and hands the
// inner frame to the socket of its rx queue, with the record in front of
// it, in the last bytes of the outer headers.
static __always_inline int decap(struct xdp_md *ctx, struct outer *o, __u32 inner_off,
				 __u32 inner_end, __be16 sport, __u32 vni, __u32 network)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 len = end - data;
	long action;

	// Without a socket on this queue the frame goes to the host as it came:
	// stripping it first and passing the inner frame would put tunnel
	// traffic on the host's underlay.
	if (!has_socket(ctx))
		return pass(UPLINK_STAT_PASS_NO_SOCKET);
	// Bytes after the UDP datagram (Ethernet padding, or an IP length
	// shorter than the frame) are not part of the inner frame.
	if (len > inner_end && bpf_xdp_adjust_tail(ctx, -(int)(len - inner_end)))
		return pass(UPLINK_STAT_PASS_MALFORMED);
	// The outer headers (at least Ethernet, IPv4, UDP and VXLAN: 50 bytes)
	// have room for the record.
	if (inner_off < sizeof(struct uplink_meta) ||
	    bpf_xdp_adjust_head(ctx, inner_off - sizeof(struct uplink_meta)))
		return pass(UPLINK_STAT_PASS_MALFORMED);
	if (!write_meta(ctx, o, 0, sport, vni, network)) {
		count(UPLINK_STAT_DROP_REDIRECT);
		return XDP_DROP;
	}
	// The socket was there a moment ago; if it is gone now, the stripped
	// frame is dropped rather than passed, for the reason above.
	action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
	if (action == XDP_REDIRECT)
		count(o->ipv6 ? UPLINK_STAT_DECAP_V6 : UPLINK_STAT_DECAP_V4);
	else
		count(UPLINK_STAT_DROP_REDIRECT);
	return action;
}

// outer_ok applies the host's checks of the outer headers that the switch
// would skip: a unicast source, and for IPv4 the header checksum of the
// header at l3off.
static __always_inline int outer_ok(struct xdp_md *ctx, struct outer *o, __u32 l3off)
{
	return unicast_source(o) && (o->ipv6 || ipv4_checksum_ok(ctx, l3off, o->l4off - l3off));
}

// vxlan_network checks a VXLAN header and finds the switch's network for
// its VNI; NULL, with the stat to count, when the datagram is not ours.
static __always_inline __u32 *vxlan_network(struct vxlan_hdr *vx, __u32 *vni, __u32 *stat)
{
	__u32 *network;

	// RFC 7348: flags (8 bits, only I set), 24 reserved bits, VNI (24
	// bits), 8 reserved bits. Extensions that use the reserved bits (GBP,
	// GPE) are not ours to interpret.
	if (vx->flags != VXLAN_FLAGS || (vx->vni & bpf_htonl(0xff))) {
		*stat = UPLINK_STAT_PASS_MALFORMED;
		return NULL;
	}
	*vni = bpf_ntohl(vx->vni) >> 8;
	network = bpf_map_lookup_elem(&vnis, vni);
	if (!network)
		*stat = UPLINK_STAT_PASS_UNKNOWN_VNI;
	return network;
}

SEC("xdp")
int xdp_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct outer o = {};
	struct udphdr *udp;
	struct vxlan_hdr *vx;
	__u32 off = sizeof(*eth), ulen, vni, stat, *network;
	__be16 proto;
	int ok;

	if ((void *)(eth + 1) > end)
		return pass(UPLINK_STAT_PASS_NOT_VXLAN);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > end)
			return pass(UPLINK_STAT_PASS_MALFORMED);
		proto = vh->encap_proto;
		off += sizeof(*vh);
		o.flags |= UPLINK_META_OUTER_VLAN;
	}
	if (proto == bpf_htons(ETH_P_IP))
		ok = parse_ipv4(ctx, off, &o);
	else if (proto == bpf_htons(ETH_P_IPV6))
		ok = parse_ipv6(ctx, off, &o);
	else
		return pass(UPLINK_STAT_PASS_NOT_VXLAN); // ARP, a second VLAN tag, ...
	if (!ok)
		return pass(UPLINK_STAT_PASS_MALFORMED);

	if (o.frag == FRAG_LATER) {
		if (!is_local(&o.dst))
			return pass(UPLINK_STAT_PASS_NOT_LOCAL);
		if (!outer_ok(ctx, &o, off))
			return pass(UPLINK_STAT_PASS_MALFORMED);
		return later_fragment(ctx, &o);
	}
	if (o.l4proto != IPPROTO_UDP) {
		if (o.frag == FRAG_FIRST)
			forget_fragment(&o);
		return pass(UPLINK_STAT_PASS_NOT_VXLAN);
	}

	// A constant bound on the offset, for the verifier.
	if (o.l4off > 128) // outer headers are at most 14 + 4 + 60 + 8 bytes
		return pass(UPLINK_STAT_PASS_MALFORMED);
	udp = data + o.l4off;
	if ((void *)(udp + 1) > end || o.l4len < sizeof(*udp))
		return pass(UPLINK_STAT_PASS_MALFORMED);
	if (udp->dest != bpf_htons(vxlan_port)) {
		if (o.frag == FRAG_FIRST)
			forget_fragment(&o);
		return pass(UPLINK_STAT_PASS_NOT_VXLAN);
	}
	if (!is_local(&o.dst))
		return pass(UPLINK_STAT_PASS_NOT_LOCAL);
	// Stripped or reassembled, it skips the host's checks of the outer
	// headers.
	if (!outer_ok(ctx, &o, off)) {
		if (o.frag == FRAG_FIRST)
			forget_fragment(&o);
		return pass(UPLINK_STAT_PASS_MALFORMED);
	}
	vx = (void *)(udp + 1);
	if (o.frag == FRAG_FIRST) {
		// A first fragment with a VXLAN header that is not ours goes to
		// the host with the rest of its datagram, as the datagram would
		// whole. The header is in the first fragment unless the sender
		// cut the datagram absurdly small; the switch judges those whole.
		if ((void *)(vx + 1) <= end && o.l4len >= sizeof(*udp) + VXLAN_HLEN &&
		    !vxlan_network(vx, &vni, &stat)) {
			forget_fragment(&o);
			return pass(stat);
		}
		return first_fragment(ctx, &o, udp->source);
	}

	// A whole VXLAN datagram for us: the UDP length must cover the VXLAN
	// header and an Ethernet header and stay inside the IP payload.
	ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) + VXLAN_HLEN + ETH_HLEN || ulen > o.l4len)
		return pass(UPLINK_STAT_PASS_MALFORMED);
	if ((void *)(vx + 1) > end)
		return pass(UPLINK_STAT_PASS_MALFORMED);
	network = vxlan_network(vx, &vni, &stat);
	if (!network)
		return pass(stat);
	return decap(ctx, &o, o.l4off + sizeof(*udp) + VXLAN_HLEN, o.l4off + ulen,
		     udp->source, vni, *network);
}

char __license[] SEC("license") = "Dual BSD/GPL";
