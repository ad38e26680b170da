// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The XDP program attached to every switch port (VM tap, host port). It
// hands each frame to the AF_XDP socket that the daemon bound to the frame's
// rx queue, and lets the frame continue into the kernel's stack where no
// socket is registered (a queue the daemon does not serve, or the moment
// between attach and bind), so attaching never blackholes a device.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// Keyed by rx queue index; the value is an AF_XDP socket fd (written from
// user space). Declared with key_size/value_size: an XSKMAP with BTF key
// and value types fails to create on these kernels (errno 524).
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 64);
} xsks SEC(".maps");

enum port_stat {
	PORT_STAT_REDIRECTED = 0,
	PORT_STAT_PASSED = 1,
	PORT_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, PORT_STAT_MAX);
} port_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&port_stats, &stat);

	if (v)
		*v += 1;
}

SEC("xdp")
int xdp_port(struct xdp_md *ctx)
{
	// The flags argument is the action taken when the map has no socket
	// for this queue.
	long action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);

	count(action == XDP_REDIRECT ? PORT_STAT_REDIRECTED : PORT_STAT_PASSED);
	return action;
}

char __license[] SEC("license") = "Dual BSD/GPL";
