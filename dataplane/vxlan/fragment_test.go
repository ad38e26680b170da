package vxlan

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// fragmentAll runs Fragment with fresh buffers of headroom 256 and returns
// the fragments.
func fragmentAll(t *testing.T, e *Encoder, pkt []byte, mtu int) [][]byte {
	t.Helper()
	var frags [][]byte
	want, err := Fragments(pkt, mtu)
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.Fragment(pkt, mtu, func(size int) []byte {
		buf := make([]byte, 256+size+10)
		frags = append(frags, buf[256:256+size])
		return buf[256:]
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(frags) || n != want {
		t.Fatalf("Fragment made %d fragments, asked for %d buffers, Fragments said %d", n, len(frags), want)
	}
	return frags
}

func TestFragment(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		name  string
		u     func() *Underlay
		inner int
		mtu   int
		count int
	}{
		// The case: 1450 bytes inside, 1280 outside.
		{"ipv4 1450/1280", underlay4, 1450, 1280, 2},
		{"ipv6 1450/1280", underlay6, 1450, 1280, 2},
		{"ipv4 vlan 1450/1280", func() *Underlay { u := underlay4(); u.VLAN = 3; return u }, 1450, 1280, 2},
		{"ipv6 vlan 1450/1280", func() *Underlay { u := underlay6(); u.VLAN = 3; return u }, 1450, 1280, 2},
		{"ipv4 jumbo/1500", underlay4, 9000, 1500, 7},
		{"ipv6 jumbo/1280", underlay6, 9000, 1280, 8},
		{"ipv4 minimum MTU", underlay4, 1500, 68, 32},
		{"ipv4 fits exactly", underlay4, 1500 - 36, 1500, 0},
		{"ipv6 fits exactly", underlay6, 1280 - 56, 1280, 0},
		{"ipv4 one over", underlay4, 1500 - 35, 1500, 2},
		{"ipv4 largest", underlay4, 65535 - 36, 1500, 45},
		{"ipv6 largest", underlay6, 65535 - 16, 1280, 54},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEncoder()
			u := tc.u()
			inner := innerFrame(rng, innerIPv4TCP, randomFlow(rng, innerIPv4TCP), tc.inner)
			pkt, err := encapCopy(e, inner, 99, u)
			if err != nil {
				t.Fatal(err)
			}
			orig := append([]byte(nil), pkt...)
			frags := fragmentAll(t, e, pkt, tc.mtu)
			if !bytes.Equal(pkt, orig) {
				t.Fatal("Fragment changed its input")
			}
			if len(frags) != tc.count {
				t.Fatalf("%d fragments, want %d", len(frags), tc.count)
			}
			if tc.count == 0 {
				return
			}
			l3 := l3Offset(pkt)
			for i, f := range frags {
				if !bytes.Equal(f[:l3], pkt[:l3]) {
					t.Fatalf("fragment %d: Ethernet header % x", i, f[:l3])
				}
				ip := f[l3:]
				if len(ip) > tc.mtu {
					t.Fatalf("fragment %d: %d bytes", i, len(ip))
				}
				if ip[0]>>4 == 4 {
					// (reassemble checks that the identification is one.)
					fl := binary.BigEndian.Uint16(ip[6:])
					if fl&0x4000 != 0 || (fl&0x2000 != 0) != (i < len(frags)-1) {
						t.Fatalf("fragment %d of %d: flags %#04x", i, len(frags), fl)
					}
					if err := checkIPv4Header(ip); err != nil {
						t.Fatalf("fragment %d: %v", i, err)
					}
					if !bytes.Equal(ip[8:10], pkt[l3+8:l3+10]) || !bytes.Equal(ip[12:20], pkt[l3+12:l3+20]) {
						t.Fatalf("fragment %d: header % x", i, ip[:20])
					}
				} else {
					if !bytes.Equal(ip[:4], pkt[l3:l3+4]) || !bytes.Equal(ip[7:40], pkt[l3+7:l3+40]) || ip[6] != 44 {
						t.Fatalf("fragment %d: header % x", i, ip[:40])
					}
					if ip[40] != 17 || ip[41] != 0 || ip[43]&6 != 0 || (ip[43]&1 != 0) != (i < len(frags)-1) {
						t.Fatalf("fragment %d of %d: fragment header % x", i, len(frags), ip[40:48])
					}
				}
			}
			whole, err := reassemble(frags, tc.mtu)
			if err != nil {
				t.Fatal(err)
			}
			if whole[0]>>4 == 4 {
				// Reassembled, it is the original packet but for DF, the
				// identification and the UDP checksum, filled in.
				if err := checkUDP(whole, false); err != nil {
					t.Fatal(err)
				}
				want := append([]byte(nil), pkt[l3:]...)
				want[6] &^= 0x40
				copy(want[4:6], whole[4:6])
				copy(want[26:28], whole[26:28])
				fixIPv4(want)
				if !bytes.Equal(whole, want) {
					t.Fatal("reassembled packet differs from the original")
				}
			} else if !bytes.Equal(whole, pkt[l3:]) {
				t.Fatal("reassembled packet differs from the original")
			}
			got, vni, _, _, err := Decap(whole, isLocal, 0)
			if err != nil || vni != 99 || !bytes.Equal(got, inner) {
				t.Fatalf("decap of the reassembled packet: %v", err)
			}
			// A fragment is refused by Decap and by Fragment.
			if _, _, _, _, err := DecapFrame(frags[0], isLocal, 0); err != ErrFragment {
				t.Errorf("Decap of a fragment: %v", err)
			}
			if _, err := Fragments(frags[1], 68); err != ErrFragment {
				t.Errorf("fragmenting a fragment: %v", err)
			}
		})
	}
}

