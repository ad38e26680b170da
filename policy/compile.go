package policy

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"unsafe"
)

// The key spaces a rule can be indexed in.
const (
	spSrc4 = iota
	spDst4
	spSrc6
	spDst6
	spSport
	spDport
	numSpaces
)

var spaceBits = [numSpaces]uint{32, 32, 128, 128, 16, 16}

// The dimensions a rule is indexed by: a rule sits in the index of one of
// them (both families' indexes for an address dimension).
const (
	dimDst = iota
	dimSrc
	dimDport
	dimSport
	numDims
	dimNone = -1
)

var dimSpaces = [numDims][]int{
	dimDst:   {spDst4, spDst6},
	dimSrc:   {spSrc4, spSrc6},
	dimDport: {spDport},
	dimSport: {spSport},
}

// listBudget bounds the work (and memory) of one index's candidate lists,
// in list entries before sharing: rules whose ranges cover so many other
// rules' boundaries that the lists would exceed it are checked one by one
// instead.
var listBudget = 1 << 22

// riv is one interval of a rule in a key space, inclusive.
type riv struct {
	a, b u128
	r    int32
}

// norm is a rule made ready to compile: lists sorted, nested prefixes
// and overlapping port ranges merged.
type norm struct {
	flags        uint32 // as in the record
	src4, dst4   []netip.Prefix
	src6, dst6   []netip.Prefix
	sport, dport []PortRange
	ivs          [numSpaces][]riv
}

func (n *norm) catchAll() bool {
	return n.flags&flagSrcAny != 0 && n.flags&flagDstAny != 0 && len(n.sport) == 0 && len(n.dport) == 0
}

