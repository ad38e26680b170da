package frag

import (
	"errors"
	"testing"
)

func TestParseIPv4(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 0x1234, proto: protoUDP}
	payload := udp(1000, 4789, pattern(3000, 1))
	whole := whole4(h, payload)
	in := mustParse(t, append(whole, 0, 0, 0)) // link padding is ignored
	if in.IsFragment || in.Version != 4 || in.Proto != protoUDP || in.L4Off != 20 || len(in.L4) != len(payload) || in.Len != len(whole) {
		t.Fatalf("whole packet: %+v", in)
	}

	frags := frag4(h, payload, 1480)
	if len(frags) != 3 {
		t.Fatalf("%d fragments", len(frags))
	}
	first := mustParse(t, frags[0])
	if !first.IsFragment || !first.First || !first.More || first.Offset != 0 || first.DataLen != 1480 || first.L4Off != 20 || first.Proto != protoUDP {
		t.Fatalf("first: %+v", first)
	}
	wantKey := Key{ID: 0x1234, Proto: protoUDP, Version: 4}
	copy(wantKey.Src[:], src4[:])
	copy(wantKey.Dst[:], dst4[:])
	if first.Key != wantKey {
		t.Fatalf("key %+v, want %+v", first.Key, wantKey)
	}
	mid := mustParse(t, frags[1])
	if !mid.IsFragment || mid.First || !mid.More || mid.Offset != 1480 || mid.L4 != nil || mid.Key != wantKey {
		t.Fatalf("middle: %+v", mid)
	}
	last := mustParse(t, frags[2])
	if !last.IsFragment || last.More || last.Offset != 2960 || last.End() != len(payload) || last.DataOff != 20 {
		t.Fatalf("last: %+v", last)
	}
}

func TestParseIPv4Errors(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 7, proto: protoUDP}
	tcp := hdr4{src: src4, dst: dst4, id: 7, proto: protoTCP}
	hdrOnly := ipv4(h, 0, false, nil, nil)
	badIHL := ipv4(h, 0, false, pattern(8, 0), nil)
	badIHL[0] = 0x44
	longTotal := ipv4(h, 0, false, pattern(8, 0), nil)
	longTotal[3] += 1
	for _, tc := range []struct {
		name string
		pkt  []byte
		err  error
		frag bool
	}{
		{"empty", nil, ErrMalformed, false},
		{"not IP", []byte{0x50, 1, 2, 3}, ErrMalformed, false},
		{"short header", hdrOnly[:19], ErrMalformed, false},
		{"bad IHL", badIHL, ErrMalformed, false},
		{"total beyond packet", longTotal, ErrMalformed, false},
		{"empty fragment", ipv4(h, 8, true, nil, nil), ErrBadFragment, true},
		{"non-last not multiple of 8", ipv4(h, 0, true, pattern(12, 0), nil), ErrBadFragment, true},
		{"past 65535", ipv4(h, 65528, false, pattern(16, 0), nil), ErrTooBig, true},
		{"tiny TCP first", ipv4(tcp, 0, true, pattern(16, 0), nil), ErrTinyFirst, true},
		{"TCP at offset 8", ipv4(tcp, 8, true, pattern(16, 0), nil), ErrHeaderOverwrite, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := Parse(tc.pkt)
			if err != tc.err || !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if in.IsFragment != tc.frag {
				t.Fatalf("IsFragment %v", in.IsFragment)
			}
			if tc.frag && in.Key.ID != 7 {
				t.Fatalf("key not set with the error: %+v", in.Key)
			}
		})
	}
	// What is not an error: a last fragment of any length, UDP at 8,
	// a TCP first fragment with the whole header.
	for _, p := range [][]byte{
		ipv4(h, 8, false, pattern(3, 0), nil),
		ipv4(h, 8, true, pattern(8, 0), nil),
		ipv4(tcp, 0, true, pattern(24, 0), nil),
		ipv4(tcp, 24, false, pattern(1, 0), nil),
	} {
		if _, err := Parse(p); err != nil {
			t.Errorf("%x: %v", p[:20], err)
		}
	}
}

