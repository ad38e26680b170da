package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// The generator's frames: Ethernet, IPv4 without options, UDP, and a
// payload that fills the frame to its size. Sizes are given the usual way,
// including the 4-byte FCS that a veth does not carry: a "64-byte frame" is
// 60 bytes on the veth, "1518" is 1514 (a full 1500-byte MTU).

const (
	fcsLen     = 4
	ethLen     = 14
	ipv4Len    = 20
	udpLen     = 8
	vxlanLen   = 8
	minFrame   = 64
	maxFrame   = 1518
	benchPort  = 9     // UDP discard: the frames the sink counts
	learnPort  = 10    // the learner's frames, never counted
	vxlanPort  = 4789  // IANA VXLAN
	benchSport = 40000 // UDP source port of every frame
)

var payloadMagic = []byte("xdpswitch-bench")

// UDPFrame describes one Ethernet/IPv4/UDP frame.
type UDPFrame struct {
	Dst, Src       net.HardwareAddr
	SrcIP, DstIP   netip.Addr
	SrcPort, Port  uint16
	Size           int // with FCS, 64..1518
	UDPChecksumOff bool
}

// wireLen is the frame's length on a veth: the size less the FCS.
func wireLen(size int) int { return size - fcsLen }

// Build writes the frame into b (which must hold wireLen(Size) bytes) and
// returns its length.
func (f UDPFrame) Build(b []byte) (int, error) {
	if f.Size < minFrame || f.Size > maxFrame {
		return 0, fmt.Errorf("frame size %d: must be from %d to %d", f.Size, minFrame, maxFrame)
	}
	n := wireLen(f.Size)
	if len(b) < n {
		return 0, fmt.Errorf("frame size %d: buffer of %d bytes", f.Size, len(b))
	}
	b = b[:n]
	clear(b)
	copy(b[0:6], f.Dst)
	copy(b[6:12], f.Src)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	buildIPv4UDP(b[ethLen:], f.SrcIP, f.DstIP, f.SrcPort, f.Port)
	copy(b[ethLen+ipv4Len+udpLen:], payloadMagic)
	return n, nil
}

// buildIPv4UDP writes an IPv4 header and a UDP header over the whole of b,
// the rest of b being the UDP payload (already in place or zero). The UDP
// checksum is left zero, which IPv4 allows.
func buildIPv4UDP(b []byte, src, dst netip.Addr, sport, dport uint16) {
	ip := b[:ipv4Len]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)))
	ip[6] = 0x40 // don't fragment
	ip[8] = 64
	ip[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := b[ipv4Len:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[6:], 0)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// VXLANFrame wraps an inner frame in Ethernet/IPv4/UDP/VXLAN, as a remote
// VTEP would send it to the switch's uplink.
type VXLANFrame struct {
	OuterDst, OuterSrc net.HardwareAddr
	SrcIP, DstIP       netip.Addr
	VNI                uint32
	Inner              UDPFrame
}

// vxlanOverhead is what encapsulation adds to an inner frame.
const vxlanOverhead = ethLen + ipv4Len + udpLen + vxlanLen

// Build writes the encapsulated frame into b and returns its length. The
// inner frame is Inner.Size less the FCS; the outer frame is 50 bytes more.
func (f VXLANFrame) Build(b []byte) (int, error) {
	innerLen := wireLen(f.Inner.Size)
	n := vxlanOverhead + innerLen
	if len(b) < n {
		return 0, fmt.Errorf("vxlan frame of %d bytes: buffer of %d", n, len(b))
	}
	b = b[:n]
	if _, err := f.Inner.Build(b[vxlanOverhead:]); err != nil {
		return 0, err
	}
	clear(b[:vxlanOverhead])
	copy(b[0:6], f.OuterDst)
	copy(b[6:12], f.OuterSrc)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	vx := b[ethLen+ipv4Len+udpLen:]
	vx[0] = 0x08 // VNI present
	binary.BigEndian.PutUint32(vx[4:], f.VNI<<8)
	buildIPv4UDP(b[ethLen:], f.SrcIP, f.DstIP, benchSport, vxlanPort)
	return n, nil
}

// benchMAC is a locally administered unicast address with an index, for
// the cycled source and destination MACs of the FDB scaling runs.
func benchMAC(side byte, i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x5b, side, byte(i >> 16), byte(i >> 8), byte(i)}
}
