package policy

import "math/bits"

// A trie32 is the trie for keys of up to 32 bits: IPv4 addresses and
// ports. It has no path compression, which IPv4 clusters do not need, so a
// node is nothing but its slots: every node covers a whole slot of its
// parent, and the entry that points to it carries its shift and stride.
// A node step is then one load.
//
// An entry is a value (bit 31 clear, as in trie128), or
//
//	nodeBit | stride<<27 | shift<<22 | offset
//
// for a node of 2^stride slots, the key's bits shift..shift+stride-1
// picking the slot. A bucket is an entry with stride 0: its first word is
// the entry itself, so a node step keeps it, followed by four boundaries
// and five values. Offset 0 holds the dummy bucket, whose first word a
// node step reads for values (and throws away).
type trie32 struct {
	root    uint32
	depth   int
	buckets bool
	w       []uint32
}

const (
	e32Stride = 27
	e32Shift  = 22
	e32Off    = 1<<e32Shift - 1
	bucket32  = 1 + 2*bucketLen + 1
)

// find looks up a key.
func (t *trie32) find(key uint32) uint32 {
	a, _ := find32x2(t, t, key, 0)
	return a
}

// find32x2 looks up two keys in two tries in lockstep, so that the CPU
// works on both dependency chains at once. No step branches on the key:
// selections are arithmetic, and a lookup that holds a value goes on
// reading the dummy and keeps it.
func find32x2(a, b *trie32, ka, kb uint32) (uint32, uint32) {
	ea, eb := a.root, b.root
	for range max(a.depth, b.depth) {
		ea, eb = a.step(ea, ka), b.step(eb, kb)
	}
	ea, eb = a.deeper(ea, ka), b.deeper(eb, kb)
	if a.buckets || b.buckets {
		ea, eb = a.bucket(ea, ka), b.bucket(eb, kb)
	}
	return ea, eb
}

// find32x4 is find32x2 for four lookups.
func find32x4(a, b, c, d *trie32, ka, kb, kc, kd uint32) (uint32, uint32, uint32, uint32) {
	ea, eb, ec, ed := a.root, b.root, c.root, d.root
	for range max(a.depth, b.depth, c.depth, d.depth) {
		ea, eb, ec, ed = a.step(ea, ka), b.step(eb, kb), c.step(ec, kc), d.step(ed, kd)
	}
	ea, eb, ec, ed = a.deeper(ea, ka), b.deeper(eb, kb), c.deeper(ec, kc), d.deeper(ed, kd)
	if a.buckets || b.buckets || c.buckets || d.buckets {
		ea, eb, ec, ed = a.bucket(ea, ka), b.bucket(eb, kb), c.bucket(ec, kc), d.bucket(ed, kd)
	}
	return ea, eb, ec, ed
}

// step is a node step: from node e to the entry for key k. A value or a
// bucket stays as it is.
func (t *trie32) step(e, k uint32) uint32 {
	n := uint32(int32(e) >> 31) // all ones for a node or bucket
	i := k >> (e >> e32Shift & 31) & (1<<(e>>e32Stride&15) - 1) & n
	return e ^ (e^t.w[e&e32Off&n+i])&n
}

// deeper takes the rare paths deeper than the usual depth.
func (t *trie32) deeper(e, k uint32) uint32 {
	for e&nodeBit != 0 && e>>e32Stride != nodeBit>>e32Stride {
		e = t.w[e&e32Off+k>>(e>>e32Shift&31)&(1<<(e>>e32Stride&15)-1)]
	}
	return e
}

// bucket resolves a bucket; a value stays as it is.
func (t *trie32) bucket(e, k uint32) uint32 {
	bk := uint32(int32(e) >> 31)
	b := t.w[e&e32Off&bk+1:] // a bucket's boundaries, or the dummy's
	// How many boundaries are above the key: 64-bit differences borrow.
	k64 := uint64(k)
	c := (k64-uint64(b[3]))>>63 + (k64-uint64(b[2]))>>63 + (k64-uint64(b[1]))>>63 + (k64-uint64(b[0]))>>63
	return e ^ (e^b[2*bucketLen-c])&bk
}

