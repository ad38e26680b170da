package frag

import (
	"testing"
	"time"
)

// checkTracker verifies the counters add up, the caps hold and the held
// frames the tracker lists are the ones it counts.
func checkTracker(t testing.TB, tr *Tracker) TrackerStats {
	t.Helper()
	s := tr.Stats()
	var dropped uint64
	for _, n := range s.Dropped {
		dropped += n
	}
	if got := s.Allowed + s.Denied + dropped + uint64(s.HeldFrames); got != s.In {
		t.Fatalf("fragments do not add up: in %d, allowed %d + denied %d + dropped %d + held %d: %+v",
			s.In, s.Allowed, s.Denied, dropped, s.HeldFrames, s)
	}
	c := tr.cfg
	if s.HeldFrames > c.MaxHeldFrames || s.HeldBytes > c.MaxHeldBytes || s.Datagrams > c.MaxDatagrams || s.Pending > s.Datagrams {
		t.Fatalf("over the caps: %+v, config %+v", s, c)
	}
	list := tr.AppendHeld(nil)
	bytes := 0
	for _, h := range list {
		bytes += int(h.Len)
	}
	if len(list) != s.HeldFrames || bytes != s.HeldBytes || tr.HeldFrames() != s.HeldFrames {
		t.Fatalf("tracker lists %d held frames of %d bytes, counts %d of %d", len(list), bytes, s.HeldFrames, s.HeldBytes)
	}
	for i := tr.pending.head; i >= 0; i = tr.ln.next[i] {
		e := &tr.recs[i]
		if e.heldN == 0 || int(e.heldN) > c.MaxHeldPerDatagram || e.heldLen > int64(c.MaxHeldBytesPerDatagram) {
			t.Fatalf("pending record holds %d frames, %d bytes", e.heldN, e.heldLen)
		}
	}
	return s
}

// harness drives a tracker the way the switching loop does, and checks
// that every frame it lends comes back exactly once.
type harness struct {
	t    testing.TB
	tr   *Tracker
	now  time.Time
	next uint64
	lent map[uint64]bool
	zone uint32 // of the datagrams sent
	out  []Held
	back []Held // frames given back by the last call
}

func newHarness(t testing.TB, cfg TrackerConfig) *harness {
	return &harness{t: t, tr: NewTracker(cfg), now: t0, next: 1, lent: make(map[uint64]bool)}
}

// send runs one packet through Parse and the tracker; a first fragment
// gets verdict v. It returns the outcome and the frame's handle.
func (h *harness) send(p []byte, v Action) (Outcome, uint64) {
	h.t.Helper()
	in, err := Parse(p)
	in.Key.Zone = h.zone
	handle := h.next
	h.next++
	var o Outcome
	out := h.out[:0]
	switch {
	case err != nil:
		o, out = h.tr.Reject(&in, err, h.now, out)
	case !in.IsFragment:
		o = Outcome{Action: Pass}
	case in.First:
		o, out = h.tr.First(&in, v, h.now, out)
	default:
		o, out = h.tr.Later(&in, Held{Handle: handle, Aux: 7, Len: uint32(len(p))}, h.now, out)
	}
	if o.Action == Hold {
		h.lent[handle] = true
	}
	h.collect(out)
	return o, handle
}

func (h *harness) collect(out []Held) {
	h.t.Helper()
	h.back = append(h.back[:0], out...)
	for _, x := range out {
		if !h.lent[x.Handle] {
			h.t.Fatalf("frame %d given back but not held", x.Handle)
		}
		if x.Aux != 7 {
			h.t.Fatalf("frame %d lost its Aux", x.Handle)
		}
		if x.Action != Allow && x.Action != Deny && x.Action != Drop {
			h.t.Fatalf("frame %d given back with %v", x.Handle, x.Action)
		}
		delete(h.lent, x.Handle)
	}
	h.out = out
	checkTracker(h.t, h.tr)
}

