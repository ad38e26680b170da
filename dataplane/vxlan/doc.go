// Package vxlan builds and takes apart VXLAN packets (RFC 7348) over an IPv4
// or IPv6 underlay, for the switch's uplink.
//
// It works on frames in place, the way the dataplane holds them: an inner
// Ethernet frame sits in a UMEM buffer with headroom in front of it, and
// [Encoder.Encap] writes the outer Ethernet, IP, UDP and VXLAN headers into
// that headroom. Nothing here allocates per packet, takes a lock or makes a
// system call; an [Encoder] belongs to one switching loop, like the rings.
//
// # Sending
//
// The caller resolves the remote VTEP (addresses, next hop MAC, VLAN) into an
// [Underlay] once and encapsulates every frame for that VTEP with it. The
// outer UDP source port is a hash of the inner flow in the dynamic range
// 49152–65535 (RFC 7348 §5), so that the underlay's ECMP and the receiver's
// RSS spread the tunnel's flows while each flow stays in order. Over IPv6 the
// same hash is the flow label and the UDP checksum is computed (RFC 8200
// §8.1; the zero-checksum exception of RFC 6935 is for receivers that opt in,
// and the kernel's vxlan device does not by default). Over IPv4 the UDP
// checksum is zero, as RFC 7348 recommends, and DF is set.
//
// # Fragmenting
//
// RFC 7348 §4.3 says a VTEP must not fragment; it assumes an underlay whose
// MTU is at least the overlay's plus the 50 (IPv4) or 70 (IPv6) bytes of
// encapsulation, and that is how an uplink should be configured. When it is
// not, dropping the frame would black-hole every large packet of the VMs
// silently: the VM sees an Ethernet link of its own MTU, nobody sends it an
// ICMP error (a switch has no address to send one from), and its path MTU
// discovery cannot help. So the switch fragments its own outer packet
// ([Encoder.Fragment]) and counts it, and the remote VTEP's IP stack
// reassembles (Linux does, before its vxlan device sees the packet; this
// package's switch reassembles in Go and calls [Decap]). A fragmented IPv4
// datagram gets its own identification and a UDP checksum, so that a
// receiver cannot silently put together fragments of two datagrams whose
// 16-bit identifications met (RFC 4963). The inner packet's
// DF bit is the VMs' business and is never looked at: the tunnel is a link,
// not a router.
//
// The caller fragments when the outer IP packet exceeds the uplink's MTU and
// the inner frame is within the network's own MTU. It drops, and counts, when
// the inner frame is larger than the network's MTU (a misconfigured guest:
// fragmenting would hide it), when the uplink MTU is below the protocol
// minimum (68 for IPv4, 1280 for IPv6: [ErrMTU]), or when it cannot get a
// buffer for every fragment ([ErrNoBuffer]; it then releases those it got).
// The outer DF bit set by Encap is not a reason to drop: it is our own
// header, set so that routers behind the uplink do not fragment (they report
// instead), and cleared on the fragments we make ourselves.
//
// # Receiving
//
// The uplink's XDP program decapsulates whole tunnel packets in the kernel.
// Fragmented ones it hands to the switch raw; the switch reassembles them and
// calls [Decap] on the reassembled IP packet (or [DecapFrame] on a frame with
// its Ethernet header), which applies the XDP program's checks: the I flag
// set and every reserved bit zero, a UDP length within the IP payload, the
// destination one of ours, an inner frame of at least an Ethernet header.
// Being off the fast path, it also verifies the UDP checksum when there is
// one and the IPv4 header checksum, and refuses a source that is not unicast
// (the switch would learn MAC addresses behind it).
package vxlan
