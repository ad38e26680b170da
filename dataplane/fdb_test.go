package dataplane

import (
	"fmt"
	"testing"
	"time"
)

func decideOne(fdb *FDB, frame []byte, in uint32, now int64) (uint32, bool, DropReason, bool) {
	var l learning
	fdb.mu.RLock()
	out, flood, reason, ok := decide(frame, in, nil, fdb, now, &l)
	fdb.mu.RUnlock()
	fdb.apply(&l, now)
	return out.port, flood, reason, ok
}

func TestFDBLearnForwardMove(t *testing.T) {
	fdb := NewFDB(0, 0)
	now := int64(time.Hour)
	// Unknown destination floods, and the source is learned.
	if _, flood, _, ok := decideOne(fdb, ethFrame(macB, macA, 0x1234, nil), 1, now); !ok || !flood {
		t.Fatal("unknown unicast not flooded")
	}
	if _, flood, _, ok := decideOne(fdb, ethFrame(macA, macB, 0x1234, nil), 2, now); !ok || flood {
		t.Fatal("reply to a learned MAC flooded")
	}
	if out, flood, _, ok := decideOne(fdb, ethFrame(macB, macA, 0x1234, nil), 1, now); !ok || flood || out != 2 {
		t.Fatalf("to B: out %d flood %v, want port 2", out, flood)
	}
	// Broadcast always floods.
	if _, flood, _, _ := decideOne(fdb, ethFrame(bcast, macA, 0x1234, nil), 1, now); !flood {
		t.Fatal("broadcast not flooded")
	}
	// A frame to a MAC on its own port is dropped, not reflected: C sits
	// on port 1 beside A.
	macC := []byte{0x02, 0, 0, 0, 0, 0x0c}
	if _, _, reason, ok := decideOne(fdb, ethFrame(macA, macC, 0x1234, nil), 1, now); ok || reason != DropSamePort {
		t.Fatalf("same port: ok %v reason %v", ok, reason)
	}
	// B moves to port 3.
	decideOne(fdb, ethFrame(bcast, macB, 0x1234, nil), 3, now)
	if out, _, _, _ := decideOne(fdb, ethFrame(macB, macA, 0x1234, nil), 1, now); out != 3 {
		t.Fatalf("after move B is on port %d, want 3", out)
	}
	st := fdb.Stats()
	if st.Entries != 3 || st.Learned != 3 || st.Moved != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFDBAging(t *testing.T) {
	fdb := NewFDB(0, 10*time.Second)
	t0 := int64(time.Hour)
	decideOne(fdb, ethFrame(bcast, macA, 0x1234, nil), 1, t0)
	decideOne(fdb, ethFrame(bcast, macB, 0x1234, nil), 2, t0)
	// A keeps talking; its entry is refreshed, B's is not.
	for s := int64(1); s <= 12; s++ {
		decideOne(fdb, ethFrame(bcast, macA, 0x1234, nil), 1, t0+s*int64(time.Second))
	}
	fdb.expire(t0 + 12*int64(time.Second))
	if _, ok := fdb.lookup(macKey(macA)); !ok {
		t.Error("active MAC aged out")
	}
	if _, ok := fdb.lookup(macKey(macB)); ok {
		t.Error("idle MAC did not age out")
	}
	if fdb.Stats().Aged != 1 {
		t.Errorf("aged = %d, want 1", fdb.Stats().Aged)
	}
}

func TestFDBCapAndFlush(t *testing.T) {
	fdb := NewFDB(3, 0)
	for i := range 5 {
		decideOne(fdb, ethFrame(bcast, []byte{2, 0, 0, 0, 1, byte(i)}, 0x1234, nil), uint32(i%2), 1)
	}
	st := fdb.Stats()
	if st.Entries != 3 || st.Full != 2 {
		t.Fatalf("stats %+v, want 3 entries and 2 refused", st)
	}
	fdb.flushPort(0)
	if n := fdb.Len(); n != 1 {
		t.Fatalf("after flushing port 0: %d entries, want 1", n)
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, size := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("fdb=%d", size), func(b *testing.B) {
			fdb := NewFDB(size+batchSize, 0)
			now := clock()
			frames := make([][]byte, 0, batchSize)
			var l learning
			for i := range size {
				mac := []byte{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
				l.add(macKey(mac), uint32(i%8)+1, &localVTEP)
				if l.n == len(l.macs) {
					fdb.apply(&l, now)
				}
				if len(frames) < batchSize && i%max(1, size/batchSize) == 0 {
					frames = append(frames, ethFrame(mac, []byte{2, 1, 0, 0, 0, byte(len(frames))}, etherTypeIPv4, ipv4(46, 46)))
				}
			}
			fdb.apply(&l, now)
			// Warm up: the sources get learned once, as in steady state.
			fdb.mu.RLock()
			for _, f := range frames {
				decide(f, 0, nil, fdb, now, &l)
			}
			fdb.mu.RUnlock()
			fdb.apply(&l, now)

			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += len(frames) {
				fdb.mu.RLock()
				for _, f := range frames {
					decide(f, 0, nil, fdb, now, &l)
				}
				fdb.mu.RUnlock()
				fdb.apply(&l, now)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/frame")
		})
	}
}
