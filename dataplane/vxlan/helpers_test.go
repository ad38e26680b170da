package vxlan

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
)

// These helpers check what the package writes without using its code: a
// plain 16-bit one's complement sum, pseudo-headers built byte by byte, and
// a reassembler that follows RFC 791 and RFC 8200 literally.

// naiveSum adds up b as big-endian 16-bit words, the textbook way.
func naiveSum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return s
}

// checkIPv4Header verifies an IPv4 header's checksum from scratch.
func checkIPv4Header(ip []byte) error {
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return fmt.Errorf("not an IPv4 header")
	}
	ihl := int(ip[0]&0xf) * 4
	if len(ip) < ihl {
		return fmt.Errorf("header truncated")
	}
	if s := naiveSum(ip[:ihl]); s != 0xffff {
		return fmt.Errorf("IPv4 header checksum %#04x does not verify (sum %#04x)", binary.BigEndian.Uint16(ip[10:]), s)
	}
	return nil
}

// checkUDP verifies the UDP checksum of an IPv4 or IPv6 packet without
// extension headers or options, building the pseudo-header byte by byte.
// A zero checksum fails unless zeroOK.
func checkUDP(ip []byte, zeroOK bool) error {
	var pseudo, udp []byte
	switch ip[0] >> 4 {
	case 4:
		total := int(binary.BigEndian.Uint16(ip[2:]))
		udp = ip[20:total]
		pseudo = append(pseudo, ip[12:20]...)
		pseudo = append(pseudo, 0, 17, byte(len(udp)>>8), byte(len(udp)))
	case 6:
		udp = ip[40 : 40+int(binary.BigEndian.Uint16(ip[4:]))]
		pseudo = append(pseudo, ip[8:40]...)
		l := len(udp)
		pseudo = append(pseudo, byte(l>>24), byte(l>>16), byte(l>>8), byte(l), 0, 0, 0, 17)
	default:
		return fmt.Errorf("not IP")
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return fmt.Errorf("UDP length %d, IP payload %d", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	c := binary.BigEndian.Uint16(udp[6:])
	if c == 0 {
		if zeroOK {
			return nil
		}
		return fmt.Errorf("zero UDP checksum")
	}
	s := naiveSum(append(pseudo, udp...))
	if s != 0xffff {
		return fmt.Errorf("UDP checksum %#04x does not verify (sum %#04x)", c, s)
	}
	return nil
}

// l3Offset returns where the IP header starts in an outer frame.
func l3Offset(frame []byte) int {
	if binary.BigEndian.Uint16(frame[12:]) == 0x8100 {
		return 18
	}
	return 14
}

// reassemble puts the IP fragments of one datagram (Ethernet frames) back
// together, the way a receiver does, and returns the whole IP packet. It
// checks what a receiver relies on: one identification, offsets in 8-byte
// units that tile the payload without gaps or overlaps, MF on all but the
// last, every fragment within mtu.
func reassemble(frames [][]byte, mtu int) ([]byte, error) {
	type piece struct {
		off  int
		more bool
		data []byte
	}
	var pieces []piece
	var head []byte
	var id uint32
	for i, f := range frames {
		ip := f[l3Offset(f):]
		if len(ip) > mtu {
			return nil, fmt.Errorf("fragment %d: %d bytes over MTU %d", i, len(ip), mtu)
		}
		var p piece
		var fid uint32
		switch ip[0] >> 4 {
		case 4:
			if err := checkIPv4Header(ip); err != nil {
				return nil, fmt.Errorf("fragment %d: %v", i, err)
			}
			fl := binary.BigEndian.Uint16(ip[6:])
			if fl&0x4000 != 0 {
				return nil, fmt.Errorf("fragment %d: DF set", i)
			}
			p = piece{int(fl&0x1fff) * 8, fl&0x2000 != 0, ip[20:binary.BigEndian.Uint16(ip[2:])]}
			fid = uint32(binary.BigEndian.Uint16(ip[4:]))
			if p.off == 0 {
				head = append([]byte(nil), ip[:20]...)
			}
		case 6:
			if ip[6] != 44 {
				return nil, fmt.Errorf("fragment %d: no fragment header", i)
			}
			fh := ip[40:48]
			fo := binary.BigEndian.Uint16(fh[2:])
			p = piece{int(fo>>3) * 8, fo&1 != 0, ip[48 : 40+binary.BigEndian.Uint16(ip[4:])]}
			fid = binary.BigEndian.Uint32(fh[4:])
			if p.off == 0 {
				head = append([]byte(nil), ip[:40]...)
				head[6] = fh[0]
			}
		}
		if i == 0 {
			id = fid
		} else if fid != id {
			return nil, fmt.Errorf("fragment %d: identification %#x, first had %#x", i, fid, id)
		}
		if p.more && len(p.data)%8 != 0 {
			return nil, fmt.Errorf("fragment %d: %d bytes, not a multiple of 8", i, len(p.data))
		}
		pieces = append(pieces, p)
	}
	sort.Slice(pieces, func(i, j int) bool { return pieces[i].off < pieces[j].off })
	if head == nil {
		return nil, fmt.Errorf("no first fragment")
	}
	payload := []byte{}
	for i, p := range pieces {
		if p.off != len(payload) {
			return nil, fmt.Errorf("fragment at %d, expected %d", p.off, len(payload))
		}
		if p.more != (i < len(pieces)-1) {
			return nil, fmt.Errorf("fragment at %d: MF %v", p.off, p.more)
		}
		payload = append(payload, p.data...)
	}
	pkt := append(head, payload...)
	if pkt[0]>>4 == 4 {
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[6:], 0)
		pkt[10], pkt[11] = 0, 0
		c := ^naiveSum(pkt[:20])
		pkt[10], pkt[11] = byte(c>>8), byte(c)
	} else {
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(payload)))
	}
	return pkt, nil
}