// Compile checks a ruleset and builds its classifier.
//
// Compiling reorders nothing: the result matches exactly as a scan of the
// rules in order would (the tests prove it on random rulesets).
func Compile(rs Ruleset) (*Classifier, error) {
	if err := rs.Check(); err != nil {
		return nil, err
	}
	n := len(rs.Rules)
	c := &Classifier{deflt: rs.Default, rules: n, cand: []uint32{0}, gen: generations.Add(1)}
	c.ports = []portTries{{}} // ports[0]: for protocols without
	for d := range c.first {
		for p := range c.first[d] {
			c.first[d][p] = noRule
		}
	}
	c.info.Rules = n
	norms := make([]norm, n)
	c.recAt = make([]uint32, n)
	c.actions = make([]uint64, n/64+1) // one at least: Match reads it for the default
	c.quick = make([]quick4, n)
	for i := range c.quick {
		c.quick[i].record = 1 // until quickOf says otherwise, below
	}
	live := make([]bool, n) // needs an index
	specs := map[string]bool{}
	for i := range rs.Rules {
		nr := &norms[i]
		spec := normalize(&rs.Rules[i], int32(i), nr)
		if specs[spec] || c.shadowed(nr.flags, uint32(i)) {
			c.info.Dead++
			continue
		}
		specs[spec] = true
		c.recAt[i] = uint32(len(c.rec))
		c.actions[i/64] |= uint64(rs.Rules[i].Action&1) << (i % 64)
		c.emit(nr)
		if nr.catchAll() {
			c.claimFirst(nr.flags, uint32(i))
			c.info.ByProto++
			continue
		}
		live[i] = true
	}

	// Choose each rule's dimension (see dimCost): for each, how many
	// rules overlap it there at most, and the share of the key space it
	// covers.
	crowd := make([][numDims]int32, n)
	share := make([][numDims]float64, n)
	for i := range share {
		for d := range share[i] {
			share[i][d] = math.Inf(-1) // below every share: the first one counts
		}
	}
	for sp := range numSpaces {
		var all []riv
		for i := range norms {
			if live[i] {
				all = append(all, norms[i].ivs[sp]...)
			}
		}
		d := spaceDim(sp)
		for j, v := range overlapCost(all, spaceBits[sp]) {
			crowd[all[j].r][d] = max(crowd[all[j].r][d], v)
		}
		for i := range norms {
			if ivs := norms[i].ivs[sp]; live[i] && len(ivs) > 0 {
				l := coverLog2(ivs, spaceBits[sp])
				if sp == spSrc6 || sp == spDst6 {
					l *= v6Share
				}
				share[i][d] = max(share[i][d], l) // both families: the wider
			}
		}
	}
	dim := make([]int, n)
	for i := range dim {
		dim[i] = dimNone
		if !live[i] {
			continue
		}
		var best float64
		for d := range numDims {
			if crowd[i][d] == 0 {
				continue // the rule names nothing in d
			}
			if c := dimCost(crowd[i][d], share[i][d]); dim[i] == dimNone || c < best {
				dim[i], best = d, c
			}
		}
	}

	// The indexes' inputs: per address space, and per protocol for ports.
	type group struct {
		sp    int
		proto int // for port spaces
		ivs   []riv
	}
	var groups []*group
	byKey := map[[2]int]*group{}
	for i := range n {
		if dim[i] == dimNone {
			continue
		}
		proto := -1
		if dim[i] == dimDport || dim[i] == dimSport {
			proto = int(norms[i].flags >> 16)
		}
		for _, sp := range dimSpaces[dim[i]] {
			if len(norms[i].ivs[sp]) == 0 {
				continue
			}
			g := byKey[[2]int{sp, proto}]
			if g == nil {
				g = &group{sp: sp, proto: proto}
				byKey[[2]int{sp, proto}] = g
				groups = append(groups, g)
			}
			g.ivs = append(g.ivs, norms[i].ivs[sp]...)
		}
	}
	residual := make([]bool, n)
	for _, g := range groups {
		for _, r := range overBudget(g.ivs, spaceBits[g.sp], listBudget) {
			residual[r] = true
		}
	}
	// A rule that matches every packet reaching its list ends the list.
	terminal := make([]bool, n)
	for i := range norms {
		nr, d := &norms[i], dim[i]
		terminal[i] = d != dimNone && nr.flags&dirsAll == dirsAll &&
			(d == dimSrc || nr.flags&flagSrcAny != 0) && (d == dimDst || nr.flags&flagDstAny != 0) &&
			(d == dimSport || len(nr.sport) == 0) && (d == dimDport || len(nr.dport) == 0) &&
			(nr.flags&flagAnyProto != 0 || d == dimDport || d == dimSport)
	}
	flags := make([]uint32, n)
	for i := range norms {
		flags[i] = norms[i].flags
	}
	lb := listBuilder{c: c, flags: flags, terminal: terminal, ids: map[string]uint32{}}
	b32, b128 := newBuilder32(), newBuilder128()
	for _, g := range groups {
		g.ivs = slices.DeleteFunc(g.ivs, func(v riv) bool { return residual[v.r] })
		keys, vals := lb.sweep(g.ivs, spaceBits[g.sp])
		switch g.sp {
		case spSrc4:
			c.src4 = b32.add(keys, vals, 32)
		case spDst4:
			c.dst4 = b32.add(keys, vals, 32)
		case spSrc6:
			c.src6 = b128.add(keys, vals)
		case spDst6:
			c.dst6 = b128.add(keys, vals)
		default:
			pi := c.portIndex[g.proto]
			if pi == 0 {
				c.ports = append(c.ports, portTries{})
				pi = uint8(len(c.ports) - 1)
				c.portIndex[g.proto] = pi
			}
			x := &c.ports[pi].dst
			if g.sp == spSport {
				x = &c.ports[pi].src
			}
			*x = b32.add(keys, vals, 16)
		}
	}
	c.nodes32, c.kv32 = b32.nodes, b32.kv
	for _, t := range c.tries32() {
		b32.finish(t)
	}
	c.nodes128, c.keys128, c.vals128 = b128.nodes, b128.keys, b128.vals
	b128.finish(&c.src6)
	b128.finish(&c.dst6)
	for i := range n {
		if dim[i] != dimNone && !residual[i] {
			// The index checks the field; the record need not.
			c.rec[c.recAt[i]+recFlags] |= [numDims]uint32{dimDst: flagDstAny, dimSrc: flagSrcAny, dimDport: flagSkipDp, dimSport: flagSkipSp}[dim[i]]
			c.quick[i] = quickOf(&norms[i], dim[i])
		}
		switch {
		case residual[i]:
			c.residual = append(c.residual, uint32(i))
			c.info.Residual++
		case dim[i] == dimSrc || dim[i] == dimDst:
			c.info.ByAddress++
		case dim[i] == dimSport || dim[i] == dimDport:
			c.info.ByPort++
		}
	}
	c.measure()
	tooBig := len(c.cand) >= oneBit || len(c.nodes32) > e32Off || len(c.kv32) > leaf32Off ||
		len(c.nodes128) > e128Off || len(c.vals128) > leaf128Off
	if tooBig {
		return nil, fmt.Errorf("the ruleset is too large to compile (%d rules, %d MiB)", n, c.info.Bytes>>20)
	}
	return c, nil
}

