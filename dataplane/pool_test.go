package dataplane

import "testing"

// testPool is a pool of n frames without a UMEM behind it.
func testPool(n int) *framePool {
	p := &framePool{frameSize: 2048, state: make([]frameState, n), owner: make([]uint32, n)}
	for i := n - 1; i >= 0; i-- {
		p.free = append(p.free, uint64(i)*p.frameSize)
	}
	return p
}

// TestReclaimSettles: the frames of a closed zero-copy socket are not
// handed out again before their time, and are free after it, each
// socket's on its own time; a copy-mode socket's are free at once. The
// accounting holds throughout.
func TestReclaimSettles(t *testing.T) {
	const total = 16
	p := testPool(total)
	lend := func(port uint32, n int) map[uint64]bool {
		lent := map[uint64]bool{}
		for range n {
			addr, _ := p.alloc()
			p.give(addr, frameFill, port)
			lent[addr] = true
		}
		return lent
	}
	account := func(held map[uint32][2]int, wantFree, wantFill int) {
		t.Helper()
		a, err := p.check(held, nil)
		if err != nil || a.Free != wantFree || a.Fill != wantFill {
			t.Fatalf("frames %+v, %v; want %d free, %d in fill", a, err, wantFree, wantFill)
		}
	}
	zc1, copied, zc3 := lend(1, 4), lend(2, 3), lend(3, 2)
	account(map[uint32][2]int{1: {4, 0}, 2: {3, 0}, 3: {2, 0}}, total-9, 9)

	for _, r := range []struct {
		port     uint32
		settleAt int64
		want     int
	}{{1, 100, 4}, {2, 0, 3}, {3, 200, 2}} {
		if n := p.reclaim(r.port, r.settleAt); n != r.want {
			t.Fatalf("reclaimed %d frames of port %d, want %d", n, r.port, r.want)
		}
	}
	account(nil, total-6, 6)
	p.settle(99)
	account(nil, total-6, 6)
	var got []uint64
	for {
		addr, ok := p.alloc()
		if !ok {
			break
		}
		if zc1[addr] || zc3[addr] {
			t.Fatalf("frame %#x handed out while it settles", addr)
		}
		got = append(got, addr)
	}
	back := 0
	for _, addr := range got {
		if copied[addr] {
			back++
		}
	}
	if len(got) != total-6 || back != len(copied) {
		t.Errorf("handed out %d frames, %d of the copy-mode socket's; want %d, all %d of them", len(got), back, total-6, len(copied))
	}
	for _, addr := range got {
		p.release(addr)
	}
	// A later removal does not hold back the frames of an earlier one.
	p.settle(150)
	account(nil, total-2, 2)
	p.settle(200)
	account(nil, total, 0)
}
