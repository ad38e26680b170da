package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"

	"github.com/xdpswitch/xdpswitch/policy"
)

// PortOptions are what the switch knows of the device behind a port.
type PortOptions struct {
	// MAC is the address of the NIC behind the port (a VM's virtio-net
	// MAC). Port security needs it.
	MAC net.HardwareAddr
	// Security restricts what the port may send: its own MAC, its own
	// addresses, no DHCP server or router advertisement messages. On by
	// default for VM ports; the daemon turns it off for host ports.
	Security bool
	// IPv4 are addresses the port may use besides its DHCP leases.
	IPv4 []netip.Addr
	// IPv6 are prefixes the port's IPv6 sources may come from besides
	// link-local ones.
	IPv6 []netip.Prefix
	// Rules are the port's own allow and deny rules, by direction; nil
	// for none.
	Rules *policy.Ruleset
}

// security is a port's restrictions as the loops check them: an immutable
// snapshot, replaced whole when a lease changes.
type security struct {
	mac uint64
	// v4 are the addresses the port may send from; empty means not bound
	// yet, and any source is accepted until a lease is granted.
	v4 []netip.Addr
	v6 []netip.Prefix
}

var linkLocal6 = netip.MustParsePrefix("fe80::/10")

const (
	ipProtoUDP    = 17
	ipProtoICMPv6 = 58

	icmpv6RouterAdvert = 134
	dhcp4ServerPort    = 67
	dhcp6ServerPort    = 547
)

// check applies port security to a frame that validate accepted. The frame
// may be VLAN-tagged; the checks apply to what is inside.
func (s *security) check(f []byte) (DropReason, bool) {
	if macKey(f[6:12]) != s.mac {
		return DropSpoofedMAC, false
	}
	off := 12
	etype := binary.BigEndian.Uint16(f[off:])
	for etype == etherTypeVLAN || etype == etherTypeQinQ {
		off += vlanHeaderLen
		etype = binary.BigEndian.Uint16(f[off:])
	}
	l3 := f[off+2:]
	switch etype {
	case etherTypeARP:
		// validate guarantees the fixed part and both addresses.
		hlen, plen := int(l3[4]), int(l3[5])
		if hlen != 6 || plen != 4 {
			return 0, true // not Ethernet/IPv4 ARP: nothing to claim
		}
		if macKey(l3[8:14]) != s.mac {
			return DropSpoofedARP, false
		}
		spa := netip.AddrFrom4([4]byte(l3[14:18]))
		if len(s.v4) > 0 && !spa.IsUnspecified() && !slices.Contains(s.v4, spa) {
			return DropSpoofedARP, false
		}
	case etherTypeIPv4:
		ihl := int(l3[0]&0x0f) * 4
		src := netip.AddrFrom4([4]byte(l3[12:16]))
		// A later fragment's first bytes are payload, not a UDP header.
		first := binary.BigEndian.Uint16(l3[6:])&0x1fff == 0
		isUDP := l3[9] == ipProtoUDP && len(l3) >= ihl+8 && first
		if isUDP && binary.BigEndian.Uint16(l3[ihl:]) == dhcp4ServerPort {
			return DropRogueDHCP, false
		}
		toServer := isUDP && binary.BigEndian.Uint16(l3[ihl+2:]) == dhcp4ServerPort
		if toServer && !s.ownClient(l3[ihl+8:]) {
			return DropSpoofedDHCP, false
		}
		if len(s.v4) > 0 && !slices.Contains(s.v4, src) {
			// 0.0.0.0 stays usable for DHCP: a client renewing after
			// losing its address starts from nothing.
			if !toServer || !src.IsUnspecified() {
				return DropSpoofedIP, false
			}
		}
	case etherTypeIPv6:
		src := netip.AddrFrom16([16]byte(l3[8:24]))
		if !src.IsUnspecified() && !linkLocal6.Contains(src) && !slices.ContainsFunc(s.v6, func(p netip.Prefix) bool { return p.Contains(src) }) {
			return DropSpoofedIP, false
		}
		// Only the first header is looked at: a router advertisement or
		// DHCPv6 reply hidden behind extension headers is rare enough that
		// policy rules, not port security, are the tool for it.
		switch next := l3[6]; {
		case next == ipProtoICMPv6 && len(l3) > 40 && l3[40] == icmpv6RouterAdvert:
			return DropRogueRA, false
		case next == ipProtoUDP && len(l3) >= 48 && binary.BigEndian.Uint16(l3[40:]) == dhcp6ServerPort:
			return DropRogueDHCP, false
		}
	}
	return 0, true
}

// ownClient tells whether a DHCP client message (the UDP payload) speaks
// for the port's own NIC. The server leases, renews, releases and takes
// declines by the client hardware address, so a guest that could name
// another NIC there could release another guest's lease and take its
// address.
func (s *security) ownClient(bootp []byte) bool {
	const htype, hlen, chaddr = 1, 2, 28 // RFC 2131 §2
	return len(bootp) >= chaddr+6 && bootp[htype] == 1 && bootp[hlen] == 6 && macKey(bootp[chaddr:chaddr+6]) == s.mac
}
