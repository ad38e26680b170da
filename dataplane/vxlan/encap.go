package vxlan

import (
	"crypto/rand"
	"encoding/binary"
)

// Encoder encapsulates and fragments frames for one switching loop. It
// holds the flow hash's seed and the IP identification counters, and is
// not safe for concurrent use: each loop has its own, like its rings.
// The zero value works, with seed 0 and counters from 0; NewEncoder gives
// random ones.
type Encoder struct {
	// Seed perturbs the flow hash that picks outer source ports and flow
	// labels. Each flow keeps its port for as long as the seed stays.
	Seed uint64

	ipID   uint16 // IPv4 identification of Encap's last packet
	fragID uint32 // identification of Fragment's last datagram
}

// NewEncoder returns an Encoder with a random hash seed and random
// starting identifications, so that neither is predictable from outside
// (RFC 7739).
func NewEncoder() *Encoder {
	var b [14]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return &Encoder{
		Seed:   binary.LittleEndian.Uint64(b[0:]),
		ipID:   binary.LittleEndian.Uint16(b[8:]),
		fragID: binary.LittleEndian.Uint32(b[10:]),
	}
}

// SrcPort returns the outer UDP source port that Encap uses for the inner
// frame, in MinSrcPort..MaxSrcPort; 0 when frame is shorter than an
// Ethernet header.
func (e *Encoder) SrcPort(frame []byte) uint16 {
	if len(frame) < MinInnerLen {
		return 0
	}
	return srcPort(flowHash(frame, e.Seed))
}

// Encap encapsulates the inner Ethernet frame buf[start:start+n] for the
// VTEP u in VXLAN network vni. It writes the outer Ethernet (with u's VLAN
// tag, if any), IPv4 or IPv6, UDP and VXLAN headers into the headroom
// buf[start-u.HeaderLen():start] and returns where the outer frame now
// begins and its length: buf[off:off+length] is ready to transmit. The
// inner frame is not moved or changed. MaxHeaderLen bytes of headroom
// always suffice.
//
// Over IPv4 the outer packet has DF set, the Encoder's next identification
// and a zero UDP checksum. Over IPv6 the flow label comes from the inner
// flow's hash and the UDP checksum covers the whole datagram, computed in
// one pass over the frame.
func (e *Encoder) Encap(buf []byte, start, n int, vni uint32, u *Underlay) (off, length int, err error) {
	if u == nil {
		return 0, 0, ErrUnderlay
	}
	if vni > MaxVNI {
		return 0, 0, ErrVNI
	}
	if u.VLAN > 4094 {
		return 0, 0, ErrUnderlay
	}
	src, dst := u.Src.Unmap(), u.Dst.Unmap()
	v4 := src.Is4() && dst.Is4()
	if !v4 && !(src.Is6() && dst.Is6()) {
		return 0, 0, ErrUnderlay
	}
	if n < MinInnerLen {
		return 0, 0, ErrInnerShort
	}
	hdr := HeaderLenIPv6
	if v4 {
		hdr = HeaderLenIPv4
	}
	if u.VLAN != 0 {
		hdr += VLANLen
	}
	if start < hdr || start > len(buf) || n > len(buf)-start {
		return 0, 0, ErrBounds
	}
	udpTotal := udpLen + vxlanLen + n
	if v4 && ipv4Len+udpTotal > 0xffff || !v4 && udpTotal > 0xffff {
		return 0, 0, ErrTooBig
	}
	off = start - hdr
	p := buf[off : start+n : start+n]
	h := flowHash(p[hdr:], e.Seed)
	ttl := u.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	port := u.DstPort
	if port == 0 {
		port = DefaultPort
	}

	// Ethernet.
	copy(p[0:6], u.DstMAC[:])
	copy(p[6:12], u.SrcMAC[:])
	l3 := 12
	if u.VLAN != 0 {
		binary.BigEndian.PutUint16(p[12:], etherTypeVLAN)
		binary.BigEndian.PutUint16(p[14:], u.VLAN)
		l3 += VLANLen
	}
	var ip []byte
	if v4 {
		binary.BigEndian.PutUint16(p[l3:], etherTypeIPv4)
		ip = p[l3+2 : l3+2+ipv4Len]
		e.ipID++
		ip[0] = 0x45
		ip[1] = 0
		binary.BigEndian.PutUint16(ip[2:], uint16(ipv4Len+udpTotal))
		binary.BigEndian.PutUint16(ip[4:], e.ipID)
		binary.BigEndian.PutUint16(ip[6:], ipv4DF)
		ip[8] = ttl
		ip[9] = protoUDP
		ip[10], ip[11] = 0, 0
		a := src.As4()
		copy(ip[12:16], a[:])
		a = dst.As4()
		copy(ip[16:20], a[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	} else {
		binary.BigEndian.PutUint16(p[l3:], etherTypeIPv6)
		ip = p[l3+2 : l3+2+ipv6Len]
		binary.BigEndian.PutUint32(ip[0:], 6<<28|flowLabel(h))
		binary.BigEndian.PutUint16(ip[4:], uint16(udpTotal))
		ip[6] = protoUDP
		ip[7] = ttl
		a := src.As16()
		copy(ip[8:24], a[:])
		a = dst.As16()
		copy(ip[24:40], a[:])
	}
	udp := p[l3+2+len(ip):]
	binary.BigEndian.PutUint16(udp[0:], srcPort(h))
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpTotal))
	udp[6], udp[7] = 0, 0 // checksum
	udp[8] = vxlanFlagI
	udp[9], udp[10], udp[11] = 0, 0, 0
	binary.BigEndian.PutUint32(udp[12:], vni<<8)
	if !v4 {
		binary.BigEndian.PutUint16(udp[6:], udpChecksum(ip[8:40], udp))
	}
	return off, hdr + n, nil
}
