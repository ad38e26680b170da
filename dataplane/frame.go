package dataplane

import "encoding/binary"

// DropReason says why the switch dropped a frame. Every drop is counted
// under one reason, per port.
type DropReason uint8

const (
	// DropRunt: shorter than an Ethernet header (or a tagged one).
	DropRunt DropReason = iota
	// DropTruncated: an IPv4, IPv6 or ARP header claims more bytes than
	// the frame holds.
	DropTruncated
	// DropBadSource: a multicast or all-zero source MAC, which no port
	// can own.
	DropBadSource
	// DropSamePort: the destination lives on the port the frame came from.
	DropSamePort
	// DropTxRingFull: the destination's transmit ring had no room.
	DropTxRingFull
	// DropNoFrame: flooding needed a copy and no UMEM frame was free.
	DropNoFrame
	// DropInvalidDesc: the kernel handed back a descriptor the switch did
	// not give it; a bug, never expected.
	DropInvalidDesc
	// DropSpoofedMAC: port security: a source MAC that is not the port's.
	DropSpoofedMAC
	// DropSpoofedIP: port security: a source address the port does not
	// hold (not its lease, a configured address or prefix, or link-local).
	DropSpoofedIP
	// DropSpoofedARP: port security: ARP claiming another MAC or address.
	DropSpoofedARP
	// DropRogueDHCP: port security: a DHCP server message from a VM.
	DropRogueDHCP
	// DropSpoofedDHCP: port security: a DHCP client message whose client
	// hardware address is not the port's MAC.
	DropSpoofedDHCP
	// DropRogueRA: port security: an IPv6 router advertisement from a VM.
	DropRogueRA
	// DropBadMetadata: a frame from the uplink without a valid metadata
	// record from its program.
	DropBadMetadata
	// DropUnknownVNI: a tunnel frame for a network the switch no longer has.
	DropUnknownVNI
	// DropTunnelFragment: an outer fragment of a tunnel packet.
	DropTunnelFragment
	// DropNoUnderlay: the next hop towards a remote VTEP is not resolved
	// yet; resolution has been asked for.
	DropNoUnderlay
	// DropTunnelEncap: the frame could not be encapsulated (no headroom).
	DropTunnelEncap
	// DropTooBig: encapsulated, the frame exceeds the uplink's MTU.
	DropTooBig
	// DropPolicy: a rule of the port or the network denies the frame, or
	// the first fragment of its datagram.
	DropPolicy
	// DropFragment: a fragment the fragment tracker refused: overlapping,
	// a tiny first fragment, over the hold caps or timed out; the
	// tracker's counters say which.
	DropFragment

	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropRunt:        "runt",
	DropTruncated:   "truncated",
	DropBadSource:   "bad_source",
	DropSamePort:    "same_port",
	DropTxRingFull:  "tx_ring_full",
	DropNoFrame:     "no_frame",
	DropInvalidDesc: "invalid_desc",
	DropSpoofedMAC:  "spoofed_mac",
	DropSpoofedIP:   "spoofed_ip",
	DropSpoofedARP:  "spoofed_arp",
	DropRogueDHCP:   "rogue_dhcp",
	DropSpoofedDHCP: "spoofed_dhcp",
	DropRogueRA:     "rogue_ra",

	DropBadMetadata:    "bad_metadata",
	DropUnknownVNI:     "unknown_vni",
	DropTunnelFragment: "tunnel_fragment",
	DropNoUnderlay:     "no_underlay",
	DropTunnelEncap:    "tunnel_encap",
	DropTooBig:         "too_big",
	DropPolicy:         "policy",
	DropFragment:       "fragment",
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons lists every reason, in counter order.
func DropReasons() []DropReason {
	rs := make([]DropReason, numDropReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}

const (
	ethHeaderLen  = 14
	vlanHeaderLen = 4

	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
	etherTypeIPv6 = 0x86dd
)

// macKey packs a MAC address into the low 48 bits of an integer, which is
// what the forwarding database is keyed by.
func macKey(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 |
		uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// isMulticastKey reports the group bit, set for broadcast and multicast.
func isMulticastKey(k uint64) bool { return k&(1<<40) != 0 }

// validate checks the headers the switch relies on. A switch need not look
// past L2, but frames whose L3 headers lie about their length are cut off
// here so that nothing behind the switch (policy, DHCP, the VMs' stacks)
// has to trust them. It returns ok=false with the reason for a bad frame.
func validate(f []byte) (DropReason, bool) {
	if len(f) < ethHeaderLen {
		return DropRunt, false
	}
	src := macKey(f[6:12])
	if isMulticastKey(src) || src == 0 {
		return DropBadSource, false
	}
	off := 12
	etype := binary.BigEndian.Uint16(f[off:])
	for etype == etherTypeVLAN || etype == etherTypeQinQ {
		off += vlanHeaderLen
		if len(f) < off+2 {
			return DropRunt, false
		}
		etype = binary.BigEndian.Uint16(f[off:])
	}
	l3 := f[off+2:]
	switch etype {
	case etherTypeIPv4:
		if len(l3) < 20 {
			return DropTruncated, false
		}
		ihl := int(l3[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(l3[2:]))
		if l3[0]>>4 != 4 || ihl < 20 || total < ihl || total > len(l3) {
			return DropTruncated, false
		}
	case etherTypeIPv6:
		if len(l3) < 40 || 40+int(binary.BigEndian.Uint16(l3[4:])) > len(l3) {
			return DropTruncated, false
		}
	case etherTypeARP:
		if len(l3) < 8 || 8+2*int(l3[4])+2*int(l3[5]) > len(l3) {
			return DropTruncated, false
		}
	}
	return 0, true
}
