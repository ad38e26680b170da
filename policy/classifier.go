package policy

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"sync"
)

// Classifier is a compiled ruleset: immutable, safe for any number of
// concurrent Match calls, and replaced whole (see Table) when the rules
// change. Only its counters change after Compile.
type Classifier struct {
	// rec holds the records of the rules that can match, in rule order
	// (see record layout below). Rules are referred to by the offset of
	// their record, so comparing offsets compares rule order.
	rec   []uint32
	rules int
	deflt Action

	// first is, per packet direction and protocol, the first rule that
	// names nothing but a direction and a protocol: it matches every
	// packet of its direction and protocol. noRule when there is none.
	first [3][256]uint32

	// The address indexes, by family.
	src4, dst4 trie32
	src6, dst6 trie128
	// portIndex maps a protocol to its port indexes in ports; ports[0]
	// is empty, for protocols no rule is indexed by port for.
	portIndex [256]uint8
	ports     []portTries
	// cand holds the candidate lists of every index: a length, then that
	// many records, ascending.
	cand []uint32
	// residual records are checked one by one: only rules whose ranges
	// would cost the indexes too much memory land here (see compile.go).
	residual []uint32

	info Info

	mu       sync.Mutex
	counters []*Counter
}

type portTries struct{ src, dst trie32 }

const noRule = math.MaxUint32

// A rule's record:
//
//	0: flags: dirs (3 bits), fams<<3 (2 bits), action<<5, anyProto<<6,
//	   srcAny<<7, dstAny<<8, proto<<16
//	1: the rule's number
//	2: IPv4 source prefixes | IPv4 destination prefixes<<16
//	3: IPv6 source prefixes | IPv6 destination prefixes<<16
//	4: source port ranges | destination port ranges<<16
//	then the port ranges (from<<16|to), the IPv4 prefixes (address, mask),
//	the IPv6 prefixes (four words of address, most significant first, and
//	the prefix length).
const (
	recFlags = iota
	recRule
	recN4
	recN6
	recNPorts
	recHead

	flagAction   = 1 << 5
	flagAnyProto = 1 << 6
	flagSrcAny   = 1 << 7
	flagDstAny   = 1 << 8

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
		vd, vs = find128x2(&c.dst6, &c.src6,
			binary.BigEndian.Uint64(p.Dst[:8]), binary.BigEndian.Uint64(p.Dst[8:]),
			binary.BigEndian.Uint64(p.Src[:8]), binary.BigEndian.Uint64(p.Src[8:]))
		vdp, vsp = find32x2(&pt.dst, &pt.src, uint32(p.DstPort), uint32(p.SrcPort))
	} else {
		vd, vs, vdp, vsp = find32x4(&c.dst4, &c.src4, &pt.dst, &pt.src,
			binary.BigEndian.Uint32(p.Dst[:4]), binary.BigEndian.Uint32(p.Src[:4]), uint32(p.DstPort), uint32(p.SrcPort))
	}
	if vd|vs|vdp|vsp != 0 {
		best = c.candidates(vd, best, p, dir)
		best = c.candidates(vs, best, p, dir)
		best = c.candidates(vdp, best, p, dir)
		best = c.candidates(vsp, best, p, dir)
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
	if best == noRule {
		return c.deflt, -1
	}
	return Action(c.rec[best+recFlags]>>5) & 1, int(c.rec[best+recRule])
}

// candidates checks a trie value's candidates in order, up to the best
// match so far.
func (c *Classifier) candidates(v, best uint32, p *Packet, dir Direction) uint32 {
	switch {
	case v == 0:
		return best
	case v&oneBit != 0:
		if r := v &^ oneBit; r < best && c.matches(r, p, dir) {
			return r
		}
		return best
	}
	n := c.cand[v]
	for _, r := range c.cand[v+1 : v+1+n] {
		if r >= best {
			break
		}
		if c.matches(r, p, dir) {
			return r
		}
	}
	return best
}

// matches checks every field of the rule whose record is at r.
func (c *Classifier) matches(r uint32, p *Packet, dir Direction) bool {
	rec := c.rec[r:]
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
		if p.NoPorts || nsp != 0 && !inRanges(items[:nsp], p.SrcPort) || ndp != 0 && !inRanges(items[nsp:nsp+ndp], p.DstPort) {
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