func (h *harness) expire(at time.Time) {
	h.now = at
	h.collect(h.tr.Expire(at, h.out[:0]))
}

// backed reports the handles given back by the last call with action a.
func (h *harness) backed(a Action) []uint64 {
	var hs []uint64
	for _, x := range h.back {
		if x.Action == a {
			hs = append(hs, x.Handle)
		}
	}
	return hs
}

func want(t testing.TB, got Outcome, a Action, r Reason) {
	t.Helper()
	if got.Action != a || got.Reason != r {
		t.Fatalf("outcome %v/%v, want %v/%v", got.Action, got.Reason, a, r)
	}
}

func udpFrags4(id uint16, n int) [][]byte {
	h := hdr4{src: src4, dst: dst4, id: id, proto: protoUDP}
	return frag4(h, udp(1, 2, pattern(n, byte(id))), 512)
}

func TestTrackerVerdictOnFirst(t *testing.T) {
	for _, v := range []Action{Allow, Deny} {
		t.Run(v.String(), func(t *testing.T) {
			h := newHarness(t, TrackerConfig{})
			frags := udpFrags4(1, 2000) // 4 fragments
			o, _ := h.send(frags[0], v)
			want(t, o, v, ReasonNone)
			for _, f := range frags[1:] {
				o, _ := h.send(f, Allow)
				want(t, o, v, ReasonNone)
			}
			s := h.tr.Stats()
			if s.Datagrams != 0 || s.Completed != 1 || s.Firsts != 1 {
				t.Fatalf("a complete datagram is forgotten: %+v", s)
			}
			// Not fragments: not the tracker's.
			o, _ = h.send(whole4(hdr4{proto: protoUDP}, udp(1, 2, nil)), Allow)
			want(t, o, Pass, ReasonNone)
		})
	}
}

func TestTrackerHoldsUntilFirst(t *testing.T) {
	for _, v := range []Action{Allow, Deny} {
		t.Run(v.String(), func(t *testing.T) {
			h := newHarness(t, TrackerConfig{})
			frags := udpFrags4(2, 2000)
			var held []uint64
			for _, f := range reversed(frags[1:]) {
				o, handle := h.send(f, Allow)
				want(t, o, Hold, ReasonNone)
				held = append(held, handle)
			}
			if s := h.tr.Stats(); s.HeldFrames != 3 || s.Pending != 1 {
				t.Fatalf("stats %+v", s)
			}
			o, _ := h.send(frags[0], v)
			want(t, o, v, ReasonNone)
			got := h.backed(v)
			if len(got) != 3 || got[0] != held[0] || got[1] != held[1] || got[2] != held[2] {
				t.Fatalf("released %v, want %v in arrival order", got, held)
			}
			if len(h.lent) != 0 || h.tr.Stats().Datagrams != 0 {
				t.Fatalf("after release: %+v", h.tr.Stats())
			}
		})
	}
}

func TestTrackerHeldTimeout(t *testing.T) {
	h := newHarness(t, TrackerConfig{Timeout: 5 * time.Second})
	frags := udpFrags4(3, 2000)
	h.send(frags[2], Allow)
	h.now = h.now.Add(2 * time.Second)
	h.send(frags[1], Allow)
	h.expire(t0.Add(4 * time.Second))
	if len(h.lent) != 2 {
		t.Fatal("dropped before the timeout")
	}
	h.expire(t0.Add(5 * time.Second))
	if len(h.lent) != 0 || len(h.backed(Drop)) != 2 || h.back[0].Reason != ReasonTimeout {
		t.Fatalf("given back %+v", h.back)
	}
	s := checkTracker(t, h.tr)
	if s.Dropped["timed_out"] != 2 || s.DroppedDatagrams["timed_out"] != 1 || s.Datagrams != 0 {
		t.Fatalf("stats %+v", s)
	}
	// The first, late: a new datagram as far as the tracker knows.
	o, _ := h.send(frags[0], Allow)
	want(t, o, Allow, ReasonNone)

	// A verdict is forgotten after the timeout too.
	frags = udpFrags4(4, 2000)
	h.send(frags[0], Deny)
	h.expire(h.now.Add(5 * time.Second))
	o, _ = h.send(frags[1], Allow)
	want(t, o, Hold, ReasonNone)
}

