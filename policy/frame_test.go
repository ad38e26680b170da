package policy

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// ether wraps an L3 packet in an Ethernet header with the given VLAN tags
// (TPIDs) in front of the ethertype.
func ether(etype uint16, l3 []byte, tags ...uint16) []byte {
	f := []byte{0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1}
	for _, tpid := range tags {
		f = binary.BigEndian.AppendUint16(f, tpid)
		f = binary.BigEndian.AppendUint16(f, 100) // VLAN 100
	}
	f = binary.BigEndian.AppendUint16(f, etype)
	return append(f, l3...)
}

// ipv4 builds an IPv4 header with optLen bytes of options in front of
// payload; frag is the flags and fragment offset field.
func ipv4(proto uint8, src, dst string, frag uint16, optLen int, payload []byte) []byte {
	ihl := 20 + optLen
	h := make([]byte, ihl, ihl+len(payload))
	h[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(h[2:], uint16(ihl+len(payload)))
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8], h[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, payload...)
}

// ipv6 builds an IPv6 header; payload holds any extension headers.
func ipv6(next uint8, src, dst string, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

// ext builds an extension header of 8*(1+units) bytes.
func ext(next uint8, units int) []byte {
	h := make([]byte, 8*(1+units))
	h[0], h[1] = next, byte(units)
	return h
}

// frag6 builds an IPv6 fragment header.
func frag6(next uint8, offset uint16, more bool) []byte {
	h := make([]byte, 8)
	h[0] = next
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:], v)
	return h
}

