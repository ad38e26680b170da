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
// handed out again before their time, and are free after it; a copy-mode
// socket's are free at once. The accounting holds throughout.
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
	zc, copied := lend(1, 4), lend(2, 3)
	account(map[uint32][2]int{1: {4, 0}, 2: {3, 0}}, total-7, 7)

	if n := p.reclaim(1, 100); n != 4 {
		t.Fatalf("reclaimed %d frames of the zero-copy socket, want 4", n)
	}
	if n := p.reclaim(2, 0); n != 3 {
		t.Fatalf("reclaimed %d frames of the copy-mode socket, want 3", n)
	}
	account(nil, total-4, 4)
	p.settle(99)
	account(nil, total-4, 4)
	var got []uint64
	for {
		addr, ok := p.alloc()
		if !ok {
			break
		}
		if zc[addr] {
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
	if len(got) != total-4 || back != len(copied) {
		t.Errorf("handed out %d frames, %d of the copy-mode socket's; want %d, all %d of them", len(got), back, total-4, len(copied))
	}
	for _, addr := range got {
		p.release(addr)
	}
	p.settle(100)
	account(nil, total, 0)
}
