package policy

import "math/bits"

// A trie128 is the trie for IPv6 keys. IPv6 prefixes cluster deep inside
// long common prefixes (2001:db8::/32 and the like), so its nodes are path
// compressed: a child covers only the span from its first to its last
// boundary, within its parent's slot, and keys before or after that span
// take the node's below or above value.
//
// A step picks the next entry from the key's bits alone, like a trie32
// step, so steps follow each other at the pace of loads; the lookup only
// remembers the last node it went through. Spans nest, so a key inside
// that node's span was inside every span on the way, and the walk was
// right; one check at the end settles it. A key outside (it left the
// clusters somewhere on the way) takes a second walk that checks the span
// of every node it meets.
//
// The trie is one []uint64. An entry is a value (bit 31 clear), or
//
//	nodeBit | stride<<27 | shift<<20 | offset
//
// for a node at word offset of 2^stride slots, laid out as base and limit
// (two words each, high half first: the span is base <= key < limit),
// below|above<<32, then the slots, two to a word. A node's slot bits never
// straddle the key's two halves, so a step shifts one of them. A bucket is
// a node of one slot with below, above and slot all its own entry,
// followed by four boundaries (two words each) and five values (two to a
// word); its unused boundaries are all ones and its unused values repeat
// the last. Offset 0 holds the dummy bucket.
type trie128 struct {
	root    uint32
	depth   int
	buckets bool
	w       []uint64
}

const (
	e128Stride = 27
	e128Shift  = 20
	e128Off    = 1<<e128Shift - 1
	head128    = 5                             // words before a node's slots
	bucket128  = 2*bucketLen + bucketLen/2 + 1 // words after a bucket's slot word
)

// find looks up an IPv6 key.
func (t *trie128) find(hi, lo uint64) uint32 {
	a, _ := find128x2(t, t, hi, lo, 0, 0)
	return a
}

// find128x2 looks up two keys in two tries in lockstep, so that the CPU
// works on both dependency chains at once. No step branches on the key:
// selections are arithmetic, and a lookup that holds a value goes on
// reading the dummy and keeps it.
func find128x2(a, b *trie128, ahi, alo, bhi, blo uint64) (uint32, uint32) {
	ea, eb := a.root, b.root
	var la, lb uint32 // the last node of each walk
	wa, wb := a.w, b.w
	for range max(a.depth, b.depth) { // step for both, written out
		na, nb := uint32(int32(ea)>>31), uint32(int32(eb)>>31)
		oa, ob := ea&e128Off&na, eb&e128Off&nb
		sa, sb := ea>>e128Shift&127&na, eb>>e128Shift&127&nb
		ta, tb := ea>>e128Stride&15&na, eb>>e128Stride&15&nb
		ja := uint32((alo^(alo^ahi)&-uint64(sa>>6))>>(sa&63)) & (1<<ta - 1)
		jb := uint32((blo^(blo^bhi)&-uint64(sb>>6))>>(sb&63)) & (1<<tb - 1)
		la ^= (la ^ oa) & uint32(-int32(ta)>>31)
		lb ^= (lb ^ ob) & uint32(-int32(tb)>>31)
		ea ^= (ea ^ uint32(wa[oa+head128+ja>>1]>>(ja&1<<5))) & na
		eb ^= (eb ^ uint32(wb[ob+head128+jb>>1]>>(jb&1<<5))) & nb
	}
	return a.finish(ea, la, ahi, alo), b.finish(eb, lb, bhi, blo)
}

// step is a node step from entry e: the entry the key's bits pick, and
// the node's offset in place of last. A value or a bucket stays as it is,
// and so does last.
func (t *trie128) step(e, last uint32, hi, lo uint64) (uint32, uint32) {
	n := uint32(int32(e) >> 31)                        // all ones for a node or bucket
	isNode := uint32(-int32(e>>e128Stride&15)>>31) & n // a node, not a bucket
	o := e & e128Off & n                               // else the dummy at 0
	shift, stride := e>>e128Shift&127&n, e>>e128Stride&15&n
	half := lo ^ (lo^hi)&-uint64(shift>>6) // the slot bits are all in one half
	j := uint32(half>>(shift&63)) & (1<<stride - 1)
	v := uint32(t.w[o+head128+j>>1] >> (j & 1 << 5))
	return e ^ (e^v)&n, last ^ (last^o)&isNode
}

// finish takes the rare paths deeper than the usual depth, checks the key
// against the last node's span, and resolves a bucket.
func (t *trie128) finish(e, last uint32, hi, lo uint64) uint32 {
	for e&nodeBit != 0 && e>>e128Stride != nodeBit>>e128Stride {
		e, last = t.step(e, last, hi, lo)
	}
	h := (*[4]uint64)(t.w[last : last+4])
	_, br := bits.Sub64(lo, h[1], 0)
	_, below := bits.Sub64(hi, h[0], br)
	_, br = bits.Sub64(lo, h[3], 0)
	_, inside := bits.Sub64(hi, h[2], br) // key < limit
	if below != 0 || inside == 0 && last != 0 {
		return t.checked(hi, lo)
	}
	if t.buckets {
		e = t.bucket(e, hi, lo)
	}
	return e
}

