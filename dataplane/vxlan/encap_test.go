package vxlan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		u    func() *Underlay
		hdr  int
	}{
		{"ipv4", underlay4, HeaderLenIPv4},
		{"ipv6", underlay6, HeaderLenIPv6},
		{"ipv4-vlan", func() *Underlay { u := underlay4(); u.VLAN = 94; return u }, HeaderLenIPv4 + VLANLen},
		{"ipv6-vlan", func() *Underlay { u := underlay6(); u.VLAN = 4094; return u }, HeaderLenIPv6 + VLANLen},
		{"ipv4-mapped", func() *Underlay {
			u := underlay4()
			u.Src, u.Dst = netip.AddrFrom16(u.Src.As16()), netip.AddrFrom16(u.Dst.As16())
			return u
		}, HeaderLenIPv4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.u()
			if got := u.HeaderLen(); got != tc.hdr {
				t.Fatalf("HeaderLen %d, want %d", got, tc.hdr)
			}
			e := NewEncoder()
			for i := range 500 {
				k := innerKind(i % int(numInnerKinds))
				size := minInner(k) + rng.IntN(1600)
				inner := innerFrame(rng, k, randomFlow(rng, k), size)
				vni := rng.Uint32() & MaxVNI
				u.TTL = uint8(rng.Uint32())
				u.DstPort = uint16(rng.Uint32())

				const headroom = 256
				buf := make([]byte, headroom+size+64)
				for j := range buf {
					buf[j] = 0xee
				}
				copy(buf[headroom:], inner)
				off, n, err := e.Encap(buf, headroom, size, vni, u)
				if err != nil {
					t.Fatal(err)
				}
				if off != headroom-tc.hdr || n != tc.hdr+size {
					t.Fatalf("Encap returned %d, %d; want %d, %d", off, n, headroom-tc.hdr, tc.hdr+size)
				}
				for j, b := range buf {
					if (j < off || j >= off+n) && b != 0xee {
						t.Fatalf("byte %d outside the packet written", j)
					}
				}
				frame := buf[off : off+n]
				checkOuter(t, frame, u, vni)

				got, gvni, src, sport, err := DecapFrame(frame, isLocal, u.DstPort)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !bytes.Equal(got, inner) || &got[0] != &buf[headroom] {
					t.Fatalf("frame %d: inner frame differs or moved", i)
				}
				if gvni != vni || src != u.Src.Unmap() || sport != e.SrcPort(inner) {
					t.Fatalf("frame %d: vni %d src %v sport %d; want %d %v %d", i, gvni, src, sport, vni, u.Src, e.SrcPort(inner))
				}
			}
		})
	}
}

// checkOuter checks the headers Encap wrote, field by field, with the
// test's own checksum code.
func checkOuter(t *testing.T, f []byte, u *Underlay, vni uint32) {
	t.Helper()
	if !bytes.Equal(f[0:6], u.DstMAC[:]) || !bytes.Equal(f[6:12], u.SrcMAC[:]) {
		t.Fatalf("MACs % x", f[:12])
	}
	l3 := 14
	if u.VLAN != 0 {
		if binary.BigEndian.Uint16(f[12:]) != 0x8100 || binary.BigEndian.Uint16(f[14:]) != u.VLAN {
			t.Fatalf("VLAN tag % x", f[12:16])
		}
		l3 = 18
	}
	ip := f[l3:]
	ttl := u.TTL
	if ttl == 0 {
		ttl = 64
	}
	port := u.DstPort
	if port == 0 {
		port = 4789
	}
	var udp []byte
	if u.Src.Unmap().Is4() {
		if binary.BigEndian.Uint16(f[l3-2:]) != 0x0800 || ip[0] != 0x45 || ip[1] != 0 {
			t.Fatalf("IPv4 header % x", ip[:20])
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != len(ip) || binary.BigEndian.Uint16(ip[6:]) != 0x4000 || ip[8] != ttl || ip[9] != 17 {
			t.Fatalf("IPv4 header % x", ip[:20])
		}
		if netip.AddrFrom4([4]byte(ip[12:16])) != u.Src.Unmap() || netip.AddrFrom4([4]byte(ip[16:20])) != u.Dst.Unmap() {
			t.Fatalf("IPv4 addresses % x", ip[12:20])
		}
		if err := checkIPv4Header(ip); err != nil {
			t.Fatal(err)
		}
		udp = ip[20:]
		if binary.BigEndian.Uint16(udp[6:]) != 0 {
			t.Fatalf("IPv4 UDP checksum %#x, want 0", binary.BigEndian.Uint16(udp[6:]))
		}
	} else {
		if binary.BigEndian.Uint16(f[l3-2:]) != 0x86dd || ip[0]>>4 != 6 || ip[1]>>4 != 0 {
			t.Fatalf("IPv6 header % x", ip[:40])
		}
		if binary.BigEndian.Uint32(ip)&0xfffff == 0 {
			t.Fatal("no flow label")
		}
		if int(binary.BigEndian.Uint16(ip[4:]))+40 != len(ip) || ip[6] != 17 || ip[7] != ttl {
			t.Fatalf("IPv6 header % x", ip[:40])
		}
		if netip.AddrFrom16([16]byte(ip[8:24])) != u.Src || netip.AddrFrom16([16]byte(ip[24:40])) != u.Dst {
			t.Fatalf("IPv6 addresses % x", ip[8:40])
		}
		if err := checkUDP(ip, false); err != nil {
			t.Fatal(err)
		}
		udp = ip[40:]
	}
	sport := binary.BigEndian.Uint16(udp)
	if sport < 49152 {
		t.Fatalf("source port %d below the dynamic range", sport)
	}
	if binary.BigEndian.Uint16(udp[2:]) != port || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Fatalf("UDP header % x", udp[:8])
	}
	if want := [8]byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}; [8]byte(udp[8:16]) != want {
		t.Fatalf("VXLAN header % x, want % x", udp[8:16], want)
	}
}

