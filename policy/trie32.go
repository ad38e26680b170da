package policy

import "math/bits"

// A trie32 maps keys of up to 32 bits (IPv4 addresses, ports) to the
// value of the interval they fall in. Its root covers only the aligned
// block that the boundaries lie in, which skips the prefix that a
// network's addresses share; below the root there is no path
// compression, which IPv4 clusters do not need: a node covers a whole
// slot of its parent.
//
// The boundaries of the intervals are one sorted array, kv, each next to
// the value of the interval that ends there; the nodes only narrow a key
// down to a leaf, a run of at most leafKeys boundaries that the lookup
// compares the key with, all at once. A slot that holds no boundary holds
// its value instead. So the trie stores each boundary once, in 8 bytes,
// and its nodes need only a few slots a boundary: small, it stays in the
// caches. All the trie32s of a classifier share one node array and one
// kv, so four lookups need two base pointers, not eight.
//
// The root is a table that the key's top bits index: its step needs no
// entry to decode. A slot (an entry) is a value (bit 31 clear), or
//
//	nodeBit | childBit | (16-stride)<<e32Down | (32-shift-stride)<<e32Up | offset
//
// for a node of 2^stride slots (stride 1 to 16) at offset in nodes, the
// key's bits shift..shift+stride-1 picking the slot: shifted up by
// 32-shift-stride, to drop the bits above them, then down by 32-stride.
// childBit is the top bit of that down shift's five-bit field, 16 to 31,
// and the shift instructions take the five low bits of their counts, so
// a step decodes the counts with a shift each and no mask. Or
//
//	nodeBit | offset
//
// for a leaf: the boundaries kv[offset:offset+leafKeys] (those past the
// slot's own are above every key in it) and the values that end at each.
//
// Port tries, whose keys have 16 bits, usually do without leaves: a root
// and nodes down to single ports, if that takes few slots a boundary,
// because a node step costs less than a leaf.
type trie32 struct {
	// The root is a table at rootOff in nodes; the key's top bits, those
	// that rootUp shifts above the low 32 of a uint64, index it. The zero
	// trie32 has the dummy slot as its root: no boundaries.
	rootOff uint32
	rootUp  uint32
	// An address trie looks up key(k): k moved into [lo, lo+span], the
	// aligned block that holds the boundaries, then down by lo. Its
	// levels split only that block, not the top bits that all of its
	// boundaries share (those of 10/8, say). Port tries span their 16
	// bits, where ranges seldom share any, and skip the step.
	lo, span uint32
	depth    int  // node steps below the root every lookup takes
	leaves   bool // or every lookup ends in a value
	nodes    []uint32
	kv       []uint64 // boundary<<31 | value of the interval before it
}

const (
	e32Down   = 26
	e32Up     = 21
	e32Off    = 1<<e32Up - 1
	leaf32Off = 1<<30 - 1
)

// key is what the trie looks up for k: keys below the first boundary
// all have the value of the first interval, keys above the last that of
// the last.
func (t *trie32) key(k uint32) uint32 { return min(max(k, t.lo)-t.lo, t.span) }

// find looks up a key.
func (t *trie32) find(k uint32) uint32 {
	k = t.key(k)
	e := t.nodes[t.rootOff+uint32(uint64(k)<<(t.rootUp&63)>>32)]
	for range t.depth {
		e = step32(t.nodes, e, k)
	}
	e = deeper32(t.nodes, e, k)
	if t.leaves {
		e = leaf32(t.kv, e, k)
	}
	return e
}