const dirsAll = 1<<Both | 1<<In | 1<<Out

// tries32 lists the classifier's trie32s.
func (c *Classifier) tries32() []*trie32 {
	ts := []*trie32{&c.src4, &c.dst4}
	for i := range c.ports {
		ts = append(ts, &c.ports[i].src, &c.ports[i].dst)
	}
	return ts
}

func spaceDim(sp int) int {
	switch sp {
	case spSrc4, spSrc6:
		return dimSrc
	case spDst4, spDst6:
		return dimDst
	case spSport:
		return dimSport
	}
	return dimDport
}

func (c *Classifier) measure() {
	in := &c.info
	in.Bytes = 4*(len(c.rec)+len(c.recAt)+len(c.cand)+len(c.residual)+len(c.first)*len(c.first[0])+len(c.nodes32)+len(c.nodes128)+len(c.vals128)) +
		8*(len(c.kv32)+len(c.keys128)+len(c.actions)) + int(unsafe.Sizeof(quick4{}))*len(c.quick)
	for _, t := range c.tries32() {
		if t.rootUp != 0 { // a root node, and the nodes below it
			in.MaxDepth = max(in.MaxDepth, 1+t.depth)
		}
	}
	for _, t := range []*trie128{&c.src6, &c.dst6} {
		if t.rootMask != 0 {
			in.MaxDepth = max(in.MaxDepth, 1+t.depth)
		}
	}
	for i := 1; i < len(c.cand); i += 1 + int(c.cand[i]) {
		in.MaxList = max(in.MaxList, int(c.cand[i]))
	}
	if in.ByAddress+in.ByPort > 0 {
		in.MaxList = max(in.MaxList, 1)
	}
}

// normalize prepares rule number i and returns a key that is equal for
// rules that match the same packets.
func normalize(in *Rule, i int32, n *norm) string {
	dirs := uint32(dirsAll)
	if in.Direction != Both {
		dirs = 1 << in.Direction
	}
	n.flags = dirs | uint32(famsOf(in.Src)&famsOf(in.Dst))<<3 | uint32(in.Action&1)<<5 | uint32(in.Proto)<<16
	if in.Proto == AnyProto {
		n.flags |= flagAnyProto
	}
	if len(in.Src) == 0 {
		n.flags |= flagSrcAny
	}
	if len(in.Dst) == 0 {
		n.flags |= flagDstAny
	}
	if len(in.SrcPorts) == 0 && len(in.DstPorts) == 0 {
		n.flags |= flagPortless
	}
	fams := famsOf(in.Src) & famsOf(in.Dst)
	for _, p := range normPrefixes(in.Src) {
		if p.Addr().Is4() {
			n.src4 = append(n.src4, p)
		} else {
			n.src6 = append(n.src6, p)
		}
	}
	for _, p := range normPrefixes(in.Dst) {
		if p.Addr().Is4() {
			n.dst4 = append(n.dst4, p)
		} else {
			n.dst6 = append(n.dst6, p)
		}
	}
	if fams&fam4 == 0 { // unreachable: the rule is IPv6 only
		n.src4, n.dst4 = nil, nil
	}
	if fams&fam6 == 0 {
		n.src6, n.dst6 = nil, nil
	}
	n.sport, n.dport = normRanges(in.SrcPorts), normRanges(in.DstPorts)
	var spec strings.Builder
	fmt.Fprintf(&spec, "%x|", n.flags&^flagAction)
	for sp, ps := range [][]netip.Prefix{spSrc4: n.src4, spDst4: n.dst4, spSrc6: n.src6, spDst6: n.dst6} {
		for _, p := range ps {
			start, end := prefixRange(p)
			n.ivs[sp] = append(n.ivs[sp], riv{start, end, i})
		}
	}
	for sp, rs := range [][]PortRange{spSport: n.sport, spDport: n.dport} {
		for _, r := range rs {
			n.ivs[sp] = append(n.ivs[sp], riv{u128{0, uint64(r.From)}, u128{0, uint64(r.To)}, i})
		}
	}
	for sp := range numSpaces {
		for _, v := range n.ivs[sp] {
			fmt.Fprintf(&spec, "%x-%x ", v.a, v.b)
		}
		spec.WriteString("|")
	}
	return spec.String()
}