func TestParseIPv6Chain(t *testing.T) {
	h := hdr6{src: src6, dst: dst6, id: 0xdeadbeef}
	// Hop-by-Hop, Destination Options, Routing before the Fragment
	// header; Destination Options and AH after it, then UDP.
	unfrag := []uint8{protoHopByHop, protoDstOpts, protoRouting}
	after, nh := chain([]uint8{protoDstOpts, protoAH}, protoUDP)
	fragmentable := append(after, udp(1, 2, pattern(2000, 3))...)
	frags := frag6(h, unfrag, nh, fragmentable, 1232)
	first := mustParse(t, frags[0])
	if !first.IsFragment || !first.First || !first.More || first.Version != 6 {
		t.Fatalf("first: %+v", first)
	}
	if first.HeaderLen != 40+24 || first.FragHdrOff != 64 || first.NextHdrOff != 56 || first.DataOff != 72 {
		t.Fatalf("first offsets: %+v", first)
	}
	if first.Proto != protoUDP || first.L4Off != 72+8+12 || first.Key.ID != 0xdeadbeef || first.Key.Proto != 0 {
		t.Fatalf("first upper layer: %+v", first)
	}
	later := mustParse(t, frags[1])
	if later.First || later.Offset != 1232 || later.Proto != protoDstOpts || later.L4 != nil || later.Key != first.Key {
		t.Fatalf("later: %+v", later)
	}

	// A whole packet with the same chain, and an atomic fragment.
	whole := mustParse(t, whole6(h, unfrag, nh, fragmentable))
	if whole.IsFragment || whole.Proto != protoUDP || whole.L4Off != 40+24+8+12 {
		t.Fatalf("whole: %+v", whole)
	}
	atomic := mustParse(t, frag6(h, nil, protoUDP, udp(1, 2, nil), 64)[0])
	if atomic.IsFragment || !atomic.Atomic || atomic.Proto != protoUDP || atomic.L4Off != 48 {
		t.Fatalf("atomic: %+v", atomic)
	}
}

func TestParseIPv6Errors(t *testing.T) {
	h := hdr6{src: src6, dst: dst6, id: 9}
	many := make([]uint8, MaxExtHeaders+1)
	for i := range many {
		many[i] = protoDstOpts
	}
	tooMany := whole6(h, many, protoUDP, udp(1, 2, nil))
	enough := whole6(h, many[:MaxExtHeaders], protoUDP, udp(1, 2, nil))
	// The chain after the Fragment header cut by the first fragment:
	// 16 bytes of Destination Options, 8 in the first fragment.
	do16 := ext(protoDstOpts, protoUDP, 16)
	cutChain := frag6(h, nil, protoDstOpts, append(do16, udp(1, 2, pattern(40, 0))...), 8)[0]
	// The UDP header in the second fragment.
	do8, _ := chain([]uint8{protoDstOpts}, protoUDP)
	cutL4 := frag6(h, nil, protoDstOpts, append(do8, udp(1, 2, pattern(40, 0))...), 8)[0]
	hbhLate := whole6(h, []uint8{protoDstOpts, protoHopByHop}, protoUDP, udp(1, 2, nil))
	twoFrag := ipv6(h, protoFragment, append(fragHdr(protoFragment, 0, true, 9), fragHdr(protoUDP, 0, true, 9)...))
	shortExt := ipv6(h, protoDstOpts, []byte{protoUDP, 1, 0, 0, 0, 0, 0, 0})
	truncated := ipv6(h, protoUDP, pattern(20, 0))[:50]
	for _, tc := range []struct {
		name string
		pkt  []byte
		err  error
		frag bool
	}{
		{"short", make([]byte, 39), ErrMalformed, false},
		{"payload beyond packet", truncated, ErrMalformed, false},
		{"too many headers", tooMany, ErrTooManyHeaders, false},
		{"chain cut in first fragment", cutChain, ErrTinyFirst, true},
		{"upper layer in second fragment", cutL4, ErrTinyFirst, true},
		{"hop-by-hop not first", hbhLate, ErrMalformed, false},
		{"two fragment headers", twoFrag, ErrBadFragment, true},
		{"extension header beyond payload", shortExt, ErrMalformed, false},
		{"non-last not multiple of 8", ipv6(h, protoFragment, append(fragHdr(protoUDP, 8, true, 9), pattern(12, 0)...)), ErrBadFragment, true},
		{"payload past 65535", ipv6(h, protoDstOpts, append(append(ext(protoDstOpts, protoFragment, 16), fragHdr(protoUDP, 65520, false, 9)...), pattern(8, 0)...)), ErrTooBig, true},
		{"TCP header overwritten", ipv6(h, protoFragment, append(fragHdr(protoTCP, 8, false, 9), pattern(8, 0)...)), ErrHeaderOverwrite, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := Parse(tc.pkt)
			if err != tc.err {
				t.Fatalf("err %v, want %v (%+v)", err, tc.err, in)
			}
			if in.IsFragment != tc.frag {
				t.Fatalf("IsFragment %v", in.IsFragment)
			}
		})
	}
	if _, err := Parse(enough); err != nil {
		t.Fatalf("%d extension headers: %v", MaxExtHeaders, err)
	}
}

func TestParseAllocates(t *testing.T) {
	h := hdr6{src: src6, dst: dst6, id: 1}
	after, nh := chain([]uint8{protoDstOpts}, protoUDP)
	p := frag6(h, []uint8{protoHopByHop}, nh, append(after, udp(1, 2, pattern(100, 0))...), 64)[0]
	var sink Info
	if n := testing.AllocsPerRun(1000, func() { sink, _ = Parse(p) }); n != 0 {
		t.Fatalf("%v allocations per Parse", n)
	}
	_ = sink
}
