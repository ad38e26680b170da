package policy

import "math/bits"

// A trie128 is the trie for IPv6 keys. IPv6 prefixes cluster deep inside
// long common prefixes (2001:db8::/32 and the like), so its nodes are path
// compressed: a child covers only the span from its first to its last
// boundary, within its parent's slot, and keys before or after that span
// take the node's below or above value. The entry that points to a node
// carries its shift and stride, so a step computes the slot at once and
// reads it together with the node's header (base, below, above); which of
// the three the key gets is settled by arithmetic on the header.
//
// An entry is a value (bit 31 clear), or
//
//	nodeBit | stride<<27 | shift<<20 | offset/4
//
// for a node at offset (a multiple of four words) of 2^stride slots, laid
// out as base and limit (4 words each, most significant first: the span
// is base <= key < limit), below, above, slots. A node's slot bits never
// straddle the key's two 64-bit halves, so a step shifts one of them. A
// bucket is a node of one slot with below, above and slot all its own
// entry, followed by four boundaries of four words and five values; its
// unused boundaries are all ones and its unused values repeat the last.
// Offset 0 holds the dummy bucket.
type trie128 struct {
	root    uint32
	depth   int
	buckets bool
	w       []uint32
}

const (
	e128Stride = 27
	e128Shift  = 20
	e128Off    = 1<<e128Shift - 1
	head128    = 10
	bucket128  = head128 + 1 + 4*bucketLen + bucketLen + 1
)

// find looks up an IPv6 key.
func (t *trie128) find(hi, lo uint64) uint32 {
	a, _ := find128x2(t, t, hi, lo, 0, 0)
	return a
}

// find128x2 looks up two keys in two tries in lockstep, so that the CPU
// works on both dependency chains at once.
func find128x2(a, b *trie128, ahi, alo, bhi, blo uint64) (uint32, uint32) {
	ea, eb := a.root, b.root
	var fa, fb, outa, outb uint32
	for range max(a.depth, b.depth) {
		ea, fa, outa = a.step(ea, fa, outa, ahi, alo)
		eb, fb, outb = b.step(eb, fb, outb, bhi, blo)
	}
	ea, eb = a.finish(ea, ahi, alo), b.finish(eb, bhi, blo)
	return ea ^ (ea^fa)&outa, eb ^ (eb^fb)&outb
}

// step is a node step from node e. The next entry depends on the key's
// bits alone, so that steps follow each other at the pace of loads; the
// node's span check goes alongside: when the key is outside the span, out
// becomes all ones and f the node's below or above value, which is the
// answer (the rest of the walk is then meaningless but harmless). A value
// or a bucket stays as it is.
func (t *trie128) step(e, f, out uint32, hi, lo uint64) (uint32, uint32, uint32) {
	w := t.w
	n := uint32(int32(e) >> 31) // all ones for a node or bucket
	o := (e & e128Off & n) << 2 // else the dummy at 0
	shift, stride := e>>e128Shift&127&n, e>>e128Stride&15&n
	half := lo ^ (lo^hi)&-uint64(shift>>6) // the slot bits are all in one half
	v := w[o+head128+uint32(half>>(shift&63))&(1<<stride-1)]
	h := w[o : o+head128]
	_, br := bits.Sub64(lo, uint64(h[2])<<32|uint64(h[3]), 0)
	_, below := bits.Sub64(hi, uint64(h[0])<<32|uint64(h[1]), br)
	_, br = bits.Sub64(lo, uint64(h[6])<<32|uint64(h[7]), 0)
	_, inside := bits.Sub64(hi, uint64(h[4])<<32|uint64(h[5]), br) // key < limit
	fv := h[9] ^ (h[9]^h[8])&-uint32(below)
	// Outside a real node (buckets have stride 0) the walk ends here.
	fell := (-uint32(below) | (uint32(inside) - 1)) & uint32(-int32(stride)>>31) &^ out
	return e ^ (e^v)&n, f ^ (f^fv)&fell, out | fell
}

