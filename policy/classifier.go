package policy

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Classifier is a compiled ruleset: immutable, safe for any number of
// concurrent Match calls, and replaced whole (see Table) when the rules
// change. Only its counters change after Compile.
type Classifier struct {
	// rec holds the records of the rules that can match, in rule order
	// (see record layout below); recAt is where each rule's starts.
	// Everything else refers to rules by number, so comparing numbers
	// compares rule order.
	rec   []uint32
	recAt []uint32
	// actions has a bit for each rule that denies: a lookup's result
	// needs no record.
	actions []uint64
	// quick holds, for each rule, the fields that its index does not
	// check, in a form a few instructions check (see quick4): most
	// candidates need no record either.
	quick []quick4
	rules int
	deflt Action

	// first is, per packet direction and protocol, the first rule that
	// names nothing but a direction and a protocol: it matches every
	// packet of its direction and protocol. noRule when there is none.
	first [3][256]uint32

	// The address indexes, by family. The trie32s (IPv4 and ports) share
	// nodes32 and kv32, the trie128s nodes128, keys128 and vals128.
	src4, dst4 trie32
	src6, dst6 trie128
	nodes128   []uint32
	keys128    []uint64
	vals128    []uint32
	// portIndex maps a protocol to its port indexes in ports; ports[0]
	// is empty, for protocols no rule is indexed by port for.
	portIndex [256]uint8
	ports     []portTries
	nodes32   []uint32
	kv32      []uint64
	// cand holds the candidate lists of every index: a length, then that
	// many candidates (see below), ascending.
	cand []uint32
	// residual records are checked one by one: only rules whose ranges
	// would cost the indexes too much memory land here (see compile.go).
	residual []uint32

	info Info
	// gen tells this classifier from the others of the process.
	gen uint32

	mu       sync.Mutex
	counters []*Counter
}

// generations numbers the classifiers as they are compiled.
var generations atomic.Uint32

// Gen numbers the classifier among those the process compiled, from 1; 0
// for nil. A verdict remembered across a swap of classifiers (a datagram
// whose later fragments arrive after the rules changed) can tell by it
// that its rule numbers are not the new classifier's.
func (c *Classifier) Gen() uint32 {
	if c == nil {
		return 0
	}
	return c.gen
}

type portTries struct{ src, dst trie32 }

// quick4 holds what is left to check of a candidate once its index has
// passed it, if that is at most one IPv4 prefix for each address and one
// destination port range, as it is for most rules: a read of the entry
// and a few operations without a branch on the rule's shape, where the
// record takes two dependent loads and a dozen branches. A rule with more
// left to check (IPv6 prefixes, lists, source ports) has record set, and
// its record decides.
//
// A field the rule leaves to the index, or leaves out, is "any": mask 0,
// or the ports 0 to 65535. key and keyMask check a packet's key (see
// keyOf): its protocol, if the rule names one, and that the rule allows
// its direction and family, and its lack of ports if it has none. So a
// single candidate needs no filter: its entry says all that the filter
// would.
type quick4 struct {
	src, srcMask, dst, dstMask uint32
	dport                      uint32 // first port<<16 | last port - first port
	key, keyMask               uint32
	record                     uint32 // 1: check the record instead
}

const noRule = math.MaxUint32

// A trie's value is 0 (no candidate), a candidate with oneBit set (the
// only one), or the offset of a list in cand. A candidate is a rule's
// number and, above it, a filter: the rule's directions, families,
// protocol class and whether it names ports, which rejects most
// candidates without loading anything of theirs.
//
//	filter<<recBits | rule
//
// The filter is the record's dirs and fams (its flags' five low bits),
// the rule's protocol class<<5: 0 for any protocol, protoOther for one
// without a class of its own (its quick4 or record decides), else the
// class; and filterPortless if the rule names no ports, which a packet
// without ports needs. needBits are those a packet can need.
const (
	recBits        = 20
	recMask        = 1<<recBits - 1
	protoOther     = 15
	filterPortless = 1 << 9
	needBits       = dirsAll | famBoth<<3 | filterPortless
)

