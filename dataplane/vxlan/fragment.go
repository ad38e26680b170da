package vxlan

import "encoding/binary"

// outer is what Fragments learns of an outer frame.
type outer struct {
	l3    int  // offset of the IP header
	v4    bool // IPv4, else IPv6
	ipLen int  // length of the IP packet
	hdr   int  // IP header bytes repeated in every fragment
	data  int  // payload bytes per fragment, all but the last
	count int  // fragments; 0 when the packet fits
}

func parseOuter(pkt []byte, mtu int) (o outer, err error) {
	if len(pkt) < ethLen {
		return o, ErrTruncated
	}
	o.l3 = ethLen
	etype := binary.BigEndian.Uint16(pkt[12:])
	if etype == etherTypeVLAN || etype == etherTypeQinQ {
		if len(pkt) < ethLen+VLANLen {
			return o, ErrTruncated
		}
		o.l3 += VLANLen
		etype = binary.BigEndian.Uint16(pkt[16:])
	}
	ip := pkt[o.l3:]
	switch etype {
	case etherTypeIPv4:
		o.v4 = true
		if len(ip) < ipv4Len {
			return o, ErrTruncated
		}
		if ip[0] != 0x45 || int(binary.BigEndian.Uint16(ip[2:])) != len(ip) {
			// Options would have to be sorted into those copied into
			// every fragment and the rest; Encap writes none.
			return o, ErrMalformed
		}
		if binary.BigEndian.Uint16(ip[6:])&(ipv4MF|ipv4OffMsk) != 0 {
			return o, ErrFragment
		}
		o.ipLen, o.hdr = len(ip), ipv4Len
		if o.ipLen <= mtu {
			return o, nil
		}
		if mtu < minMTUv4 {
			return o, ErrMTU
		}
		o.data = (mtu - ipv4Len) &^ 7
	case etherTypeIPv6:
		if len(ip) < ipv6Len {
			return o, ErrTruncated
		}
		if ip[0]>>4 != 6 || ipv6Len+int(binary.BigEndian.Uint16(ip[4:])) != len(ip) {
			return o, ErrMalformed
		}
		switch ip[6] {
		case protoUDP:
		case protoIPv6Frg:
			return o, ErrFragment
		default:
			// Extension headers would have to be split into the
			// unfragmentable part and the rest; Encap writes none.
			return o, ErrNotUDP
		}
		o.ipLen, o.hdr = len(ip), ipv6Len
		if o.ipLen <= mtu {
			return o, nil
		}
		if mtu < minMTUv6 {
			return o, ErrMTU
		}
		o.data = (mtu - ipv6Len - fragLen) &^ 7
	default:
		return o, ErrMalformed
	}
	payload := o.ipLen - o.hdr
	o.count = (payload + o.data - 1) / o.data
	return o, nil
}

// Fragments returns how many fragments Fragment makes of the outer frame
// pkt for an uplink of the given IP MTU, 0 when pkt fits as it is, and
// checks pkt and mtu the way Fragment does. A caller can use it to make
// sure it has that many buffers before it starts.
func Fragments(pkt []byte, mtu int) (int, error) {
	o, err := parseOuter(pkt, mtu)
	return o.count, err
}

// Fragment splits the outer frame pkt, as Encap returned it (Ethernet
// header first), into IP fragments that fit an uplink of the given IP MTU
// (the device's MTU, without the Ethernet header). It returns the number of
// fragments written, 0 when pkt fits and is to be sent as it is. pkt is
// only read; once Fragment succeeds the caller transmits the fragments
// instead and releases pkt's buffer.
//
// For each fragment, in order, Fragment calls next with the fragment's
// length (Ethernet header included) and writes the fragment at the start
// of the buffer next returns. The caller decides where that is, say past
// the usual headroom of a fresh UMEM frame, and records the length for the
// descriptor. If next returns nil or a shorter buffer, Fragment stops with
// ErrNoBuffer; the buffers handed out so far hold nothing to send and are
// the caller's to release. Every other error comes before the first call
// of next. Fragments tells how many buffers it will ask for.
//
// Each fragment repeats pkt's Ethernet header and VLAN tag. Over IPv4 it
// repeats the IP header with DF cleared, MF set on all but the last, the
// offset in 8-byte units, a fresh header checksum (RFC 791) and a fresh
// identification: the Encoder counts fragmented datagrams apart from
// Encap's packets, so that an identification comes round again only after
// 65536 fragmented datagrams, not 65536 packets. A zero UDP checksum is
// filled in, so that the receiver can tell a datagram put together from
// the fragments of two. Over IPv6 it adds a Fragment header (RFC 8200
// §4.5) with the Encoder's next identification.
func (e *Encoder) Fragment(pkt []byte, mtu int, next func(size int) []byte) (n int, err error) {
	o, err := parseOuter(pkt, mtu)
	if err != nil || o.count == 0 {
		return 0, err
	}
	head := pkt[:o.l3+o.hdr]
	payload := pkt[o.l3+o.hdr:]
	e.fragID++
	id := e.fragID
	// Over IPv4, a UDP datagram without a checksum gets one: the 16-bit
	// identification wraps within seconds at high rates, and a receiver
	// that puts together fragments of two datagrams (RFC 4963) must be
	// able to tell. Its header is in the first fragment (o.data ≥ 48).
	var udpSum uint16
	if o.v4 && pkt[o.l3+9] == protoUDP && len(payload) >= udpLen &&
		int(binary.BigEndian.Uint16(payload[4:])) == len(payload) && binary.BigEndian.Uint16(payload[6:]) == 0 {
		udpSum = udpChecksum(pkt[o.l3+12:o.l3+20], payload)
	}
	for i := 0; i < o.count; i++ {
		start := i * o.data
		chunk := payload[start:min(start+o.data, len(payload))]
		more := i < o.count-1
		fragHdr := 0
		if !o.v4 {
			fragHdr = fragLen
		}
		size := len(head) + fragHdr + len(chunk)
		b := next(size)
		if len(b) < size {
			return i, ErrNoBuffer
		}
		b = b[:size]
		copy(b, head)
		ip := b[o.l3:]
		if o.v4 {
			binary.BigEndian.PutUint16(ip[2:], uint16(ipv4Len+len(chunk)))
			binary.BigEndian.PutUint16(ip[4:], uint16(id))
			fo := uint16(start / 8)
			if more {
				fo |= ipv4MF
			}
			binary.BigEndian.PutUint16(ip[6:], fo)
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], checksum(ip[:ipv4Len], 0))
		} else {
			binary.BigEndian.PutUint16(ip[4:], uint16(fragLen+len(chunk)))
			ip[6] = protoIPv6Frg
			fh := ip[ipv6Len : ipv6Len+fragLen]
			fh[0] = head[o.l3+6] // the next header of the fragmentable part
			fh[1] = 0
			fo := uint16(start/8) << 3
			if more {
				fo |= 1
			}
			binary.BigEndian.PutUint16(fh[2:], fo)
			binary.BigEndian.PutUint32(fh[4:], id)
		}
		copy(b[len(head)+fragHdr:], chunk)
		if i == 0 && udpSum != 0 {
			binary.BigEndian.PutUint16(b[len(head)+6:], udpSum)
		}
	}
	return o.count, nil
}