// finish takes the rare paths deeper than the usual depth, then resolves
// a bucket.
func (t *trie128) finish(e uint32, hi, lo uint64) uint32 {
	for e&nodeBit != 0 && e>>e128Stride != nodeBit>>e128Stride {
		e = step128(t.w, e, hi, lo)
	}
	if t.buckets {
		e = bucketStep128(t.w, e, hi, lo)
	}
	return e
}

// step128 is a node step: from node e to the entry for the key. A value
// or a bucket stays as it is. No step branches on the key.
func step128(w []uint32, e uint32, hi, lo uint64) uint32 {
	node := uint32(int32(e) >> 31) // all ones for a node or bucket
	o := (e & e128Off & node) << 2 // else the dummy at 0
	shift := e >> e128Shift & 127 & node
	stride := e >> e128Stride & 15 & node
	// The slot: bits shift.. of the key, all in one half.
	half := lo ^ (lo^hi)&-uint64(shift>>6)
	s := uint32(half>>(shift&63)) & (1<<stride - 1)
	v := w[o+head128+s]
	h := w[o : o+head128]
	_, br := bits.Sub64(lo, uint64(h[2])<<32|uint64(h[3]), 0)
	_, below := bits.Sub64(hi, uint64(h[0])<<32|uint64(h[1]), br)
	_, br = bits.Sub64(lo, uint64(h[6])<<32|uint64(h[7]), 0)
	_, inside := bits.Sub64(hi, uint64(h[4])<<32|uint64(h[5]), br) // key < limit
	v ^= (v ^ h[9]) & (uint32(inside) - 1)
	v ^= (v ^ h[8]) & -uint32(below)
	return e ^ (e^v)&node
}

// bucketStep128 resolves a bucket; a value stays as it is.
func bucketStep128(w []uint32, e uint32, hi, lo uint64) uint32 {
	bk := uint32(int32(e) >> 31)
	o := (e&e128Off&bk)<<2 + head128 + 1 // a bucket's boundaries, or the dummy's
	b := w[o : o+4*bucketLen+bucketLen+1]
	lt := func(j int) uint64 { // key < boundary j
		_, br := bits.Sub64(lo, uint64(b[4*j+2])<<32|uint64(b[4*j+3]), 0)
		_, lt := bits.Sub64(hi, uint64(b[4*j])<<32|uint64(b[4*j+1]), br)
		return lt
	}
	return e ^ (e^b[4*bucketLen+4-(lt(0)+lt(1))-(lt(2)+lt(3))])&bk
}

// emptyTrie128 is the trie of a dimension without rules: the dummy alone.
func emptyTrie128() trie128 {
	b := trie128Builder{}
	b.bucket(0, 0, 0)
	return trie128{w: b.w}
}

// buildTrie128 lays out the trie of the intervals that start at keys
// (sorted, keys[0] == 0) and have the values vals.
//
// Every lookup takes the trie's usual depth in node steps, without
// branches; the few paths through crowded slots that go deeper finish with
// a loop, whose branch is then rarely mispredicted. The builder tries a
// usual depth of one, two and more node levels, widening the strides of
// the last level (within a memory bound) until its slots fit buckets, and
// keeps the shallowest that stays within memoryPerKey words per boundary
// and leaves at most one boundary in deepShare deeper.
func buildTrie128(keys []u128, vals []uint32) trie128 {
	budget := memoryPerKey*len(keys) + 4096
	for levels := 1; ; levels++ {
		b := trie128Builder{keys: keys, vals: vals, usual: levels}
		b.bucket(0, 0, 0) // the dummy
		root, depth := b.build(1, len(keys), vals[0], levels, 0)
		if len(b.w) <= budget && b.deep <= len(keys)/deepShare || levels >= 4 {
			return trie128{root: root, depth: min(depth, levels), buckets: b.buckets, w: b.w}
		}
	}
}

