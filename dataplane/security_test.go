package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

func ipv4Packet(src, dst net.IP, proto byte, payload []byte) []byte {
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(payload)))
	ip[8], ip[9] = 64, proto
	copy(ip[12:], src.To4())
	copy(ip[16:], dst.To4())
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, payload...)
}

func udpHeader(src, dst uint16, payload []byte) []byte {
	u := make([]byte, 8)
	binary.BigEndian.PutUint16(u[0:], src)
	binary.BigEndian.PutUint16(u[2:], dst)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return append(u, payload...)
}

func ipv6Packet(src, dst netip.Addr, next byte, payload []byte) []byte {
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(payload)))
	ip[6], ip[7] = next, 255
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(ip, payload...)
}

// bootRequest is a DHCP client message's fixed part (RFC 2131 §2), from
// the NIC chaddr.
func bootRequest(chaddr net.HardwareAddr) []byte {
	m := make([]byte, 240)
	m[0], m[1], m[2] = 1, 1, 6 // BOOTREQUEST, Ethernet, 6-byte addresses
	copy(m[28:], chaddr)
	copy(m[236:], []byte{99, 130, 83, 99})
	return m
}

func arpFrame(ethSrc, sha net.HardwareAddr, spa, tpa net.IP, op uint16) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)
	binary.BigEndian.PutUint16(p[2:], 0x0800)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], op)
	copy(p[8:], sha)
	copy(p[14:], spa.To4())
	copy(p[24:], tpa.To4())
	return ethFrame(bcast, ethSrc, etherTypeARP, p)
}

