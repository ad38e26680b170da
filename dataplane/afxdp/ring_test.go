package afxdp

import (
	"testing"
)

// The ring logic is checked against a simulated kernel over plain memory,
// starting just below the uint32 wrap so index overflow is exercised.

func TestRingProduceWrap(t *testing.T) {
	const size = 8
	start := uint32(1<<32 - 3)
	prod, cons, flags := start, start, uint32(0)
	entries := make([]uint64, size)
	r := newRing(&prod, &cons, &flags, entries, true)

	if f := r.free(size); f != size {
		t.Fatalf("free = %d on an empty ring", f)
	}
	next := uint64(0)
	var seen []uint64
	kernelConsume := func(max int) {
		for i := 0; i < max && cons != prod; i++ {
			seen = append(seen, entries[cons&(size-1)])
			cons++
		}
	}
	for round := 0; round < 20; round++ {
		batch := make([]uint64, 5)
		for i := range batch {
			batch[i] = next + uint64(i)
		}
		n := r.produce(batch)
		next += uint64(n)
		if int(prod-cons) > size {
			t.Fatalf("round %d: %d entries outstanding on a ring of %d", round, prod-cons, size)
		}
		if r.outstanding() != prod-cons {
			t.Fatalf("outstanding %d, want %d", r.outstanding(), prod-cons)
		}
		kernelConsume(3)
	}
	kernelConsume(size)
	if uint64(len(seen)) != next {
		t.Fatalf("kernel saw %d entries, %d produced", len(seen), next)
	}
	for i, v := range seen {
		if v != uint64(i) {
			t.Fatalf("entry %d = %d: order or content lost across the wrap", i, v)
		}
	}
	if prod >= start {
		t.Fatalf("producer index %d did not wrap", prod)
	}
	if r.produce(nil) != 0 {
		t.Fatal("produce(nil) produced")
	}
}

func TestRingConsumeWrap(t *testing.T) {
	const size = 4
	start := uint32(1<<32 - 2)
	prod, cons, flags := start, start, uint32(0)
	entries := make([]Desc, size)
	r := newRing(&prod, &cons, &flags, entries, false)

	next := uint64(0)
	kernelProduce := func(n int) {
		for i := 0; i < n && prod-cons < size; i++ {
			entries[prod&(size-1)] = Desc{Addr: next, Len: uint32(next)}
			next++
			prod++
		}
	}
	got := uint64(0)
	out := make([]Desc, 3)
	for round := 0; round < 20; round++ {
		kernelProduce(round%5 + 1)
		n := r.consume(out)
		for _, d := range out[:n] {
			if d.Addr != got || d.Len != uint32(got) {
				t.Fatalf("got %+v, want addr %d", d, got)
			}
			got++
		}
		if cons != r.cachedCons {
			t.Fatal("consumer index not published")
		}
	}
	for r.consume(out) > 0 {
	}
	if r.cachedCons != prod {
		t.Fatalf("left %d entries unconsumed", prod-r.cachedCons)
	}
	flags = 1
	if !r.needsWakeup() {
		t.Fatal("need-wakeup flag not seen")
	}
}
