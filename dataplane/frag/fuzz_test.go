package frag

import (
	"bytes"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	h4 := hdr4{src: src4, dst: dst4, id: 1, proto: protoTCP}
	for _, p := range frag4(h4, pattern(100, 0), 32) {
		f.Add(p)
	}
	h6 := hdr6{src: src6, dst: dst6, id: 1}
	after, nh := chain([]uint8{protoDstOpts, protoAH}, protoUDP)
	for _, p := range frag6(h6, []uint8{protoHopByHop, protoRouting}, nh, append(after, udp(1, 2, pattern(100, 0))...), 48) {
		f.Add(p)
	}
	f.Add(whole6(h6, []uint8{protoHopByHop}, protoTCP, pattern(40, 0)))
	f.Fuzz(func(t *testing.T, p []byte) {
		in, err := Parse(p)
		if in.Len > len(p) || in.DataOff+in.DataLen > len(p) || in.L4Off+len(in.L4) > len(p) {
			t.Fatalf("past the packet: %+v", in)
		}
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %v not one of the package's", err)
			}
			return
		}
		if in.Version != 4 && in.Version != 6 {
			t.Fatalf("version %d", in.Version)
		}
		if in.IsFragment {
			if in.DataLen <= 0 || (in.More && in.DataLen%8 != 0) || in.HeaderLen-40*int(in.Version/6)+in.End() > 65535 {
				t.Fatalf("fragment that breaks the rules: %+v", in)
			}
			if in.DataOff+in.DataLen != in.Len || in.First != (in.Offset == 0) || in.Key.Version != in.Version {
				t.Fatalf("inconsistent fragment: %+v", in)
			}
			if in.First && len(in.L4) < minL4(in.Proto) {
				t.Fatalf("tiny first fragment accepted: %+v", in)
			}
		}
		if (!in.IsFragment || in.First) && (in.L4Off < in.HeaderLen || in.L4Off+len(in.L4) != in.Len) {
			t.Fatalf("upper layer misplaced: %+v", in)
		}
	})
}

// FuzzReassembler feeds a reassembler with small caps a sequence of
// fragments cut from a few source datagrams, in any order, overlapping,
// repeated, lying about their length, mixed with raw packets and time
// steps. It must never panic nor exceed its caps, its counts must add
// up, and whatever it reassembles must be the source datagram.
func FuzzReassembler(f *testing.F) {
	f.Add([]byte{0, 1, 0, 64, 1, 0, 1, 8, 64, 0, 1, 1, 0, 64, 1, 1, 1, 8, 64, 0})
	f.Add([]byte{0, 0, 3, 40, 0, 0, 0, 0, 200, 1, 3, 1, 0, 0, 0, 0, 2, 20, 0x45, 0, 0, 20})
	f.Add([]byte{1, 2, 4, 255, 5, 1, 2, 0, 255, 3, 3, 30, 1, 2, 4, 255, 4})
	var src [4][]byte
	for i := range src {
		src[i] = pattern(1024, byte(i*37))
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := NewReassembler(ReassemblerConfig{MaxBytes: 8 << 10, MaxDatagrams: 4, MaxFragments: 8, Timeout: 10 * time.Second, MaxDatagramSize: 700})
		now := t0
		var dst []byte
		for len(ops) >= 5 {
			op := ops[:5]
			ops = ops[5:]
			var pkt []byte
			id := op[1] & 3
			off := int(op[2]%80) * 8
			n := int(op[3]) + 1
			more := op[4]&1 != 0
			switch op[0] % 4 {
			case 0:
				h := hdr4{src: src4, dst: dst4, id: uint16(id), proto: protoUDP, tos: op[4] >> 6}
				pkt = ipv4(h, off, more, src[id][off:off+n], nil)
			case 1:
				h := hdr6{src: src6, dst: dst6, id: uint32(id), tc: op[4] >> 6}
				var unfrag []uint8
				for range (op[4] >> 1) & 3 {
					unfrag = append(unfrag, protoDstOpts)
				}
				u, first := chain(unfrag, protoFragment)
				pkt = ipv6(h, first, append(append(u, fragHdr(protoUDP, off, more, h.id)...), src[id][off:off+n]...))
			case 2:
				k := min(int(op[1]), len(ops))
				pkt = ops[:k]
				ops = ops[k:]
			case 3:
				now = now.Add(time.Duration(op[1]) * time.Second / 4)
				r.Expire(now)
				checkReassembler(t, r)
				continue
			}
			if op[4]&0x20 != 0 {
				dst = make([]byte, 0, int(op[3])*8)
			}
			out, done, err := r.Add(pkt, now, dst)
			checkReassembler(t, r)
			if !done {
				if out != nil {
					t.Fatal("output without done")
				}
				continue
			}
			if err != nil {
				t.Fatalf("done with error %v", err)
			}
			in, perr := Parse(out)
			if perr != nil || in.IsFragment || in.Len != len(out) {
				t.Fatalf("reassembled packet does not parse: %+v, %v", in, perr)
			}
			if in.Version == 4 && sum16(out[:in.HeaderLen]) != 0 {
				t.Fatal("bad checksum")
			}
			if op[0]%4 == 2 {
				continue // an atomic fragment from raw bytes
			}
			data := out[in.L4Off:]
			sid := out[5] & 3 // the IPv4 ID's low byte
			if in.Version == 6 {
				// The ID left with the Fragment header: find the
				// source by its bytes, which differ from the first.
				sid = data[0] ^ src[0][0]
				if sid%37 != 0 || sid/37 > 3 {
					t.Fatalf("reassembled bytes match no source: %x", data)
				}
				sid /= 37
			}
			if !bytes.Equal(data, src[sid][:len(data)]) {
				t.Fatalf("reassembled %x, source %x", data, src[sid][:len(data)])
			}
		}
		r.Flush()
		if s := checkReassembler(t, r); s.Datagrams != 0 || s.Bytes != 0 || s.Fragments != 0 {
			t.Fatalf("after flush: %+v", s)
		}
	})
}

