package vxlan

import "net/netip"

// Header lengths of an encapsulation: outer Ethernet, IP, UDP and VXLAN
// headers in front of the inner frame. A VLAN tag on the outer frame adds
// VLANLen.
const (
	HeaderLenIPv4 = ethLen + ipv4Len + udpLen + vxlanLen // 50
	HeaderLenIPv6 = ethLen + ipv6Len + udpLen + vxlanLen // 70
	VLANLen       = 4

	// MaxHeaderLen is the most headroom Encap ever needs.
	MaxHeaderLen = HeaderLenIPv6 + VLANLen

	// DefaultPort is the IANA VXLAN port (RFC 7348 §5).
	DefaultPort = 4789
	// DefaultTTL is the outer TTL or hop limit when the Underlay gives none.
	DefaultTTL = 64

	// MinInnerLen is the shortest inner frame: an Ethernet header.
	MinInnerLen = ethLen

	// The dynamic port range (RFC 6335) that outer source ports come from.
	MinSrcPort = 49152
	MaxSrcPort = 65535

	// MaxVNI is the largest 24-bit VXLAN network identifier.
	MaxVNI = 1<<24 - 1
)

const (
	ethLen   = 14
	ipv4Len  = 20
	ipv6Len  = 40
	udpLen   = 8
	vxlanLen = 8
	fragLen  = 8 // IPv6 Fragment extension header

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8

	protoTCP     = 6
	protoUDP     = 17
	protoIPv6Frg = 44
	protoSCTP    = 132
	protoUDPLite = 136

	vxlanFlagI = 0x08

	ipv4DF     = 0x4000
	ipv4MF     = 0x2000
	ipv4OffMsk = 0x1fff

	minMTUv4 = 68
	minMTUv6 = 1280
)

// Underlay is how to reach one remote VTEP, resolved by the caller (from
// its neighbour table and the uplink's configuration).
type Underlay struct {
	// SrcMAC is the uplink's address; DstMAC the next hop's.
	SrcMAC, DstMAC [6]byte
	// VLAN is the outer 802.1Q VLAN ID, 1 to 4094; 0 sends untagged.
	VLAN uint16
	// Src and Dst are the outer addresses, both IPv4 or both IPv6.
	// IPv4-mapped IPv6 addresses count as IPv4.
	Src, Dst netip.Addr
	// DstPort is the remote VTEP's UDP port; 0 means DefaultPort.
	DstPort uint16
	// TTL is the outer TTL or hop limit; 0 means DefaultTTL.
	TTL uint8
}

// HeaderLen returns the bytes Encap writes in front of the inner frame
// for u, or 0 when u is not usable.
func (u *Underlay) HeaderLen() int {
	if u == nil {
		return 0
	}
	s, d := u.Src.Unmap(), u.Dst.Unmap()
	n := 0
	switch {
	case s.Is4() && d.Is4():
		n = HeaderLenIPv4
	case s.Is6() && d.Is6():
		n = HeaderLenIPv6
	default:
		return 0
	}
	if u.VLAN != 0 {
		n += VLANLen
	}
	return n
}

// Error is why a packet was refused. The values are comparable (use ==
// or errors.Is), cost no allocation, and name a drop counter.
type Error uint8

const (
	_ Error = iota
	// ErrUnderlay: the Underlay is nil, its addresses are not both IPv4 or
	// both IPv6, or its VLAN ID is out of range.
	ErrUnderlay
	// ErrVNI: a VNI above MaxVNI.
	ErrVNI
	// ErrBounds: the inner frame is not inside the buffer, or there is not
	// enough headroom in front of it.
	ErrBounds
	// ErrTooBig: the packet would exceed the IP length field.
	ErrTooBig
	// ErrTruncated: shorter than its headers, or a length field claims
	// more bytes than the packet holds.
	ErrTruncated
	// ErrMalformed: a header that is not what it must be (IP version,
	// header length, lengths that disagree, an IPv4 header checksum).
	ErrMalformed
	// ErrNotUDP: the IP packet is not UDP (IPv6 extension headers included).
	ErrNotUDP
	// ErrFragment: an IP fragment; reassemble first.
	ErrFragment
	// ErrPort: UDP to another port than the tunnel's.
	ErrPort
	// ErrChecksum: a UDP checksum that does not verify.
	ErrChecksum
	// ErrFlags: the VXLAN I flag is clear or a reserved bit is set.
	ErrFlags
	// ErrNotLocal: the outer destination is not one of our addresses.
	ErrNotLocal
	// ErrSource: the outer source is not a unicast address, so no VTEP.
	ErrSource
	// ErrInnerShort: the inner frame is shorter than an Ethernet header.
	ErrInnerShort
	// ErrMTU: an MTU below the protocol's minimum (68, or 1280 for IPv6).
	ErrMTU
	// ErrNoBuffer: Fragment's next returned no buffer or a short one.
	ErrNoBuffer

	numErrors
)

var errorNames = [numErrors]string{
	ErrUnderlay:   "bad_underlay",
	ErrVNI:        "bad_vni",
	ErrBounds:     "bounds",
	ErrTooBig:     "too_big",
	ErrTruncated:  "truncated",
	ErrMalformed:  "malformed",
	ErrNotUDP:     "not_udp",
	ErrFragment:   "fragment",
	ErrPort:       "wrong_port",
	ErrChecksum:   "bad_checksum",
	ErrFlags:      "bad_flags",
	ErrNotLocal:   "not_local",
	ErrSource:     "bad_source",
	ErrInnerShort: "inner_short",
	ErrMTU:        "mtu_too_small",
	ErrNoBuffer:   "no_buffer",
}

// String returns the reason's counter name, like "bad_checksum".
func (e Error) String() string {
	if e > 0 && e < numErrors {
		return errorNames[e]
	}
	return "unknown"
}

func (e Error) Error() string { return "vxlan: " + e.String() }

// Errors lists every reason, in order, for registering counters.
func Errors() []Error {
	es := make([]Error, 0, numErrors-1)
	for e := Error(1); e < numErrors; e++ {
		es = append(es, e)
	}
	return es
}
