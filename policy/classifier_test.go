package policy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func mustCompile(t testing.TB, rs Ruleset) *Classifier {
	t.Helper()
	c, err := Compile(rs)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return c
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := ParsePrefix(s)
		if err != nil {
			panic(err)
		}
		out = append(out, p)
	}
	return out
}

func ports(ss ...string) []PortRange {
	var out []PortRange
	for _, s := range ss {
		r, err := ParsePortRange(s)
		if err != nil {
			panic(err)
		}
		out = append(out, r)
	}
	return out
}

// pkt builds a packet: "in tcp 10.0.0.1:1234 > 10.0.0.2:22".
func pkt(dir Direction, proto int, src string, sport uint16, dst string, dport uint16) *Packet {
	p := &Packet{Dir: dir, Proto: uint8(proto), SrcPort: sport, DstPort: dport, Len: 100}
	if !p.SetAddrs(netip.MustParseAddr(src), netip.MustParseAddr(dst)) {
		panic("families differ")
	}
	return p
}

// check runs every case through the classifier and the reference.
func check(t *testing.T, rs Ruleset, cases []struct {
	p    *Packet
	rule int
}) {
	t.Helper()
	c := mustCompile(t, rs)
	for i, tc := range cases {
		act, rule := c.Match(tc.p)
		wantAct := rs.Default
		if tc.rule >= 0 {
			wantAct = rs.Rules[tc.rule].Action
		}
		if rule != tc.rule || act != wantAct {
			t.Errorf("case %d: got rule %d (%v), want %d (%v)", i, rule, act, tc.rule, wantAct)
		}
		if na, nr := naiveMatch(&rs, tc.p); nr != tc.rule || na != wantAct {
			t.Errorf("case %d: the reference says rule %d (%v), the case %d", i, nr, na, tc.rule)
		}
	}
}

type cases = []struct {
	p    *Packet
	rule int
}

func TestFirstMatchWins(t *testing.T) {
	rs := Ruleset{Rules: []Rule{
		{Action: Deny, Proto: ProtoTCP, Dst: pfx("10.0.0.2"), DstPorts: ports("22")},
		{Action: Allow, Proto: ProtoTCP, Dst: pfx("10.0.0.0/24")},
		{Action: Deny, Proto: AnyProto},
		{Action: Allow, Proto: ProtoTCP, DstPorts: ports("22")}, // never: rule 2 takes all
	}}
	check(t, rs, cases{
		{pkt(In, ProtoTCP, "10.0.0.1", 999, "10.0.0.2", 22), 0},
		{pkt(In, ProtoTCP, "10.0.0.1", 999, "10.0.0.2", 23), 1},
		{pkt(In, ProtoTCP, "10.0.0.1", 999, "10.0.1.2", 22), 2},
		{pkt(In, ProtoUDP, "10.0.0.1", 999, "10.0.0.2", 22), 2},
	})
	c := mustCompile(t, rs)
	if in := c.Info(); in.Dead != 1 || in.ByProto != 1 {
		t.Errorf("info: %v; want rule 3 dead and rule 2 by protocol", in)
	}
}

func TestDefault(t *testing.T) {
	r := Rule{Action: Allow, Proto: ProtoTCP, DstPorts: ports("80")}
	p80 := pkt(In, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 80)
	p81 := pkt(In, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 81)
	check(t, Ruleset{Rules: []Rule{r}}, cases{{p80, 0}, {p81, -1}})
	check(t, Ruleset{Rules: []Rule{r}, Default: Deny}, cases{{p80, 0}, {p81, -1}})
	c := mustCompile(t, Ruleset{Default: Deny})
	if a, r := c.Match(p80); a != Deny || r != -1 {
		t.Errorf("empty deny ruleset: %v %d", a, r)
	}
	c = mustCompile(t, Ruleset{})
	if a, r := c.Match(p80); a != Allow || r != -1 {
		t.Errorf("empty ruleset: %v %d", a, r)
	}
	var nilc *Classifier
	if a, r := nilc.Match(p80); a != Allow || r != -1 {
		t.Errorf("nil classifier: %v %d", a, r)
	}
}

