package frag

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

// checkReassembler verifies the counters add up and the caps hold.
func checkReassembler(t testing.TB, r *Reassembler) ReassemblyStats {
	t.Helper()
	s := r.Stats()
	var dropped uint64
	for _, n := range s.Dropped {
		dropped += n
	}
	if got := s.Joined + s.Atomic + s.Duplicates + dropped + uint64(s.Fragments); got != s.In {
		t.Fatalf("fragments do not add up: in %d, joined %d + atomic %d + duplicates %d + dropped %d + held %d: %+v",
			s.In, s.Joined, s.Atomic, s.Duplicates, dropped, s.Fragments, s)
	}
	if s.Bytes > r.cfg.MaxBytes || s.Datagrams > r.cfg.MaxDatagrams {
		t.Fatalf("over the caps: %+v, config %+v", s, r.cfg)
	}
	// The chunks in use are exactly those the datagrams hold.
	held := 0
	for i := range r.slots {
		held += int(r.slots[i].chunks)
	}
	if used := r.nChunks - len(r.freeChunk); used != held {
		t.Fatalf("%d chunks in use, datagrams hold %d", used, held)
	}
	return s
}

// feed adds packets in order and returns the reassembled packets.
func feed(t testing.TB, r *Reassembler, now time.Time, pkts [][]byte) [][]byte {
	t.Helper()
	var outs [][]byte
	for _, p := range pkts {
		out, done, err := r.Add(p, now, nil)
		if err != nil {
			t.Fatalf("add: %v", err)
		}
		if done {
			outs = append(outs, out)
		}
	}
	return outs
}