func TestEncapErrors(t *testing.T) {
	e := &Encoder{}
	buf := make([]byte, 256+100)
	mixed := underlay4()
	mixed.Dst = netip.MustParseAddr("fd00::1")
	noAddr := underlay4()
	noAddr.Src = netip.Addr{}
	badVLAN := underlay4()
	badVLAN.VLAN = 4095
	vlan6 := underlay6()
	vlan6.VLAN = 7
	for _, tc := range []struct {
		name     string
		buf      []byte
		start, n int
		vni      uint32
		u        *Underlay
		want     Error
	}{
		{"nil underlay", buf, 256, 100, 1, nil, ErrUnderlay},
		{"mixed families", buf, 256, 100, 1, mixed, ErrUnderlay},
		{"no source", buf, 256, 100, 1, noAddr, ErrUnderlay},
		{"VLAN 4095", buf, 256, 100, 1, badVLAN, ErrUnderlay},
		{"VNI too big", buf, 256, 100, 1 << 24, underlay4(), ErrVNI},
		{"short inner", buf, 256, 13, 1, underlay4(), ErrInnerShort},
		{"negative length", buf, 256, -1, 1, underlay4(), ErrInnerShort},
		{"past the end", buf, 256, 101, 1, underlay4(), ErrBounds},
		{"start past the end", buf, 400, 14, 1, underlay4(), ErrBounds},
		{"huge length", buf, 256, int(^uint(0) >> 1), 1, underlay4(), ErrBounds},
		{"negative start", buf, -1, 14, 1, underlay4(), ErrBounds},
		{"no headroom", buf, 49, 100, 1, underlay4(), ErrBounds},
		{"no headroom v6 vlan", buf, 73, 100, 1, vlan6, ErrBounds},
		{"nil buffer", nil, 0, 14, 1, underlay4(), ErrBounds},
		{"too big v4", make([]byte, 100+65536), 100, 65535 - 35, 1, underlay4(), ErrTooBig},
		{"too big v6", make([]byte, 100+65536), 100, 65535 - 15, 1, underlay6(), ErrTooBig},
	} {
		off, n, err := e.Encap(tc.buf, tc.start, tc.n, tc.vni, tc.u)
		if err != tc.want || off != 0 || n != 0 {
			t.Errorf("%s: %d, %d, %v; want %v", tc.name, off, n, err, tc.want)
		}
	}
	// The largest that fit.
	for _, u := range []*Underlay{underlay4(), underlay6()} {
		n := 65535 - 36
		if u.Src.Is6() {
			n = 65535 - 16
		}
		if _, _, err := e.Encap(make([]byte, 100+n), 100, n, 1, u); err != nil {
			t.Errorf("largest packet over %v: %v", u.Src, err)
		}
	}
	if !errors.Is(ErrBounds, ErrBounds) || ErrChecksum.Error() != "vxlan: bad_checksum" || Error(200).String() != "unknown" {
		t.Error("error names")
	}
	if len(Errors()) != int(numErrors)-1 {
		t.Error("Errors misses some")
	}
	for _, e := range Errors() {
		if e.String() == "unknown" || e.String() == "" {
			t.Errorf("error %d has no name", e)
		}
	}
}

