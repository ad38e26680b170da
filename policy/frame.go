package policy

import "encoding/binary"

const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8

	// IPv6 extension headers walked to reach the upper layer.
	ext6HopByHop = 0
	ext6Routing  = 43
	ext6Fragment = 44
	ext6AH       = 51
	ext6DestOpts = 60
	ext6Mobility = 135
	ext6HIP      = 139
	ext6Shim6    = 140
)

// PacketFromFrame reads what rules match on from an Ethernet frame, which
// may carry VLAN tags, into p, with p.Dir = dir and p.Len = len(frame).
//
// ok is false for a frame that is not IPv4 or IPv6 (ARP, LLDP, ...) or
// whose IP header is cut short (the dataplane drops those before policy):
// no rule applies to it.
//
// For IPv6 the extension headers are walked to the upper layer; p.Proto is
// the upper-layer protocol (ESP, 50, when encryption hides it). When the
// chain is cut short, p.Proto is the last header type seen and p.NoPorts
// is set, so the packet still meets the rules that name no ports and the
// default, never slipping past as "not IP".
//
// isFragment is true for any fragment of a datagram; isFirstFragment for
// the one at offset 0. A later fragment carries no ports (p.NoPorts is
// set): the caller must judge it by the first fragment's verdict, which a
// fragment tracker keeps (RFC 8900 §6.3), and only classify it here when
// no verdict is known.
func PacketFromFrame(frame []byte, dir Direction, p *Packet) (ok, isFragment, isFirstFragment bool) {
	*p = Packet{Dir: dir, Len: len(frame)}
	if len(frame) < 14 {
		return false, false, false
	}
	off := 12
	etype := binary.BigEndian.Uint16(frame[off:])
	for etype == etherTypeVLAN || etype == etherTypeQinQ {
		off += 4
		if len(frame) < off+2 {
			return false, false, false
		}
		etype = binary.BigEndian.Uint16(frame[off:])
	}
	l3 := frame[off+2:]
	switch etype {
	case etherTypeIPv4:
		return fromIPv4(l3, p)
	case etherTypeIPv6:
		return fromIPv6(l3, p)
	}
	return false, false, false
}

func fromIPv4(b []byte, p *Packet) (ok, isFragment, isFirst bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return false, false, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl || len(b) < ihl {
		return false, false, false
	}
	if total < len(b) {
		b = b[:total] // Ethernet padding is not payload
	}
	p.Proto = b[9]
	copy(p.Src[:4], b[12:16])
	copy(p.Dst[:4], b[16:20])
	frag := binary.BigEndian.Uint16(b[6:])
	offset, more := frag&0x1fff, frag&0x2000 != 0
	isFragment = offset != 0 || more
	isFirst = isFragment && offset == 0
	l4 := b[ihl:]
	if offset != 0 || !hasPorts(int(p.Proto)) || len(l4) < 4 {
		p.NoPorts = offset != 0 || hasPorts(int(p.Proto))
		return true, isFragment, isFirst
	}
	p.SrcPort = binary.BigEndian.Uint16(l4)
	p.DstPort = binary.BigEndian.Uint16(l4[2:])
	return true, isFragment, isFirst
}

func fromIPv6(b []byte, p *Packet) (ok, isFragment, isFirst bool) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return false, false, false
	}
	if end := 40 + int(binary.BigEndian.Uint16(b[4:])); end < len(b) {
		b = b[:end] // Ethernet padding is not payload
	}
	p.IPv6 = true
	copy(p.Src[:], b[8:24])
	copy(p.Dst[:], b[24:40])
	next := b[6]
	off := 40
	// Every extension header takes at least 8 bytes, so the walk ends
	// within len(b)/8 steps whatever the packet says.
	for {
		p.Proto = next
		switch next {
		case ext6HopByHop, ext6Routing, ext6DestOpts, ext6Mobility, ext6HIP, ext6Shim6:
			if len(b) < off+8 {
				p.NoPorts = true
				return true, isFragment, isFirst
			}
			next = b[off]
			off += 8 + 8*int(b[off+1])
		case ext6AH:
			if len(b) < off+8 {
				p.NoPorts = true
				return true, isFragment, isFirst
			}
			next = b[off]
			off += 8 + 4*int(b[off+1]) // (len+2) 4-byte units
		case ext6Fragment:
			if len(b) < off+8 {
				p.NoPorts = true
				return true, isFragment, isFirst
			}
			fo := binary.BigEndian.Uint16(b[off+2:])
			offset, more := fo>>3, fo&1 != 0
			next = b[off]
			off += 8
			if offset == 0 && !more {
				continue // an atomic fragment (RFC 6946) is a whole packet
			}
			isFragment = true
			if offset != 0 {
				// The rest of the datagram's headers are in the first
				// fragment: report the fragment header's next header.
				p.Proto = next
				p.NoPorts = true
				return true, true, false
			}
			isFirst = true
		default:
			if hasPorts(int(next)) {
				if len(b) < off+4 {
					p.NoPorts = true
				} else {
					p.SrcPort = binary.BigEndian.Uint16(b[off:])
					p.DstPort = binary.BigEndian.Uint16(b[off+2:])
				}
			}
			return true, isFragment, isFirst
		}
		if off > len(b) {
			p.NoPorts = true
			return true, isFragment, isFirst
		}
	}
}