func TestDirection(t *testing.T) {
	rs := Ruleset{Rules: []Rule{
		{Action: Deny, Direction: In, Proto: ProtoTCP, DstPorts: ports("22")},
		{Action: Allow, Direction: Out, Proto: ProtoTCP, DstPorts: ports("22")},
		{Action: Deny, Direction: Both, Proto: ProtoUDP, DstPorts: ports("53")},
	}}
	check(t, rs, cases{
		{pkt(In, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 22), 0},
		{pkt(Out, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 22), 1},
		{pkt(Both, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 22), -1}, // a network's frame
		{pkt(In, ProtoUDP, "10.0.0.1", 1, "10.0.0.2", 53), 2},
		{pkt(Out, ProtoUDP, "10.0.0.1", 1, "10.0.0.2", 53), 2},
		{pkt(Both, ProtoUDP, "10.0.0.1", 1, "10.0.0.2", 53), 2},
	})
	// An out-of-range direction is taken as Both, never a panic.
	c := mustCompile(t, rs)
	if _, r := c.Match(pkt(Direction(9), ProtoUDP, "10.0.0.1", 1, "10.0.0.2", 53)); r != 2 {
		t.Errorf("direction 9: rule %d", r)
	}
}

func TestProto(t *testing.T) {
	rs := Ruleset{Rules: []Rule{
		{Action: Deny, Proto: ProtoICMP},
		{Action: Deny, Proto: ProtoICMPv6, Src: pfx("fe80::/10")},
		{Action: Deny, Proto: 47, Dst: pfx("10.9.0.0/16")},
		{Action: Allow, Proto: ProtoUDP, Dst: pfx("10.9.0.0/16")},
		{Action: Allow, Proto: AnyProto, Dst: pfx("10.9.0.0/16")},
	}}
	check(t, rs, cases{
		{pkt(In, ProtoICMP, "10.0.0.1", 0, "10.0.0.2", 0), 0},
		{pkt(In, ProtoICMP, "fd00::1", 0, "fd00::2", 0), 0}, // the number, whatever the family
		{pkt(In, ProtoICMPv6, "fe80::1", 0, "fd00::2", 0), 1},
		{pkt(In, ProtoICMPv6, "fd00::1", 0, "fd00::2", 0), -1},
		{pkt(In, 47, "10.0.0.1", 0, "10.9.3.4", 0), 2},
		{pkt(In, ProtoUDP, "10.0.0.1", 5, "10.9.3.4", 6), 3},
		{pkt(In, ProtoTCP, "10.0.0.1", 5, "10.9.3.4", 6), 4},
		{pkt(In, 200, "10.0.0.1", 0, "10.9.3.4", 0), 4},
		{pkt(In, 200, "10.0.0.1", 0, "10.8.3.4", 0), -1},
	})
}

func TestPortRanges(t *testing.T) {
	rs := Ruleset{Rules: []Rule{
		{Action: Deny, Proto: ProtoTCP, DstPorts: ports("22")},
		{Action: Deny, Proto: ProtoTCP, DstPorts: ports("8000-8080", "9000")},
		{Action: Allow, Proto: ProtoTCP, SrcPorts: ports("1024-65535"), DstPorts: ports("0-1023")},
		{Action: Deny, Proto: ProtoUDP, DstPorts: ports("0-65535")},
		{Action: Allow, Proto: ProtoUDP, SrcPorts: ports("65535")},
	}}
	check(t, rs, cases{
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 22), 0},
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 21), 2},
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 23), 2},
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 7999), -1},
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 8000), 1},
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 8080), 1},
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 8081), -1},
		{pkt(In, ProtoTCP, "10.0.0.1", 5000, "10.0.0.2", 9000), 1},
		{pkt(In, ProtoTCP, "10.0.0.1", 1023, "10.0.0.2", 80), -1},
		{pkt(In, ProtoTCP, "10.0.0.1", 1024, "10.0.0.2", 0), 2},
		{pkt(In, ProtoTCP, "10.0.0.1", 65535, "10.0.0.2", 1023), 2},
		{pkt(In, ProtoTCP, "10.0.0.1", 65535, "10.0.0.2", 1024), -1},
		{pkt(In, ProtoUDP, "10.0.0.1", 0, "10.0.0.2", 0), 3},
		{pkt(In, ProtoUDP, "10.0.0.1", 0, "10.0.0.2", 65535), 3},
	})
	// Unknown ports (a later fragment) match no rule that names ports,
	// not even the full range.
	p := pkt(In, ProtoUDP, "10.0.0.1", 65535, "10.0.0.2", 53)
	p.NoPorts = true
	check(t, rs, cases{{p, -1}})
}

