package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
)

// naiveMatch is the reference: the rules in order, each field read
// straight from its definition.
func naiveMatch(rs *Ruleset, p *Packet) (Action, int) {
	for i := range rs.Rules {
		if naiveRule(&rs.Rules[i], p) {
			return rs.Rules[i].Action, i
		}
	}
	return rs.Default, -1
}

func naiveRule(r *Rule, p *Packet) bool {
	if r.Direction != Both && r.Direction != p.Dir {
		return false
	}
	if r.Proto != AnyProto && r.Proto != int(p.Proto) {
		return false
	}
	src, dst := p.SrcAddr(), p.DstAddr()
	in := func(ps []netip.Prefix, a netip.Addr) bool {
		return len(ps) == 0 || slices.ContainsFunc(ps, func(q netip.Prefix) bool { return q.Contains(a) })
	}
	ports := func(rs []PortRange, port uint16) bool {
		if len(rs) == 0 {
			return true
		}
		return !p.NoPorts && slices.ContainsFunc(rs, func(r PortRange) bool { return r.From <= port && port <= r.To })
	}
	return in(r.Src, src) && in(r.Dst, dst) && ports(r.SrcPorts, p.SrcPort) && ports(r.DstPorts, p.DstPort)
}

// gen makes random rules and packets. With a small universe, rules
// overlap and packets hit them often, which is what a cross-check needs;
// with a large one it makes realistic rulesets for the benchmark.
type gen struct {
	r *rand.Rand
	// small draws everything from a few addresses and ports.
	small bool
}

func newGen(seed uint64, small bool) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), small: small}
}

func (g *gen) pick(n int) int { return g.r.IntN(n) }

func (g *gen) chance(pct int) bool { return g.r.IntN(100) < pct }