// TestTrackerForget drops the datagrams of one zone, as the switch does
// for a port that goes away, and leaves the others be.
func TestTrackerForget(t *testing.T) {
	h := newHarness(t, TrackerConfig{})
	a, b, c := udpFrags4(20, 2000), udpFrags4(21, 2000), udpFrags4(22, 2000)
	h.zone = 1
	_, a2 := h.send(a[2], Allow)
	_, a1 := h.send(a[1], Allow)
	want(t, func() Outcome { o, _ := h.send(c[0], Deny); return o }(), Deny, ReasonNone)
	h.zone = 2
	_, b1 := h.send(b[1], Allow)

	h.collect(h.tr.Forget(func(zone uint32) bool { return zone == 1 }, Drop, h.out[:0]))
	if got := h.backed(Drop); len(got) != 2 || got[0] != a2 || got[1] != a1 || h.back[0].Reason != ReasonEvicted {
		t.Fatalf("given back %+v, want frames %d and %d dropped as evicted", h.back, a2, a1)
	}
	if !h.lent[b1] {
		t.Fatal("another zone's frame was given back")
	}
	if s := checkTracker(t, h.tr); s.DroppedDatagrams["evicted"] != 1 || s.Datagrams != 1 || s.Pending != 1 {
		t.Fatalf("stats %+v", s)
	}
	// Zone 1 starts afresh: no verdict, nothing held.
	h.zone = 1
	o, _ := h.send(c[1], Allow)
	want(t, o, Hold, ReasonNone)
	o, _ = h.send(a[0], Allow)
	want(t, o, Allow, ReasonNone)
	if len(h.back) != 0 {
		t.Fatalf("a forgotten frame came back: %+v", h.back)
	}
	// Zone 2 goes on as before.
	h.zone = 2
	o, _ = h.send(b[0], Deny)
	want(t, o, Deny, ReasonNone)
	if got := h.backed(Deny); len(got) != 1 || got[0] != b1 {
		t.Fatalf("zone 2 released %+v, want frame %d denied", h.back, b1)
	}

	// A zone whose rules are gone: its held frames go on, allowed.
	h.zone = 3
	d := udpFrags4(23, 2000)
	_, d1 := h.send(d[1], Allow)
	h.collect(h.tr.Forget(func(zone uint32) bool { return zone == 3 }, Allow, h.out[:0]))
	if got := h.backed(Allow); len(got) != 1 || got[0] != d1 || h.back[0].Reason != ReasonNone {
		t.Fatalf("given back %+v, want frame %d allowed", h.back, d1)
	}
	if s := checkTracker(t, h.tr); s.Pending != 1 || s.Released != 2 { // zone 1 waits for c[0]
		t.Fatalf("stats %+v", s)
	}
}

