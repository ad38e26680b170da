package vxlan

import "encoding/binary"

// flowHash hashes the inner frame's flow: its MAC addresses and, for IPv4
// and IPv6 (also behind up to two VLAN tags), its addresses and, when the
// packet is TCP, UDP, UDP-Lite or SCTP and not a fragment, its ports.
// Fragments of an inner datagram all hash without ports, so that they take
// one outer source port, one underlay path, and stay in order. f holds at
// least an Ethernet header.
func flowHash(f []byte, seed uint64) uint64 {
	h := mix(seed, uint64(binary.BigEndian.Uint32(f[0:4]))<<16|uint64(binary.BigEndian.Uint16(f[4:6])))
	h = mix(h, uint64(binary.BigEndian.Uint16(f[6:8]))<<32|uint64(binary.BigEndian.Uint32(f[8:12])))
	off := 12
	etype := binary.BigEndian.Uint16(f[off:])
	for tags := 0; tags < 2 && (etype == etherTypeVLAN || etype == etherTypeQinQ) && len(f) >= off+6; tags++ {
		off += 4
		etype = binary.BigEndian.Uint16(f[off:])
	}
	ip := f[off+2:]
	switch etype {
	case etherTypeIPv4:
		if len(ip) < ipv4Len || ip[0]>>4 != 4 {
			break
		}
		h = mix(h, binary.BigEndian.Uint64(ip[12:20]))
		ihl := int(ip[0]&0x0f) * 4
		frag := binary.BigEndian.Uint16(ip[6:]) & (ipv4MF | ipv4OffMsk)
		if frag == 0 && ihl >= ipv4Len && len(ip) >= ihl+4 && hasPorts(ip[9]) {
			h = mix(h, uint64(ip[9])<<32|uint64(binary.BigEndian.Uint32(ip[ihl:])))
		}
	case etherTypeIPv6:
		if len(ip) < ipv6Len || ip[0]>>4 != 6 {
			break
		}
		h = mix(h, binary.BigEndian.Uint64(ip[8:]))
		h = mix(h, binary.BigEndian.Uint64(ip[16:]))
		h = mix(h, binary.BigEndian.Uint64(ip[24:]))
		h = mix(h, binary.BigEndian.Uint64(ip[32:]))
		if len(ip) >= ipv6Len+4 && hasPorts(ip[6]) {
			h = mix(h, uint64(ip[6])<<32|uint64(binary.BigEndian.Uint32(ip[ipv6Len:])))
		}
	}
	// Finish so that every input bit reaches the high bits, which the
	// source port and flow label take.
	h ^= h >> 31
	h *= 0xd6e8feb86659fd93
	h ^= h >> 32
	return h
}

func hasPorts(proto byte) bool {
	return proto == protoTCP || proto == protoUDP || proto == protoSCTP || proto == protoUDPLite
}

// mix folds v into h: a multiply by an odd constant (2^64 divided by the
// golden ratio) spreads each bit upwards, and the shift brings the high
// bits back down for the next round.
func mix(h, v uint64) uint64 {
	h ^= v
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}

// srcPort maps a flow hash into MinSrcPort..MaxSrcPort: the range is 2^14
// ports, so the hash's top 14 bits pick one.
func srcPort(h uint64) uint16 {
	return MinSrcPort | uint16(h>>50)
}

// flowLabel takes 20 other bits of the hash for the IPv6 flow label; zero
// means "no label" (RFC 6437), so it is never zero.
func flowLabel(h uint64) uint32 {
	l := uint32(h>>20) & 0xfffff
	if l == 0 {
		l = 1
	}
	return l
}
