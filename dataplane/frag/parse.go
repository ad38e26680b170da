package frag

import "encoding/binary"

// IP protocol numbers Parse knows.
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoESP      = 50
	protoAH       = 51
	protoICMPv6   = 58
	protoNoNext   = 59
	protoDstOpts  = 60
	protoSCTP     = 132
	protoMobility = 135
	protoUDPLite  = 136
	protoHIP      = 139
	protoShim6    = 140
	protoExp1     = 253
	protoExp2     = 254
)

// MaxExtHeaders is how many IPv6 extension headers Parse walks before it
// gives up on a packet (ErrTooManyHeaders). A real chain has a handful
// (Hop-by-Hop, Destination Options, Routing, Fragment, AH, Destination
// Options); a longer one only costs the parser.
const MaxExtHeaders = 8

// maxIPv4Datagram is the longest IPv4 datagram (total length, header
// included); maxIPv6Payload the longest IPv6 payload without a jumbogram.
const (
	maxIPv4Datagram = 65535
	maxIPv6Payload  = 65535
)

// Key names a datagram: the fragments of one datagram share it. For IPv4
// it is (source, destination, protocol, identification) (RFC 791), for IPv6
// (source, destination, identification) (RFC 8200). It is comparable and
// holds no pointers.
type Key struct {
	// Src and Dst are the addresses; IPv4 ones fill the first 4 bytes.
	Src, Dst [16]byte
	// ID is the identification: 16 bits for IPv4, 32 for IPv6.
	ID uint32
	// Zone is the caller's: Parse leaves it zero, a caller that sees
	// several address spaces (a switch with isolated networks, tunnels
	// with VNIs) sets it so that their datagrams never mix.
	Zone uint32
	// Proto is the IPv4 protocol; zero for IPv6.
	Proto uint8
	// Version is 4 or 6.
	Version uint8
}

// Info is what Parse found in one IP packet. Offsets index the packet
// given to Parse.
type Info struct {
	// Version is 4 or 6.
	Version uint8
	// IsFragment: the packet is one fragment of a larger datagram. An
	// IPv6 atomic fragment (a Fragment header with offset 0 and no more
	// fragments, RFC 6946) is not: it is a whole packet, see Atomic.
	IsFragment bool
	// First: a fragment at offset 0, the only one with the upper-layer
	// header.
	First bool
	// More is the More Fragments flag.
	More bool
	// Atomic: an IPv6 packet with a Fragment header that cuts nothing.
	Atomic bool
	// Proto is the upper-layer protocol for whole packets and first
	// fragments (for IPv6 the header at the end of the extension chain);
	// for later fragments the IPv4 protocol or the IPv6 Fragment
	// header's Next Header.
	Proto uint8
	// Key names the fragment's datagram; set for fragments, also when
	// Parse returns a fragment error.
	Key Key
	// Len is the packet's length by its own header (IPv4 total length,
	// IPv6 40 + payload length); bytes after it are link padding.
	Len int
	// HeaderLen is the part every fragment repeats: the IPv4 header, or
	// the IPv6 header and the extension headers before the Fragment
	// header (the unfragmentable part).
	HeaderLen int
	// FragHdrOff is where the IPv6 Fragment header is, NextHdrOff where
	// the Next Header byte that names it is (6, or inside the extension
	// header before it); both zero for IPv4 and for whole packets.
	FragHdrOff, NextHdrOff int
	// Offset is the fragment's place in the datagram's fragmentable part,
	// in bytes; DataOff and DataLen are where its bytes are in the packet.
	Offset, DataOff, DataLen int
	// L4Off is where the upper-layer header starts, and L4 the bytes from
	// there to the packet's end, for whole packets and first fragments;
	// zero and nil for later fragments.
	L4Off int
	L4    []byte
	// Tag is the caller's: Parse leaves it zero, Tracker.First records
	// it with the verdict (which rules decided, say) and Later hands it
	// back with the verdict of every later fragment.
	Tag uint64
}

// End is the fragment's end in the datagram's fragmentable part.
func (in *Info) End() int { return in.Offset + in.DataLen }

// minL4 is the upper-layer header a first fragment must hold whole:
// everything a policy reads (ports, TCP flags, ICMP type and identifier,
// the SCTP common header, the ESP SPI). Zero for protocols the switch does
// not look into.
func minL4(proto uint8) int {
	switch proto {
	case protoTCP:
		return 20
	case protoUDP, protoUDPLite, protoICMP, protoICMPv6, protoESP:
		return 8
	case protoSCTP:
		return 12
	}
	return 0
}

// Parse reads an IPv4 or IPv6 packet (starting at the IP header, no link
// header) far enough to tell whether it is a fragment, which datagram it
// belongs to and where its upper-layer header is. It walks IPv6 extension
// headers (Hop-by-Hop, Routing, Destination Options, Fragment, AH, and the
// other RFC 7045 ones of the standard format) up to MaxExtHeaders, and
// stops at the first header it does not know, which it takes for the
// upper layer. It never allocates and never reads outside the packet.
//
// Errors are the package's fixed values: ErrMalformed for what is not a
// sound IP packet; for fragments ErrBadFragment, ErrTooBig, ErrTinyFirst,
// ErrHeaderOverwrite; ErrTooManyHeaders. When the packet is a fragment,
// Info.IsFragment and Info.Key are set even with an error, so that the
// caller can drop the whole datagram (Tracker.Reject).
func Parse(pkt []byte) (Info, error) {
	var in Info
	if len(pkt) == 0 {
		return in, ErrMalformed
	}
	switch pkt[0] >> 4 {
	case 4:
		return in, parse4(pkt, &in)
	case 6:
		return in, parse6(pkt, &in)
	}
	return in, ErrMalformed
}

