package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

var (
	macA  = []byte{0x02, 0, 0, 0, 0, 0x0a}
	macB  = []byte{0x02, 0, 0, 0, 0, 0x0b}
	bcast = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

// ethFrame builds dst, src, ethertype and payload.
func ethFrame(dst, src []byte, etype uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst...), src...), byte(etype>>8), byte(etype))
	return append(f, payload...)
}

func ipv4(total int, have int) []byte {
	h := make([]byte, have)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	return h
}

func ipv6(payloadLen int, have int) []byte {
	h := make([]byte, have)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	return h
}

func TestValidate(t *testing.T) {
	arp := make([]byte, 28)
	arp[4], arp[5] = 6, 4
	for _, tc := range []struct {
		name   string
		frame  []byte
		ok     bool
		reason DropReason
	}{
		{"empty", nil, false, DropRunt},
		{"13 bytes", make([]byte, 13), false, DropRunt},
		{"header only", ethFrame(macB, macA, 0x1234, nil), true, 0},
		{"vlan tag cut", ethFrame(macB, macA, etherTypeVLAN, []byte{0, 1}), false, DropRunt},
		{"qinq inner tag cut", ethFrame(macB, macA, etherTypeQinQ, []byte{0, 1, 0x81, 0, 0, 2}), false, DropRunt},
		{"multicast source", ethFrame(macB, bcast, 0x1234, nil), false, DropBadSource},
		{"zero source", ethFrame(macB, make([]byte, 6), 0x1234, nil), false, DropBadSource},
		{"ipv4 ok", ethFrame(macB, macA, etherTypeIPv4, ipv4(28, 28)), true, 0},
		{"ipv4 padded", ethFrame(macB, macA, etherTypeIPv4, ipv4(28, 46)), true, 0},
		{"ipv4 short header", ethFrame(macB, macA, etherTypeIPv4, ipv4(20, 19)), false, DropTruncated},
		{"ipv4 total beyond frame", ethFrame(macB, macA, etherTypeIPv4, ipv4(1000, 60)), false, DropTruncated},
		{"ipv4 total below header", ethFrame(macB, macA, etherTypeIPv4, ipv4(10, 60)), false, DropTruncated},
		{"ipv4 wrong version", ethFrame(macB, macA, etherTypeIPv4, append([]byte{0x65}, ipv4(28, 28)[1:]...)), false, DropTruncated},
		{"ipv4 in vlan", ethFrame(macB, macA, etherTypeVLAN, append([]byte{0, 5, 0x08, 0x00}, ipv4(28, 28)...)), true, 0},
		{"ipv4 in vlan truncated", ethFrame(macB, macA, etherTypeVLAN, append([]byte{0, 5, 0x08, 0x00}, ipv4(100, 28)...)), false, DropTruncated},
		{"ipv6 ok", ethFrame(macB, macA, etherTypeIPv6, ipv6(8, 48)), true, 0},
		{"ipv6 short", ethFrame(macB, macA, etherTypeIPv6, ipv6(0, 39)), false, DropTruncated},
		{"ipv6 payload beyond", ethFrame(macB, macA, etherTypeIPv6, ipv6(100, 48)), false, DropTruncated},
		{"arp ok", ethFrame(bcast, macA, etherTypeARP, arp), true, 0},
		{"arp cut", ethFrame(bcast, macA, etherTypeARP, arp[:20]), false, DropTruncated},
		{"arp fixed part cut", ethFrame(bcast, macA, etherTypeARP, arp[:6]), false, DropTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, ok := validate(tc.frame)
			if ok != tc.ok || (!ok && reason != tc.reason) {
				t.Errorf("validate = %v, %v; want %v, %v", reason, ok, tc.reason, tc.ok)
			}
		})
	}
}

func FuzzValidate(f *testing.F) {
	f.Add(ethFrame(macB, macA, etherTypeIPv4, ipv4(28, 28)))
	f.Add(ethFrame(macB, macA, etherTypeVLAN, append([]byte{0, 5, 0x86, 0xdd}, ipv6(8, 48)...)))
	f.Add(ethFrame(bcast, macA, etherTypeARP, make([]byte, 28)))
	f.Add(ethFrame(bcast, macA, etherTypeIPv4, ipv4Packet(net.IPv4zero, net.IPv4bcast, ipProtoUDP, udpHeader(68, 67, bootRequest(macA)))))
	fdb := NewFDB(16, 0)
	var l learning
	sec := &security{mac: macKey(macA), v4: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, v6: []netip.Prefix{netip.MustParsePrefix("fd00::/64")}}
	f.Fuzz(func(t *testing.T, frame []byte) {
		// Must never panic, and a frame it accepts has a usable header.
		_, ok := validate(frame)
		if ok && len(frame) < ethHeaderLen {
			t.Fatalf("accepted a %d-byte frame", len(frame))
		}
		fdb.mu.RLock()
		decide(frame, 1, nil, fdb, 0, &l)
		decide(frame, 2, sec, fdb, 0, &l)
		fdb.mu.RUnlock()
		fdb.apply(&l, 0)
		// What the rules see of a frame validate let through.
		if ok {
			var v frameView
			v.parse(frame)
			if v.isFrag && v.infoErr == nil && !v.info.IsFragment {
				t.Fatal("a fragment by one parser and a whole packet by the other")
			}
		}
	})
}