// TestPortSecurity plays a guest that tries to impersonate others: none of
// its forgeries reaches the other port, each is counted by reason, and its
// honest frames still pass.
func TestPortSecurity(t *testing.T) {
	sw := testSwitch(t, "lan")
	vmMAC := net.HardwareAddr{0x52, 0x54, 0, 0x87, 0, 2}
	vmIP, otherIP := net.ParseIP("10.87.0.2"), net.ParseIP("10.87.0.9")
	tap := plugTap(t, sw, "lan", PortOptions{MAC: vmMAC, Security: true, IPv6: []netip.Prefix{netip.MustParsePrefix("fd00:87::/64")}})
	if err := sw.AddPort("xsnosuch", "lan", PortOptions{Security: true}); err == nil {
		t.Error("a secured port without a MAC was accepted")
	}
	host := plug(t, sw, "lan", "10.87.0.1/24")[0]
	vm := tap.Files[0]

	// Before any lease the guest may use any address.
	if _, err := vm.Write(arpRequest(vmMAC, vmIP, host.IP)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, vm, func(f []byte) bool { _, ok := arpReplyFrom(f, host.IP); return ok })

	// Now it holds a lease for vmIP only.
	if err := sw.SetLeases("lan", map[string][]netip.Addr{vmMAC.String(): {netip.MustParseAddr("10.87.0.2")}}); err != nil {
		t.Fatal(err)
	}
	if p, _ := sw.Port(tap.Name); len(p.AllowedIPv4) != 1 || p.AllowedIPv4[0] != "10.87.0.2" || !p.Security || p.MAC != vmMAC.String() {
		t.Errorf("port info %+v", p)
	}

	otherMAC := net.HardwareAddr{0x52, 0x54, 0, 0x87, 0, 9}
	v6ll, v6ok, v6bad := netip.MustParseAddr("fe80::5054:ff:fe87:2"), netip.MustParseAddr("fd00:87::2"), netip.MustParseAddr("fd00:99::2")
	allNodes := netip.MustParseAddr("ff02::1")
	ra := []byte{icmpv6RouterAdvert, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	forged := map[DropReason][][]byte{
		DropSpoofedMAC: {
			icmpEcho(host.MAC, otherMAC, vmIP, host.IP, 1, 1),
		},
		DropSpoofedIP: {
			icmpEcho(host.MAC, vmMAC, otherIP, host.IP, 1, 2),
			ethFrame(host.MAC, vmMAC, etherTypeIPv6, ipv6Packet(v6bad, allNodes, 59, nil)),
		},
		DropSpoofedARP: {
			arpFrame(vmMAC, vmMAC, host.IP, host.IP, 2), // claims the host's address
			arpFrame(vmMAC, otherMAC, vmIP, host.IP, 1), // claims another MAC
		},
		DropRogueDHCP: {
			ethFrame(bcast, vmMAC, etherTypeIPv4, ipv4Packet(vmIP, net.IPv4bcast, ipProtoUDP, udpHeader(67, 68, make([]byte, 240)))),
			ethFrame(bcast, vmMAC, etherTypeIPv6, ipv6Packet(v6ll, allNodes, ipProtoUDP, udpHeader(547, 546, make([]byte, 8)))),
		},
		DropRogueRA: {
			ethFrame(bcast, vmMAC, etherTypeIPv6, ipv6Packet(v6ll, allNodes, ipProtoICMPv6, ra)),
		},
		// Releasing or asking for another NIC's lease; a message too short
		// to say whose it is.
		DropSpoofedDHCP: {
			ethFrame(bcast, vmMAC, etherTypeIPv4, ipv4Packet(vmIP, net.IPv4bcast, ipProtoUDP, udpHeader(68, 67, bootRequest(otherMAC)))),
			ethFrame(bcast, vmMAC, etherTypeIPv4, ipv4Packet(net.IPv4zero, net.IPv4bcast, ipProtoUDP, udpHeader(68, 67, bootRequest(otherMAC)))),
			ethFrame(bcast, vmMAC, etherTypeIPv4, ipv4Packet(vmIP, net.IPv4bcast, ipProtoUDP, udpHeader(68, 67, bootRequest(vmMAC)[:30]))),
		},
	}
	before := counters(t, sw, host.Port)
	for _, frames := range forged {
		for _, f := range frames {
			if _, err := vm.Write(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	testnet.Eventually(t, 5*time.Second, "forgeries counted", func() bool {
		c := counters(t, sw, tap.Name)
		for r, frames := range forged {
			if c.Drops[r.String()] != uint64(len(frames)) {
				return false
			}
		}
		return true
	})
	if after := counters(t, sw, host.Port); after.TxPackets != before.TxPackets {
		t.Errorf("%d forged frames reached the other port", after.TxPackets-before.TxPackets)
	}

	// Honest traffic passes: its own address, a DHCP request from 0.0.0.0,
	// link-local and configured IPv6 sources.
	honest := [][]byte{
		ethFrame(bcast, vmMAC, etherTypeIPv4, ipv4Packet(net.IPv4zero, net.IPv4bcast, ipProtoUDP, udpHeader(68, 67, bootRequest(vmMAC)))),
		ethFrame(bcast, vmMAC, etherTypeIPv6, ipv6Packet(v6ll, allNodes, 59, nil)),
		ethFrame(bcast, vmMAC, etherTypeIPv6, ipv6Packet(v6ok, allNodes, 59, nil)),
	}
	for _, f := range honest {
		if _, err := vm.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 5*time.Second, "honest frames forwarded", func() bool {
		return counters(t, sw, host.Port).TxPackets == before.TxPackets+uint64(len(honest))
	})
	if _, err := vm.Write(icmpEcho(host.MAC, vmMAC, vmIP, host.IP, 7, 1)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, vm, func(f []byte) bool { return isEchoReply(f, host.IP, 7, 1) })

	// Security off: the same forgery passes (the switch is not in the way
	// of a port the operator trusts).
	if err := sw.RemovePort(tap.Name); err != nil {
		t.Fatal(err)
	}
	if err := sw.AddPort(tap.Name, "lan", PortOptions{MAC: vmMAC}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Write(arpRequest(otherMAC, otherIP, host.IP)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, vm, func(f []byte) bool { _, ok := arpReplyFrom(f, host.IP); return ok })
}