// buildTrie32 lays out the trie of the intervals that start at keys
// (sorted, keys[0] == 0) and have the values vals, over keys of keyBits
// bits. Like buildTrie128 it keeps the shallowest of a few tries that
// stays within memory.
func buildTrie32(keys []u128, vals []uint32, keyBits uint) trie32 {
	ks := make([]uint32, len(keys))
	for i, k := range keys {
		ks[i] = uint32(k.lo)
	}
	budget := memoryPerKey*len(keys) + 4096
	for levels := 1; ; levels++ {
		b := trie32Builder{keys: ks, vals: vals, usual: levels}
		b.bucket(0, 0, 0) // the dummy
		root, depth := b.build(1, len(ks), vals[0], 0, keyBits, levels, 0)
		if len(b.w) <= budget && b.deep <= len(keys)/deepShare || levels >= 4 {
			return trie32{root: root, depth: min(depth, levels), buckets: b.buckets, w: b.w}
		}
	}
}

// emptyTrie32 is the trie of a dimension without rules: the dummy alone.
func emptyTrie32() trie32 {
	b := trie32Builder{}
	b.bucket(0, 0, 0)
	return trie32{w: b.w}
}

type trie32Builder struct {
	w       []uint32
	keys    []uint32
	vals    []uint32
	buckets bool
	usual   int // node levels every lookup steps through
	deep    int // boundaries below them
}

// bucket appends a bucket of keys[lo:hi] and returns its entry.
func (b *trie32Builder) bucket(lo, hi int, v0 uint32) uint32 {
	o := len(b.w)
	self := nodeBit | uint32(o)
	if o == 0 {
		self = 0 // the dummy
	}
	b.w = append(b.w, self)
	for j := range bucketLen {
		k := ^uint32(0)
		if lo+j < hi {
			k = b.keys[lo+j]
		}
		b.w = append(b.w, k)
	}
	v := v0
	b.w = append(b.w, v0)
	for j := range bucketLen {
		if lo+j < hi {
			v = b.vals[lo+j]
		}
		b.w = append(b.w, v)
	}
	return self
}

// build makes the entry for the block of 2^blockBits keys from base,
// which holds the boundaries keys[lo:hi] (none at base) and whose first
// key has the value v0, in at most levels node levels where it can, at
// node depth at. It returns the entry and the most node steps it takes.
func (b *trie32Builder) build(lo, hi int, v0 uint32, base uint64, blockBits uint, levels, at int) (uint32, int) {
	m := hi - lo
	switch {
	case m == 0:
		return v0, 0
	case m <= bucketLen:
		b.buckets = true
		if at > b.usual {
			b.deep += m
		}
		return b.bucket(lo, hi, v0), 0
	}
	stride := min(uint(bits.Len(uint(m)))+strideExtra, maxStride, blockBits)
	if levels <= 1 {
		// The last level: widen until every slot fits a bucket.
		most := min(maxStride, blockBits, uint(bits.Len(uint(m)))+6)
		for stride < most && b.crowded(lo, hi, base, blockBits-stride) {
			stride++
		}
	}
	shift := blockBits - stride
	o := len(b.w)
	b.w = append(b.w, make([]uint32, 1<<stride)...)
	i, cur := lo, v0
	depth := 0
	for j := range uint64(1) << stride {
		start := base + j<<shift
		for i < hi && uint64(b.keys[i]) <= start {
			cur = b.vals[i]
			i++
		}
		k := i
		for k < hi && uint64(b.keys[k]) < start+1<<shift {
			k++
		}
		e, d := b.build(i, k, cur, start, shift, max(levels-1, 1), at+1)
		b.w[o+int(j)] = e
		depth = max(depth, d)
	}
	return nodeBit | uint32(stride)<<e32Stride | uint32(shift)<<e32Shift | uint32(o), 1 + depth
}

// crowded tells whether a slot of 2^shift keys from base would hold more
// boundaries of keys[lo:hi] than a bucket.
func (b *trie32Builder) crowded(lo, hi int, base uint64, shift uint) bool {
	run := 0
	var slot uint64
	for i := lo; i < hi; i++ {
		s := (uint64(b.keys[i]) - base) >> shift
		if i > lo && s == slot {
			run++
		} else {
			slot, run = s, 1
		}
		if run > bucketLen {
			return true
		}
	}
	return false
}