func TestTrackerOverlap(t *testing.T) {
	hd := hdr4{src: src4, dst: dst4, id: 5, proto: protoUDP}
	payload := udp(1, 2, pattern(200, 1))

	// After the verdict: the overlapping fragment and the rest go.
	h := newHarness(t, TrackerConfig{})
	want(t, first(h, ipv4(hd, 0, true, payload[:64], nil), Allow), Allow, ReasonNone)
	o, _ := h.send(ipv4(hd, 64, true, payload[64:128], nil), Allow)
	want(t, o, Allow, ReasonNone)
	o, _ = h.send(ipv4(hd, 120, true, payload[120:136], nil), Allow)
	want(t, o, Drop, ReasonOverlap)
	o, _ = h.send(ipv4(hd, 136, false, payload[136:], nil), Allow)
	want(t, o, Drop, ReasonOverlap)
	// A second first fragment (a rewrite of the header) is an overlap.
	hd.id = 6
	want(t, first(h, ipv4(hd, 0, true, payload[:64], nil), Deny), Deny, ReasonNone)
	want(t, first(h, ipv4(hd, 0, true, payload[:64], nil), Allow), Drop, ReasonOverlap)

	// Before the verdict: the held frames go with it, and the first.
	hd.id = 7
	h.send(ipv4(hd, 64, true, payload[64:128], nil), Allow)
	h.send(ipv4(hd, 128, false, payload[128:], nil), Allow)
	o, _ = h.send(ipv4(hd, 96, true, payload[96:104], nil), Allow)
	want(t, o, Drop, ReasonOverlap)
	if len(h.backed(Drop)) != 2 || len(h.lent) != 0 {
		t.Fatalf("held frames of an overlapping datagram: %+v", h.back)
	}
	want(t, first(h, ipv4(hd, 0, true, payload[:64], nil), Allow), Drop, ReasonOverlap)

	// The first overlapping what is held.
	hd.id = 8
	h.send(ipv4(hd, 64, true, payload[64:128], nil), Allow)
	want(t, first(h, ipv4(hd, 0, true, payload[:72], nil), Allow), Drop, ReasonOverlap)
	if len(h.backed(Drop)) != 1 || len(h.lent) != 0 {
		t.Fatalf("held frames: %+v", h.back)
	}

	// Lengths that contradict the last fragment.
	hd.id = 9
	h.send(ipv4(hd, 128, false, payload[128:], nil), Allow)
	o, _ = h.send(ipv4(hd, 208, true, pattern(8, 0), nil), Allow)
	want(t, o, Drop, ReasonBadFragment)
	s := checkTracker(t, h.tr)
	if s.DroppedDatagrams["overlap"] != 4 || s.DroppedDatagrams["bad_fragment"] != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func first(h *harness, p []byte, v Action) Outcome {
	o, _ := h.send(p, v)
	return o
}

func TestTrackerTinyFirst(t *testing.T) {
	// RFC 1858: a TCP first fragment of 16 bytes hides the flags.
	tcp := hdr4{src: src4, dst: dst4, id: 10, proto: protoTCP}
	seg := pattern(100, 1)
	h := newHarness(t, TrackerConfig{})
	h.send(ipv4(tcp, 24, false, seg[24:], nil), Allow) // held
	want(t, first(h, ipv4(tcp, 0, true, seg[:16], nil), Allow), Drop, ReasonTinyFirst)
	if len(h.backed(Drop)) != 1 || h.back[0].Reason != ReasonTinyFirst {
		t.Fatalf("held frame of a tiny-first datagram: %+v", h.back)
	}
	o, _ := h.send(ipv4(tcp, 24, false, seg[24:], nil), Allow)
	want(t, o, Drop, ReasonTinyFirst)
	// RFC 1858 §3.2: TCP at offset 8 rewrites the flags.
	tcp.id = 11
	want(t, first(h, ipv4(tcp, 0, true, seg[:24], nil), Allow), Allow, ReasonNone)
	o, _ = h.send(ipv4(tcp, 8, false, seg[8:], nil), Allow)
	want(t, o, Drop, ReasonHeaderOverwrite)
	o, _ = h.send(ipv4(tcp, 24, false, seg[24:], nil), Allow)
	want(t, o, Drop, ReasonHeaderOverwrite)

	// RFC 7112: an IPv6 first fragment without the whole chain.
	h6 := hdr6{src: src6, dst: dst6, id: 12}
	dopts := ext(protoDstOpts, protoUDP, 24)
	frags := frag6(h6, []uint8{protoHopByHop}, protoDstOpts, append(dopts, udp(1, 2, pattern(64, 0))...), 16)
	h.send(frags[1], Allow)
	want(t, first(h, frags[0], Allow), Drop, ReasonTinyFirst)
	for _, f := range frags[2:] {
		o, _ := h.send(f, Allow)
		want(t, o, Drop, ReasonTinyFirst)
	}
	n6 := len(frags)
	// The same datagram cut after the UDP header is fine.
	h6.id = 13
	frags = frag6(h6, []uint8{protoHopByHop}, protoDstOpts, append(dopts, udp(1, 2, pattern(64, 0))...), 32)
	want(t, first(h, frags[0], Deny), Deny, ReasonNone)
	s := checkTracker(t, h.tr)
	if s.Dropped["tiny_first"] != uint64(3+n6) || s.Dropped["header_overwrite"] != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTrackerExtensionHeaderLimits(t *testing.T) {
	h := newHarness(t, TrackerConfig{})
	h6 := hdr6{src: src6, dst: dst6, id: 14}
	many := make([]uint8, MaxExtHeaders)
	for i := range many {
		many[i] = protoDstOpts
	}
	// The chain limit counts headers on both sides of the Fragment
	// header: MaxExtHeaders-1 before it, the Fragment header, and one
	// Destination Options after it is one too many.
	after, nh := chain([]uint8{protoDstOpts}, protoUDP)
	frags := frag6(h6, many[:MaxExtHeaders-1], nh, append(after, udp(1, 2, pattern(100, 0))...), 64)
	want(t, first(h, frags[0], Allow), Drop, ReasonTooManyHeaders)
	// Its later fragments stop at the Fragment header, so they parse;
	// they are dropped with their datagram.
	o, _ := h.send(frags[1], Allow)
	want(t, o, Drop, ReasonTooManyHeaders)
	// Without the extra header it is fine.
	h6.id = 15
	frags = frag6(h6, many[:MaxExtHeaders-1], protoUDP, udp(1, 2, pattern(100, 0)), 64)
	want(t, first(h, frags[0], Allow), Allow, ReasonNone)
	o, _ = h.send(frags[1], Deny)
	want(t, o, Allow, ReasonNone)
	checkTracker(t, h.tr)
}

func TestTrackerIPv6KeyIgnoresProtocol(t *testing.T) {
	// RFC 8200: IPv6 fragments are one datagram by addresses and ID.
	h := newHarness(t, TrackerConfig{})
	h6 := hdr6{src: src6, dst: dst6, id: 16}
	frags := frag6(h6, nil, protoUDP, udp(1, 2, pattern(100, 0)), 64)
	other := frag6(h6, nil, protoTCP, pattern(108, 0), 64)
	want(t, first(h, frags[0], Deny), Deny, ReasonNone)
	o, _ := h.send(other[1], Allow)
	want(t, o, Deny, ReasonNone)
	// Zones keep address spaces apart.
	in := mustParse(t, frags[0])
	in.Key.Zone = 2
	o, _ = h.tr.First(&in, Allow, h.now, nil)
	want(t, o, Allow, ReasonNone)
}

func TestTrackerHoldCaps(t *testing.T) {
	// Per datagram: the fifth held frame drops the datagram.
	h := newHarness(t, TrackerConfig{MaxHeldPerDatagram: 4})
	frags := udpFrags4(20, 4000)
	for i, f := range frags[1:6] {
		o, _ := h.send(f, Allow)
		if i < 4 {
			want(t, o, Hold, ReasonNone)
		} else {
			want(t, o, Drop, ReasonHoldLimit)
		}
	}
	if len(h.backed(Drop)) != 4 || len(h.lent) != 0 {
		t.Fatalf("held frames: %+v", h.back)
	}
	want(t, first(h, frags[0], Allow), Drop, ReasonHoldLimit)

	// Per datagram in bytes, and a frame too big to hold at all.
	h = newHarness(t, TrackerConfig{MaxHeldBytesPerDatagram: 1200})
	frags = udpFrags4(21, 4000)
	want(t, first(h, frags[1], Allow), Hold, ReasonNone)
	want(t, first(h, frags[2], Allow), Hold, ReasonNone)
	want(t, first(h, frags[3], Allow), Drop, ReasonHoldLimit)
	in := mustParse(t, udpFrags4(22, 4000)[1])
	o, _ := h.tr.Later(&in, Held{Handle: 99, Len: 1201}, h.now, nil)
	want(t, o, Drop, ReasonHoldLimit)

	// Globally: the datagrams that waited longest make room.
	h = newHarness(t, TrackerConfig{MaxHeldFrames: 6, MaxHeldBytes: 1 << 20})
	for id := range 5 {
		h.now = t0.Add(time.Duration(id) * time.Second)
		for _, f := range udpFrags4(uint16(30+id), 1500)[1:3] {
			o, _ := h.send(f, Allow)
			want(t, o, Hold, ReasonNone)
		}
	}
	s := checkTracker(t, h.tr)
	if s.HeldFrames != 6 || s.Pending != 3 || s.DroppedDatagrams["over_memory"] != 2 || s.Dropped["over_memory"] != 4 {
		t.Fatalf("stats %+v", s)
	}
	// The oldest went: 30 and 31; 32 to 34 are released.
	want(t, first(h, udpFrags4(30, 1500)[0], Allow), Allow, ReasonNone)
	if len(h.back) != 0 {
		t.Fatalf("released frames of an evicted datagram: %+v", h.back)
	}
	want(t, first(h, udpFrags4(34, 1500)[0], Allow), Allow, ReasonNone)
	if len(h.backed(Allow)) != 2 {
		t.Fatalf("newest datagram's frames: %+v", h.back)
	}
}

func TestTrackerDatagramCap(t *testing.T) {
	h := newHarness(t, TrackerConfig{MaxDatagrams: 8})
	for id := range 12 {
		h.now = t0.Add(time.Duration(id) * time.Millisecond)
		frags := udpFrags4(uint16(id), 1500)
		if id%2 == 0 {
			want(t, first(h, frags[0], Deny), Deny, ReasonNone)
		} else {
			o, _ := h.send(frags[1], Allow)
			want(t, o, Hold, ReasonNone)
		}
	}
	s := checkTracker(t, h.tr)
	if s.Datagrams != 8 || s.DroppedDatagrams["evicted"] != 2 || s.Dropped["evicted"] != 2 {
		t.Fatalf("stats %+v", s)
	}
	// Records 0..3 were evicted: 0 and 2 forgot their verdict, 1 and 3
	// lost their held frame.
	o, _ := h.send(udpFrags4(0, 1500)[1], Allow)
	want(t, o, Hold, ReasonNone)
	o, _ = h.send(udpFrags4(10, 1500)[1], Allow)
	want(t, o, Deny, ReasonNone)
	checkTracker(t, h.tr)
}

func TestTrackerFlood(t *testing.T) {
	// A flood of later fragments with fresh IDs never finds its first.
	cfg := TrackerConfig{MaxDatagrams: 64, MaxHeldFrames: 32, MaxHeldBytes: 16 << 10, MaxHeldPerDatagram: 4, Timeout: time.Second}
	tr := NewTracker(cfg)
	hd := hdr4{src: src4, dst: dst4, proto: protoUDP}
	pkt := ipv4(hd, 1480, true, pattern(1480, 1), nil)
	in := mustParse(t, pkt)
	out := make([]Held, 0, cfg.MaxHeldFrames)
	lent := make(map[uint64]bool)
	var handle uint64
	now := t0
	step := func() {
		handle++
		in.Key.ID = uint32(uint16(handle))
		now = now.Add(time.Millisecond)
		var o Outcome
		o, out = tr.Later(&in, Held{Handle: handle, Len: uint32(len(pkt))}, now, out[:0])
		if o.Action == Hold && lent != nil {
			lent[handle] = true
		}
		for _, x := range out {
			if lent != nil {
				if !lent[x.Handle] {
					t.Fatalf("frame %d given back twice or never held", x.Handle)
				}
				delete(lent, x.Handle)
			}
		}
	}
	for range 5000 {
		step()
		if tr.HeldFrames() > cfg.MaxHeldFrames || tr.heldLen > int64(cfg.MaxHeldBytes) {
			t.Fatalf("held %d frames, %d bytes", tr.HeldFrames(), tr.heldLen)
		}
	}
	s := checkTracker(t, tr)
	if len(lent) != s.HeldFrames || s.Dropped["over_memory"] == 0 {
		t.Fatalf("stats %+v, %d lent", s, len(lent))
	}
	lent = nil // no map writes while counting allocations
	if n := testing.AllocsPerRun(10000, step); n != 0 {
		t.Fatalf("%v allocations per fragment in a flood", n)
	}
	checkTracker(t, tr)
	// Everything comes back.
	n := tr.HeldFrames()
	out = tr.Flush(out[:0])
	if len(out) != n || tr.HeldFrames() != 0 {
		t.Fatalf("flush gave back %d frames of %d, left %d", len(out), n, tr.HeldFrames())
	}
	for _, x := range out {
		if x.Action != Drop || x.Handle <= handle-uint64(cfg.MaxHeldFrames) {
			t.Fatalf("flushed %+v", x)
		}
	}
	if s := checkTracker(t, tr); s.Datagrams != 0 || s.HeldBytes != 0 {
		t.Fatalf("after flush: %+v", s)
	}
}

func TestTrackerSteadyStateAllocs(t *testing.T) {
	// Ordinary fragmented traffic: firsts, laters, some out of order.
	tr := NewTracker(TrackerConfig{})
	var pkts [][]Info
	for id := range 256 {
		var ins []Info
		for _, f := range udpFrags4(uint16(id), 3000) {
			ins = append(ins, mustParse(t, f))
		}
		pkts = append(pkts, ins)
	}
	out := make([]Held, 0, tr.cfg.MaxHeldFrames)
	now := t0
	i := 0
	run := func() {
		ins := pkts[i%len(pkts)]
		i++
		now = now.Add(time.Microsecond)
		// The second fragment before the first, then the rest.
		_, out = tr.Later(&ins[1], Held{Handle: uint64(i), Len: 1500}, now, out[:0])
		_, out = tr.First(&ins[0], Allow, now, out[:0])
		for k := 2; k < len(ins); k++ {
			_, out = tr.Later(&ins[k], Held{Handle: uint64(i), Len: 1500}, now, out[:0])
		}
		tr.Expire(now, out[:0])
	}
	if n := testing.AllocsPerRun(5000, run); n != 0 {
		t.Fatalf("%v allocations per datagram", n)
	}
	if s := checkTracker(t, tr); s.Datagrams != 0 || s.Dropped["overlap"] != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStatsFromOtherGoroutines(t *testing.T) {
	// Stats is the one method other goroutines may call (go test -race).
	tr := NewTracker(TrackerConfig{})
	r := NewReassembler(ReassemblerConfig{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				_ = tr.Stats()
				_ = r.Stats()
			}
		}
	}()
	h := newHarness(t, TrackerConfig{})
	h.tr = tr
	for id := range 200 {
		frags := udpFrags4(uint16(id), 1500)
		h.send(frags[1], Allow)
		h.send(frags[0], Allow)
		h.send(frags[2], Allow)
		feed(t, r, t0, frags)
	}
	close(stop)
	<-done
	if s := tr.Stats(); s.Allowed != 600 || s.Completed != 200 || r.Stats().Reassembled != 200 {
		t.Fatalf("stats %+v", s)
	}
}
