package frag

import (
	"testing"
	"time"
)

func BenchmarkParse(b *testing.B) {
	h4 := hdr4{src: src4, dst: dst4, id: 1, proto: protoUDP}
	frags4 := frag4(h4, udp(1, 2, pattern(3000, 0)), 1480)
	h6 := hdr6{src: src6, dst: dst6, id: 1}
	after, nh := chain([]uint8{protoDstOpts}, protoUDP)
	frags6 := frag6(h6, []uint8{protoHopByHop, protoRouting}, nh, append(after, udp(1, 2, pattern(3000, 0))...), 1232)
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"ipv4-whole", whole4(h4, udp(1, 2, pattern(1400, 0)))},
		{"ipv4-first", frags4[0]},
		{"ipv4-later", frags4[1]},
		{"ipv6-ext-first", frags6[0]},
		{"ipv6-ext-later", frags6[1]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var in Info
			for b.Loop() {
				in, _ = Parse(bc.pkt)
			}
			_ = in
		})
	}
}

// datagrams returns n four-fragment datagrams, parsed.
func datagrams(b *testing.B, n int) [][]Info {
	var all [][]Info
	for id := range n {
		var ins []Info
		for _, f := range udpFrags4(uint16(id), 1800) {
			ins = append(ins, mustParse(b, f))
		}
		all = append(all, ins)
	}
	return all
}

// BenchmarkTrackerLater is the cost per later fragment whose first was
// seen (the common case), including the First that records the verdict
// once per four fragments.
func BenchmarkTrackerLater(b *testing.B) {
	tr := NewTracker(TrackerConfig{})
	all := datagrams(b, 1024)
	out := make([]Held, 0, tr.cfg.MaxHeldFrames)
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		d := all[(i/4)%len(all)]
		k := i % 4
		i++
		if k == 0 {
			now = now.Add(time.Microsecond)
			_, out = tr.First(&d[0], Allow, now, out[:0])
		} else {
			_, out = tr.Later(&d[k], Held{Handle: uint64(i), Len: 1500}, now, out[:0])
		}
	}
}

// BenchmarkTrackerHold is the cost per fragment when every datagram's
// later fragments come before its first: held, then released.
func BenchmarkTrackerHold(b *testing.B) {
	tr := NewTracker(TrackerConfig{})
	all := datagrams(b, 1024)
	out := make([]Held, 0, tr.cfg.MaxHeldFrames)
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		d := all[(i/4)%len(all)]
		k := 3 - i%4
		i++
		if k == 0 {
			now = now.Add(time.Microsecond)
			_, out = tr.First(&d[0], Allow, now, out[:0])
		} else {
			_, out = tr.Later(&d[k], Held{Handle: uint64(i), Len: 1500}, now, out[:0])
		}
	}
}

// BenchmarkTrackerFlood is the cost per fragment of a flood of later
// fragments that never see their first, at the caps.
func BenchmarkTrackerFlood(b *testing.B) {
	tr := NewTracker(TrackerConfig{})
	hd := hdr4{src: src4, dst: dst4, proto: protoUDP}
	in := mustParse(b, ipv4(hd, 1480, true, pattern(1480, 1), nil))
	out := make([]Held, 0, tr.cfg.MaxHeldFrames)
	now := t0
	var n uint32
	b.ReportAllocs()
	for b.Loop() {
		n++
		in.Key.ID = n
		now = now.Add(time.Microsecond)
		_, out = tr.Later(&in, Held{Handle: uint64(n), Len: 1500}, now, out[:0])
	}
}

// BenchmarkReassemble is the cost per datagram of a VXLAN packet that the
// underlay cut in two.
func BenchmarkReassemble(b *testing.B) {
	r := NewReassembler(ReassemblerConfig{})
	h := hdr4{src: src4, dst: dst4, proto: protoUDP}
	var all [][][]byte
	for id := range 256 {
		h.id = uint16(id)
		all = append(all, frag4(h, udp(1, 4789, pattern(1560, 0)), 1480))
	}
	dst := make([]byte, 0, 2048)
	now := t0
	i := 0
	b.ReportAllocs()
	b.SetBytes(1600)
	for b.Loop() {
		f := all[i%len(all)]
		i++
		_, _, _ = r.Add(f[0], now, dst)
		if _, done, _ := r.Add(f[1], now, dst); !done {
			b.Fatal("not reassembled")
		}
	}
}