func TestIdentification(t *testing.T) {
	e := &Encoder{}
	inner := make([]byte, 60)
	var last uint16
	for i := range 70000 {
		f, err := encapCopy(e, inner, 1, underlay4())
		if err != nil {
			t.Fatal(err)
		}
		id := binary.BigEndian.Uint16(f[18:])
		if i > 0 && id != last+1 {
			t.Fatalf("identification %d after %d", id, last)
		}
		last = id
	}
}

func TestSourcePort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	e := NewEncoder()
	ports := map[uint16]int{}
	const flows = 4000
	for i := range flows {
		k := innerKind(i % int(numInnerKinds))
		fl := randomFlow(rng, k)
		var port uint16
		// The same flow, other sizes and payloads, over both underlays:
		// always one port.
		for j := range 8 {
			u := underlay4()
			if j%2 == 1 {
				u = underlay6()
			}
			inner := innerFrame(rng, k, fl, minInner(k)+rng.IntN(1000))
			f, err := encapCopy(e, inner, uint32(j), u)
			if err != nil {
				t.Fatal(err)
			}
			p := binary.BigEndian.Uint16(f[l3Offset(f)+u.HeaderLen()-14-16:])
			if p < MinSrcPort {
				t.Fatalf("port %d out of range", p)
			}
			if j > 0 && p != port {
				t.Fatalf("flow %d: port %d, then %d", i, port, p)
			}
			port = p
		}
		ports[port]++
	}
	// 4000 flows in 16384 ports collide about 4000²/(2·16384) ≈ 490 times
	// when the hash is uniform.
	if len(ports) < flows-700 {
		t.Errorf("%d flows took only %d ports", flows, len(ports))
	}

	// What changes the port: each of the flow's fields.
	base := flow{src: innerSrcMAC, dst: innerDstMAC,
		srcIP: netip.MustParseAddr("10.0.0.1"), dstIP: netip.MustParseAddr("10.0.0.2"), srcPort: 1000, dstPort: 2000}
	port := func(k innerKind, fl flow) uint16 { return e.SrcPort(innerFrame(rng, k, fl, 100)) }
	for _, k := range []innerKind{innerIPv4UDP, innerIPv4TCP, innerVLANIPv4} {
		p := port(k, base)
		for name, change := range map[string]func(*flow){
			"src MAC":  func(f *flow) { f.src[5]++ },
			"dst MAC":  func(f *flow) { f.dst[0] ^= 0x80 },
			"src IP":   func(f *flow) { f.srcIP = f.srcIP.Next() },
			"dst IP":   func(f *flow) { f.dstIP = f.dstIP.Next() },
			"src port": func(f *flow) { f.srcPort++ },
			"dst port": func(f *flow) { f.dstPort++ },
		} {
			fl := base
			change(&fl)
			if port(k, fl) == p {
				t.Errorf("kind %d: changing the %s keeps port %d", k, name, p)
			}
		}
	}
	// Fragments of an inner datagram, first or not, share the port.
	first := innerFrame(rng, innerIPv4UDP, base, 100)
	binary.BigEndian.PutUint16(first[20:], 0x2000) // MF
	later := innerFrame(rng, innerIPv4UDP, base, 100)
	binary.BigEndian.PutUint16(later[20:], 0x0010) // offset 128
	if e.SrcPort(first) != e.SrcPort(later) {
		t.Error("fragments of one datagram take different ports")
	}
	if e.SrcPort(first[:13]) != 0 {
		t.Error("SrcPort of a runt")
	}
	// Another seed, other ports.
	e2 := &Encoder{Seed: e.Seed + 1}
	same := 0
	for range 100 {
		f := innerFrame(rng, innerIPv6UDP, randomFlow(rng, innerIPv6UDP), 100)
		if e.SrcPort(f) == e2.SrcPort(f) {
			same++
		}
	}
	if same > 5 {
		t.Errorf("%d of 100 flows keep their port under another seed", same)
	}
}

func TestChecksum(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if n%7 == 0 {
			for i := range b {
				b[i] = 0xff
			}
		}
		if got, want := fold(sum(b, 0)), uint16(naiveSum(b)); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("%d bytes: sum %#04x, want %#04x", n, got, want)
		}
	}
	if fold(^uint64(0)) != 0xffff || fold(0) != 0 || fold(1<<48) != 1 {
		t.Error("fold")
	}
}
