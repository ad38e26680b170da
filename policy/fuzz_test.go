package policy

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// bytesGen draws rules and packets from fuzz input, one decision per
// byte, from a small universe of addresses and ports so that rules
// overlap and packets hit them. Past the end of the input it reads zeros.
type bytesGen struct{ b []byte }

func (g *bytesGen) next() byte {
	if len(g.b) == 0 {
		return 0
	}
	v := g.b[0]
	g.b = g.b[1:]
	return v
}

func (g *bytesGen) n(k int) int { return int(g.next()) % k }

func (g *bytesGen) addr(v6 bool) netip.Addr {
	x := g.next()
	if v6 {
		return netip.AddrFrom16([16]byte{0xfd, 0, 14: x >> 4, 15: x})
	}
	return netip.AddrFrom4([4]byte{10, 0, x >> 4, x})
}

func (g *bytesGen) prefix(v6 bool) netip.Prefix {
	bits := g.n(17) + 16 // /16../32 inside 10.0/16
	if v6 {
		bits += 96
	}
	if g.n(16) == 0 {
		bits = 0
	}
	return netip.PrefixFrom(g.addr(v6), bits).Masked()
}

func (g *bytesGen) port() uint16 {
	switch x := g.next(); {
	case x == 255:
		return 65535
	default:
		return uint16(x % 16)
	}
}

func (g *bytesGen) rule() Rule {
	f := g.next()
	r := Rule{Action: Action(f & 1), Direction: Direction(f >> 1 % 3)}
	r.Proto = []int{AnyProto, ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, 132, 47, ProtoTCP}[f>>3&7]
	fams := g.next()
	for i := range g.n(3) {
		r.Src = append(r.Src, g.prefix(fams>>i&1 == 1))
	}
	for i := range g.n(3) {
		r.Dst = append(r.Dst, g.prefix(fams>>(i+2)&1 == 1))
	}
	if hasPorts(r.Proto) {
		for range g.n(3) {
			a, b := g.port(), g.port()
			r.SrcPorts = append(r.SrcPorts, PortRange{min(a, b), max(a, b)})
		}
		for range g.n(3) {
			a, b := g.port(), g.port()
			r.DstPorts = append(r.DstPorts, PortRange{min(a, b), max(a, b)})
		}
	}
	if famsOf(r.Src)&famsOf(r.Dst) == 0 {
		r.Dst = nil
	}
	if fam := famsOf(r.Src) & famsOf(r.Dst); r.Proto == ProtoICMP && fam == fam6 || r.Proto == ProtoICMPv6 && fam == fam4 {
		r.Proto = AnyProto
	}
	return r
}

func (g *bytesGen) packet() Packet {
	f := g.next()
	v6 := f&1 == 1
	p := Packet{Dir: Direction(f >> 1 % 4), NoPorts: f>>3&7 == 0, Len: int(f)}
	p.SetAddrs(g.addr(v6), g.addr(v6))
	p.Proto = []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, 132, 47, 0, 255}[g.n(8)]
	p.SrcPort, p.DstPort = g.port(), g.port()
	return p
}

// FuzzMatch checks the classifier against the rules scanned in order.
func FuzzMatch(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{8, 0x0b, 0xff, 2, 0x11, 20, 2, 0x22, 30, 2, 1, 2, 3, 4, 1, 0x13, 5, 6, 7, 1, 0xfe, 0x14, 2, 3})
	g := newGen(1, true)
	for range 8 {
		var b []byte
		for range 200 {
			b = append(b, byte(g.r.Uint32()))
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &bytesGen{b: data}
		rs := Ruleset{Default: Action(g.next() & 1)}
		for range g.n(24) + 1 {
			rs.Rules = append(rs.Rules, g.rule())
		}
		c, err := Compile(rs)
		if err != nil {
			t.Fatalf("compile: %v\n%v", err, rs.Rules)
		}
		check := func(p *Packet) {
			a, r := c.Match(p)
			if na, nr := naiveMatch(&rs, p); a != na || r != nr {
				t.Fatalf("%+v: got rule %d (%v), want %d (%v)\nrules: %v", p, r, a, nr, na, rs.Rules)
			}
		}
		for range 8 {
			p := g.packet()
			check(&p)
		}
		// And a packet made to hit each rule.
		rg := newGen(uint64(len(data)), true)
		for i := range rs.Rules {
			p := rg.packetFor(&rs.Rules[i])
			check(&p)
		}
	})
}

// FuzzPacketFromFrame feeds any bytes to the frame parser: it must not
// panic, and what it reports must hang together.
func FuzzPacketFromFrame(f *testing.F) {
	f.Add(ether(0x0800, ipv4(6, "10.0.0.1", "10.0.0.2", 0, 0, l4(1, 2, 20))))
	f.Add(ether(0x0800, ipv4(17, "10.0.0.1", "10.0.0.2", 0x2001, 4, l4(1, 2, 8)), 0x8100))
	f.Add(ether(0x86dd, ipv6(0, "fd00::1", "fd00::2", cat(ext(60, 1), ext(43, 0), ext(51, 1), frag6(17, 0, true), l4(5, 6, 8)))))
	f.Add(ether(0x86dd, ipv6(44, "fd00::1", "fd00::2", cat(frag6(6, 7, false), l4(5, 6, 8))), 0x88a8, 0x8100))
	f.Add(ether(0x0806, make([]byte, 28)))
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, dir := range []Direction{In, Out, Both} {
			var p Packet
			ok, frag, first := PacketFromFrame(frame, dir, &p)
			if p.Dir != dir || p.Len != len(frame) {
				t.Fatalf("dir %v len %d", p.Dir, p.Len)
			}
			if first && !frag || !ok && (frag || first) {
				t.Fatalf("ok %v frag %v first %v", ok, frag, first)
			}
			if frag && !first && !p.NoPorts {
				t.Fatal("a later fragment with ports")
			}
			if !ok {
				continue
			}
			if !p.IPv6 && [12]byte(p.Src[4:]) != [12]byte{} {
				t.Fatal("IPv4 source spills past four bytes")
			}
			if p.NoPorts && (p.SrcPort != 0 || p.DstPort != 0) {
				t.Fatal("ports without ports")
			}
			// The addresses are where the header has them.
			off := 14
			for off+2 <= len(frame) && (binary.BigEndian.Uint16(frame[off-2:]) == 0x8100 || binary.BigEndian.Uint16(frame[off-2:]) == 0x88a8) {
				off += 4
			}
			want := frame[off+12 : off+16]
			if p.IPv6 {
				want = frame[off+8 : off+24]
			}
			if string(p.Src[:len(want)]) != string(want) {
				t.Fatalf("source %x, header has %x", p.Src, want)
			}
		}
	})
}