// Inner frames for tests.

var (
	innerSrcMAC = [6]byte{0x02, 0x00, 0x00, 0xaa, 0x00, 0x01}
	innerDstMAC = [6]byte{0x02, 0x00, 0x00, 0xbb, 0x00, 0x02}
)

// innerKind is a sort of inner frame.
type innerKind int

const (
	innerRaw innerKind = iota // random bytes after the MACs
	innerIPv4UDP
	innerIPv4TCP
	innerIPv6UDP
	innerVLANIPv4
	numInnerKinds
)

// flow is the part of an inner frame that names its flow.
type flow struct {
	src, dst         [6]byte
	srcIP, dstIP     netip.Addr
	srcPort, dstPort uint16
}

// innerFrame builds an inner frame of kind k and size bytes (at least the
// headers it needs) for flow fl, the rest random.
func innerFrame(rng *rand.Rand, k innerKind, fl flow, size int) []byte {
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(rng.Uint32())
	}
	copy(f[0:], fl.dst[:])
	copy(f[6:], fl.src[:])
	off := 12
	if k == innerVLANIPv4 {
		binary.BigEndian.PutUint16(f[12:], 0x8100)
		binary.BigEndian.PutUint16(f[14:], 100)
		off = 16
		k = innerIPv4UDP
	}
	switch k {
	case innerIPv4UDP, innerIPv4TCP:
		binary.BigEndian.PutUint16(f[off:], 0x0800)
		ip := f[off+2:]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		binary.BigEndian.PutUint16(ip[6:], 0x4000)
		ip[9] = 17
		if k == innerIPv4TCP {
			ip[9] = 6
		}
		a := fl.srcIP.As4()
		copy(ip[12:], a[:])
		a = fl.dstIP.As4()
		copy(ip[16:], a[:])
		binary.BigEndian.PutUint16(ip[20:], fl.srcPort)
		binary.BigEndian.PutUint16(ip[22:], fl.dstPort)
	case innerIPv6UDP:
		binary.BigEndian.PutUint16(f[off:], 0x86dd)
		ip := f[off+2:]
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
		ip[6] = 17
		a := fl.srcIP.As16()
		copy(ip[8:], a[:])
		a = fl.dstIP.As16()
		copy(ip[24:], a[:])
		binary.BigEndian.PutUint16(ip[40:], fl.srcPort)
		binary.BigEndian.PutUint16(ip[42:], fl.dstPort)
	}
	return f
}

// minInner is the smallest size innerFrame accepts for kind k.
func minInner(k innerKind) int {
	switch k {
	case innerIPv4UDP, innerIPv4TCP:
		return 14 + 20 + 8
	case innerVLANIPv4:
		return 18 + 20 + 8
	case innerIPv6UDP:
		return 14 + 40 + 8
	}
	return 14
}

// randomFlow returns a flow of random addresses of the family k needs.
func randomFlow(rng *rand.Rand, k innerKind) flow {
	var fl flow
	for i := range 6 {
		fl.src[i] = byte(rng.Uint32())
		fl.dst[i] = byte(rng.Uint32())
	}
	fl.src[0] &^= 1
	if k == innerIPv6UDP {
		var a, b [16]byte
		for i := range 16 {
			a[i], b[i] = byte(rng.Uint32()), byte(rng.Uint32())
		}
		fl.srcIP, fl.dstIP = netip.AddrFrom16(a), netip.AddrFrom16(b)
	} else {
		fl.srcIP = netip.AddrFrom4([4]byte{10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		fl.dstIP = netip.AddrFrom4([4]byte{10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	fl.srcPort, fl.dstPort = uint16(rng.Uint32()), uint16(rng.Uint32())
	return fl
}

// Underlays for tests.

func underlay4() *Underlay {
	return &Underlay{
		SrcMAC: [6]byte{0x02, 0x94, 0, 0, 0, 1},
		DstMAC: [6]byte{0x02, 0x94, 0, 0, 0, 2},
		Src:    netip.MustParseAddr("10.94.0.1"),
		Dst:    netip.MustParseAddr("10.94.0.2"),
	}
}

func underlay6() *Underlay {
	u := underlay4()
	u.Src = netip.MustParseAddr("fd00:94::1")
	u.Dst = netip.MustParseAddr("fd00:94::2")
	return u
}

var local4, local6 = netip.MustParseAddr("10.94.0.2"), netip.MustParseAddr("fd00:94::2")

// isLocal accepts the test underlays' destinations.
func isLocal(a netip.Addr) bool { return a == local4 || a == local6 }

// encapCopy encapsulates a copy of inner with 256 bytes of headroom and
// returns the outer frame.
func encapCopy(e *Encoder, inner []byte, vni uint32, u *Underlay) ([]byte, error) {
	buf := make([]byte, 256+len(inner))
	copy(buf[256:], inner)
	off, n, err := e.Encap(buf, 256, len(inner), vni, u)
	if err != nil {
		return nil, err
	}
	return buf[off : off+n], nil
}