// checked is a lookup that checks the span of every node it meets, for
// keys that leave the clusters.
func (t *trie128) checked(hi, lo uint64) uint32 {
	e := t.root
	for e&nodeBit != 0 && e>>e128Stride != nodeBit>>e128Stride {
		o := e & e128Off
		h := (*[head128]uint64)(t.w[o : o+head128])
		key := u128{hi, lo}
		switch {
		case key.less(u128{h[0], h[1]}):
			return uint32(h[4])
		case !key.less(u128{h[2], h[3]}) && (h[2] != ^uint64(0) || h[3] != ^uint64(0)):
			return uint32(h[4] >> 32)
		}
		e, _ = t.step(e, 0, hi, lo)
	}
	return t.bucket(e, hi, lo)
}

// bucket resolves a bucket; a value stays as it is.
func (t *trie128) bucket(e uint32, hi, lo uint64) uint32 {
	bk := uint32(int32(e) >> 31)
	b := (*[bucket128]uint64)(t.w[e&e128Off&bk+head128+1:]) // a bucket's boundaries, or the dummy's
	// How many boundaries are above the key.
	_, b0 := bits.Sub64(lo, b[1], 0)
	_, b1 := bits.Sub64(lo, b[3], 0)
	_, b2 := bits.Sub64(lo, b[5], 0)
	_, b3 := bits.Sub64(lo, b[7], 0)
	_, b0 = bits.Sub64(hi, b[0], b0)
	_, b1 = bits.Sub64(hi, b[2], b1)
	_, b2 = bits.Sub64(hi, b[4], b2)
	_, b3 = bits.Sub64(hi, b[6], b3)
	c := uint32(bucketLen - b0 - b1 - b2 - b3) // at or below
	return e ^ (e^uint32(b[2*bucketLen+c>>1]>>(c&1<<5)))&bk
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
	budget := memoryPerKey*len(keys)/2 + 2048 // in 64-bit words
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
	w       []uint64
	keys    []u128
	vals    []uint32
	buckets bool
	usual   int // node levels every lookup steps through
	deep    int // boundaries below them
}

// node appends a node over [base, base+2^width) and returns its offset.
func (b *trie128Builder) node(base u128, width, stride uint, below, above uint32) int {
	o := len(b.w)
	limit, over := base.add(pow2(width))
	if over || width >= 128 {
		limit = u128{^uint64(0), ^uint64(0)} // the last key takes above, which is its value
	}
	b.w = append(b.w, base.hi, base.lo, limit.hi, limit.lo, uint64(below)|uint64(above)<<32)
	b.w = append(b.w, make([]uint64, (1<<stride+1)/2)...)
	return o
}

// setSlot sets slot j of the node at o.
func (b *trie128Builder) setSlot(o, j int, e uint32) {
	s := &b.w[o+head128+j/2]
	sh := uint(j&1) * 32
	*s = *s&^(0xffffffff<<sh) | uint64(e)<<sh
}

// bucket appends a bucket of keys[lo:hi] and returns its entry.
func (b *trie128Builder) bucket(lo, hi int, v0 uint32) uint32 {
	o := b.node(u128{}, 128, 0, 0, 0)
	self := nodeBit | uint32(o)
	if o == 0 {
		self = 0 // the dummy
	}
	b.w[o+4] = uint64(self) | uint64(self)<<32
	b.setSlot(o, 0, self)
	for j := range bucketLen {
		k := u128{^uint64(0), ^uint64(0)}
		if lo+j < hi {
			k = b.keys[lo+j]
		}
		b.w = append(b.w, k.hi, k.lo)
	}
	vals := []uint32{v0}
	for j := range bucketLen {
		v := vals[len(vals)-1]
		if lo+j < hi {
			v = b.vals[lo+j]
		}
		vals = append(vals, v)
	}
	b.w = append(b.w, uint64(vals[0])|uint64(vals[1])<<32, uint64(vals[2])|uint64(vals[3])<<32, uint64(vals[4]))
	return self
}

// build makes the entry for a block that holds the boundaries keys[lo:hi]
// (none at the block's first key) and whose first key has the value v0,
// in at most levels node levels where it can, at node depth at, and
// returns it with the most node steps it takes.
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
		b.setSlot(o, j, e)
		depth = max(depth, d)
	}
	return nodeBit | uint32(stride)<<e128Stride | uint32(shift)<<e128Shift | uint32(o), 1 + depth
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