// FuzzTracker drives a tracker with small caps through a sequence of
// first fragments (with a verdict), later fragments, raw packets, time
// steps and flushes. It must never panic nor exceed its caps, give every
// held frame back exactly once, and never give a fragment any verdict
// but the one last taken on its datagram's first fragment.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{0, 1, 3, 1, 0, 1, 1, 0, 2, 1, 0, 1, 4, 1, 0})
	f.Add([]byte{0, 2, 5, 0, 1, 0, 2, 6, 0, 1, 1, 2, 0, 3, 0, 3, 40, 0, 0, 0})
	f.Add([]byte{2, 20, 0, 0, 0, 0x45, 0, 0, 20, 0, 0, 0x20, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, ops []byte) {
		cfg := TrackerConfig{MaxDatagrams: 8, MaxHeldFrames: 16, MaxHeldBytes: 4096, MaxHeldPerDatagram: 4, MaxHeldBytesPerDatagram: 2048, Timeout: 5 * time.Second}
		h := newHarness(t, cfg)
		verdict := make(map[Key]Action)
		for len(ops) >= 5 {
			op := ops[:5]
			ops = ops[5:]
			id := uint16(op[1] & 7)
			n := (int(op[3]%64) + 1) * 8
			more := op[4]&1 != 0
			hd := hdr4{src: src4, dst: dst4, id: id, proto: protoUDP}
			var pkt []byte
			v := Allow
			if op[4]&2 != 0 {
				v = Deny
			}
			switch op[0] % 5 {
			case 0:
				pkt = ipv4(hd, int(op[2]%64+1)*8, more, pattern(n, 0), nil)
			case 1:
				pkt = ipv4(hd, 0, true, pattern(n, 0), nil)
			case 2:
				k := min(int(op[1]), len(ops))
				pkt = ops[:k]
				ops = ops[k:]
			case 3:
				h.expire(h.now.Add(time.Duration(op[1]) * time.Second / 8))
				continue
			case 4:
				if op[1] < 16 {
					h.collect(h.tr.Flush(h.out[:0]))
					if h.tr.HeldFrames() != 0 || len(h.lent) != 0 {
						t.Fatal("flush kept frames")
					}
				}
				continue
			}
			in, _ := Parse(pkt)
			o, _ := h.send(pkt, v)
			if !in.IsFragment {
				continue
			}
			switch o.Action {
			case Allow, Deny:
				if in.First {
					verdict[in.Key] = o.Action
					for _, x := range h.back {
						if x.Action != o.Action && x.Action != Drop {
							t.Fatalf("held frame released with %v, first got %v", x.Action, o.Action)
						}
					}
				} else if verdict[in.Key] != o.Action {
					t.Fatalf("fragment got %v, its first %v", o.Action, verdict[in.Key])
				}
			case Pass:
				t.Fatalf("fragment passed: %+v", in)
			}
			for _, x := range h.back {
				if (x.Action == Allow || x.Action == Deny) && !in.First {
					t.Fatalf("frames released by a later fragment: %+v", x)
				}
			}
		}
		h.collect(h.tr.Flush(h.out[:0]))
		if len(h.lent) != 0 {
			t.Fatalf("%d frames never given back", len(h.lent))
		}
	})
}
