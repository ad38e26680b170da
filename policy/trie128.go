package policy

import "math/bits"

// A trie128 maps IPv6 keys to the value of the interval they fall in.
// IPv6 prefixes cluster deep inside long common prefixes (2001:db8::/32
// and the like), so its nodes are path compressed: a node covers only the
// span of its boundaries, which may be a small part of its parent's slot.
//
// As in a trie32, the boundaries are one sorted array (keys, and the
// value from each on in vals), the nodes narrow a key down to a leaf, a
// run of the array that the lookup compares the key with, and the root is
// a table that a field of the key's bits indexes.
//
// A step picks the next entry from the key's bits alone, so steps follow
// each other at the pace of loads; a key outside the span of a node it
// went through (it left the clusters on the way) ends in a leaf that is
// not its own. The leaf finds that out: it also compares the key with the
// boundary before its run and the one after, and the comparisons give the
// key's interval exactly when the key is at or above the first and below
// the last. A key that fails takes a binary search of the array; no node
// stores its span. For the same reason a slot holds a leaf or a node,
// never a value, which could not tell.
//
// A slot is
//
//	nodeBit | childBit | stride<<e128Stride | shift<<e128Shift | offset
//
// for a node of 2^stride slots at offset in nodes, the key's bits
// shift..shift+stride-1 (all in one half) picking the slot, or
//
//	nodeBit | offset
//
// for a leaf: the boundary keys[offset] at or below every key of the
// slot, the slot's boundaries after it (at most leaf128Keys), and one
// above every key of the slot. A trie without boundaries has a value as
// its root.
type trie128 struct {
	// The root is a table at rootOff in nodes; the key's bits from
	// rootShift of its high half (rootHi all ones) or its low half
	// (rootHi 0), masked with rootMask, index it. A trie without nodes has
	// a table of one slot.
	rootOff, rootShift, rootMask uint32
	rootHi                       uint64
	depth                        int    // node steps below the root every lookup takes
	leaves                       bool   // or the root is a value
	lo, hi                       uint32 // the trie's boundaries: keys[lo:hi]
	nodes                        []uint32
	keys                         []uint64 // boundaries, high half first
	vals                         []uint32 // the value from each boundary on
}

const (
	e128Stride  = 26
	e128Shift   = 19
	e128Off     = 1<<e128Shift - 1
	leaf128Off  = 1<<30 - 1
	leaf128Keys = 4
	leaf128Len  = leaf128Keys + 2 // boundaries a leaf reads
	leaf128Pad  = 8               // entries after a trie's last, for the windows
)

// find looks up an IPv6 key.
func (t *trie128) find(hi, lo uint64) uint32 {
	e := t.root(t.nodes, hi, lo)
	for range t.depth {
		e = step128(t.nodes, e, hi, lo)
	}
	e = deeper128(t.nodes, e, hi, lo)
	if t.leaves {
		e = t.leaf(t.keys, t.vals, e, hi, lo)
	}
	return e
}

// root is the entry of the root table for the key.
func (t *trie128) root(nodes []uint32, hi, lo uint64) uint32 {
	half := lo ^ (lo^hi)&t.rootHi
	return nodes[t.rootOff+uint32(half>>(t.rootShift&63))&t.rootMask]
}

// leaf resolves a leaf, and searches for a key the leaf does not hold.
// A value stays as it is.
func (t *trie128) leaf(keys []uint64, vals []uint32, e uint32, hi, lo uint64) uint32 {
	v, ok := leaf128(keys, vals, e, hi, lo)
	if !ok {
		v = t.search(keys, vals, hi, lo)
	}
	return v
}

// step128 is a node step: from node e to the entry for the key. A leaf or
// a value stays as it is (and reads the dummy slot 0), as in step32.
func step128(nodes []uint32, e uint32, hi, lo uint64) uint32 {
	n := uint32(int32(e&(e<<1)) >> 31) // all ones for a node
	shift := e >> e128Shift & 127
	half := lo ^ (lo^hi)&-uint64(shift>>6) // the slot bits are all in one half
	j := uint32(half>>(shift&63)) & (1<<(e>>e128Stride&15) - 1)
	return e ^ (e^nodes[(e&e128Off+j)&n])&n
}

