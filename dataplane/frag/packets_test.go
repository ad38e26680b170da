package frag

import (
	"encoding/binary"
	"testing"
)

// Packet builders for the tests: whole packets and fragments made the way
// a sender would cut them.

type hdr4 struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
	tos      uint8
	df       bool
	opts     []byte // IPv4 options of the first fragment, a multiple of 4
}

var (
	src4 = [4]byte{192, 0, 2, 1}
	dst4 = [4]byte{198, 51, 100, 2}
	src6 = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	dst6 = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2}
)

// sum16 is the Internet checksum, written again for the tests.
func sum16(b []byte) uint16 {
	var s uint64
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// ipv4 builds one IPv4 packet: a fragment at off when off > 0 or more.
func ipv4(h hdr4, off int, more bool, data []byte, opts []byte) []byte {
	hl := 20 + len(opts)
	p := make([]byte, hl+len(data))
	p[0] = 0x40 | uint8(hl/4)
	p[1] = h.tos
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], h.id)
	fo := uint16(off / 8)
	if more {
		fo |= 0x2000
	}
	if h.df {
		fo |= 0x4000
	}
	binary.BigEndian.PutUint16(p[6:], fo)
	p[8] = 64
	p[9] = h.proto
	copy(p[12:], h.src[:])
	copy(p[16:], h.dst[:])
	copy(p[20:], opts)
	binary.BigEndian.PutUint16(p[10:], sum16(p[:hl]))
	copy(p[hl:], data)
	return p
}

func whole4(h hdr4, payload []byte) []byte { return ipv4(h, 0, false, payload, h.opts) }

// frag4 cuts payload into fragments of size bytes (a multiple of 8), the
// last one taking the rest; options go in the first only.
func frag4(h hdr4, payload []byte, size int) [][]byte {
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		var opts []byte
		if off == 0 {
			opts = h.opts
		}
		out = append(out, ipv4(h, off, end < len(payload), payload[off:end], opts))
	}
	return out
}

type hdr6 struct {
	src, dst [16]byte
	id       uint32
	tc       uint8
}

// ext builds one extension header of type typ, n bytes (a multiple of 8,
// at least 8; AH headers a multiple of 4, at least 12), naming next.
func ext(typ, next uint8, n int) []byte {
	b := make([]byte, n)
	b[0] = next
	if typ == protoAH {
		b[1] = uint8(n/4 - 2)
	} else {
		b[1] = uint8(n/8 - 1)
	}
	if typ == protoHopByHop || typ == protoDstOpts {
		// PadN filling the options area.
		b[2] = 1
		b[3] = uint8(n - 4)
	}
	return b
}

// chain builds extension headers of the given types (8 bytes each, AH
// 12), the last naming final; it returns them and the first type (final
// when there are none).
func chain(types []uint8, final uint8) ([]byte, uint8) {
	var b []byte
	for i, typ := range types {
		next := final
		if i+1 < len(types) {
			next = types[i+1]
		}
		n := 8
		if typ == protoAH {
			n = 12
		}
		b = append(b, ext(typ, next, n)...)
	}
	if len(types) == 0 {
		return nil, final
	}
	return b, types[0]
}

func ipv6(h hdr6, nh uint8, body []byte) []byte {
	p := make([]byte, 40+len(body))
	p[0] = 0x60 | h.tc>>4
	p[1] = h.tc << 4
	binary.BigEndian.PutUint16(p[4:], uint16(len(body)))
	p[6] = nh
	p[7] = 64
	copy(p[8:], h.src[:])
	copy(p[24:], h.dst[:])
	copy(p[40:], body)
	return p
}

func fragHdr(next uint8, off int, more bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = next
	fo := uint16(off)
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

// whole6 is the packet that fragments from frag6 reassemble to: the IPv6
// header, the unfragmentable headers, then the fragmentable part, whose
// first header is of type nh.
func whole6(h hdr6, unfrag []uint8, nh uint8, fragmentable []byte) []byte {
	u, first := chain(unfrag, nh)
	return ipv6(h, first, append(u, fragmentable...))
}

// frag6 cuts the fragmentable part into fragments of size bytes (a
// multiple of 8), the last one taking the rest.
func frag6(h hdr6, unfrag []uint8, nh uint8, fragmentable []byte, size int) [][]byte {
	u, first := chain(unfrag, protoFragment)
	var out [][]byte
	for off := 0; off < len(fragmentable); off += size {
		end := min(off+size, len(fragmentable))
		body := append(append(append([]byte{}, u...), fragHdr(nh, off, end < len(fragmentable), h.id)...), fragmentable[off:end]...)
		out = append(out, ipv6(h, first, body))
	}
	return out
}

// udp builds a UDP header and payload (checksum left zero: the tests
// compare bytes, the kernel test checks real checksums).
func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

// pattern is n bytes that differ from one datagram (seed) to another.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func reversed(ps [][]byte) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[len(ps)-1-i] = p
	}
	return out
}

func mustParse(t testing.TB, p []byte) Info {
	t.Helper()
	in, err := Parse(p)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return in
}