// find32x4 looks up four keys in four tries that share their arrays: the
// node steps in lockstep, two tries at a time (the addresses', the
// ports'), so that the CPU works on the dependency chains at once, then
// the leaves.
func find32x4(nodes []uint32, kv []uint64, a, b, c, d *trie32, ka, kb, kc, kd uint32) (uint32, uint32, uint32, uint32) {
	ka, kb = a.key(ka), b.key(kb)
	ea := nodes[a.rootOff+uint32(uint64(ka)<<(a.rootUp&63)>>32)]
	eb := nodes[b.rootOff+uint32(uint64(kb)<<(b.rootUp&63)>>32)]
	ec := nodes[c.rootOff+uint32(uint64(kc)<<(c.rootUp&63)>>32)]
	ed := nodes[d.rootOff+uint32(uint64(kd)<<(d.rootUp&63)>>32)]
	for range max(a.depth, b.depth) {
		ea, eb = step32(nodes, ea, ka), step32(nodes, eb, kb)
	}
	for range max(c.depth, d.depth) {
		ec, ed = step32(nodes, ec, kc), step32(nodes, ed, kd)
	}
	if (ea&(ea<<1)|eb&(eb<<1)|ec&(ec<<1)|ed&(ed<<1))&nodeBit != 0 { // rare: deeper than usual
		ea, eb, ec, ed = deeper32(nodes, ea, ka), deeper32(nodes, eb, kb), deeper32(nodes, ec, kc), deeper32(nodes, ed, kd)
	}
	// The address tries' leaves inline: a call would cost more than the
	// leaf. Port tries seldom have leaves.
	if a.leaves {
		r := leafRun(kv, ea)
		ea = leafPick(r, ea, leafCount(r, ka))
	}
	if b.leaves {
		r := leafRun(kv, eb)
		eb = leafPick(r, eb, leafCount(r, kb))
	}
	if c.leaves {
		ec = leaf32(kv, ec, kc)
	}
	if d.leaves {
		ed = leaf32(kv, ed, kd)
	}
	return ea, eb, ec, ed
}

// leaf32 resolves a leaf. A value stays as it is (the arithmetic reads
// the dummy at 0 for it): lookups that end in a value or in a leaf take
// the same instructions, and random keys cost no mispredicted branch.
func leaf32(kv []uint64, e, k uint32) uint32 {
	r := leafRun(kv, e)
	return leafPick(r, e, leafCount(r, k))
}

// leafRun is the boundaries of leaf e, or the dummy's for a value.
func leafRun(kv []uint64, e uint32) *[leafKeys + 1]uint64 {
	o := e & leaf32Off & uint32(int32(e)>>31)
	return (*[leafKeys + 1]uint64)(kv[o : o+leafKeys+1])
}

// leafCount counts the boundaries of a run at or below key k: b - kk1 is
// negative when the boundary is, whatever the value bits. A term for each
// of the leafKeys boundaries.
func leafCount(b *[leafKeys + 1]uint64, k uint32) uint64 {
	kk1 := (uint64(k) + 1) << 31
	return (b[0]-kk1)>>63 + (b[1]-kk1)>>63 + (b[2]-kk1)>>63 + (b[3]-kk1)>>63 +
		(b[4]-kk1)>>63
}

var _ = [1]int{}[leafKeys-5] // the terms of leafCount

// leafPick is entry e resolved: the value after the boundaries that a key
// is at or above, c of them, if e is a leaf; e itself if a value.
func leafPick(b *[leafKeys + 1]uint64, e uint32, c uint64) uint32 {
	m := uint32(int32(e) >> 31) // all ones for a leaf
	return e ^ (e^uint32(b[min(c, leafKeys)])&(1<<31-1))&m
}

// step32 is a node step: from node e to the entry for key k. A leaf or
// a value stays as it is (and reads the dummy slot 0), so that tries of
// different depths step in lockstep without a branch on the key.
func step32(nodes []uint32, e, k uint32) uint32 {
	n := uint32(int32(e&(e<<1)) >> 31) // all ones for a node
	i := (e&e32Off + k<<(e>>e32Up&31)>>(e>>e32Down&31)) & n
	return e ^ (e^nodes[i])&n
}

// deeper32 takes the rare paths deeper than the usual depth.
func deeper32(nodes []uint32, e, k uint32) uint32 {
	for e&(e<<1)&nodeBit != 0 {
		e = step32(nodes, e, k)
	}
	return e
}

// builder32 lays out the trie32s of a classifier in shared arrays.
type builder32 struct {
	nodes []uint32
	kv    []uint64
}

func newBuilder32() *builder32 {
	// Slot 0 and kv[0:leafKeys+1] are the dummies that lookups holding a
	// value read.
	return &builder32{nodes: []uint32{0}, kv: make([]uint64, leafKeys+1)}
}