// deeper128 takes the rare paths deeper than the usual depth.
func deeper128(nodes []uint32, e uint32, hi, lo uint64) uint32 {
	for e&(e<<1)&nodeBit != 0 {
		e = step128(nodes, e, hi, lo)
	}
	return e
}

// leaf128 resolves a leaf, and tells whether the key was inside it; a
// value stays as it is (and reads the dummy at 0).
func leaf128(keys []uint64, vals []uint32, e uint32, hi, lo uint64) (uint32, bool) {
	m := uint32(int32(e) >> 31) // all ones for a leaf
	o := e & leaf128Off & m
	k := (*[2 * leaf128Len]uint64)(keys[2*o : 2*o+2*leaf128Len])
	v := (*[8]uint32)(vals[o : o+8])
	// Each borrow is 1 when the key is below that boundary.
	_, br := bits.Sub64(lo, k[1], 0)
	_, below := bits.Sub64(hi, k[0], br)
	_, br = bits.Sub64(lo, k[3], 0)
	_, b1 := bits.Sub64(hi, k[2], br)
	_, br = bits.Sub64(lo, k[5], 0)
	_, b2 := bits.Sub64(hi, k[4], br)
	_, br = bits.Sub64(lo, k[7], 0)
	_, b3 := bits.Sub64(hi, k[6], br)
	_, br = bits.Sub64(lo, k[9], 0)
	_, b4 := bits.Sub64(hi, k[8], br)
	_, br = bits.Sub64(lo, k[11], 0)
	_, inside := bits.Sub64(hi, k[10], br)
	c := leaf128Keys - (b1 + b2) - (b3 + b4)
	_ = [1]int{}[leaf128Keys-4] // the comparisons above
	return e ^ (e^v[c&7])&m, uint32(below|(1^inside))&m == 0
}

// search is the lookup by binary search, for keys outside the clusters.
func (t *trie128) search(keys []uint64, vals []uint32, hi, lo uint64) uint32 {
	// The last boundary at or below the key; keys[lo] is 0.
	i, j := t.lo, t.hi
	for j-i > 1 {
		h := i + (j-i)/2
		if (u128{hi, lo}).less(u128{keys[2*h], keys[2*h+1]}) {
			j = h
		} else {
			i = h
		}
	}
	return vals[i]
}

// builder128 lays out the trie128s of a classifier in shared arrays.
type builder128 struct {
	nodes []uint32
	keys  []uint64
	vals  []uint32
}

func newBuilder128() *builder128 {
	// Slot 0 and the first leaf's worth of keys and values are the
	// dummies that lookups holding a value read.
	return &builder128{nodes: []uint32{0}, keys: make([]uint64, 2*leaf128Pad), vals: make([]uint32, leaf128Pad)}
}

// buildTrie128 lays out one trie in arrays of its own (for the tests).
func buildTrie128(keys []u128, vals []uint32) trie128 {
	b := newBuilder128()
	t := b.add(keys, vals)
	b.finish(&t)
	return t
}

// finish points a trie at the builder's arrays, once they are complete.
func (b *builder128) finish(t *trie128) { t.nodes, t.keys, t.vals = b.nodes, b.keys, b.vals }

// add lays out the trie of the intervals that start at keys (sorted,
// keys[0] == 0) and have the values vals.
func (b *builder128) add(keys []u128, vals []uint32) trie128 {
	n := len(keys)
	base := len(b.vals)
	// Pad so that every leaf's windows fit: keys above every key (a key of
	// all ones fails the check and takes the search).
	for j, k := range keys {
		b.keys = append(b.keys, k.hi, k.lo)
		b.vals = append(b.vals, vals[j])
	}
	for range leaf128Pad {
		b.keys = append(b.keys, ^uint64(0), ^uint64(0))
		b.vals = append(b.vals, vals[n-1])
	}
	t := trie128{lo: uint32(base), hi: uint32(base + n), leaves: n > 1}
	if n == 1 {
		t.rootOff = uint32(len(b.nodes))
		b.nodes = append(b.nodes, vals[0])
		return t
	}
	// As for a trie32: the shallowest of a few tries that stays within
	// memory, with the root stride that takes the least.
	start := len(b.nodes)
	var root uint32
	var tb trie128Build
	fits := func(levels int, rootStride uint) bool {
		b.nodes = b.nodes[:start]
		tb = trie128Build{b: b, keys: keys, base: base, deep: make([]int, 130), levels: levels, rootStride: rootStride}
		root = tb.block(1, n, 0)
		return len(b.nodes)-start <= slotsPerKey*n+1024 && tb.deeper() <= n/deepShare
	}
	s0 := rootStride0(n)
	chooseShape(s0, min(maxStride, s0+rootTries), fits, func() int { return len(b.nodes) - start })
	if root&(root<<1)&nodeBit != 0 {
		shift := root >> e128Shift & 127
		t.rootOff, t.rootShift, t.rootMask = root&e128Off, shift&63, 1<<(root>>e128Stride&15)-1
		if shift >= 64 {
			t.rootHi = ^uint64(0)
		}
	} else {
		t.rootOff = uint32(len(b.nodes))
		b.nodes = append(b.nodes, root)
	}
	t.depth = tb.usual(1)
	return t
}