// protoClass numbers the protocols rules usually name, for the filter.
var protoClass = func() (pc [256]uint8) {
	for i := range pc {
		pc[i] = protoOther
	}
	for i, p := range []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, protoSCTP, protoDCCP, protoUDPLite, 47, 50, 51, 4, 41, 89, 112} {
		pc[p] = uint8(i + 1)
	}
	return pc
}()

// filter is a rule's filter, from its flags.
func filter(flags uint32) uint32 {
	pc := uint32(0)
	if flags&flagAnyProto == 0 {
		pc = uint32(protoClass[flags>>16&0xff])
	}
	f := flags&(dirsAll|famBoth<<3) | pc<<5
	if flags&flagPortless != 0 {
		f |= filterPortless
	}
	return f
}

// sieve is what a packet's candidates must pass: need are the bits the
// filter must have (the packet's direction and family, and filterPortless
// if it has no ports), acc the protocol classes it accepts.
type sieve struct{ need, acc uint32 }

func (s sieve) pass(cand uint32) bool {
	f := cand >> recBits
	return f&s.need == s.need && s.acc>>(f>>5&15)&1 != 0
}

// keyOf is a packet's key, as quick4 takes it: its protocol, and above
// it the bits a candidate's filter must have for it (sieve.need).
func keyOf(p *Packet, dir Direction) uint32 {
	need := uint32(1<<dir | fam4<<3)
	if p.IPv6 {
		need = 1<<dir | fam6<<3
	}
	if p.NoPorts {
		need |= filterPortless
	}
	return uint32(p.Proto) | need<<8
}

// A rule's record:
//
//	0: flags: dirs (3 bits), fams<<3 (2 bits), action<<5, anyProto<<6,
//	   srcAny<<7, dstAny<<8, skipSport<<9, skipDport<<10, portless<<11,
//	   proto<<16
//	1: IPv4 source prefixes | IPv4 destination prefixes<<16
//	2: IPv6 source prefixes | IPv6 destination prefixes<<16
//	3: source port ranges | destination port ranges<<16
//	then the port ranges (from<<16|to), the IPv4 prefixes (address, mask),
//	the IPv6 prefixes (four words of address, most significant first, and
//	the prefix length).
//
// The trie a rule is indexed in has checked the field it is indexed by,
// so its record says to skip it: srcAny or dstAny for an address,
// skipSport or skipDport for a port range.
const (
	recFlags = iota
	recN4
	recN6
	recNPorts
	recHead

	flagAction   = 1 << 5
	flagAnyProto = 1 << 6
	flagSrcAny   = 1 << 7
	flagDstAny   = 1 << 8
	flagSkipSp   = 1 << 9
	flagSkipDp   = 1 << 10
	flagPortless = 1 << 11 // the rule names no ports

	words4 = 2
	words6 = 5
)

// Packet is what a rule looks at. PacketFromFrame fills it from a frame.
type Packet struct {
	// Dir is In or Out for a port's rules, Both for a network's.
	Dir Direction
	// IPv6 tells how to read Src and Dst: an IPv4 address is in the first
	// four bytes, the rest ignored.
	IPv6     bool
	Proto    uint8
	Src, Dst [16]byte
	SrcPort  uint16
	DstPort  uint16
	// NoPorts says the ports are unknown: a fragment other than the
	// first, or a header cut short. Rules that name ports do not match.
	NoPorts bool
	// Len is the frame's length, for the byte counters.
	Len int
}

// SetAddrs sets Src, Dst and IPv6 from two addresses of the same family.
// An IPv4-mapped IPv6 address stays IPv6, as it would be in an IPv6
// header.
func (p *Packet) SetAddrs(src, dst netip.Addr) bool {
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return false
	}
	p.IPv6 = !src.Is4()
	p.Src, p.Dst = [16]byte{}, [16]byte{}
	if p.IPv6 {
		p.Src, p.Dst = src.As16(), dst.As16()
	} else {
		s, d := src.As4(), dst.As4()
		copy(p.Src[:], s[:])
		copy(p.Dst[:], d[:])
	}
	return true
}