// prefixRange is a prefix's first and last key.
func prefixRange(p netip.Prefix) (first, last u128) {
	if p.Addr().Is4() {
		a := p.Addr().As4()
		v := uint64(binary.BigEndian.Uint32(a[:]))
		return u128{0, v}, u128{0, v | (1<<(32-p.Bits()) - 1)}
	}
	a := p.Addr().As16()
	first = u128{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])}
	return first, first.or(lowMask(uint(128 - p.Bits())))
}

// emit appends a rule's record.
func (c *Classifier) emit(n *norm) {
	c.rec = append(c.rec, n.flags,
		uint32(len(n.src4))|uint32(len(n.dst4))<<16,
		uint32(len(n.src6))|uint32(len(n.dst6))<<16,
		uint32(len(n.sport))|uint32(len(n.dport))<<16)
	for _, rs := range [][]PortRange{n.sport, n.dport} {
		for _, r := range rs {
			c.rec = append(c.rec, uint32(r.From)<<16|uint32(r.To))
		}
	}
	for _, ps := range [][]netip.Prefix{n.src4, n.dst4} {
		for _, p := range ps {
			a, m := prefixMask(p)
			c.rec = append(c.rec, a, m)
		}
	}
	for _, ps := range [][]netip.Prefix{n.src6, n.dst6} {
		for _, p := range ps {
			a := p.Addr().As16()
			c.rec = append(c.rec, binary.BigEndian.Uint32(a[0:]), binary.BigEndian.Uint32(a[4:]),
				binary.BigEndian.Uint32(a[8:]), binary.BigEndian.Uint32(a[12:]), uint32(p.Bits()))
		}
	}
}

// normPrefixes sorts prefixes and drops those inside another.
func normPrefixes(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := ps[:0]
	for _, p := range ps {
		if len(out) > 0 && out[len(out)-1].Overlaps(p) {
			continue // sorted by start, wider first: the last one kept holds p
		}
		out = append(out, p)
	}
	return out
}

// normRanges sorts and merges port ranges. All ports stays a constraint:
// a packet whose ports are unknown does not match it.
func normRanges(rs []PortRange) []PortRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b PortRange) int { return int(a.From) - int(b.From) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.From) <= uint32(out[n-1].To)+1 {
			out[n-1].To = max(out[n-1].To, r.To)
			continue
		}
		out = append(out, r)
	}
	return out
}

// quickOf is rule n, indexed under dimension d, as a quick4: the fields
// the index does not check.
func quickOf(n *norm, d int) quick4 {
	src4, dst4, src6, dst6, sport, dport := n.src4, n.dst4, n.src6, n.dst6, n.sport, n.dport
	switch d {
	case dimSrc:
		src4, src6 = nil, nil
	case dimDst:
		dst4, dst6 = nil, nil
	case dimSport:
		sport = nil
	case dimDport:
		dport = nil
	}
	q := quick4{dport: 0xffff}
	if len(src6)+len(dst6)+len(sport) > 0 || len(src4) > 1 || len(dst4) > 1 || len(dport) > 1 {
		q.record = 1
		return q
	}
	// A packet's key fails if it needs a bit the rule's filter lacks, or
	// has another protocol than the one the rule names.
	f := n.flags
	q.keyMask = (needBits &^ filter(f)) << 8
	if f&flagAnyProto == 0 {
		q.key, q.keyMask = f>>16&0xff, q.keyMask|0xff
	}
	if len(src4) == 1 {
		q.src, q.srcMask = prefixMask(src4[0])
	}
	if len(dst4) == 1 {
		q.dst, q.dstMask = prefixMask(dst4[0])
	}
	if len(dport) == 1 {
		q.dport = uint32(dport[0].From)<<16 | uint32(dport[0].To-dport[0].From)
	}
	return q
}

// prefixMask is an IPv4 prefix as an address and a mask.
func prefixMask(p netip.Prefix) (addr, mask uint32) {
	a := p.Addr().As4()
	return binary.BigEndian.Uint32(a[:]), uint32(^uint64(0) << (32 - p.Bits()))
}