// TestQuick checks the rules whose candidates are checked from a quick4,
// and those that need their record: both must give the reference's
// answer, field by field, for both families and for packets without
// ports.
func TestQuick(t *testing.T) {
	rs := Ruleset{Rules: []Rule{
		// Quick: one prefix each way and a port range.
		{Action: Deny, Proto: ProtoTCP, Src: pfx("10.1.0.0/16"), Dst: pfx("192.168.1.0/24"), DstPorts: ports("443-444")},
		// Quick: no ports, so packets without ports may match.
		{Action: Deny, Proto: ProtoUDP, Src: pfx("10.2.0.0/16"), Dst: pfx("192.168.2.0/24")},
		// Record: an IPv6 prefix beside the IPv4 one, in both fields.
		{Action: Deny, Proto: ProtoTCP, Src: pfx("10.3.0.0/16", "fd03::/16"), Dst: pfx("192.168.3.0/24", "fd33::/64")},
		// Record: source ports that no index checks.
		{Action: Deny, Proto: ProtoTCP, Dst: pfx("192.168.4.4/32"), SrcPorts: ports("1000-2000")},
		// Quick: a protocol the filter cannot tell, which the key does.
		{Action: Deny, Proto: 99, Src: pfx("10.5.0.0/16"), Dst: pfx("192.168.5.0/24")},
		// Quick: one direction, which the key checks.
		{Action: Deny, Direction: Out, Proto: ProtoUDP, Src: pfx("10.6.0.0/16"), Dst: pfx("192.168.6.0/24")},
		// Quick, in the port index, which IPv6 packets look up too: the
		// key keeps them from the IPv4 prefix.
		{Action: Deny, Proto: ProtoTCP, Src: pfx("10.0.0.0/8"), DstPorts: ports("7000")},
		// Quick, in the source index, where rule 5 is in the destination
		// index: a packet meets both, which Match hands to candidates.
		{Action: Deny, Proto: ProtoUDP, Src: pfx("10.6.0.0/16")},
	}}
	c := mustCompile(t, rs)
	for i, want := range []uint32{0, 0, 1, 1, 0, 0, 0, 0} {
		if got := c.quick[i].record; got != want {
			t.Errorf("rule %d: quick4 record = %d, want %d", i, got, want)
		}
	}
	if q := c.quick[6]; q.srcMask != 0xff000000 || q.dport != 0xffff {
		t.Errorf("rule 6 is not indexed by its port: %+v", q)
	}
	noPorts := func(p *Packet) *Packet { p.NoPorts = true; return p }
	check(t, rs, cases{
		{pkt(In, ProtoTCP, "10.1.2.3", 5000, "192.168.1.9", 443), 0},
		{pkt(In, ProtoTCP, "10.1.2.3", 5000, "192.168.1.9", 444), 0},
		{pkt(In, ProtoTCP, "10.1.2.3", 5000, "192.168.1.9", 442), -1},
		{pkt(In, ProtoTCP, "10.1.2.3", 5000, "192.168.1.9", 445), -1},
		{pkt(In, ProtoTCP, "10.9.2.3", 5000, "192.168.1.9", 443), -1},
		{pkt(In, ProtoTCP, "10.1.2.3", 5000, "192.168.9.9", 443), -1},
		{pkt(In, ProtoUDP, "10.1.2.3", 5000, "192.168.1.9", 443), -1},
		{noPorts(pkt(In, ProtoTCP, "10.1.2.3", 0, "192.168.1.9", 443)), -1},
		{pkt(In, ProtoUDP, "10.2.2.3", 53, "192.168.2.9", 53), 1},
		{noPorts(pkt(In, ProtoUDP, "10.2.2.3", 0, "192.168.2.9", 0)), 1},
		{pkt(In, ProtoUDP, "10.2.2.3", 53, "192.168.3.9", 53), -1},
		{pkt(In, ProtoTCP, "10.3.2.3", 5000, "192.168.3.9", 80), 2},
		{pkt(In, ProtoTCP, "fd03::1", 5000, "fd33::9", 80), 2},
		{pkt(In, ProtoTCP, "fd03::1", 5000, "fd34::9", 80), -1},
		{pkt(In, ProtoTCP, "fd04::1", 5000, "fd33::9", 80), -1},
		{pkt(In, ProtoTCP, "10.3.2.3", 5000, "192.168.4.9", 80), -1},
		{pkt(In, ProtoTCP, "10.4.2.3", 1500, "192.168.4.4", 80), 3},
		{pkt(In, ProtoTCP, "10.4.2.3", 999, "192.168.4.4", 80), -1},
		{noPorts(pkt(In, ProtoTCP, "10.4.2.3", 1500, "192.168.4.4", 80)), -1},
		{pkt(In, 99, "10.5.2.3", 0, "192.168.5.9", 0), 4},
		{pkt(In, 98, "10.5.2.3", 0, "192.168.5.9", 0), -1},
		{pkt(In, 99, "10.6.2.3", 0, "192.168.5.9", 0), -1},
		{pkt(Out, ProtoUDP, "10.6.2.3", 53, "192.168.6.9", 53), 5},
		{pkt(In, ProtoUDP, "10.6.2.3", 53, "192.168.6.9", 53), 7}, // rule 5 fails on its key
		{pkt(Out, ProtoUDP, "10.6.2.3", 53, "192.168.7.9", 53), 7},
		{pkt(In, ProtoTCP, "10.7.2.3", 5000, "172.16.0.1", 7000), 6},
		{pkt(In, ProtoTCP, "10.7.2.3", 5000, "172.16.0.1", 7001), -1},
		{pkt(In, ProtoTCP, "a00::1", 5000, "fd00::1", 7000), -1},
	})
}