func l4(sport, dport uint16, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestPacketFromFrame(t *testing.T) {
	tcp := l4(40000, 22, 20)
	type want struct {
		ok, frag, first bool
		v6              bool
		proto           uint8
		src, dst        string
		sport, dport    uint16
		noPorts         bool
	}
	v4 := func(proto uint8, sp, dp uint16) want {
		return want{ok: true, proto: proto, src: "10.0.0.1", dst: "10.0.0.2", sport: sp, dport: dp}
	}
	v6 := func(proto uint8, sp, dp uint16) want {
		return want{ok: true, v6: true, proto: proto, src: "fd00::1", dst: "fd00::2", sport: sp, dport: dp}
	}
	with := func(w want, f func(*want)) want { f(&w); return w }
	for _, tc := range []struct {
		name  string
		frame []byte
		want  want
	}{
		{"tcp", ether(0x0800, ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, tcp)), v4(6, 40000, 22)},
		{"udp with options", ether(0x0800, ipv4(17, "10.0.0.1", "10.0.0.2", 0x4000, 8, l4(53, 5353, 8))), v4(17, 53, 5353)},
		{"vlan", ether(0x0800, ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, tcp), 0x8100), v4(6, 40000, 22)},
		{"qinq", ether(0x0800, ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, tcp), 0x88a8, 0x8100), v4(6, 40000, 22)},
		{"icmp", ether(0x0800, ipv4(1, "10.0.0.1", "10.0.0.2", 0, 0, []byte{8, 0, 0, 0})), v4(1, 0, 0)},
		{"first fragment", ether(0x0800, ipv4(17, "10.0.0.1", "10.0.0.2", 0x2000, 0, l4(1, 2, 16))),
			with(v4(17, 1, 2), func(w *want) { w.frag, w.first = true, true })},
		{"later fragment", ether(0x0800, ipv4(17, "10.0.0.1", "10.0.0.2", 0x2003, 0, l4(1, 2, 16))),
			with(v4(17, 0, 0), func(w *want) { w.frag, w.noPorts = true, true })},
		{"last fragment", ether(0x0800, ipv4(17, "10.0.0.1", "10.0.0.2", 0x0003, 0, l4(1, 2, 16))),
			with(v4(17, 0, 0), func(w *want) { w.frag, w.noPorts = true, true })},
		{"tcp cut short", ether(0x0800, ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, []byte{1, 2})),
			with(v4(6, 0, 0), func(w *want) { w.noPorts = true })},
		{"padding is not payload", cat(ether(0x0800, ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, []byte{1, 2})), l4(7, 8, 20)),
			with(v4(6, 0, 0), func(w *want) { w.noPorts = true })},
		{"ipv6 tcp", ether(0x86dd, ipv6(6, "fd00::1", "fd00::2", tcp)), v6(6, 40000, 22)},
		{"ipv6 extension headers", ether(0x86dd, ipv6(0, "fd00::1", "fd00::2", cat(ext(60, 1), ext(43, 0), ext(51, 1), ext(17, 0), l4(5, 6, 8)))),
			v6(17, 5, 6)},
		{"ipv6 atomic fragment", ether(0x86dd, ipv6(44, "fd00::1", "fd00::2", cat(frag6(6, 0, false), tcp))), v6(6, 40000, 22)},
		{"ipv6 first fragment", ether(0x86dd, ipv6(60, "fd00::1", "fd00::2", cat(ext(44, 0), frag6(6, 0, true), tcp))),
			with(v6(6, 40000, 22), func(w *want) { w.frag, w.first = true, true })},
		{"ipv6 later fragment", ether(0x86dd, ipv6(44, "fd00::1", "fd00::2", cat(frag6(6, 100, true), tcp))),
			with(v6(6, 0, 0), func(w *want) { w.frag, w.noPorts = true, true })},
		{"ipv6 chain cut short", ether(0x86dd, ipv6(60, "fd00::1", "fd00::2", ext(6, 4)[:16])),
			with(v6(60, 0, 0), func(w *want) { w.noPorts = true })},
		{"ipv6 header past the payload", ether(0x86dd, ipv6(0, "fd00::1", "fd00::2", cat(ext(6, 0), []byte{1, 2}))),
			with(v6(6, 0, 0), func(w *want) { w.noPorts = true })},
		{"ipv6 esp", ether(0x86dd, ipv6(50, "fd00::1", "fd00::2", make([]byte, 24))), v6(50, 0, 0)},
		{"ipv6 no next header", ether(0x86dd, ipv6(59, "fd00::1", "fd00::2", nil)), v6(59, 0, 0)},
		{"icmpv6", ether(0x86dd, ipv6(58, "fd00::1", "fd00::2", []byte{135, 0, 0, 0})), v6(58, 0, 0)},
		{"arp", ether(0x0806, make([]byte, 28)), want{}},
		{"runt", []byte{1, 2, 3}, want{}},
		{"vlan cut short", ether(0x8100, nil)[:14], want{}},
		{"ipv4 header cut short", ether(0x0800, make([]byte, 19)), want{}},
		{"ipv4 bad ihl", ether(0x0800, func() []byte { b := ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, tcp); b[0] = 0x44; return b }()), want{}},
		{"ipv6 header cut short", ether(0x86dd, make([]byte, 39)), want{}},
		{"ipv6 says 4", ether(0x86dd, func() []byte { b := ipv6(6, "fd00::1", "fd00::2", tcp); b[0] = 0x40; return b }()), want{}},
	} {
		var p Packet
		ok, frag, first := PacketFromFrame(tc.frame, Out, &p)
		w := tc.want
		if ok != w.ok || frag != w.frag || first != w.first {
			t.Errorf("%s: ok %v frag %v first %v, want %v %v %v", tc.name, ok, frag, first, w.ok, w.frag, w.first)
			continue
		}
		if p.Len != len(tc.frame) || p.Dir != Out {
			t.Errorf("%s: len %d dir %v", tc.name, p.Len, p.Dir)
		}
		if !ok {
			continue
		}
		got := want{ok: ok, frag: frag, first: first, v6: p.IPv6, proto: p.Proto, src: p.SrcAddr().String(), dst: p.DstAddr().String(),
			sport: p.SrcPort, dport: p.DstPort, noPorts: p.NoPorts}
		if got != w {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, w)
		}
	}
}

// TestFrameToVerdict runs a frame through to a rule.
func TestFrameToVerdict(t *testing.T) {
	rs := parseRuleset(t, `
default: deny
rules:
  - {action: allow, direction: in, proto: tcp, dst_ports: [22], src: [10.0.0.0/24]}
  - {action: allow, proto: icmpv6}
`)
	c := mustCompile(t, rs)
	var p Packet
	frame := ether(0x0800, ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, l4(40000, 22, 20)), 0x8100)
	if ok, _, _ := PacketFromFrame(frame, In, &p); !ok {
		t.Fatal("not parsed")
	}
	if a, r := c.Match(&p); a != Allow || r != 0 {
		t.Errorf("ssh in: %v %d", a, r)
	}
	p.Dir = Out
	if a, r := c.Match(&p); a != Deny || r != -1 {
		t.Errorf("ssh out: %v %d", a, r)
	}
	frame = ether(0x86dd, ipv6(0, "fe80::1", "ff02::1", cat(ext(58, 0), []byte{135, 0, 0, 0})))
	PacketFromFrame(frame, Out, &p)
	if a, r := c.Match(&p); a != Allow || r != 1 {
		t.Errorf("neighbour solicitation: %v %d", a, r)
	}
}