// shadowed tells whether earlier rules that name only a direction and a
// protocol match every packet a rule with these flags could: then it can
// never be the first match. r is the rule's number.
func (c *Classifier) shadowed(flags, r uint32) bool {
	for d := range 3 {
		if flags&(1<<d) == 0 {
			continue
		}
		if flags&flagAnyProto == 0 {
			if c.first[d][flags>>16] > r {
				return false
			}
			continue
		}
		for p := range 256 {
			if c.first[d][p] > r {
				return false
			}
		}
	}
	return true
}

// claimFirst records rule r, which names only a direction and a protocol.
func (c *Classifier) claimFirst(flags, r uint32) {
	for d := range 3 {
		if flags&(1<<d) == 0 {
			continue
		}
		for p := range 256 {
			if (flags&flagAnyProto != 0 || uint32(p) == flags>>16) && c.first[d][p] > r {
				c.first[d][p] = r
			}
		}
	}
}

// positions are the sorted distinct points where intervals start or end
// (the key after their last).
func positions(ivs []riv, keyBits uint) []u128 {
	keyMax := lowMask(keyBits)
	pos := make([]u128, 0, 2*len(ivs))
	for _, v := range ivs {
		pos = append(pos, v.a)
		if v.b != keyMax {
			e, _ := v.b.add(u128{0, 1})
			pos = append(pos, e)
		}
	}
	slices.SortFunc(pos, u128.cmp)
	return slices.Compact(pos)
}

// span returns the positions an interval covers: pos[from:to].
func posSpan(pos []u128, v riv, keyBits uint) (from, to int) {
	from, _ = slices.BinarySearchFunc(pos, v.a, u128.cmp)
	to = len(pos)
	if v.b != lowMask(keyBits) {
		e, _ := v.b.add(u128{0, 1})
		to, _ = slices.BinarySearchFunc(pos, e, u128.cmp)
	}
	return from, to
}

// overlapCost returns, for each interval, the largest number of the
// intervals that overlap at one point inside it (itself included).
func overlapCost(ivs []riv, keyBits uint) []int32 {
	if len(ivs) == 0 {
		return nil
	}
	pos := positions(ivs, keyBits)
	depth := make([]int32, len(pos)+1)
	from := make([]int, len(ivs))
	to := make([]int, len(ivs))
	for j, v := range ivs {
		from[j], to[j] = posSpan(pos, v, keyBits)
		depth[from[j]]++
		depth[to[j]]--
	}
	for k := 1; k < len(depth); k++ {
		depth[k] += depth[k-1]
	}
	// A sparse table answers "the deepest point in pos[from:to]" at once.
	levels := [][]int32{depth[:len(pos)]}
	for w := 1; 2*w <= len(pos); w *= 2 {
		prev := levels[len(levels)-1]
		next := make([]int32, len(prev)-w)
		for k := range next {
			next[k] = max(prev[k], prev[k+w])
		}
		levels = append(levels, next)
	}
	out := make([]int32, len(ivs))
	for j := range ivs {
		l := bits.Len(uint(to[j]-from[j])) - 1
		t := levels[l]
		out[j] = max(t[from[j]], t[to[j]-(1<<l)])
	}
	return out
}

// dimCost is what indexing a rule under a dimension costs packets, in
// log2, from its crowd there (the most rules that overlap it at one
// point, itself included) and the log2 share of the key space it covers.
//
// A rule in an index is a candidate of every packet whose key it covers,
// so the smaller its share, the fewer packets meet it: a rule from a /20
// to a /30 belongs under its destination. But a share says nothing of
// crowds: a hundred rules for one server, each from another source,
// would all be candidates of every packet to the server, where under
// their sources each packet meets one. So the crowd counts too, cubed:
// more than a few rules on one value send a rule to another field.
func dimCost(crowd int32, share float64) float64 {
	return 3*math.Log2(float64(crowd)) + share
}

// v6Share scales the log2 share of an IPv6 prefix to IPv4's: IPv6
// addresses are sparse, and a /64 is one subnet, as an IPv4 /24 is
// (64 × 0.375 = 24).
const v6Share = 0.375

