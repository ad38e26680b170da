package policy

import (
	"math/bits"
)

// u128 is a key of any dimension: a port (16 bits), an IPv4 address (32)
// or an IPv6 address (128). Ports and IPv4 keys have hi == 0.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) cmp(b u128) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

// add returns a+b and whether it overflowed 128 bits.
func (a u128) add(b u128) (u128, bool) {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, c := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}, c != 0
}

func (a u128) sub(b u128) u128 {
	lo, br := bits.Sub64(a.lo, b.lo, 0)
	return u128{a.hi - b.hi - br, lo}
}

// pow2 is 1<<n for n < 128.
func pow2(n uint) u128 {
	if n >= 64 {
		return u128{1 << (n - 64), 0}
	}
	return u128{0, 1 << n}
}

// lowMask has the n low bits set, n <= 128.
func lowMask(n uint) u128 {
	switch {
	case n >= 128:
		return u128{^uint64(0), ^uint64(0)}
	case n >= 64:
		return u128{1<<(n-64) - 1, ^uint64(0)}
	}
	return u128{0, 1<<n - 1}
}

func (a u128) andNot(m u128) u128 { return u128{a.hi &^ m.hi, a.lo &^ m.lo} }
func (a u128) and(m u128) u128    { return u128{a.hi & m.hi, a.lo & m.lo} }
func (a u128) or(m u128) u128     { return u128{a.hi | m.hi, a.lo | m.lo} }

// bitLen is the number of bits needed to write a.
func (a u128) bitLen() uint {
	if a.hi != 0 {
		return 64 + uint(bits.Len64(a.hi))
	}
	return uint(bits.Len64(a.lo))
}

func (a u128) shl(n uint) u128 {
	switch {
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{a.lo << (n - 64), 0}
	case n == 0:
		return a
	}
	return u128{a.hi<<n | a.lo>>(64-n), a.lo << n}
}

// Common to trie32 and trie128.
const (
	nodeBit   = 1 << 31
	childBit  = 1 << 30 // in an entry with nodeBit: a node, not a leaf
	oneBit    = 1 << 30 // in a value: the only candidate, not a list
	maxStride = 15
	maxLevels = 4
)

// Tuning, found by measuring (BenchmarkMatch hardly moves within a factor
// of two of most of them). A trie32 leaf compares leafKeys boundaries.
// A node above the last level gets a slot for keysPerSlot boundaries; the
// last level widens (at most 2^widen slots a boundary) until but one
// boundary in crowdShare fits a leaf. A trie may spend slotsPerKey slots
// a boundary to save a level, and leave one boundary in deepShare below
// its usual depth; it tries rootTries root strides above the smallest.
// A port trie takes no leaves if it needs at most exactPerKey slots a
// boundary, with a root of at most 2^exactRoot.
const (
	leafKeys    = 5
	keysPerSlot = 2
	widen       = 6
	crowdShare  = 32
	slotsPerKey = 8
	deepShare   = 20
	rootTries   = 5
	exactPerKey = 64
	exactRoot   = 12
)

// rootStride0 is the smallest root stride worth trying for a trie of n
// boundaries: a slot for every keysPerSlot of them.
func rootStride0(n int) uint { return max(1, uint(bits.Len(uint(n/keysPerSlot)))-1) }

// chooseShape builds a trie (with fits, which reports whether the result
// is within bounds) at the fewest levels that fit, and of the root strides
// from s0 to last the one whose trie takes the least memory (size). One
// or maxLevels levels take no root stride; maxLevels is taken whether it
// fits or not. The trie is left built as chosen.
func chooseShape(s0, last uint, fits func(levels int, rootStride uint) bool, size func() int) {
	for levels := 1; ; levels++ {
		if levels == 1 || levels == maxLevels {
			if fits(levels, 0) || levels == maxLevels {
				return
			}
			continue
		}
		most, stride := -1, uint(0)
		for s := s0; s <= last; s++ {
			if fits(levels, s) && (most < 0 || size() < most) {
				most, stride = size(), s
			}
		}
		if most >= 0 {
			fits(levels, stride)
			return
		}
	}
}

// deeper counts the boundaries in leaves below the first levels, in a
// trie's count of boundaries by depth (the root's slots at 1).
func deeper(deep []int, levels int) int {
	n := 0
	for _, m := range deep[levels+1:] {
		n += m
	}
	return n
}