// buildTrie32 lays out one trie in arrays of its own (for the tests).
func buildTrie32(keys []u128, vals []uint32, keyBits uint) trie32 {
	b := newBuilder32()
	t := b.add(keys, vals, keyBits)
	b.finish(&t)
	return t
}

// finish points a trie at the builder's arrays, once they are complete.
func (b *builder32) finish(t *trie32) { t.nodes, t.kv = b.nodes, b.kv }

// add lays out the trie of the intervals that start at keys (sorted,
// keys[0] == 0) and have the values vals, over keys of keyBits bits.
func (b *builder32) add(keys []u128, vals []uint32, keyBits uint) trie32 {
	n := len(keys)
	ks := make([]uint32, n)
	// The block from the key before the first boundary to the last one,
	// aligned, so that the bits that index the levels stay the key's.
	lo, span := uint32(0), uint32(1<<keyBits-1)
	if n > 1 && keyBits == 32 {
		first, last := uint32(keys[1].lo)-1, uint32(keys[n-1].lo)
		span = 1<<bits.Len32(first^last) - 1
		lo = first &^ span
	}
	spanBits := uint(bits.Len32(span))
	for i, k := range keys[1:] {
		ks[i+1] = uint32(k.lo) - lo
	}
	start := len(b.nodes)
	build := func(tb trie32Build) (uint32, trie32Build) {
		b.nodes = b.nodes[:start]
		tb.b, tb.keys, tb.vals, tb.deep = b, ks, vals, make([]int, 34)
		return tb.block(1, n, 0, spanBits, 0), tb
	}
	if keyBits <= 16 && n-1 > leafKeys {
		// Ports: if it is small, a root and nodes that hold every key's
		// value, no leaves: a node step costs less than a leaf.
		most, stride := -1, uint(0)
		for s := uint(4); s <= min(keyBits-1, exactRoot); s++ {
			build(trie32Build{exact: true, rootStride: s})
			if m := len(b.nodes) - start; most < 0 || m < most {
				most, stride = m, s
			}
		}
		if most <= exactPerKey*n+1<<12 {
			root, _ := build(trie32Build{exact: true, rootStride: stride})
			return trie32{rootOff: root & e32Off, rootUp: rootUp(root), lo: lo, span: span, depth: 1}
		}
	}
	// Boundary j (keys[j], j >= 1) is kv[base+j-1]; leafKeys more
	// entries after the last, above every key, keep a leaf's window
	// inside the array and repeat the last value.
	base := len(b.kv)
	for j := 1; j < n; j++ {
		b.kv = append(b.kv, uint64(ks[j])<<31|uint64(vals[j-1]))
	}
	for range leafKeys {
		b.kv = append(b.kv, uint64(^uint32(0))<<31|uint64(vals[n-1]))
	}
	// Keep the shallowest of a few tries that stays within memory and
	// leaves at most one boundary in deepShare below its usual depth, and
	// of those the one whose root stride takes the least memory.
	var root uint32
	var tb trie32Build
	fits := func(levels int, rootStride uint) bool {
		root, tb = build(trie32Build{kvBase: base - 1, levels: levels, rootStride: rootStride})
		return len(b.nodes)-start <= slotsPerKey*n+1024 && tb.deeper() <= n/deepShare
	}
	s0 := min(maxStride, spanBits, rootStride0(n))
	chooseShape(s0, min(maxStride, spanBits, s0+rootTries), fits, func() int { return len(b.nodes) - start })
	t := trie32{lo: lo, span: span}
	switch {
	case root&(root<<1)&nodeBit != 0:
		t.rootOff, t.rootUp = root&e32Off, rootUp(root)
	case root != 0:
		t.rootOff = uint32(len(b.nodes))
		b.nodes = append(b.nodes, root)
	}
	t.depth = tb.usual(1)
	for _, m := range tb.deep {
		t.leaves = t.leaves || m > 0
	}
	return t
}

type trie32Build struct {
	b      *builder32
	keys   []uint32
	vals   []uint32
	kvBase int // kv index of boundary 0
	levels int // node levels, the root's included, most lookups take
	// rootStride is the root's, when there are levels below it.
	rootStride uint
	exact      bool  // no leaves: nodes down to single keys (ports)
	deep       []int // boundaries in leaves by depth: the root's slots are at 1
}

