/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The metadata record the uplink program writes in front of every frame it
 * hands to an AF_XDP socket: the descriptor's address points at the record,
 * and the frame follows it. The record travels in the frame, not in the
 * kernel's metadata area (bpf_xdp_adjust_meta), because some kernels refuse
 * that helper to XDP programs; bpf_xdp_adjust_head works on all of them. The
 * Go mirror is bpf.UplinkMeta / bpf.ParseUplinkMeta (bpf/uplink.go); change
 * both together and bump UPLINK_META_VERSION.
 *
 * Byte orders: what comes off the wire (the UDP port, the address) stays in
 * network byte order; what the program computes (vni, network) is in host
 * byte order (little endian on every machine this runs on).
 */
#ifndef XDPSWITCH_META_H
#define XDPSWITCH_META_H

#include <linux/types.h>

#define UPLINK_META_VERSION 1

/* flags */
#define UPLINK_META_OUTER_IPV6 (1 << 0) /* the underlay was IPv6 */
#define UPLINK_META_OUTER_VLAN (1 << 1) /* the outer frame had one 802.1Q/802.1ad tag */
#define UPLINK_META_RAW_FRAGMENT (1 << 2) /* an outer fragment, not decapsulated */

struct uplink_meta {
	__u8 version;      /* UPLINK_META_VERSION */
	__u8 flags;        /* UPLINK_META_* */
	__be16 outer_sport; /* outer UDP source port, network order; 0 on a non-first raw fragment */
	__u32 vni;         /* host order, the low 24 bits; 0 on a raw fragment */
	__u32 network;     /* host order, the value of the vnis map; 0 on a raw fragment */
	__u8 reserved[4];  /* zero */
	__u8 outer_src[16]; /* outer source address, network order; IPv4 as ::ffff:a.b.c.d */
};

_Static_assert(sizeof(struct uplink_meta) == 32, "uplink_meta must be 32 bytes");

#endif
