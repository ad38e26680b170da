package frag

import (
	"encoding/binary"
	"hash/maphash"
	"time"
)

// index maps keys to slot numbers 0..n-1 without allocating: a fixed array
// of bucket heads and a chain link per slot. The hash is seeded per index,
// so that a sender cannot aim its identifications at one bucket.
type index struct {
	seed    maphash.Seed
	mask    uint32
	buckets []int32 // first slot of each bucket, -1 for none
	next    []int32 // next slot in the same bucket
	keys    []Key
}

func newIndex(slots int) index {
	nb := 1
	for nb < slots {
		nb <<= 1
	}
	x := index{
		seed:    maphash.MakeSeed(),
		mask:    uint32(nb - 1),
		buckets: make([]int32, nb),
		next:    make([]int32, slots),
		keys:    make([]Key, slots),
	}
	for i := range x.buckets {
		x.buckets[i] = -1
	}
	return x
}

// keyBytes is a Key laid out for hashing.
const keyBytes = 16 + 16 + 4 + 4 + 1 + 1

func (x *index) bucket(k *Key) uint32 {
	var b [keyBytes]byte
	copy(b[0:16], k.Src[:])
	copy(b[16:32], k.Dst[:])
	binary.LittleEndian.PutUint32(b[32:], k.ID)
	binary.LittleEndian.PutUint32(b[36:], k.Zone)
	b[40], b[41] = k.Proto, k.Version
	return uint32(maphash.Bytes(x.seed, b[:])) & x.mask
}

// find returns the slot holding k, or -1.
func (x *index) find(k *Key) int32 {
	for i := x.buckets[x.bucket(k)]; i >= 0; i = x.next[i] {
		if x.keys[i] == *k {
			return i
		}
	}
	return -1
}

// insert files slot under k; the slot must not be in the index.
func (x *index) insert(k *Key, slot int32) {
	b := x.bucket(k)
	x.keys[slot] = *k
	x.next[slot] = x.buckets[b]
	x.buckets[b] = slot
}

// remove takes slot out of the index.
func (x *index) remove(slot int32) {
	p := &x.buckets[x.bucket(&x.keys[slot])]
	for *p >= 0 {
		if *p == slot {
			*p = x.next[slot]
			x.next[slot] = -1
			return
		}
		p = &x.next[*p]
	}
}

// links chain slots into doubly linked lists, oldest first; a slot is on
// at most one list at a time.
type links struct {
	prev, next []int32
}

func newLinks(n int) links {
	return links{prev: make([]int32, n), next: make([]int32, n)}
}

type list struct {
	head, tail int32
	n          int
}

func newList() list { return list{head: -1, tail: -1} }

func (l *list) pushBack(ln *links, i int32) {
	ln.prev[i], ln.next[i] = l.tail, -1
	if l.tail >= 0 {
		ln.next[l.tail] = i
	} else {
		l.head = i
	}
	l.tail = i
	l.n++
}

func (l *list) remove(ln *links, i int32) {
	p, n := ln.prev[i], ln.next[i]
	if p >= 0 {
		ln.next[p] = n
	} else {
		l.head = n
	}
	if n >= 0 {
		ln.prev[n] = p
	} else {
		l.tail = p
	}
	ln.prev[i], ln.next[i] = -1, -1
	l.n--
}

// clock turns the callers' times into nanoseconds since the first call,
// which follow the monotonic clock when the times carry it (time.Now
// does). It never goes backwards: a time before the latest one counts as
// the latest, so that lists kept in arrival order stay in time order.
type clock struct {
	epoch time.Time
	last  int64
	set   bool
}

func (c *clock) at(now time.Time) int64 {
	if !c.set {
		c.epoch, c.set = now, true
	}
	if d := int64(now.Sub(c.epoch)); d > c.last {
		c.last = d
	}
	return c.last
}