// deeper counts the boundaries below the usual levels.
func (tb *trie32Build) deeper() int { return deeper(tb.deep, tb.levels) }

// usual is the fewest node steps, after the first skip, that take a
// lookup to the leaves of all but one boundary in deepShare.
func usual(deep []int, skip int) int {
	total := 0
	for _, m := range deep {
		total += m
	}
	d, below := 0, total
	for at, m := range deep {
		if at <= skip {
			below -= m
		}
	}
	for below > total/deepShare {
		d++
		below -= deep[d+skip]
	}
	return d
}

func (tb *trie32Build) usual(skip int) int { return usual(tb.deep, skip) }

// block makes the entry for the block of 2^blockBits keys from base,
// which holds the boundaries keys[lo:hi] (all above base; the key at
// base has the value vals[lo-1]), at depth at.
func (tb *trie32Build) block(lo, hi int, base uint64, blockBits uint, at int) uint32 {
	m := hi - lo
	switch {
	case m == 0:
		return tb.vals[lo-1]
	case tb.exact:
		stride := blockBits // a node of values, one a key
		if at == 0 {
			stride = tb.rootStride
		}
		return tb.node(lo, hi, base, blockBits, stride, at)
	case m <= leafKeys:
		tb.deep[min(at, len(tb.deep)-1)] += m
		return nodeBit | uint32(tb.kvBase+lo)
	}
	var stride uint
	switch {
	case at == 0 && tb.rootStride > 0:
		stride = min(tb.rootStride, blockBits)
	case at < tb.levels-1:
		// An upper level: a few boundaries a slot.
		stride = min(maxStride, blockBits, max(1, uint(bits.Len(uint(m/keysPerSlot)))-1))
	default:
		// The last level: widen until the slots fit leaves but for a few
		// boundaries, which go a level deeper.
		most := min(maxStride, blockBits, uint(bits.Len(uint(m)))+widen)
		stride = 1
		for stride < most && tb.crowded(lo, hi, base, blockBits-stride) > m/crowdShare {
			stride++
		}
	}
	return tb.node(lo, hi, base, blockBits, stride, at)
}

// node makes a node of 2^stride slots for the block.
func (tb *trie32Build) node(lo, hi int, base uint64, blockBits, stride uint, at int) uint32 {
	shift := blockBits - stride
	b := tb.b
	o := len(b.nodes)
	b.nodes = append(b.nodes, make([]uint32, 1<<stride)...)
	i := lo
	for j := range uint64(1) << stride {
		start := base + j<<shift
		for i < hi && uint64(tb.keys[i]) <= start {
			i++
		}
		k := i
		for k < hi && uint64(tb.keys[k]) < start+1<<shift {
			k++
		}
		b.nodes[o+int(j)] = tb.block(i, k, start, shift, at+1)
	}
	return nodeBit | childBit | uint32(16-stride)<<e32Down | uint32(32-shift-stride)<<e32Up | uint32(o)
}

// Node entries hold strides of 1 to 16 (see trie32): address tries take
// at most maxStride, and port keys have 16 bits.
var _ [16 - maxStride]struct{}

// rootUp is what a trie32's root shifts the key up by, in a uint64, to
// bring the bits that index root node e above the low 32: 32-shift.
func rootUp(e uint32) uint32 {
	stride := 16 - e>>e32Down&15
	return e>>e32Up&31 + stride
}

// crowded counts the boundaries of keys[lo:hi] in slots of 2^shift keys
// from base that hold more than a leaf's worth (above their first key).
func (tb *trie32Build) crowded(lo, hi int, base uint64, shift uint) int {
	n, run := 0, 0
	slot := ^uint64(0)
	for _, k := range tb.keys[lo:hi] {
		off := uint64(k) - base
		if off&(1<<shift-1) == 0 {
			continue // at the slot's first key: not in it
		}
		if s := off >> shift; s != slot {
			slot, run = s, 0
		}
		run++
		switch {
		case run == leafKeys+1:
			n += run
		case run > leafKeys+1:
			n++
		}
	}
	return n
}