func TestReassembleIPv4(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 42, proto: protoUDP, df: false}
	payload := udp(5000, 4789, pattern(4000, 9))
	want := whole4(h, payload)
	frags := frag4(h, payload, 1480)
	shuffled := append([][]byte{}, frags...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for name, order := range map[string][][]byte{"in order": frags, "reversed": reversed(frags), "shuffled": shuffled} {
		t.Run(name, func(t *testing.T) {
			r := NewReassembler(ReassemblerConfig{})
			outs := feed(t, r, t0, order)
			if len(outs) != 1 || !bytes.Equal(outs[0], want) {
				t.Fatalf("reassembled %d packets\ngot  %x\nwant %x", len(outs), outs, want)
			}
			if sum16(outs[0][:20]) != 0 {
				t.Fatal("bad header checksum")
			}
			s := checkReassembler(t, r)
			if s.Reassembled != 1 || s.Joined != 3 || s.Datagrams != 0 || s.Bytes != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestReassembleIPv4Options(t *testing.T) {
	// Options travel in the first fragment only; the datagram gets them.
	h := hdr4{src: src4, dst: dst4, id: 43, proto: protoUDP, opts: []byte{0x94, 4, 0, 0}} // router alert
	payload := udp(1, 2, pattern(100, 1))
	outs := feed(t, NewReassembler(ReassemblerConfig{}), t0, reversed(frag4(h, payload, 32)))
	if want := whole4(h, payload); len(outs) != 1 || !bytes.Equal(outs[0], want) {
		t.Fatalf("got %x\nwant %x", outs, want)
	}
}

func TestReassembleIPv6(t *testing.T) {
	h := hdr6{src: src6, dst: dst6, id: 0x01020304}
	for _, tc := range []struct {
		name   string
		unfrag []uint8
		after  []uint8
	}{
		{"plain", nil, nil},
		{"headers before the fragment header", []uint8{protoHopByHop, protoDstOpts, protoRouting}, nil},
		{"headers on both sides", []uint8{protoHopByHop, protoRouting}, []uint8{protoAH, protoDstOpts}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after, nh := chain(tc.after, protoUDP)
			fragmentable := append(after, udp(7, 8, pattern(3000, 5))...)
			want := whole6(h, tc.unfrag, nh, fragmentable)
			frags := frag6(h, tc.unfrag, nh, fragmentable, 1232)
			for _, order := range [][][]byte{frags, reversed(frags)} {
				r := NewReassembler(ReassemblerConfig{})
				outs := feed(t, r, t0, order)
				if len(outs) != 1 || !bytes.Equal(outs[0], want) {
					t.Fatalf("got  %x\nwant %x", outs, want)
				}
				if in := mustParse(t, outs[0]); in.IsFragment || in.Proto != protoUDP {
					t.Fatalf("reassembled packet parses as %+v", in)
				}
				checkReassembler(t, r)
			}
		})
	}
}

func TestReassembleAtomic(t *testing.T) {
	h := hdr6{src: src6, dst: dst6, id: 5}
	p := frag6(h, []uint8{protoDstOpts}, protoUDP, udp(1, 2, pattern(10, 0)), 64)[0]
	r := NewReassembler(ReassemblerConfig{})
	out, done, err := r.Add(p, t0, nil)
	if err != nil || !done || !bytes.Equal(out, whole6(h, []uint8{protoDstOpts}, protoUDP, udp(1, 2, pattern(10, 0)))) {
		t.Fatalf("atomic fragment: %x %v %v", out, done, err)
	}
	if _, _, err := r.Add(whole4(hdr4{proto: protoUDP}, udp(1, 2, nil)), t0, nil); err != ErrNotFragment {
		t.Fatalf("whole packet: %v", err)
	}
	if s := checkReassembler(t, r); s.Atomic != 1 || s.In != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestReassembleInterleaved(t *testing.T) {
	r := NewReassembler(ReassemblerConfig{})
	var lists [][][]byte
	var wants [][]byte
	for i := range 3 {
		h4 := hdr4{src: src4, dst: dst4, id: 100, proto: protoUDP}
		h4.src[3] = byte(i) // same ID, different sources
		p := udp(1, 2, pattern(2000+i*100, byte(i)))
		lists = append(lists, frag4(h4, p, 512))
		wants = append(wants, whole4(h4, p))
		h6 := hdr6{src: src6, dst: dst6, id: 100}
		h6.src[14] = byte(i)
		q := udp(1, 2, pattern(2000+i*100, byte(i+10)))
		lists = append(lists, reversed(frag6(h6, nil, protoUDP, q, 512)))
		wants = append(wants, whole6(h6, nil, protoUDP, q))
		// Same addresses, other IDs.
		h6 = hdr6{src: src6, dst: dst6, id: 200 + uint32(i)}
		q2 := udp(3, 4, pattern(1500, byte(i+20)))
		lists = append(lists, frag6(h6, nil, protoUDP, q2, 256))
		wants = append(wants, whole6(h6, nil, protoUDP, q2))
	}
	var got [][]byte
	for k := 0; ; k++ {
		any := false
		for _, l := range lists {
			if k < len(l) {
				any = true
				out, done, err := r.Add(l[k], t0, nil)
				if err != nil {
					t.Fatal(err)
				}
				if done {
					got = append(got, out)
				}
			}
		}
		if !any {
			break
		}
	}
	if len(got) != len(wants) {
		t.Fatalf("%d datagrams reassembled, want %d", len(got), len(wants))
	}
	for _, w := range wants {
		found := false
		for _, g := range got {
			found = found || bytes.Equal(g, w)
		}
		if !found {
			t.Fatalf("datagram %x not reassembled", w[:48])
		}
	}
	checkReassembler(t, r)
}

func TestReassembleDuplicates(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 1, proto: protoUDP}
	payload := udp(1, 2, pattern(2992, 1))
	frags := frag4(h, payload, 1000)
	r := NewReassembler(ReassemblerConfig{})
	// Exact duplicates are ignored: the datagram still completes.
	outs := feed(t, r, t0, [][]byte{frags[0], frags[0], frags[1], frags[1], frags[2]})
	if len(outs) != 1 || !bytes.Equal(outs[0], whole4(h, payload)) {
		t.Fatalf("with exact duplicates: %d out", len(outs))
	}
	if s := checkReassembler(t, r); s.Duplicates != 2 || s.Reassembled != 1 {
		t.Fatalf("stats %+v", s)
	}

	// Same place, other bytes: an overlap, the whole datagram goes.
	h.id = 2
	frags = frag4(h, payload, 1000)
	evil := append([]byte{}, frags[1]...)
	evil[len(evil)-1] ^= 0xff
	feed(t, r, t0, [][]byte{frags[0], frags[1]})
	if _, _, err := r.Add(evil, t0, nil); err != ErrOverlap {
		t.Fatalf("rewritten duplicate: %v", err)
	}
	if _, done, err := r.Add(frags[2], t0, nil); done || err != ErrOverlap {
		t.Fatalf("after the overlap: done %v, %v", done, err)
	}
	s := checkReassembler(t, r)
	if s.DroppedDatagrams["overlap"] != 1 || s.Dropped["overlap"] != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestReassembleOverlap(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 3, proto: protoUDP}
	payload := udp(1, 2, pattern(64, 1))
	for _, tc := range []struct {
		name  string
		frags [][]byte
	}{
		{"tail over next", [][]byte{ipv4(h, 0, true, payload[:24], nil), ipv4(h, 16, true, payload[16:40], nil)}},
		{"inside", [][]byte{ipv4(h, 0, true, payload[:48], nil), ipv4(h, 8, true, payload[8:16], nil)}},
		{"around", [][]byte{ipv4(h, 16, true, payload[16:24], nil), ipv4(h, 8, true, payload[8:32], nil)}},
		{"same offset, longer", [][]byte{ipv4(h, 8, true, payload[8:16], nil), ipv4(h, 8, true, payload[8:24], nil)}},
		{"last over last", [][]byte{ipv4(h, 56, false, payload[56:], nil), ipv4(h, 48, false, payload[48:], nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReassembler(ReassemblerConfig{})
			if _, _, err := r.Add(tc.frags[0], t0, nil); err != nil {
				t.Fatal(err)
			}
			_, _, err := r.Add(tc.frags[1], t0, nil)
			if err != ErrOverlap && err != ErrBadFragment {
				t.Fatalf("second fragment: %v", err)
			}
			// Even a clean copy of the datagram is refused until the
			// timeout (RFC 5722: fragments not yet received too).
			for _, f := range frag4(h, payload, 8) {
				if _, done, err := r.Add(f, t0.Add(time.Second), nil); done || err == nil {
					t.Fatalf("fragment of a dropped datagram: done %v, err %v", done, err)
				}
			}
			checkReassembler(t, r)
			outs := feed(t, r, t0.Add(DefaultTimeout), frag4(h, payload, 24))
			if len(outs) != 1 {
				t.Fatal("no reassembly after the timeout")
			}
			checkReassembler(t, r)
		})
	}
}

func TestReassembleTimeout(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 4, proto: protoUDP}
	frags := frag4(h, udp(1, 2, pattern(2000, 1)), 1000)
	r := NewReassembler(ReassemblerConfig{Timeout: 10 * time.Second})
	feed(t, r, t0, frags[:2])
	r.Expire(t0.Add(9 * time.Second))
	if s := r.Stats(); s.Datagrams != 1 || s.Bytes == 0 {
		t.Fatalf("expired early: %+v", s)
	}
	r.Expire(t0.Add(10 * time.Second))
	s := checkReassembler(t, r)
	if s.Datagrams != 0 || s.Bytes != 0 || s.DroppedDatagrams["timed_out"] != 1 || s.Dropped["timed_out"] != 2 {
		t.Fatalf("stats %+v", s)
	}
	// The last fragment alone starts a new datagram.
	if outs := feed(t, r, t0.Add(11*time.Second), frags[2:]); len(outs) != 0 {
		t.Fatal("completed a timed-out datagram")
	}
	// Add expires too: a late fragment never joins a stale datagram.
	if outs := feed(t, r, t0.Add(22*time.Second), frags[:2]); len(outs) != 0 {
		t.Fatal("completed across the timeout")
	}
	if s := checkReassembler(t, r); s.DroppedDatagrams["timed_out"] != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestReassembleMemoryCap(t *testing.T) {
	const maxBytes = 16 << 10
	r := NewReassembler(ReassemblerConfig{MaxBytes: maxBytes})
	h := hdr4{src: src4, dst: dst4, proto: protoUDP}
	payload := udp(1, 2, pattern(2000, 1))
	var all [][][]byte
	for i := range 40 {
		h.id = uint16(i)
		frags := frag4(h, payload, 1000)
		all = append(all, frags)
		// Each datagram keeps its first two fragments: 1000 bytes of data
		// and a header, 4 + 1 chunks of 256 bytes, then 4 more.
		feed(t, r, t0.Add(time.Duration(i)*time.Millisecond), frags[:2])
		if s := checkReassembler(t, r); s.Bytes > maxBytes {
			t.Fatalf("%d bytes held", s.Bytes)
		}
	}
	s := checkReassembler(t, r)
	if s.DroppedDatagrams["over_memory"] == 0 || s.Datagrams*9*chunkSize > maxBytes {
		t.Fatalf("stats %+v", s)
	}
	// The newest datagrams are the ones kept; the oldest were dropped.
	if outs := feed(t, r, t0.Add(time.Second), [][]byte{all[39][2]}); len(outs) != 1 {
		t.Fatal("newest datagram lost")
	}
	if outs := feed(t, r, t0.Add(time.Second), [][]byte{all[0][2]}); len(outs) != 0 {
		t.Fatal("oldest datagram kept")
	}
	checkReassembler(t, r)

	// A datagram bigger than all the memory can never be reassembled.
	big := NewReassembler(ReassemblerConfig{MaxBytes: 4096})
	h.id = 999
	var err error
	for _, f := range frag4(h, udp(1, 2, pattern(6000, 2)), 1480) {
		if _, _, err = big.Add(f, t0, nil); err != nil {
			break
		}
	}
	if err != ErrOverMemory {
		t.Fatalf("datagram larger than MaxBytes: %v", err)
	}
	checkReassembler(t, big)
}

func TestReassembleDatagramCap(t *testing.T) {
	r := NewReassembler(ReassemblerConfig{MaxDatagrams: 4})
	h := hdr6{src: src6, dst: dst6}
	var all [][][]byte
	for i := range 6 {
		h.id = uint32(i)
		frags := frag6(h, nil, protoUDP, udp(1, 2, pattern(600, byte(i))), 256)
		all = append(all, frags)
		feed(t, r, t0.Add(time.Duration(i)*time.Second), frags[:1])
	}
	s := checkReassembler(t, r)
	if s.Datagrams != 4 || s.DroppedDatagrams["evicted"] != 2 {
		t.Fatalf("stats %+v", s)
	}
	// Newest first: completing them frees their slots, so the evicted
	// ones, which start over, evict nobody.
	for i := len(all) - 1; i >= 0; i-- {
		outs := feed(t, r, t0.Add(6*time.Second), all[i][1:])
		if kept := i >= 2; kept != (len(outs) == 1) {
			t.Fatalf("datagram %d: %d reassembled", i, len(outs))
		}
	}
	checkReassembler(t, r)
}

func TestReassembleTooBig(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 5, proto: protoUDP}
	r := NewReassembler(ReassemblerConfig{MaxDatagramSize: 1600})
	frags := frag4(h, udp(1, 2, pattern(2000, 1)), 800)
	if _, _, err := r.Add(frags[0], t0, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Add(frags[2], t0, nil); err != ErrTooBig {
		t.Fatalf("past MaxDatagramSize: %v", err)
	}
	if _, _, err := r.Add(frags[1], t0, nil); err != ErrTooBig {
		t.Fatalf("rest of a dropped datagram: %v", err)
	}
	// Past what IPv4 can carry: Parse refuses the fragment.
	if _, _, err := r.Add(ipv4(h, 65528, false, pattern(8, 0), nil), t0, nil); err != ErrTooBig {
		t.Fatalf("past 65535: %v", err)
	}
	// Where the first fragment's options push the datagram over the
	// limit only once it is known.
	h2 := hdr4{src: src4, dst: dst4, id: 6, proto: protoUDP, opts: make([]byte, 40)}
	r2 := NewReassembler(ReassemblerConfig{MaxDatagramSize: 1000})
	frags = frag4(h2, pattern(960, 1), 480)
	feed(t, r2, t0, frags[1:])
	if _, _, err := r2.Add(frags[0], t0, nil); err != ErrTooBig {
		t.Fatalf("over the limit with options: %v", err)
	}
	s := checkReassembler(t, r)
	// One datagram dropped (two fragments, then one more), one fragment
	// refused alone.
	if s.DroppedDatagrams["too_big"] != 1 || s.Dropped["too_big"] != 4 {
		t.Fatalf("stats %+v", s)
	}
	checkReassembler(t, r2)
}

func TestReassembleBadLengths(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 8, proto: protoUDP}
	p := pattern(64, 1)
	for _, tc := range []struct {
		name string
		a, b []byte
	}{
		{"two different ends", ipv4(h, 32, false, p[32:48], nil), ipv4(h, 48, false, p[48:64], nil)},
		{"more past the last", ipv4(h, 32, false, p[32:40], nil), ipv4(h, 40, true, p[40:48], nil)},
		{"last before data", ipv4(h, 32, true, p[32:48], nil), ipv4(h, 8, false, p[8:16], nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReassembler(ReassemblerConfig{})
			if _, _, err := r.Add(tc.a, t0, nil); err != nil {
				t.Fatal(err)
			}
			if _, _, err := r.Add(tc.b, t0, nil); err != ErrBadFragment {
				t.Fatalf("got %v", err)
			}
			if s := checkReassembler(t, r); s.DroppedDatagrams["bad_fragment"] != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestReassembleTooManyFragments(t *testing.T) {
	h := hdr4{src: src4, dst: dst4, id: 9, proto: protoUDP}
	r := NewReassembler(ReassemblerConfig{MaxFragments: 8})
	frags := frag4(h, pattern(80, 1), 8)
	var err error
	for _, f := range frags {
		if _, _, err = r.Add(f, t0, nil); err != nil {
			break
		}
	}
	if err != ErrTooManyFragments {
		t.Fatalf("got %v", err)
	}
	checkReassembler(t, r)
}

func TestReassembleECN(t *testing.T) {
	payload := udp(1, 2, pattern(100, 1))
	h := hdr4{src: src4, dst: dst4, id: 10, proto: protoUDP, tos: 0x02} // ECT(0)
	frags := frag4(h, payload, 48)
	h.tos = 0x03 // CE on the middle one
	frags[1] = frag4(h, payload, 48)[1]
	r := NewReassembler(ReassemblerConfig{})
	outs := feed(t, r, t0, frags)
	if len(outs) != 1 || outs[0][1] != 0x03 || sum16(outs[0][:20]) != 0 {
		t.Fatalf("CE not carried over: %x", outs)
	}
	h6 := hdr6{src: src6, dst: dst6, id: 10, tc: 0x01} // ECT(1)
	f6 := frag6(h6, nil, protoUDP, payload, 48)
	h6.tc = 0x00 // not ECT
	f6[2] = frag6(h6, nil, protoUDP, payload, 48)[2]
	var err error
	for _, f := range f6 {
		_, _, err = r.Add(f, t0, nil)
	}
	if err != ErrECN {
		t.Fatalf("ECT mixed with not-ECT: %v", err)
	}
	h6.tc = 0x03
	f6[2] = frag6(h6, nil, protoUDP, payload, 48)[2]
	h6.id = 11
	h6.tc = 0x01
	f6b := frag6(h6, nil, protoUDP, payload, 48)
	h6.tc = 0x03
	f6b[0] = frag6(h6, nil, protoUDP, payload, 48)[0]
	outs = feed(t, r, t0, f6b)
	if len(outs) != 1 || (outs[0][1]>>4)&3 != 3 {
		t.Fatalf("IPv6 CE not carried over: %x", outs)
	}
	checkReassembler(t, r)
}

func TestReassembleReusesDst(t *testing.T) {
	r := NewReassembler(ReassemblerConfig{})
	h := hdr4{src: src4, dst: dst4, proto: protoUDP}
	payload := udp(1, 2, pattern(1600, 1)) // a VXLAN frame in two pieces
	var frags [][][]byte
	for i := range 64 {
		h.id = uint16(i)
		frags = append(frags, frag4(h, payload, 1480))
	}
	dst := make([]byte, 0, 2048)
	i := 0
	run := func() {
		f := frags[i%len(frags)]
		i++
		if _, _, err := r.Add(f[1], t0, dst); err != nil {
			t.Fatal(err)
		}
		out, done, err := r.Add(f[0], t0, dst)
		if err != nil || !done || &out[0] != &dst[:1][0] {
			t.Fatalf("done %v, err %v, dst reused %v", done, err, &out[0] == &dst[:1][0])
		}
	}
	run() // the first datagram allocates the first block of chunks
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("%v allocations per datagram", n)
	}
	checkReassembler(t, r)
}
