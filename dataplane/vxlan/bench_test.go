package vxlan

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

var benchUnderlays = []struct {
	name string
	u    func() *Underlay
}{
	{"ipv4", underlay4},
	{"ipv6", underlay6},
	{"ipv4-vlan", func() *Underlay { u := underlay4(); u.VLAN = 10; return u }},
}

func BenchmarkEncap(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, bu := range benchUnderlays {
		for _, size := range []int{64, 1500} {
			b.Run(fmt.Sprintf("%s/%d", bu.name, size), func(b *testing.B) {
				u := bu.u()
				e := NewEncoder()
				buf := make([]byte, 256+size)
				copy(buf[256:], innerFrame(rng, innerIPv4TCP, randomFlow(rng, innerIPv4TCP), size))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := e.Encap(buf, 256, size, 42, u); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDecap(b *testing.B) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, bu := range benchUnderlays[:2] {
		for _, size := range []int{64, 1500} {
			b.Run(fmt.Sprintf("%s/%d", bu.name, size), func(b *testing.B) {
				inner := innerFrame(rng, innerIPv4TCP, randomFlow(rng, innerIPv4TCP), size)
				pkt, err := encapCopy(NewEncoder(), inner, 42, bu.u())
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, _, _, err := DecapFrame(pkt, isLocal, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkFragment(b *testing.B) {
	for _, bu := range benchUnderlays[:2] {
		b.Run(bu.name, func(b *testing.B) {
			e := NewEncoder()
			pkt, err := encapCopy(e, make([]byte, 1500), 42, bu.u())
			if err != nil {
				b.Fatal(err)
			}
			var bufs [4][2048]byte
			k := 0
			next := func(size int) []byte { k++; return bufs[k%len(bufs)][:] }
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if n, err := e.Fragment(pkt, 1280, next); err != nil || n != 2 {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// The hot path allocates nothing: no garbage per frame.
func TestNoAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	e := NewEncoder()
	inner := innerFrame(rng, innerIPv6UDP, randomFlow(rng, innerIPv6UDP), 1400)
	for _, bu := range benchUnderlays {
		u := bu.u()
		buf := make([]byte, 256+len(inner))
		copy(buf[256:], inner)
		var pkt []byte
		if a := testing.AllocsPerRun(100, func() {
			off, n, err := e.Encap(buf, 256, len(inner), 42, u)
			if err != nil {
				t.Fatal(err)
			}
			pkt = buf[off : off+n]
		}); a != 0 {
			t.Errorf("%s: Encap allocates %v times", bu.name, a)
		}
		if a := testing.AllocsPerRun(100, func() {
			if _, _, _, _, err := DecapFrame(pkt, isLocal, 0); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("%s: Decap allocates %v times", bu.name, a)
		}
		// Refusals allocate nothing either.
		bad := append([]byte(nil), pkt...)
		bad[len(bad)-1]++
		if a := testing.AllocsPerRun(100, func() {
			_, _, _, _, err := DecapFrame(bad[:len(bad)-1], isLocal, 0)
			if err == nil {
				t.Fatal("accepted a truncated packet")
			}
		}); a != 0 {
			t.Errorf("%s: a refusal allocates %v times", bu.name, a)
		}
		var frag [2048]byte
		if a := testing.AllocsPerRun(100, func() {
			if n, err := e.Fragment(pkt, 1280, func(int) []byte { return frag[:] }); err != nil || n != 2 {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("%s: Fragment allocates %v times", bu.name, a)
		}
	}
}