type trie128Builder struct {
	w       []uint32
	keys    []u128
	vals    []uint32
	buckets bool
	usual   int // node levels every lookup steps through
	deep    int // boundaries below them
}

// node appends a node over [base, base+2^width), aligned to four words,
// and returns its offset.
func (b *trie128Builder) node(base u128, width, stride uint, below, above uint32) int {
	for len(b.w)%4 != 0 {
		b.w = append(b.w, 0)
	}
	o := len(b.w)
	limit, over := base.add(pow2(width))
	if over || width >= 128 {
		limit = u128{^uint64(0), ^uint64(0)} // the last key takes above, which is its value
	}
	b.w = append(b.w, uint32(base.hi>>32), uint32(base.hi), uint32(base.lo>>32), uint32(base.lo),
		uint32(limit.hi>>32), uint32(limit.hi), uint32(limit.lo>>32), uint32(limit.lo), below, above)
	b.w = append(b.w, make([]uint32, 1<<stride)...)
	return o
}

// bucket appends a bucket of keys[lo:hi] and returns its entry.
func (b *trie128Builder) bucket(lo, hi int, v0 uint32) uint32 {
	o := b.node(u128{}, 128, 0, 0, 0)
	self := nodeBit | uint32(o>>2)
	if o == 0 {
		self = 0 // the dummy
	}
	b.w[o+8], b.w[o+9], b.w[o+10] = self, self, self
	for j := range bucketLen {
		k := u128{^uint64(0), ^uint64(0)}
		if lo+j < hi {
			k = b.keys[lo+j]
		}
		b.w = append(b.w, uint32(k.hi>>32), uint32(k.hi), uint32(k.lo>>32), uint32(k.lo))
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

// build makes the entry for a block that holds the boundaries keys[lo:hi]
// (none at the block's first key) and whose first key has the value v0,
// in at most levels node levels where it can, and returns it with the most
// node steps it takes.
func (b *trie128Builder) build(lo, hi int, v0 uint32, levels, at int) (uint32, int) {
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
	first, last := b.keys[lo], b.keys[hi-1]
	width := u128{first.hi ^ last.hi, first.lo ^ last.lo}.bitLen()
	base := first.andNot(lowMask(width))
	stride := min(uint(bits.Len(uint(m)))+strideExtra, maxStride, width)
	if levels <= 1 {
		// The last level: widen until every slot fits a bucket.
		most := min(maxStride, width, uint(bits.Len(uint(m)))+6)
		if width > 64 {
			most = min(most, width-64)
		}
		for stride < most && b.crowded(lo, hi, base, width-stride) {
			stride++
		}
	}
	if width > 64 && width-stride < 64 {
		stride = width - 64 // keep the slot bits in the high half
	}
	shift := width - stride
	o := b.node(base, width, stride, v0, b.vals[hi-1])
	step := pow2(shift)
	i, cur := lo, v0
	depth := 0
	for j := range 1 << stride {
		start := base.or(u128{0, uint64(j)}.shl(shift))
		for i < hi && !start.less(b.keys[i]) { // keys[i] <= start
			cur = b.vals[i]
			i++
		}
		end, over := start.add(step)
		k := i
		for k < hi && (over || b.keys[k].less(end)) {
			k++
		}
		e, d := b.build(i, k, cur, max(levels-1, 1), at+1)
		b.w[o+head128+j] = e
		depth = max(depth, d)
	}
	return nodeBit | uint32(stride)<<e128Stride | uint32(shift)<<e128Shift | uint32(o>>2), 1 + depth
}

// crowded tells whether a slot of 2^shift keys from base would hold more
// boundaries of keys[lo:hi] than a bucket.
func (b *trie128Builder) crowded(lo, hi int, base u128, shift uint) bool {
	run := 0
	var slot u128
	for i := lo; i < hi; i++ {
		off := b.keys[i].sub(base)
		s := u128{off.hi >> shift, off.lo>>shift | off.hi<<(64-shift)}
		if shift >= 64 {
			s = u128{0, off.hi >> (shift - 64)}
		}
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