func TestCIDR(t *testing.T) {
	rs := Ruleset{Rules: []Rule{
		{Action: Deny, Src: pfx("10.1.0.0/16"), Dst: pfx("10.2.0.5")},
		{Action: Allow, Src: pfx("10.1.2.0/24", "192.168.0.0/16")},
		{Action: Deny, Dst: pfx("2001:db8::/32")},
		{Action: Allow, Src: pfx("2001:db8:1::/48", "172.16.0.0/12"), Dst: pfx("fd00::/8", "0.0.0.0/0")},
		{Action: Deny, Dst: pfx("::/0")},
	}}
	check(t, rs, cases{
		{pkt(In, ProtoTCP, "10.1.200.1", 1, "10.2.0.5", 2), 0},
		{pkt(In, ProtoTCP, "10.1.200.1", 1, "10.2.0.6", 2), -1},
		{pkt(In, ProtoTCP, "10.1.2.1", 1, "10.2.0.6", 2), 1},
		{pkt(In, ProtoTCP, "192.168.255.255", 1, "8.8.8.8", 2), 1},
		{pkt(In, ProtoTCP, "192.169.0.0", 1, "8.8.8.8", 2), -1},
		{pkt(In, ProtoTCP, "fd00::1", 1, "2001:db8:ffff::1", 2), 2},
		{pkt(In, ProtoTCP, "2001:db8:1:2::3", 1, "fd12::1", 2), 3},
		{pkt(In, ProtoTCP, "2001:db8:2::3", 1, "fd12::1", 2), 4},
		{pkt(In, ProtoTCP, "172.31.255.255", 1, "1.2.3.4", 2), 3},
		{pkt(In, ProtoTCP, "172.32.0.0", 1, "1.2.3.4", 2), -1},
		{pkt(In, ProtoTCP, "::ffff:10.1.2.1", 1, "::ffff:10.2.0.5", 2), 4}, // mapped is IPv6
	})
}

