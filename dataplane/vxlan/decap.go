package vxlan

import (
	"encoding/binary"
	"net/netip"
)

// Decap takes apart one whole (unfragmented or reassembled) VXLAN packet,
// pkt, which starts at the outer IP header (IPv4 or IPv6, told apart by the
// version). Bytes after the IP packet's length (Ethernet padding) are
// ignored. local reports whether an address is one of ours, the tunnel's
// end; nil accepts any. port is the tunnel's UDP port, 0 for DefaultPort.
//
// It returns the inner Ethernet frame, a slice of pkt, and the VNI, the
// outer source address (an IPv4 address for an IPv4 underlay, never a
// mapped one) and UDP source port. It refuses, with an Error:
//   - an IP header that is truncated or malformed: version, header length,
//     total or payload length beyond the packet, or a bad IPv4 header
//     checksum (a reassembler that rewrites the header must recompute it);
//   - a fragment (ErrFragment): reassemble first; an IPv6 atomic fragment
//     (RFC 6946) is whole and accepted;
//   - anything but UDP right after the IP header (or the atomic fragment's
//     Fragment header): no other IPv6 extension headers; UDP to another
//     port;
//   - a UDP length beyond the IP payload or too short for the VXLAN
//     header (one short of the payload leaves trailing bytes, ignored, as
//     by Linux and the XDP program);
//   - a UDP checksum that does not verify; a zero checksum means none,
//     over IPv4 (RFC 768) and over IPv6 too (RFC 6935 allows it for
//     tunnels, and it is the kernel's udp6zerocsumtx);
//   - VXLAN flags other than exactly the I flag, or a nonzero reserved
//     field (RFC 7348 §5);
//   - a destination that is not local, or a source that is not unicast;
//   - an inner frame shorter than an Ethernet header.
func Decap(pkt []byte, local func(netip.Addr) bool, port uint16) (inner []byte, vni uint32, src netip.Addr, srcPort uint16, err error) {
	if port == 0 {
		port = DefaultPort
	}
	if len(pkt) < 1 {
		return nil, 0, netip.Addr{}, 0, ErrTruncated
	}
	var udp, addrs []byte
	var dst netip.Addr
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4Len {
			return nil, 0, netip.Addr{}, 0, ErrTruncated
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < ipv4Len || total < ihl {
			return nil, 0, netip.Addr{}, 0, ErrMalformed
		}
		if total > len(pkt) {
			return nil, 0, netip.Addr{}, 0, ErrTruncated
		}
		if checksum(pkt[:ihl], 0) != 0 {
			return nil, 0, netip.Addr{}, 0, ErrMalformed
		}
		if binary.BigEndian.Uint16(pkt[6:])&(ipv4MF|ipv4OffMsk) != 0 {
			return nil, 0, netip.Addr{}, 0, ErrFragment
		}
		if pkt[9] != protoUDP {
			return nil, 0, netip.Addr{}, 0, ErrNotUDP
		}
		addrs = pkt[12:20]
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		udp = pkt[ihl:total]
	case 6:
		if len(pkt) < ipv6Len {
			return nil, 0, netip.Addr{}, 0, ErrTruncated
		}
		payload := int(binary.BigEndian.Uint16(pkt[4:]))
		if ipv6Len+payload > len(pkt) {
			return nil, 0, netip.Addr{}, 0, ErrTruncated
		}
		udp = pkt[ipv6Len : ipv6Len+payload]
		next := pkt[6]
		if next == protoIPv6Frg {
			// An atomic fragment (RFC 6946, offset 0 and no more to
			// come) is a whole datagram after all; a real one is not.
			if len(udp) < fragLen {
				return nil, 0, netip.Addr{}, 0, ErrTruncated
			}
			if binary.BigEndian.Uint16(udp[2:])&0xfff9 != 0 {
				return nil, 0, netip.Addr{}, 0, ErrFragment
			}
			next, udp = udp[0], udp[fragLen:]
		}
		if next != protoUDP {
			return nil, 0, netip.Addr{}, 0, ErrNotUDP
		}
		addrs = pkt[8:40]
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	default:
		return nil, 0, netip.Addr{}, 0, ErrMalformed
	}
	if len(udp) < udpLen+vxlanLen {
		return nil, 0, netip.Addr{}, 0, ErrTruncated
	}
	if binary.BigEndian.Uint16(udp[2:]) != port {
		return nil, 0, netip.Addr{}, 0, ErrPort
	}
	// A UDP length short of the IP payload leaves trailing bytes that are
	// not the datagram's (RFC 768; Linux trims them, the XDP program too).
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < udpLen+vxlanLen || ulen > len(udp) {
		return nil, 0, netip.Addr{}, 0, ErrMalformed
	}
	udp = udp[:ulen]
	if binary.BigEndian.Uint16(udp[6:]) != 0 && !udpChecksumOK(addrs, udp) {
		return nil, 0, netip.Addr{}, 0, ErrChecksum
	}
	if udp[8] != vxlanFlagI || udp[9]|udp[10]|udp[11]|udp[15] != 0 {
		return nil, 0, netip.Addr{}, 0, ErrFlags
	}
	if local != nil && !local(dst) {
		return nil, 0, netip.Addr{}, 0, ErrNotLocal
	}
	if !unicast(src) {
		return nil, 0, netip.Addr{}, 0, ErrSource
	}
	inner = udp[udpLen+vxlanLen:]
	if len(inner) < MinInnerLen {
		return nil, 0, netip.Addr{}, 0, ErrInnerShort
	}
	vni = binary.BigEndian.Uint32(udp[12:]) >> 8
	return inner, vni, src, binary.BigEndian.Uint16(udp[0:]), nil
}

// DecapFrame is Decap for a frame that starts at the outer Ethernet
// header, with at most one VLAN tag (802.1Q or 802.1ad), as the uplink's
// XDP program accepts.
func DecapFrame(frame []byte, local func(netip.Addr) bool, port uint16) (inner []byte, vni uint32, src netip.Addr, srcPort uint16, err error) {
	if len(frame) < ethLen {
		return nil, 0, netip.Addr{}, 0, ErrTruncated
	}
	l3 := ethLen
	etype := binary.BigEndian.Uint16(frame[12:])
	if etype == etherTypeVLAN || etype == etherTypeQinQ {
		if len(frame) < ethLen+VLANLen {
			return nil, 0, netip.Addr{}, 0, ErrTruncated
		}
		etype = binary.BigEndian.Uint16(frame[16:])
		l3 += VLANLen
	}
	pkt := frame[l3:]
	switch {
	case etype == etherTypeIPv4 && len(pkt) > 0 && pkt[0]>>4 == 4:
	case etype == etherTypeIPv6 && len(pkt) > 0 && pkt[0]>>4 == 6:
	case etype == etherTypeIPv4 || etype == etherTypeIPv6:
		if len(pkt) == 0 {
			return nil, 0, netip.Addr{}, 0, ErrTruncated
		}
		return nil, 0, netip.Addr{}, 0, ErrMalformed
	default:
		return nil, 0, netip.Addr{}, 0, ErrNotUDP
	}
	return Decap(pkt, local, port)
}

// unicast reports whether a is an address a VTEP can have.
func unicast(a netip.Addr) bool {
	if a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	if a.Is4() {
		b := a.As4()
		return b != [4]byte{255, 255, 255, 255}
	}
	return !a.Is4In6()
}