// Every fragmented datagram has an identification of its own, and packets
// that need no fragmenting do not use up IPv4 identifications.
func TestFragmentIdentification(t *testing.T) {
	e := NewEncoder()
	for _, u := range []*Underlay{underlay4(), underlay6()} {
		ids := map[uint32]bool{}
		for range 1000 {
			for range 100 {
				if _, err := encapCopy(e, make([]byte, 100), 1, u); err != nil {
					t.Fatal(err)
				}
			}
			pkt, err := encapCopy(e, make([]byte, 2000), 1, u)
			if err != nil {
				t.Fatal(err)
			}
			frags := fragmentAll(t, e, pkt, 1280)
			var id uint32
			for i, f := range frags {
				fid := uint32(binary.BigEndian.Uint16(f[14+4:]))
				if u.Src.Is6() {
					fid = binary.BigEndian.Uint32(f[14+44:])
				}
				if i == 0 {
					id = fid
				} else if fid != id {
					t.Fatal("fragments of one datagram with several identifications")
				}
			}
			if ids[id] {
				t.Fatalf("identification %#x again", id)
			}
			ids[id] = true
		}
	}
}

// A fragmented IPv4 datagram that had a UDP checksum keeps it; one that
// had none gets one, which the receiver verifies.
func TestFragmentUDPChecksum(t *testing.T) {
	e := &Encoder{}
	pkt, err := encapCopy(e, make([]byte, 2000), 1, underlay4())
	if err != nil {
		t.Fatal(err)
	}
	for _, withSum := range []bool{false, true} {
		p := append([]byte(nil), pkt...)
		if withSum {
			fixUDP(p[14:])
		}
		frags := fragmentAll(t, e, p, 1280)
		whole, err := reassemble(frags, 1280)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkUDP(whole, false); err != nil {
			t.Errorf("checksum before: %v; after: %v", withSum, err)
		}
		if withSum && !bytes.Equal(whole[26:28], p[14+26:14+28]) {
			t.Error("a UDP checksum was changed")
		}
		if _, _, _, _, err := Decap(whole, isLocal, 0); err != nil {
			t.Error(err)
		}
	}
}

func TestFragmentErrors(t *testing.T) {
	e := &Encoder{}
	v4, _ := encapCopy(e, make([]byte, 1500), 1, underlay4())
	v6, _ := encapCopy(e, make([]byte, 1500), 1, underlay6())
	edit := func(p []byte, f func([]byte)) []byte {
		p = append([]byte(nil), p...)
		f(p)
		return p
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		mtu  int
		want error
	}{
		{"ipv4 mtu 67", v4, 67, ErrMTU},
		{"ipv4 mtu negative", v4, -1, ErrMTU},
		{"ipv6 mtu 1279", v6, 1279, ErrMTU},
		{"runt", v4[:13], 1280, ErrTruncated},
		{"tag cut", edit(v4[:17], func(p []byte) { p[12], p[13] = 0x81, 0 }), 1280, ErrTruncated},
		{"ipv4 cut", v4[:33], 1280, ErrTruncated},
		{"ipv6 cut", v6[:53], 1280, ErrTruncated},
		{"ipv4 length", v4[:len(v4)-1], 1280, ErrMalformed},
		{"ipv6 length", v6[:len(v6)-1], 1280, ErrMalformed},
		{"ipv4 options", edit(v4, func(p []byte) { p[14] = 0x46 }), 1280, ErrMalformed},
		{"ipv4 fragment", edit(v4, func(p []byte) { p[14+6] = 0x20 }), 1280, ErrFragment},
		{"ipv6 version", edit(v6, func(p []byte) { p[14] = 0x40 }), 1280, ErrMalformed},
		{"ipv6 fragment", edit(v6, func(p []byte) { p[14+6] = 44 }), 1280, ErrFragment},
		{"ipv6 extension header", edit(v6, func(p []byte) { p[14+6] = 0 }), 1280, ErrNotUDP},
		{"ARP", edit(v4, func(p []byte) { p[12], p[13] = 0x08, 0x06 }), 1280, ErrMalformed},
	} {
		called := false
		n, err := e.Fragment(tc.pkt, tc.mtu, func(int) []byte { called = true; return make([]byte, 2000) })
		if n != 0 || err != tc.want || called {
			t.Errorf("%s: %d, %v, buffers asked: %v; want %v", tc.name, n, err, called, tc.want)
		}
	}
	// A short buffer or none stops Fragment.
	for _, short := range []int{0, 1} {
		calls := 0
		n, err := e.Fragment(v4, 576, func(size int) []byte {
			calls++
			if calls == 2 {
				if short == 0 {
					return nil
				}
				return make([]byte, size-1)
			}
			return make([]byte, size)
		})
		if n != 1 || err != ErrNoBuffer || calls != 2 {
			t.Errorf("short buffer %d: %d, %v after %d calls", short, n, err, calls)
		}
	}
	// Small packets are left alone, also at tiny MTUs the family refuses.
	small, _ := encapCopy(e, make([]byte, 14), 1, underlay6())
	if n, err := e.Fragment(small, 100, nil); n != 0 || err != nil {
		t.Errorf("small packet: %d, %v", n, err)
	}
}