// coverLog2 is log2 of the share of a key space of keyBits bits that the
// intervals cover (a rule's intervals do not overlap).
func coverLog2(ivs []riv, keyBits uint) float64 {
	var size float64
	for _, v := range ivs {
		d := v.b.sub(v.a)
		size += math.Ldexp(float64(d.hi), 64) + float64(d.lo) + 1
	}
	return math.Log2(size) - float64(keyBits)
}

// overBudget picks the rules to check one by one so that an index's
// candidate lists stay within budget entries: the ones that cover the
// most boundaries.
func overBudget(ivs []riv, keyBits uint, budget int) []int32 {
	pos := positions(ivs, keyBits)
	cover := map[int32]int{}
	total := 0
	for _, v := range ivs {
		from, to := posSpan(pos, v, keyBits)
		cover[v.r] += to - from
		total += to - from
	}
	if total <= budget {
		return nil
	}
	rules := make([]int32, 0, len(cover))
	for r := range cover {
		rules = append(rules, r)
	}
	slices.SortFunc(rules, func(a, b int32) int {
		if cover[a] != cover[b] {
			return cover[b] - cover[a]
		}
		return int(a - b)
	})
	var out []int32
	for _, r := range rules {
		if total <= budget {
			break
		}
		out = append(out, r)
		total -= cover[r]
	}
	return out
}

// listBuilder makes the candidate lists of the indexes; equal lists, in
// any index, are stored once.
type listBuilder struct {
	c        *Classifier
	flags    []uint32 // the rules' flags, for their filters
	terminal []bool
	ids      map[string]uint32
	buf      []byte
}

// sweep walks the intervals in key order, keeping the set of rules whose
// interval holds the current key; at every boundary that set, ascending
// and cut after the first rule that matches every packet that gets there,
// is a candidate list. It returns the boundaries and their trie values.
func (lb *listBuilder) sweep(ivs []riv, keyBits uint) (keys []u128, vals []uint32) {
	keys, vals = []u128{{}}, []uint32{0}
	keyMax := lowMask(keyBits)
	type event struct {
		pos u128
		r   int32
		add bool
	}
	ev := make([]event, 0, 2*len(ivs))
	for _, v := range ivs {
		ev = append(ev, event{v.a, v.r, true})
		if v.b != keyMax {
			e, _ := v.b.add(u128{0, 1})
			ev = append(ev, event{e, v.r, false})
		}
	}
	slices.SortFunc(ev, func(p, q event) int {
		if c := p.pos.cmp(q.pos); c != 0 {
			return c
		}
		switch { // at one key, ends before starts: a rule's adjacent intervals
		case p.add == q.add:
			return 0
		case q.add:
			return -1
		}
		return 1
	})
	var active []int32
	for i := 0; i < len(ev); {
		pos := ev[i].pos
		for ; i < len(ev) && ev[i].pos == pos; i++ {
			j, found := slices.BinarySearch(active, ev[i].r)
			switch {
			case ev[i].add && !found:
				active = slices.Insert(active, j, ev[i].r)
			case !ev[i].add && found:
				active = slices.Delete(active, j, j+1)
			}
		}
		v := lb.value(active)
		switch {
		case pos == u128{}:
			vals[0] = v
		case v != vals[len(vals)-1]:
			keys = append(keys, pos)
			vals = append(vals, v)
		}
	}
	return keys, vals
}

// cand is rule r as a candidate.
func (lb *listBuilder) cand(r int32) uint32 {
	return filter(lb.flags[r])<<recBits | uint32(r)
}

// value is the trie value of a set of rules.
func (lb *listBuilder) value(active []int32) uint32 {
	list := active
	for j, r := range active {
		if lb.terminal[r] {
			list = active[:j+1]
			break
		}
	}
	switch len(list) {
	case 0:
		return 0
	case 1:
		return oneBit | lb.cand(list[0])
	}
	lb.buf = lb.buf[:0]
	for _, r := range list {
		lb.buf = binary.LittleEndian.AppendUint32(lb.buf, uint32(r))
	}
	if v, ok := lb.ids[string(lb.buf)]; ok {
		return v
	}
	c := lb.c
	v := uint32(len(c.cand))
	c.cand = append(c.cand, uint32(len(list)))
	for _, r := range list {
		c.cand = append(c.cand, lb.cand(r))
	}
	lb.ids[string(lb.buf)] = v
	return v
}