type trie128Build struct {
	b          *builder128
	keys       []u128
	base       int   // where keys[0] is in the shared arrays
	levels     int   // node levels most lookups take
	rootStride uint  // the root's, when there are levels below it
	deep       []int // boundaries in leaves by depth: the root's slots are at 1
}

// deeper counts the boundaries below the usual levels.
func (tb *trie128Build) deeper() int { return deeper(tb.deep, tb.levels) }

func (tb *trie128Build) usual(skip int) int { return usual(tb.deep, skip) }

// block makes the entry for a slot that holds the boundaries keys[lo:hi]
// (all above its first key; keys[lo-1] is at or below it), at depth at.
func (tb *trie128Build) block(lo, hi, at int) uint32 {
	m := hi - lo
	if m <= leaf128Keys {
		tb.deep[min(at, len(tb.deep)-1)] += m
		return nodeBit | uint32(tb.base+lo-1)
	}
	// Path compression: the node covers the span of its boundaries.
	first, last := tb.keys[lo], tb.keys[hi-1]
	width := u128{first.hi ^ last.hi, first.lo ^ last.lo}.bitLen()
	base := first.andNot(lowMask(width))
	most := min(maxStride, width)
	if width > 64 {
		most = min(most, width-64)
	}
	var stride uint
	switch {
	case at == 0 && tb.rootStride > 0:
		stride = min(tb.rootStride, most)
	case at < tb.levels-1:
		stride = min(most, max(1, uint(bits.Len(uint(m/keysPerSlot)))-1))
	default:
		most = min(most, uint(bits.Len(uint(m)))+widen)
		stride = 1
		for stride < most && tb.crowded(lo, hi, base, width-stride) > m/crowdShare {
			stride++
		}
	}
	if width > 64 && width-stride < 64 {
		stride = width - 64 // keep the slot bits in the high half
	}
	shift := width - stride
	b := tb.b
	o := len(b.nodes)
	b.nodes = append(b.nodes, make([]uint32, 1<<stride)...)
	step := pow2(shift)
	i := lo
	for j := range 1 << stride {
		s := base.or(u128{0, uint64(j)}.shl(shift))
		for i < hi && !s.less(tb.keys[i]) { // keys[i] <= s
			i++
		}
		end, over := s.add(step)
		k := i
		for k < hi && (over || tb.keys[k].less(end)) {
			k++
		}
		b.nodes[o+j] = tb.block(i, k, at+1)
	}
	return nodeBit | childBit | uint32(stride)<<e128Stride | uint32(shift)<<e128Shift | uint32(o)
}

// crowded counts the boundaries of keys[lo:hi] in slots of 2^shift keys
// from base that hold more than a leaf's worth (above their first key).
func (tb *trie128Build) crowded(lo, hi int, base u128, shift uint) int {
	n, run := 0, 0
	var slot u128
	first := true
	for _, k := range tb.keys[lo:hi] {
		off := k.sub(base)
		if off.and(lowMask(shift)) == (u128{}) {
			continue // at the slot's first key: not in it
		}
		s := u128{off.hi >> shift, off.lo>>shift | off.hi<<(64-shift)}
		if shift >= 64 {
			s = u128{0, off.hi >> (shift - 64)}
		}
		if first || s != slot {
			slot, run, first = s, 0, false
		}
		run++
		switch {
		case run == leaf128Keys+1:
			n += run
		case run > leaf128Keys+1:
			n++
		}
	}
	return n
}