func TestEmptyFieldsAreAny(t *testing.T) {
	rs := Ruleset{Rules: []Rule{{Action: Deny, Proto: AnyProto}}, Default: Allow}
	g := newGen(1, false)
	c := mustCompile(t, rs)
	for range 1000 {
		p := g.packet()
		want := 0
		if p.Dir > Out {
			want = 0
		}
		if a, r := c.Match(&p); a != Deny || r != want {
			t.Fatalf("%+v: %v %d", p, a, r)
		}
	}
}

// TestAgainstReference is the property test: random rulesets of hundreds
// of overlapping rules, compiled, agree with the rules scanned in order on
// random packets and on packets made to hit each rule.
func TestAgainstReference(t *testing.T) {
	for seed := range uint64(40) {
		small := seed%4 != 3
		g := newGen(seed, small)
		n := 1 + g.pick(400)
		rs := g.ruleset(n)
		c := mustCompile(t, rs)
		var packets []Packet
		for range 2000 {
			packets = append(packets, g.packet())
		}
		for i := range rs.Rules {
			packets = append(packets, g.packetFor(&rs.Rules[i]))
		}
		hits := 0
		for i := range packets {
			p := &packets[i]
			a, r := c.Match(p)
			na, nr := naiveMatch(&rs, p)
			if a != na || r != nr {
				t.Fatalf("seed %d: %+v: got rule %d (%v), want %d (%v)\nwanted rule: %v\ngot rule: %v\n%v",
					seed, p, r, a, nr, na, ruleAt(&rs, nr), ruleAt(&rs, r), c.Info())
			}
			if r >= 0 {
				hits++
			}
		}
		t.Logf("seed %d: %d rules, %d/%d packets hit; %v", seed, n, hits, len(packets), c.Info())
	}
}

func ruleAt(rs *Ruleset, i int) string {
	if i < 0 {
		return "default"
	}
	return fmt.Sprintf("%d: %v", i, rs.Rules[i])
}

// TestResidual forces rules out of the indexes onto the one-by-one list.
func TestResidual(t *testing.T) {
	old := listBudget
	listBudget = 50
	defer func() { listBudget = old }()
	g := newGen(7, false)
	rs := g.ruleset(300)
	c := mustCompile(t, rs)
	if c.Info().Residual == 0 {
		t.Fatalf("no residual rules: %v", c.Info())
	}
	for range 5000 {
		p := g.packet()
		a, r := c.Match(&p)
		if na, nr := naiveMatch(&rs, &p); a != na || r != nr {
			t.Fatalf("%+v: got %d, want %d", p, r, nr)
		}
	}
}

// TestTrie checks the range trie against a binary search, with boundaries
// clustered and spread, for every key width, and with IPv4 boundaries all
// inside 10/8, where the trie32 splits only that block.
func TestTrie(t *testing.T) {
	g := newGen(3, false)
	for _, tc := range []struct {
		keyBits uint
		in10    bool
	}{{16, false}, {32, false}, {32, true}, {128, false}} {
		keyBits, in10 := tc.keyBits, tc.in10
		for _, m := range []int{1, 2, 3, 10, 100, 5000} {
			keys := []u128{{}}
			seen := map[u128]bool{{}: true}
			for len(keys) < m+1 {
				var k u128
				switch keyBits {
				case 16:
					k = u128{0, uint64(g.r.Uint32() & 0xffff)}
				case 32:
					k = u128{0, uint64(g.r.Uint32())}
					if g.chance(50) {
						k.lo = 0x0a000000 | k.lo&0xfff
					}
					if in10 {
						k.lo = 0x0a000000 | k.lo&0xffffff
					}
				default:
					k = u128{g.r.Uint64(), g.r.Uint64()}
					if g.chance(50) {
						k.hi = 0x20010db800000000
						k.lo &= 0xffff
					}
					if g.chance(10) {
						k = u128{^uint64(0), ^uint64(0) - uint64(g.pick(3))}
					}
				}
				if !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
			sortU128(keys)
			vals := make([]uint32, len(keys))
			for i := range vals {
				vals[i] = uint32(i)
			}
			var t32 trie32
			var t128 trie128
			if keyBits == 128 {
				t128 = buildTrie128(keys, vals)
			} else {
				t32 = buildTrie32(keys, vals, keyBits)
				if in10 && t32.span > 1<<24-1 {
					t.Fatalf("%d keys in 10/8: the trie splits %#x keys, not the /8", m, t32.span)
				}
			}
			probe := func(k u128) {
				want := uint32(0)
				for i, b := range keys {
					if !k.less(b) {
						want = uint32(i)
					}
				}
				var got uint32
				if keyBits == 128 {
					got = t128.find(k.hi, k.lo)
				} else {
					got = t32.find(uint32(k.lo))
				}
				if got != want {
					t.Fatalf("bits %d, %d keys: %x: got %d, want %d", keyBits, m, k, got, want)
				}
			}
			max := lowMask(keyBits)
			for range 2000 { // anywhere, inside the clusters or not
				k := u128{g.r.Uint64(), g.r.Uint64()}.andNot(lowMask(128).andNot(max))
				if g.chance(50) && keyBits == 128 {
					k.hi = 0x20010db800000000 | k.hi&0xffff
				}
				probe(k)
			}
			for _, b := range keys {
				probe(b)
				if b != (u128{}) {
					probe(b.sub(u128{0, 1}))
				}
				if b != max {
					n, _ := b.add(u128{0, 1})
					probe(n)
				}
			}
			probe(max)
		}
	}
}

func sortU128(ks []u128) {
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j].less(ks[j-1]); j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
}