func parse4(p []byte, in *Info) error {
	in.Version = 4
	if len(p) < 20 {
		return ErrMalformed
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:]))
	if ihl < 20 || total < ihl || total > len(p) {
		return ErrMalformed
	}
	p = p[:total]
	in.Len = total
	in.HeaderLen = ihl
	in.Proto = p[9]
	fo := binary.BigEndian.Uint16(p[6:])
	in.More = fo&0x2000 != 0
	in.Offset = int(fo&0x1fff) * 8
	in.DataOff, in.DataLen = ihl, total-ihl
	if !in.More && in.Offset == 0 {
		in.L4Off, in.L4 = ihl, p[ihl:]
		return nil
	}
	in.IsFragment = true
	in.First = in.Offset == 0
	k := &in.Key
	k.Version = 4
	k.Proto = p[9]
	k.ID = uint32(binary.BigEndian.Uint16(p[4:]))
	copy(k.Src[:4], p[12:16])
	copy(k.Dst[:4], p[16:20])
	if err := checkFragment(in, ihl); err != nil {
		return err
	}
	if in.First {
		in.L4Off, in.L4 = ihl, p[ihl:]
		if len(in.L4) < minL4(in.Proto) {
			return ErrTinyFirst
		}
	} else if in.Offset < minL4(in.Proto) {
		return ErrHeaderOverwrite
	}
	return nil
}

// checkFragment applies the rules every fragment must meet (RFC 791, RFC
// 8200 §4.5). size is what the reassembled datagram adds to the
// fragmentable part: the IPv4 header, or the IPv6 extension headers before
// the Fragment header.
func checkFragment(in *Info, size int) error {
	if in.DataLen == 0 {
		return ErrBadFragment
	}
	if in.More && in.DataLen%8 != 0 {
		return ErrBadFragment
	}
	if size+in.End() > 65535 {
		return ErrTooBig
	}
	return nil
}

// isExtHeader reports the IPv6 extension headers Parse walks: those of RFC
// 8200 and the IANA list (RFC 7045) that have the standard layout. ESP is
// not among them: what follows it is encrypted, so it ends the chain.
func isExtHeader(nh uint8) bool {
	switch nh {
	case protoHopByHop, protoRouting, protoFragment, protoAH, protoDstOpts,
		protoMobility, protoHIP, protoShim6, protoExp1, protoExp2:
		return true
	}
	return false
}

func parse6(p []byte, in *Info) error {
	in.Version = 6
	if len(p) < 40 {
		return ErrMalformed
	}
	total := 40 + int(binary.BigEndian.Uint16(p[4:]))
	if total > len(p) {
		return ErrMalformed
	}
	p = p[:total]
	in.Len = total
	in.HeaderLen = 40
	nh, nhOff, off := p[6], 6, 40
	for n := 0; isExtHeader(nh); n++ {
		if n == MaxExtHeaders {
			return ErrTooManyHeaders
		}
		// Once past a first fragment's Fragment header, a header that
		// does not fit is one the fragment failed to carry (RFC 7112).
		short := ErrMalformed
		if in.First {
			short = ErrTinyFirst
		}
		switch nh {
		case protoHopByHop:
			if off != 40 {
				return ErrMalformed // RFC 8200 §4.1: only right after the IPv6 header
			}
		case protoFragment:
			if in.FragHdrOff != 0 {
				return ErrBadFragment // a second Fragment header
			}
			if off+8 > len(p) {
				return ErrMalformed
			}
			in.FragHdrOff, in.NextHdrOff, in.HeaderLen = off, nhOff, off
			fo := binary.BigEndian.Uint16(p[off+2:])
			in.Offset = int(fo &^ 7)
			in.More = fo&1 != 0
			in.DataOff, in.DataLen = off+8, total-off-8
			next := p[off]
			if in.Offset == 0 && !in.More {
				in.Atomic = true
			} else {
				in.IsFragment = true
				in.First = in.Offset == 0
				k := &in.Key
				k.Version = 6
				k.ID = binary.BigEndian.Uint32(p[off+4:])
				copy(k.Src[:], p[8:24])
				copy(k.Dst[:], p[24:40])
				if err := checkFragment(in, off-40); err != nil {
					in.Proto = next
					return err
				}
				if !in.First {
					// The rest is data, not headers.
					in.Proto = next
					if in.Offset < minL4(next) {
						return ErrHeaderOverwrite
					}
					return nil
				}
			}
			nh, nhOff, off = next, off, off+8
			continue
		}
		if off+8 > len(p) {
			return short
		}
		hlen := (int(p[off+1]) + 1) * 8
		if nh == protoAH {
			hlen = (int(p[off+1]) + 2) * 4
		}
		if off+hlen > len(p) {
			return short
		}
		nh, nhOff, off = p[off], off, off+hlen
	}
	in.Proto = nh
	in.L4Off, in.L4 = off, p[off:]
	if in.First && len(in.L4) < minL4(nh) {
		return ErrTinyFirst
	}
	return nil
}
