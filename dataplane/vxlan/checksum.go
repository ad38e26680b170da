package vxlan

import (
	"encoding/binary"
	"math/bits"
)

// sum adds b, taken as big-endian 16-bit words, to the one's complement
// sum s. It reads eight bytes at a time into a 64-bit accumulator with
// end-around carry, which folds to the same 16-bit sum (2^16 ≡ 1 modulo
// 0xffff). b must start at an even offset of the checksummed data; an odd
// trailing byte is padded with zero.
func sum(b []byte, s uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.BigEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.BigEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		s, c = bits.Add64(s, uint64(b[0])<<8, c)
	}
	s, c = bits.Add64(s, 0, c)
	return s + c
}

// fold reduces a 64-bit one's complement sum to 16 bits.
func fold(s uint64) uint16 {
	s = s&0xffffffff + s>>32
	s = s&0xffffffff + s>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return uint16(s)
}

// checksum returns the Internet checksum (RFC 1071) of b after s.
func checksum(b []byte, s uint64) uint16 {
	return ^fold(sum(b, s))
}

// udpChecksum returns the UDP checksum of the datagram udp (header with a
// zero checksum field, then payload) between the addresses addrs: the
// source and destination as they sit next to each other in the IPv4 or
// IPv6 header (8 or 32 bytes). The pseudo-header (RFC 768, RFC 8200 §8.1)
// is those addresses, the protocol and the UDP length. A result of zero is
// sent as 0xffff (RFC 768).
func udpChecksum(addrs []byte, udp []byte) uint16 {
	c := checksum(udp, sum(addrs, uint64(len(udp))+protoUDP))
	if c == 0 {
		c = 0xffff
	}
	return c
}

// udpChecksumOK verifies a received UDP datagram's nonzero checksum: the
// sum over pseudo-header, header and payload is all ones.
func udpChecksumOK(addrs []byte, udp []byte) bool {
	return fold(sum(udp, sum(addrs, uint64(len(udp))+protoUDP))) == 0xffff
}