// SrcAddr is Src as an address.
func (p *Packet) SrcAddr() netip.Addr { return p.addr(&p.Src) }

// DstAddr is Dst as an address.
func (p *Packet) DstAddr() netip.Addr { return p.addr(&p.Dst) }

func (p *Packet) addr(b *[16]byte) netip.Addr {
	if p.IPv6 {
		return netip.AddrFrom16(*b)
	}
	return netip.AddrFrom4([4]byte(b[:4]))
}

// Match finds the first rule that matches p and returns its action and
// number, or the default action and -1. Its cost does not grow with the
// number of rules: see the package documentation. A nil Classifier allows
// everything.
func (c *Classifier) Match(p *Packet) (Action, int) {
	if c == nil {
		return Allow, -1
	}
	dir := p.Dir
	if dir > Out {
		dir = Both
	}
	best := c.first[dir][p.Proto]
	pi := c.portIndex[p.Proto]
	if p.NoPorts || int(pi) >= len(c.ports) {
		pi = 0 // no ports: the empty tries
	}
	pt := &c.ports[pi]
	var vd, vs, vdp, vsp uint32
	if p.IPv6 {
		vd, vs, vdp, vsp = c.find6(pt,
			binary.BigEndian.Uint64(p.Dst[:8]), binary.BigEndian.Uint64(p.Dst[8:]),
			binary.BigEndian.Uint64(p.Src[:8]), binary.BigEndian.Uint64(p.Src[8:]), uint32(p.DstPort), uint32(p.SrcPort))
	} else {
		vd, vs, vdp, vsp = find32x4(c.nodes32, c.kv32, &c.dst4, &c.src4, &pt.dst, &pt.src,
			binary.BigEndian.Uint32(p.Dst[:4]), binary.BigEndian.Uint32(p.Src[:4]), uint32(p.DstPort), uint32(p.SrcPort))
	}
	switch v := vd | vs | vdp | vsp; {
	case v == 0:
	case v&oneBit != 0 && b2u(vd != 0)+b2u(vs != 0)+b2u(vdp != 0)+b2u(vsp != 0) == 1:
		// One value, a single candidate: the most common case, checked
		// here, where the calls would cost more than the check. It is
		// holds, with the packet's fields for the probe's.
		if r := v & recMask; r < best {
			if q := &c.quick[r]; q.record == 0 {
				if q.fits(keyOf(p, dir), binary.BigEndian.Uint32(p.Src[:4]), binary.BigEndian.Uint32(p.Dst[:4]), uint32(p.DstPort)) {
					best = r
				}
			} else if c.matches(r, p, dir) {
				best = r
			}
		}
	default:
		best = c.candidates(vd, vs, vdp, vsp, best, p, dir)
	}
	for _, r := range c.residual {
		if r >= best {
			break
		}
		if c.matches(r, p, dir) {
			best = r
			break
		}
	}
	// Read an action even for the default (rule 0's), so that the result
	// is a selection, not a branch.
	at := best
	if best == noRule {
		at = 0
	}
	a, r := Action(c.actions[at>>6]>>(at&63))&1, int(best)
	if best == noRule {
		a, r = c.deflt, -1
	}
	return a, r
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// find6 is find32x4 for an IPv6 packet: its addresses in the trie128s,
// its ports in the trie32s pt.
func (c *Classifier) find6(pt *portTries, dhi, dlo, shi, slo uint64, dp, sp uint32) (uint32, uint32, uint32, uint32) {
	a, b := &c.dst6, &c.src6
	n := c.nodes128
	ea, eb := a.root(n, dhi, dlo), b.root(n, shi, slo)
	n32 := c.nodes32
	ec := n32[pt.dst.rootOff+uint32(uint64(dp)<<(pt.dst.rootUp&63)>>32)]
	ed := n32[pt.src.rootOff+uint32(uint64(sp)<<(pt.src.rootUp&63)>>32)]
	for range max(a.depth, b.depth) {
		ea, eb = step128(n, ea, dhi, dlo), step128(n, eb, shi, slo)
	}
	for range max(pt.dst.depth, pt.src.depth) {
		ec, ed = step32(n32, ec, dp), step32(n32, ed, sp)
	}
	if (ea&(ea<<1)|eb&(eb<<1))&nodeBit != 0 { // rare: deeper than usual
		ea, eb = deeper128(n, ea, dhi, dlo), deeper128(n, eb, shi, slo)
	}
	if a.leaves {
		ea = a.leaf(c.keys128, c.vals128, ea, dhi, dlo)
	}
	if b.leaves {
		eb = b.leaf(c.keys128, c.vals128, eb, shi, slo)
	}
	if (ec&(ec<<1)|ed&(ed<<1))&nodeBit != 0 {
		ec, ed = deeper32(n32, ec, dp), deeper32(n32, ed, sp)
	}
	if pt.dst.leaves {
		ec = leaf32(c.kv32, ec, dp)
	}
	if pt.src.leaves {
		ed = leaf32(c.kv32, ed, sp)
	}
	return ea, eb, ec, ed
}

// probe is a packet as its candidates see it.
type probe struct {
	key uint32 // keyOf
	// The addresses, if IPv4, and the destination port, as quick4 takes
	// them.
	src, dst, dport uint32
	p               *Packet
	dir             Direction
}

// candidates is the first rule before best among the candidates of the
// four trie values that matches p, else best. The first rule that matches
// a packet is the first that matches in the list of the field it is
// indexed by, so it is the smallest of the four lists' first matches;
// each list is searched only below the matches found before it.
func (c *Classifier) candidates(vd, vs, vdp, vsp, best uint32, p *Packet, dir Direction) uint32 {
	var pr probe // field by field: a literal would be built aside and copied
	pr.p, pr.dir, pr.key, pr.dport = p, dir, keyOf(p, dir), uint32(p.DstPort)
	pr.src, pr.dst = binary.BigEndian.Uint32(p.Src[:4]), binary.BigEndian.Uint32(p.Dst[:4])
	// Most values are 0: tests cost less than a loop over the four.
	if vd != 0 {
		best = c.firstOf(vd, best, &pr)
	}
	if vs != 0 {
		best = c.firstOf(vs, best, &pr)
	}
	if vdp != 0 {
		best = c.firstOf(vdp, best, &pr)
	}
	if vsp != 0 {
		best = c.firstOf(vsp, best, &pr)
	}
	return best
}

// firstOf is the first candidate of trie value v before rule best that
// matches, else best.
func (c *Classifier) firstOf(v, best uint32, pr *probe) uint32 {
	if v&oneBit != 0 {
		if r := v & recMask; r < best && c.holds(r, pr) {
			return r
		}
		return best
	}
	// A list: the filters sieve it before any candidate's quick4 is read.
	sv := sieve{need: pr.key >> 8, acc: 1 | 1<<protoClass[pr.p.Proto] | 1<<protoOther}
	for _, e := range c.cand[v+1 : v+1+c.cand[v]] {
		r := e & recMask
		if r >= best {
			break
		}
		if sv.pass(e) && c.holds(r, pr) {
			return r
		}
	}
	return best
}

// holds checks a candidate against the fields that its index did not
// check.
func (c *Classifier) holds(r uint32, pr *probe) bool {
	if q := &c.quick[r]; q.record == 0 {
		return q.fits(pr.key, pr.src, pr.dst, pr.dport)
	}
	return c.matches(r, pr.p, pr.dir)
}

// fits checks a quick4 that is not a record's against a packet's key,
// addresses and destination port. An IPv6 packet fails on its key any
// quick4 with a prefix, which makes its rule IPv4 only, so its addresses
// may be the first four bytes of its own.
func (q *quick4) fits(key, src, dst, dport uint32) bool {
	return key&q.keyMask == q.key && src&q.srcMask == q.src && dst&q.dstMask == q.dst &&
		dport-q.dport>>16 <= q.dport&0xffff
}

// matches checks the fields of rule r but the one it is indexed by.
func (c *Classifier) matches(r uint32, p *Packet, dir Direction) bool {
	rec := c.rec[c.recAt[r]:]
	f := rec[recFlags]
	fam := uint32(fam4 << 3)
	if p.IPv6 {
		fam = fam6 << 3
	}
	if f&(1<<dir) == 0 || f&fam == 0 || f&flagAnyProto == 0 && f>>16 != uint32(p.Proto) {
		return false
	}
	n4, n6, np := rec[recN4], rec[recN6], rec[recNPorts]
	items := rec[recHead:]
	if np != 0 {
		nsp, ndp := np&0xffff, np>>16
		if p.NoPorts || nsp != 0 && f&flagSkipSp == 0 && !inRanges(items[:nsp], p.SrcPort) ||
			ndp != 0 && f&flagSkipDp == 0 && !inRanges(items[nsp:nsp+ndp], p.DstPort) {
			return false
		}
		items = items[nsp+ndp:]
	}
	ns4, nd4 := n4&0xffff, n4>>16
	if !p.IPv6 {
		return (f&flagDstAny != 0 || in4(items[words4*ns4:words4*(ns4+nd4)], binary.BigEndian.Uint32(p.Dst[:4]))) &&
			(f&flagSrcAny != 0 || in4(items[:words4*ns4], binary.BigEndian.Uint32(p.Src[:4])))
	}
	items = items[words4*(ns4+nd4):]
	ns6, nd6 := n6&0xffff, n6>>16
	return (f&flagDstAny != 0 || in6(items[words6*ns6:words6*(ns6+nd6)], key6(&p.Dst))) &&
		(f&flagSrcAny != 0 || in6(items[:words6*ns6], key6(&p.Src)))
}

func key6(b *[16]byte) u128 {
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func inRanges(ws []uint32, port uint16) bool {
	p := uint32(port)
	for _, w := range ws {
		if p >= w>>16 && p <= w&0xffff {
			return true
		}
	}
	return false
}

func in4(ws []uint32, a uint32) bool {
	for i := 0; i+1 < len(ws); i += 2 {
		if a&ws[i+1] == ws[i] {
			return true
		}
	}
	return false
}

func in6(ws []uint32, a u128) bool {
	for i := 0; i+4 < len(ws); i += 5 {
		hi, lo := uint64(ws[i])<<32|uint64(ws[i+1]), uint64(ws[i+2])<<32|uint64(ws[i+3])
		var mhi, mlo uint64
		if n := ws[i+4]; n >= 64 {
			mhi, mlo = ^uint64(0), ^uint64(0)<<(128-n) // n == 64 shifts by 64: 0
		} else {
			mhi = ^uint64(0) << (64 - n)
		}
		if a.hi&mhi == hi && a.lo&mlo == lo {
			return true
		}
	}
	return false
}

// Len is the number of rules.
func (c *Classifier) Len() int {
	if c == nil {
		return 0
	}
	return c.rules
}

// Default is the action when no rule matches.
func (c *Classifier) Default() Action {
	if c == nil {
		return Allow
	}
	return c.deflt
}

// Info describes how a classifier was compiled, for logs and tests.
type Info struct {
	Rules     int // in the ruleset
	Dead      int // can never be the first match: duplicates, or shadowed by earlier catch-alls
	ByProto   int // name only a direction and a protocol
	ByAddress int // indexed by a source or destination prefix
	ByPort    int // indexed by a source or destination port range
	Residual  int // checked one by one
	// Bytes is the memory of the rule records, tries and lists.
	Bytes int
	// MaxDepth is the deepest trie, in nodes; MaxList the longest list.
	MaxDepth, MaxList int
}

func (i Info) String() string {
	return fmt.Sprintf("%d rules (%d dead, %d by protocol, %d by address, %d by port, %d one by one), %d KiB, trie depth %d, longest list %d",
		i.Rules, i.Dead, i.ByProto, i.ByAddress, i.ByPort, i.Residual, i.Bytes>>10, i.MaxDepth, i.MaxList)
}

// Info describes the compiled structure.
func (c *Classifier) Info() Info {
	if c == nil {
		return Info{}
	}
	return c.info
}
