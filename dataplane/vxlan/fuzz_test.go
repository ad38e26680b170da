package vxlan

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"
)

func FuzzDecap(f *testing.F) {
	inner := make([]byte, 60)
	for _, u := range []*Underlay{underlay4(), underlay6()} {
		for _, vlan := range []uint16{0, 10} {
			u.VLAN = vlan
			p, err := encapCopy(&Encoder{}, inner, 42, u)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(p, uint16(0))
			big, err := encapCopy(&Encoder{}, make([]byte, 1400), 7, u)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(big, uint16(4789))
		}
	}
	f.Add([]byte{0x45}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, port uint16) {
		for _, skip := range []int{0, 14} {
			var in []byte
			var vni uint32
			var src netip.Addr
			var sport uint16
			var err error
			if skip == 0 {
				in, vni, src, sport, err = DecapFrame(data, nil, port)
			} else if len(data) >= skip {
				in, vni, src, sport, err = Decap(data[skip:], nil, port)
			} else {
				continue
			}
			if err != nil {
				if _, ok := err.(Error); !ok || in != nil {
					t.Fatalf("error %v (%T) with inner %x", err, err, in)
				}
				continue
			}
			// The inner frame is a slice of the packet, after the headers.
			start := int(uintptr(unsafe.Pointer(unsafe.SliceData(in))) - uintptr(unsafe.Pointer(unsafe.SliceData(data))))
			if len(in) < 14 || start < skip+20+16 || start+len(in) > len(data) || vni > MaxVNI || !src.IsValid() ||
				sport != binary.BigEndian.Uint16(data[start-16:]) {
				t.Fatalf("accepted: inner at %d, %d bytes of %d; vni %d, src %v", start, len(in), len(data), vni, src)
			}
			// Encapsulating it again (over the same family) gives it back.
			u := underlay4()
			if src.Is6() {
				u = underlay6()
			}
			u.Src, u.DstPort = src, port
			if src.Is6() {
				u.Dst = netip.MustParseAddr("fd00:94::2")
			}
			e := &Encoder{}
			again, err := encapCopy(e, in, vni, u)
			if err != nil {
				t.Fatal(err)
			}
			in2, vni2, src2, sport2, err := DecapFrame(again, nil, port)
			if err != nil || !bytes.Equal(in, in2) || vni2 != vni || src2 != src || sport2 != e.SrcPort(in) {
				t.Fatalf("round trip: %v", err)
			}
		}
		// Fragment's parser takes any input too.
		e := &Encoder{}
		n, err := Fragments(data, 1280)
		var frags [][]byte
		m, err2 := e.Fragment(data, 1280, func(size int) []byte {
			b := make([]byte, size)
			frags = append(frags, b)
			return b
		})
		if n != m || err != err2 || len(frags) != n {
			t.Fatalf("Fragments %d, %v; Fragment %d, %v, %d buffers", n, err, m, err2, len(frags))
		}
		if n > 0 {
			if _, err := reassemble(frags, 1280); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzEncapDecap encapsulates an arbitrary inner frame with arbitrary
// parameters, decapsulates it, fragments it for an arbitrary MTU and
// reassembles it. The frame is the fuzzer's bytes (at most 256 of them)
// repeated to the fuzzer's size, up to 9000 bytes, so that large frames
// cost the fuzzer no large inputs to mutate and minimize.
func FuzzEncapDecap(f *testing.F) {
	f.Add([]byte("0123456789abcd"), uint16(0), uint32(1), false, uint16(0), uint16(0), uint8(0), uint64(0), uint16(1280), uint16(0))
	f.Add(unhex(f, goldenInner), uint16(0), uint32(42), true, uint16(94), uint16(8472), uint8(1), uint64(99), uint16(1280), uint16(3))
	f.Add(unhex(f, goldenInner), uint16(3000), uint32(MaxVNI), true, uint16(4094), uint16(4789), uint8(255), uint64(1), uint16(1300), uint16(200))
	f.Add([]byte{0}, uint16(1500), uint32(5), false, uint16(1), uint16(1), uint8(2), uint64(3), uint16(68), uint16(7))
	f.Add([]byte{1, 2, 3}, uint16(8999), uint32(6), false, uint16(0), uint16(0), uint8(0), uint64(4), uint16(1500), uint16(0))
	f.Fuzz(runEncapDecap)
}

// runEncapDecap is FuzzEncapDecap's body.
func runEncapDecap(t *testing.T, b []byte, size uint16, vni uint32, v6 bool, vlan, dport uint16, ttl uint8, seed uint64, mtu, headroom uint16) {
	if len(b) > 256 {
		b = b[:256]
	}
	inner := make([]byte, max(14, len(b), int(size)%9001))
	if len(b) > 0 {
		for i := 0; i < len(inner); i += len(b) {
			copy(inner[i:], b)
		}
	}
	vni &= MaxVNI
	vlan %= 4095
	u := underlay4()
	if v6 {
		u = underlay6()
	}
	u.VLAN, u.DstPort, u.TTL = vlan, dport, ttl
	u.SrcMAC[5], u.DstMAC[0] = byte(seed), byte(seed>>8)

	hdr := u.HeaderLen()
	start := hdr + int(headroom%300)
	buf := make([]byte, start+len(inner)+int(headroom%7))
	copy(buf[start:], inner)
	e := &Encoder{Seed: seed}
	off, n, err := e.Encap(buf, start, len(inner), vni, u)
	if err != nil {
		t.Fatal(err)
	}
	if off != start-hdr || n != hdr+len(inner) {
		t.Fatalf("Encap: %d, %d", off, n)
	}
	frame := buf[off : off+n]
	checkOuter(t, frame, u, vni)
	got, gvni, src, sport, err := DecapFrame(frame, isLocal, dport)
	if err != nil || !bytes.Equal(got, inner) || gvni != vni || src != u.Src || sport != e.SrcPort(inner) {
		t.Fatalf("decap: %v, vni %d src %v sport %d", err, gvni, src, sport)
	}
	if sport < MinSrcPort {
		t.Fatalf("source port %d", sport)
	}

	// Fragment it for the MTU, reassemble, decap.
	m := int(mtu)
	if v6 && m < 1280 {
		m = 1280 + m%200
	} else if m < 68 {
		m = 68 + m
	}
	var frags [][]byte
	cnt, err := e.Fragment(frame, m, func(size int) []byte {
		b := make([]byte, size)
		frags = append(frags, b)
		return b
	})
	if err != nil {
		t.Fatal(err)
	}
	l3 := l3Offset(frame)
	if cnt == 0 {
		if len(frame)-l3 > m {
			t.Fatalf("%d bytes left whole for MTU %d", len(frame)-l3, m)
		}
		return
	}
	whole, err := reassemble(frags, m)
	if err != nil {
		t.Fatal(err)
	}
	// All but the IPv4 header's flags, identification and checksum, and
	// the IPv4 UDP checksum, filled in.
	if err := checkUDP(whole, false); err != nil {
		t.Fatal(err)
	}
	hl := 20
	if v6 {
		hl = 40
	}
	if !bytes.Equal(whole[12:hl], frame[l3+12:l3+hl]) || !bytes.Equal(whole[hl:hl+6], frame[l3+hl:l3+hl+6]) ||
		!bytes.Equal(whole[hl+8:], frame[l3+hl+8:]) {
		t.Fatal("reassembled packet differs")
	}
	got, gvni, _, _, err = Decap(whole, isLocal, dport)
	if err != nil || !bytes.Equal(got, inner) || gvni != vni {
		t.Fatalf("decap after reassembly: %v", err)
	}
}
