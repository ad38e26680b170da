package vxlan

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// fixIPv4 recomputes an IPv4 header checksum with the test's own code.
func fixIPv4(ip []byte) {
	ip[10], ip[11] = 0, 0
	c := ^uint16(naiveSum(ip[:int(ip[0]&0xf)*4]))
	binary.BigEndian.PutUint16(ip[10:], c)
}

// fixUDP recomputes the UDP checksum of an IP packet without options
// or extension headers, with the test's own code.
func fixUDP(ip []byte) {
	var pseudo, udp []byte
	if ip[0]>>4 == 4 {
		udp = ip[20:binary.BigEndian.Uint16(ip[2:])]
		pseudo = append(append(pseudo, ip[12:20]...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	} else {
		udp = ip[40 : 40+binary.BigEndian.Uint16(ip[4:])]
		pseudo = append(append(pseudo, ip[8:40]...), 0, 0, byte(len(udp)>>8), byte(len(udp)), 0, 0, 0, 17)
	}
	udp[6], udp[7] = 0, 0
	c := ^uint16(naiveSum(append(pseudo, udp...)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
}

func TestDecapChecks(t *testing.T) {
	inner := unhex(t, goldenInner)
	v4, err := encapCopy(&Encoder{}, inner, 42, underlay4())
	if err != nil {
		t.Fatal(err)
	}
	v6, err := encapCopy(&Encoder{}, inner, 42, underlay6())
	if err != nil {
		t.Fatal(err)
	}
	// Offsets in the IP packet (the frame without its 14-byte Ethernet
	// header) of the UDP header.
	const u4, u6 = 20, 40
	for _, tc := range []struct {
		name  string
		v6    bool
		edit  func(ip []byte) []byte
		local func(netip.Addr) bool
		port  uint16
		want  error
	}{
		{name: "ipv4 ok", edit: func(ip []byte) []byte { return ip }},
		{name: "ipv6 ok", v6: true, edit: func(ip []byte) []byte { return ip }},
		{name: "ipv4 ok nil local", local: func(netip.Addr) bool { return true }, edit: func(ip []byte) []byte { return ip }},
		{name: "ipv4 padding ignored", edit: func(ip []byte) []byte { return append(ip, 0, 0, 0, 0) }},
		{name: "ipv6 padding ignored", v6: true, edit: func(ip []byte) []byte { return append(ip, 0, 0, 0) }},
		{name: "ipv4 good udp checksum", edit: func(ip []byte) []byte { fixUDP(ip); return ip }},
		{name: "ipv4 bad udp checksum", want: ErrChecksum, edit: func(ip []byte) []byte { fixUDP(ip); ip[len(ip)-1]++; return ip }},
		{name: "ipv6 zero udp checksum", v6: true, edit: func(ip []byte) []byte { ip[u6+6], ip[u6+7] = 0, 0; return ip }},
		{name: "ipv6 bad udp checksum", v6: true, want: ErrChecksum, edit: func(ip []byte) []byte { ip[len(ip)-1]++; return ip }},
		{name: "ipv6 checksum 0xffff for 0", v6: true, edit: func(ip []byte) []byte {
			// Adjust the last two inner bytes so that the sum comes to zero.
			ip[u6+6], ip[u6+7] = 0xff, 0xff
			ip[len(ip)-2], ip[len(ip)-1] = 0, 0
			s := naiveSum(append(append(append([]byte(nil), ip[8:40]...), 0, 0, 0, ip[u6+5], 0, 0, 0, 17), ip[u6:]...))
			binary.BigEndian.PutUint16(ip[len(ip)-2:], ^uint16(s))
			// The package's own checksum writes 0xffff for it too.
			udp := append([]byte(nil), ip[u6:]...)
			udp[6], udp[7] = 0, 0
			if c := udpChecksum(ip[8:40], udp); c != 0xffff {
				t.Errorf("udpChecksum %#04x, want 0xffff", c)
			}
			return ip
		}},
		{name: "ipv4 options", edit: func(ip []byte) []byte {
			ip = append(ip[:20], append([]byte{1, 1, 1, 0}, ip[20:]...)...) // NOP NOP NOP EOL
			ip[0] = 0x46
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
			fixIPv4(ip)
			return ip
		}},
		{name: "empty", want: ErrTruncated, edit: func(ip []byte) []byte { return nil }},
		{name: "ipv4 short header", want: ErrTruncated, edit: func(ip []byte) []byte { return ip[:19] }},
		{name: "ipv6 short header", v6: true, want: ErrTruncated, edit: func(ip []byte) []byte { return ip[:39] }},
		{name: "version 5", want: ErrMalformed, edit: func(ip []byte) []byte { ip[0] = 0x55; return ip }},
		{name: "ihl 4", want: ErrMalformed, edit: func(ip []byte) []byte { ip[0] = 0x44; fixIPv4(ip); return ip }},
		{name: "ihl past total", want: ErrMalformed, edit: func(ip []byte) []byte {
			binary.BigEndian.PutUint16(ip[2:], 20)
			ip[0] = 0x46
			fixIPv4(ip)
			return ip
		}},
		{name: "ipv4 truncated", want: ErrTruncated, edit: func(ip []byte) []byte { return ip[:len(ip)-1] }},
		{name: "ipv6 truncated", v6: true, want: ErrTruncated, edit: func(ip []byte) []byte { return ip[:len(ip)-1] }},
		{name: "ipv4 header checksum", want: ErrMalformed, edit: func(ip []byte) []byte { ip[8]--; return ip }},
		{name: "ipv4 MF", want: ErrFragment, edit: func(ip []byte) []byte { ip[6] |= 0x20; fixIPv4(ip); return ip }},
		{name: "ipv4 offset", want: ErrFragment, edit: func(ip []byte) []byte { ip[7] = 1; fixIPv4(ip); return ip }},
		{name: "ipv4 DF only", edit: func(ip []byte) []byte { ip[6] = 0x40; fixIPv4(ip); return ip }},
		{name: "ipv4 TCP", want: ErrNotUDP, edit: func(ip []byte) []byte { ip[9] = 6; fixIPv4(ip); return ip }},
		{name: "ipv6 hop-by-hop", v6: true, want: ErrNotUDP, edit: func(ip []byte) []byte { ip[6] = 0; return ip }},
		{name: "ipv4 no room for headers", want: ErrTruncated, edit: func(ip []byte) []byte {
			binary.BigEndian.PutUint16(ip[2:], 20+15)
			fixIPv4(ip)
			return ip
		}},
		{name: "wrong port", want: ErrPort, edit: func(ip []byte) []byte { ip[u4+3]++; return ip }},
		{name: "other configured port", port: 8472, want: ErrPort, edit: func(ip []byte) []byte { return ip }},
		{name: "configured port", port: 8472, edit: func(ip []byte) []byte { binary.BigEndian.PutUint16(ip[u4+2:], 8472); return ip }},
		{name: "udp length short of the payload", edit: func(ip []byte) []byte {
			// The inner frame ends where the UDP length says.
			binary.BigEndian.PutUint16(ip[u4+4:], uint16(len(ip)-u4-2))
			return ip
		}},
		{name: "ipv6 udp length short of the payload", v6: true, edit: func(ip []byte) []byte {
			// Bytes after the datagram, inside the IP payload, are ignored.
			ip = append(ip, 0xaa, 0xbb, 0xcc)
			binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
			return ip
		}},
		{name: "ipv4 udp length short of the payload", edit: func(ip []byte) []byte {
			fixUDP(ip) // a real checksum, over the datagram only
			ip = append(ip, 0xaa, 0xbb, 0xcc)
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
			fixIPv4(ip)
			return ip
		}},
		{name: "udp length too short for VXLAN", want: ErrMalformed, edit: func(ip []byte) []byte {
			binary.BigEndian.PutUint16(ip[u4+4:], 15)
			return ip
		}},
		{name: "udp length long", want: ErrMalformed, edit: func(ip []byte) []byte { ip[u4+5]++; return ip }},
		{name: "ipv6 udp length long", v6: true, want: ErrMalformed, edit: func(ip []byte) []byte { ip[u6+5]++; return ip }},
		{name: "ipv6 atomic fragment", v6: true, edit: func(ip []byte) []byte {
			ip = append(ip[:40], append([]byte{17, 0, 0, 0, 1, 2, 3, 4}, ip[40:]...)...)
			ip[6] = 44
			binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
			return ip
		}},
		{name: "ipv6 first fragment", v6: true, want: ErrFragment, edit: func(ip []byte) []byte {
			ip = append(ip[:40], append([]byte{17, 0, 0, 1, 1, 2, 3, 4}, ip[40:]...)...)
			ip[6] = 44
			binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
			return ip
		}},
		{name: "ipv6 later fragment", v6: true, want: ErrFragment, edit: func(ip []byte) []byte {
			ip = append(ip[:40], append([]byte{17, 0, 0, 8, 1, 2, 3, 4}, ip[40:]...)...)
			ip[6] = 44
			binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
			return ip
		}},
		{name: "ipv6 atomic fragment, not UDP", v6: true, want: ErrNotUDP, edit: func(ip []byte) []byte {
			ip = append(ip[:40], append([]byte{6, 0, 0, 0, 1, 2, 3, 4}, ip[40:]...)...)
			ip[6] = 44
			binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
			return ip
		}},
		{name: "ipv6 fragment header cut", v6: true, want: ErrTruncated, edit: func(ip []byte) []byte {
			ip = ip[:40+7]
			ip[6] = 44
			binary.BigEndian.PutUint16(ip[4:], 7)
			return ip
		}},
		{name: "no I flag", want: ErrFlags, edit: func(ip []byte) []byte { ip[u4+8] = 0; return ip }},
		{name: "extra flag", want: ErrFlags, edit: func(ip []byte) []byte { ip[u4+8] |= 0x80; return ip }},
		{name: "reserved 1", want: ErrFlags, edit: func(ip []byte) []byte { ip[u4+9] = 1; return ip }},
		{name: "reserved 2", want: ErrFlags, edit: func(ip []byte) []byte { ip[u4+10] = 0x40; return ip }},
		{name: "reserved 3", want: ErrFlags, edit: func(ip []byte) []byte { ip[u4+11] = 2; return ip }},
		{name: "reserved last", want: ErrFlags, edit: func(ip []byte) []byte { ip[u4+15] = 1; return ip }},
		{name: "ipv6 reserved last", v6: true, want: ErrFlags, edit: func(ip []byte) []byte { ip[u6+15] = 1; fixUDP(ip); return ip }},
		{name: "not local", local: func(netip.Addr) bool { return false }, want: ErrNotLocal, edit: func(ip []byte) []byte { return ip }},
		{name: "ipv6 not local", v6: true, want: ErrNotLocal, edit: func(ip []byte) []byte { ip[39]++; fixUDP(ip); return ip }},
		{name: "source multicast", want: ErrSource, edit: func(ip []byte) []byte { ip[12] = 224; fixIPv4(ip); return ip }},
		{name: "source broadcast", want: ErrSource, edit: func(ip []byte) []byte { copy(ip[12:], []byte{255, 255, 255, 255}); fixIPv4(ip); return ip }},
		{name: "source zero", want: ErrSource, edit: func(ip []byte) []byte { copy(ip[12:], []byte{0, 0, 0, 0}); fixIPv4(ip); return ip }},
		{name: "ipv6 source multicast", v6: true, want: ErrSource, edit: func(ip []byte) []byte { ip[8] = 0xff; fixUDP(ip); return ip }},
		{name: "ipv6 source mapped", v6: true, want: ErrSource, edit: func(ip []byte) []byte {
			copy(ip[8:24], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1})
			fixUDP(ip)
			return ip
		}},
		{name: "inner 13 bytes", want: ErrInnerShort, edit: func(ip []byte) []byte {
			ip = ip[:20+16+13]
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
			binary.BigEndian.PutUint16(ip[u4+4:], 16+13)
			fixIPv4(ip)
			return ip
		}},
		{name: "inner 14 bytes", edit: func(ip []byte) []byte {
			ip = ip[:20+16+14]
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
			binary.BigEndian.PutUint16(ip[u4+4:], 16+14)
			fixIPv4(ip)
			return ip
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := v4
			if tc.v6 {
				src = v6
			}
			ip := tc.edit(append([]byte(nil), src[14:]...))
			local := tc.local
			if local == nil {
				local = isLocal
			}
			in, vni, from, sport, err := Decap(ip, local, tc.port)
			if err != tc.want {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if err != nil {
				if in != nil || vni != 0 || from.IsValid() || sport != 0 {
					t.Errorf("refused, yet returned %x %d %v %d", in, vni, from, sport)
				}
				return
			}
			// (Some cases change the inner frame's last two bytes.)
			if n := min(len(in), len(inner)-2); !bytes.Equal(in[:n], inner[:n]) || vni != 42 || sport != 0xf8e6 {
				t.Errorf("got %x %d %d", in, vni, sport)
			}
			// The same through DecapFrame.
			frame := append(append([]byte(nil), src[:14]...), ip...)
			if in2, _, _, _, err := DecapFrame(frame, local, tc.port); err != nil || !bytes.Equal(in, in2) {
				t.Errorf("DecapFrame: %v", err)
			}
		})
	}
	if _, _, _, _, err := Decap(v4[14:], nil, 0); err != nil {
		t.Errorf("nil local: %v", err)
	}
}

func TestDecapFrame(t *testing.T) {
	inner := unhex(t, goldenInner)
	u := underlay6()
	u.VLAN = 5
	f, err := encapCopy(&Encoder{}, inner, 7, u)
	if err != nil {
		t.Fatal(err)
	}
	if in, vni, _, _, err := DecapFrame(f, isLocal, 0); err != nil || vni != 7 || !bytes.Equal(in, inner) {
		t.Fatalf("tagged: %v", err)
	}
	qinq := append([]byte(nil), f...)
	binary.BigEndian.PutUint16(qinq[12:], 0x88a8)
	if _, _, _, _, err := DecapFrame(qinq, isLocal, 0); err != nil {
		t.Errorf("802.1ad tag: %v", err)
	}
	two := append(append(append([]byte(nil), f[:16]...), 0x81, 0x00, 0, 6), f[16:]...)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"runt", f[:13], ErrTruncated},
		{"tag cut", f[:17], ErrTruncated},
		{"no IP", f[:18], ErrTruncated},
		{"two tags", two, ErrNotUDP},
		{"ARP", append(append([]byte(nil), f[:12]...), 0x08, 0x06, 0, 1), ErrNotUDP},
		{"type IPv4, version 6", append(append([]byte(nil), f[:12]...), 0x08, 0x00, 0x60), ErrMalformed},
		{"type IPv6, version 4", append(append([]byte(nil), f[:12]...), 0x86, 0xdd, 0x45), ErrMalformed},
		{"empty IPv4", append(append([]byte(nil), f[:12]...), 0x08, 0x00), ErrTruncated},
	} {
		if _, _, _, _, err := DecapFrame(tc.frame, isLocal, 0); err != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