// indexed are the rules a trie value holds as candidates.
func indexed(c *Classifier, v uint32) []uint32 {
	switch {
	case v == 0:
		return nil
	case v&oneBit != 0:
		return []uint32{v & recMask}
	}
	var out []uint32
	for _, e := range c.cand[v+1 : v+1+c.cand[v]] {
		out = append(out, e&recMask)
	}
	return out
}

func addr4(s string) uint32 { return binary.BigEndian.Uint32(netip.MustParseAddr(s).AsSlice()) }

// TestIndexChoice checks under which field rules are indexed, where it
// decides how many candidates a packet meets.
func TestIndexChoice(t *testing.T) {
	t.Run("the narrower field", func(t *testing.T) {
		// Rule 0 is from a /20 to a /30 that five rules' /24s cover:
		// under its destination, a packet from the /20 to elsewhere
		// meets no candidate, though more rules overlap it there.
		rs := Ruleset{Rules: []Rule{{Action: Deny, Proto: AnyProto, Src: pfx("10.9.0.0/20"), Dst: pfx("10.1.0.4/30")}}}
		for i := range 5 {
			rs.Rules = append(rs.Rules, Rule{Action: Deny, Proto: AnyProto, Src: pfx(fmt.Sprintf("192.168.%d.0/24", i)), Dst: pfx("10.1.0.0/24")})
		}
		c := mustCompile(t, rs)
		if got := indexed(c, c.src4.find(addr4("10.9.0.1"))); len(got) != 0 {
			t.Errorf("a packet from 10.9.0.1 meets rules %v", got)
		}
		if got := indexed(c, c.dst4.find(addr4("10.1.0.5"))); !slices.Contains(got, 0) {
			t.Errorf("a packet to 10.1.0.5 meets rules %v, want rule 0 among them", got)
		}
	})
	t.Run("a crowd on one value", func(t *testing.T) {
		// Fifty rules for one server, each from another /24: under the
		// server's /32 every packet to it would meet all fifty; under
		// their sources it meets one.
		var rs Ruleset
		for i := range 50 {
			rs.Rules = append(rs.Rules, Rule{Action: Allow, Proto: ProtoTCP, Src: pfx(fmt.Sprintf("172.16.%d.0/24", i)),
				Dst: pfx("10.0.0.5/32"), DstPorts: ports("443")})
		}
		c := mustCompile(t, rs)
		if got := indexed(c, c.dst4.find(addr4("10.0.0.5"))); len(got) != 0 {
			t.Errorf("a packet to the server meets rules %v", got)
		}
		if got := indexed(c, c.src4.find(addr4("172.16.7.9"))); !slices.Equal(got, []uint32{7}) {
			t.Errorf("a packet from 172.16.7.9 meets rules %v, want [7]", got)
		}
	})
}