var smallBases4 = []netip.Addr{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.1.0"), netip.MustParseAddr("192.168.0.0")}
var smallBases6 = []netip.Addr{netip.MustParseAddr("fd00::"), netip.MustParseAddr("fd00::1:0"), netip.MustParseAddr("2001:db8::")}

// addr is a random address of the family.
func (g *gen) addr(v6 bool) netip.Addr {
	if g.small {
		if v6 {
			b := smallBases6[g.pick(len(smallBases6))].As16()
			b[15] = byte(g.pick(8))
			b[14] = byte(g.pick(2))
			return netip.AddrFrom16(b)
		}
		b := smallBases4[g.pick(len(smallBases4))].As4()
		b[3] = byte(g.pick(8))
		if g.chance(10) {
			b[3] = 255
		}
		return netip.AddrFrom4(b)
	}
	if v6 {
		var b [16]byte
		for i := range b {
			b[i] = byte(g.r.Uint32())
		}
		if g.chance(60) {
			copy(b[:], netip.MustParseAddr("2001:db8::").AsSlice()[:4]) // a provider's /32
		} else {
			b[0] = 0xfd                                   // a unique local /48: fd, then a random 40-bit global ID
			b[1], b[2] = byte(g.pick(4)), byte(g.pick(4)) // of a few sites
		}
		if g.chance(70) {
			b[6], b[7] = 0, byte(g.pick(16)) // subnets cluster, as they do
		}
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	switch g.pick(10) {
	case 0, 1, 2, 3, 4:
		b[0] = 10
	case 5, 6:
		b[0], b[1] = 172, 16+b[1]%16
	case 7:
		b[0], b[1] = 192, 168
	}
	return netip.AddrFrom4(b)
}

func (g *gen) prefix(v6 bool) netip.Prefix {
	a := g.addr(v6)
	var bits int
	switch {
	case g.small && v6:
		bits = []int{0, 64, 112, 120, 124, 126, 127, 128, 128}[g.pick(9)]
	case g.small:
		bits = []int{0, 8, 16, 23, 24, 29, 30, 31, 32, 32}[g.pick(10)]
	case v6:
		bits = []int{48, 56, 64, 64, 96, 128, 128, 128}[g.pick(8)]
	default:
		bits = []int{20, 24, 24, 24, 26, 28, 30, 32, 32, 32, 32}[g.pick(11)]
	}
	return netip.PrefixFrom(a, bits).Masked()
}

var commonPorts = []uint16{22, 25, 53, 80, 123, 443, 993, 3306, 5432, 6379, 8080, 8443, 9090}

func (g *gen) port() uint16 {
	if g.small {
		switch g.pick(6) {
		case 0:
			return 0
		case 1:
			return 65535
		}
		return uint16(g.pick(12))
	}
	if g.chance(40) {
		return commonPorts[g.pick(len(commonPorts))]
	}
	return uint16(g.r.Uint32())
}

func (g *gen) ranges() []PortRange {
	var out []PortRange
	for range 1 + g.pick(2) {
		a := g.port()
		b := a
		if g.chance(30) {
			if g.small {
				b = a + uint16(g.pick(5))
			} else {
				b = a + uint16(g.pick(1000))
			}
			if b < a {
				b = 65535
			}
		}
		if g.small && g.chance(3) {
			a, b = 0, 65535
		}
		out = append(out, PortRange{a, b})
	}
	return out
}

// rule makes a rule; a realistic one names an address or a port.
func (g *gen) rule() Rule {
	r := Rule{Action: Action(g.pick(2)), Direction: Direction(g.pick(3)), Proto: AnyProto}
	v6 := g.chance(25)
	switch g.pick(20) {
	case 0, 1, 2, 3, 4, 5, 6, 7, 8:
		r.Proto = ProtoTCP
	case 9, 10, 11, 12, 13:
		r.Proto = ProtoUDP
	case 14, 15:
		r.Proto = ProtoICMP
		if v6 {
			r.Proto = ProtoICMPv6
		}
	case 16:
		r.Proto = 47
	case 17:
		r.Proto = 132 // sctp, which has ports too
	}
	both := g.small && g.chance(20) // a rule for both families
	addrs := func() []netip.Prefix {
		ps := []netip.Prefix{g.prefix(v6)}
		if both {
			ps = append(ps, g.prefix(!v6))
		}
		if g.chance(15) {
			ps = append(ps, g.prefix(v6))
		}
		return ps
	}
	dstPct, srcPct := 70, 45
	if g.small {
		dstPct, srcPct = 50, 50
	}
	if g.chance(dstPct) {
		r.Dst = addrs()
	}
	if g.chance(srcPct) {
		r.Src = addrs()
	}
	if hasPorts(r.Proto) {
		if g.chance(75) {
			r.DstPorts = g.ranges()
		}
		if g.chance(10) {
			r.SrcPorts = g.ranges()
		}
	}
	if (r.Proto == ProtoICMP && famsOf(r.Src)&famsOf(r.Dst) == fam6) || (r.Proto == ProtoICMPv6 && famsOf(r.Src)&famsOf(r.Dst) == fam4) {
		r.Proto = AnyProto
	}
	if !g.small && len(r.Src)+len(r.Dst) == 0 && g.chance(90) {
		r.Dst = addrs() // most rules of a large ruleset are about some hosts
	}
	if len(r.Src)+len(r.Dst)+len(r.SrcPorts)+len(r.DstPorts) == 0 && (!g.small || g.chance(90)) {
		// Few catch-alls: a realistic ruleset has few, and behind the
		// first one every later rule is dead.
		r.Dst = addrs()
	}
	return r
}

func (g *gen) ruleset(n int) Ruleset {
	rs := Ruleset{Default: Action(g.pick(2))}
	for range n {
		switch {
		case g.small && len(rs.Rules) > 0 && g.chance(5):
			r := rs.Rules[g.pick(len(rs.Rules))] // a duplicate, maybe of another action
			r.Action = Action(g.pick(2))
			rs.Rules = append(rs.Rules, r)
		default:
			rs.Rules = append(rs.Rules, g.rule())
		}
	}
	return rs
}

// packet makes a random packet.
func (g *gen) packet() Packet {
	v6 := g.chance(25)
	p := Packet{Dir: Direction(g.pick(3)), Len: 64 + g.pick(1400)}
	p.SetAddrs(g.addr(v6), g.addr(v6))
	switch g.pick(8) {
	case 0, 1, 2:
		p.Proto = ProtoTCP
	case 3, 4:
		p.Proto = ProtoUDP
	case 5:
		p.Proto = ProtoICMP
		if v6 {
			p.Proto = ProtoICMPv6
		}
	case 6:
		p.Proto = uint8(g.pick(256))
	case 7:
		p.Proto = 132
	}
	p.SrcPort, p.DstPort = g.port(), g.port()
	p.NoPorts = g.chance(5)
	return p
}

// packetFor makes a packet that rule r matches (an earlier rule may win).
func (g *gen) packetFor(r *Rule) Packet {
	p := g.packet()
	if r.Direction != Both {
		p.Dir = r.Direction
	}
	fams := famsOf(r.Src) & famsOf(r.Dst)
	v6 := fams == fam6 || fams == famBoth && g.chance(25)
	pick := func(ps []netip.Prefix) netip.Addr {
		var in []netip.Prefix
		for _, q := range ps {
			if q.Addr().Is6() == v6 {
				in = append(in, q)
			}
		}
		if len(in) == 0 {
			return g.addr(v6)
		}
		q := in[g.pick(len(in))]
		b := q.Addr().AsSlice()
		for i := q.Bits(); i < len(b)*8; i++ {
			if g.chance(50) {
				b[i/8] |= 0x80 >> (i % 8)
			}
		}
		a, _ := netip.AddrFromSlice(b)
		return a
	}
	p.SetAddrs(pick(r.Src), pick(r.Dst))
	if r.Proto != AnyProto {
		p.Proto = uint8(r.Proto)
	}
	in := func(rs []PortRange, old uint16) uint16 {
		if len(rs) == 0 {
			return old
		}
		pr := rs[g.pick(len(rs))]
		return pr.From + uint16(g.r.IntN(int(pr.To-pr.From)+1))
	}
	p.SrcPort, p.DstPort = in(r.SrcPorts, p.SrcPort), in(r.DstPorts, p.DstPort)
	if len(r.SrcPorts)+len(r.DstPorts) > 0 {
		p.NoPorts = false
	}
	return p
}
