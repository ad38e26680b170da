package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Action is what a rule, or a ruleset's default, does with a packet.
type Action uint8

const (
	// Allow lets the packet through.
	Allow Action = iota
	// Deny drops it.
	Deny
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Direction is which way a frame crosses a port, seen from the switch.
type Direction uint8

const (
	// Both matches frames in either direction. A network's rules are all
	// Both: they apply to every frame forwarded within the network, and
	// the dataplane classifies for them with Packet.Dir set to Both.
	Both Direction = iota
	// In is from the port into the switch (a VM sending).
	In
	// Out is from the switch to the port (a VM receiving).
	Out
)

func (d Direction) String() string {
	switch d {
	case Both:
		return "both"
	case In:
		return "in"
	case Out:
		return "out"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// AnyProto in Rule.Proto matches every IP protocol. It is the zero value:
// protocol 0 (IPv6 hop-by-hop options) is an extension header, never what
// a packet carries above IP, so no rule needs to name it.
const AnyProto = 0

// IP protocol numbers with a name in the config.
const (
	ProtoICMP    = 1
	ProtoTCP     = 6
	ProtoUDP     = 17
	ProtoICMPv6  = 58
	protoDCCP    = 33
	protoSCTP    = 132
	protoUDPLite = 136
)

// hasPorts tells whether a protocol carries 16-bit source and destination
// ports in the first four bytes of its header (TCP, UDP, DCCP, SCTP,
// UDP-Lite): only rules for those may name ports.
func hasPorts(proto int) bool {
	switch proto {
	case ProtoTCP, ProtoUDP, protoDCCP, protoSCTP, protoUDPLite:
		return true
	}
	return false
}

var protoNames = map[string]int{
	"any":    AnyProto,
	"tcp":    ProtoTCP,
	"udp":    ProtoUDP,
	"icmp":   ProtoICMP,
	"icmpv6": ProtoICMPv6,
}

// ProtoName is the config spelling of a protocol: a name where it has one,
// else its number.
func ProtoName(proto int) string {
	for n, p := range protoNames {
		if p == proto {
			return n
		}
	}
	return strconv.Itoa(proto)
}

// ParseProto reads a protocol as the config spells it: any, tcp, udp,
// icmp, icmpv6 or a number from 1 to 255.
func ParseProto(s string) (int, error) {
	if p, ok := protoNames[s]; ok {
		return p, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 255 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not any, tcp, udp, icmp, icmpv6 or a protocol number from 1 to 255", s)
	}
	return n, nil
}

// PortRange is an inclusive range of TCP or UDP ports; a single port has
// From == To.
type PortRange struct{ From, To uint16 }

func (r PortRange) String() string {
	if r.From == r.To {
		return strconv.Itoa(int(r.From))
	}
	return strconv.Itoa(int(r.From)) + "-" + strconv.Itoa(int(r.To))
}

// ParsePortRange reads "22" or "8000-8080".
func ParsePortRange(s string) (PortRange, error) {
	from, to, isRange := strings.Cut(s, "-")
	f, err1 := parsePort(strings.TrimSpace(from))
	t := f
	var err2 error
	if isRange {
		t, err2 = parsePort(strings.TrimSpace(to))
	}
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("%q is not a port or a range like 8000-8080 (ports are 0 to 65535)", s)
	}
	return PortRange{From: f, To: t}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a number")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err
}

// ParsePrefix reads a CIDR prefix (10.0.0.0/8, fd00::/64) or a bare
// address, which stands for itself alone (/32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or a prefix like 10.0.0.0/8", s)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or a prefix like 10.0.0.0/8", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Rule is one line of a ruleset. A packet matches when every field that
// is set matches; an empty list, AnyProto and Both match everything.
// Within a list one item must match: src [a, b] is "from a or from b".
type Rule struct {
	Action Action
	// Direction applies to port rules; network rules are Both.
	Direction Direction
	// Proto is an IP protocol number (1-255) or AnyProto (0). For IPv6 it
	// is the upper-layer protocol found behind the extension headers.
	Proto int
	// Src and Dst are IPv4 and IPv6 prefixes. A rule whose addresses are
	// all IPv4 matches only IPv4 packets, and the same for IPv6.
	Src, Dst []netip.Prefix
	// SrcPorts and DstPorts need a protocol with ports (tcp or udp).
	SrcPorts, DstPorts []PortRange
	Comment            string

	line     int      // where the rule was in YAML, for messages
	problems []string // what could not be read, reported by Check
}

// Ruleset is the ordered rules of a network or a port. The first rule that
// matches a packet decides; when none does, Default.
type Ruleset struct {
	Rules   []Rule
	Default Action

	problems []string
}

// MaxRules bounds a ruleset's size.
const MaxRules = 100000

// Equal tells whether two rulesets say the same, in the same order,
// wherever their rules were written: a config that only moved its rules
// to other lines has not changed them. Nil is no ruleset, unlike an empty
// one, whose default may be deny.
func (rs *Ruleset) Equal(o *Ruleset) bool {
	if rs == nil || o == nil {
		return rs == o
	}
	return rs.Default == o.Default && slices.EqualFunc(rs.Rules, o.Rules, func(a, b Rule) bool { return a.Equal(&b) })
}

// Equal tells whether two rules say the same, wherever they were written.
func (r *Rule) Equal(o *Rule) bool {
	return r.Action == o.Action && r.Direction == o.Direction && r.Proto == o.Proto &&
		slices.Equal(r.Src, o.Src) && slices.Equal(r.Dst, o.Dst) &&
		slices.Equal(r.SrcPorts, o.SrcPorts) && slices.Equal(r.DstPorts, o.DstPorts) &&
		r.Comment == o.Comment && slices.Equal(r.problems, o.problems)
}

// Check reports every problem of the ruleset at once.
func (rs *Ruleset) Check() error {
	var errs []error
	for _, p := range rs.problems {
		errs = append(errs, errors.New(p))
	}
	if rs.Default > Deny {
		errs = append(errs, fmt.Errorf("default: %v is not allow or deny", rs.Default))
	}
	if len(rs.Rules) > MaxRules {
		errs = append(errs, fmt.Errorf("rules: %d rules, more than the %d a ruleset may have", len(rs.Rules), MaxRules))
	}
	for i := range rs.Rules {
		r := &rs.Rules[i]
		where := fmt.Sprintf("rules[%d]", i)
		if r.line > 0 {
			where += fmt.Sprintf(" (line %d)", r.line)
		}
		for _, p := range r.check() {
			errs = append(errs, fmt.Errorf("%s: %s", where, p))
		}
	}
	return errors.Join(errs...)
}

// CheckNetwork is Check for a network's ruleset, whose rules apply to
// every frame forwarded within the network and so have no direction.
func (rs *Ruleset) CheckNetwork() error {
	errs := []error{rs.Check()}
	for i, r := range rs.Rules {
		if r.Direction == In || r.Direction == Out {
			where := fmt.Sprintf("rules[%d]", i)
			if r.line > 0 {
				where += fmt.Sprintf(" (line %d)", r.line)
			}
			errs = append(errs, fmt.Errorf("%s: direction: %v is for port rules; a network's rules apply to every frame forwarded within it", where, r.Direction))
		}
	}
	return errors.Join(errs...)
}

// Check reports the problems of one rule.
func (r *Rule) Check() error {
	var errs []error
	for _, p := range r.check() {
		errs = append(errs, errors.New(p))
	}
	return errors.Join(errs...)
}

func (r *Rule) check() []string {
	probs := append([]string(nil), r.problems...)
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if r.Action > Deny {
		bad("action: %v is not allow or deny", r.Action)
	}
	if r.Direction > Out {
		bad("direction: %v is not in, out or both", r.Direction)
	}
	protoOK := r.Proto >= 0 && r.Proto <= 255
	if !protoOK {
		bad("proto: %d is not any (0) or a protocol number from 1 to 255", r.Proto)
	}
	for _, f := range []struct {
		name string
		ps   []netip.Prefix
	}{{"src", r.Src}, {"dst", r.Dst}} {
		for _, p := range f.ps {
			switch {
			case !p.IsValid():
				bad("%s: %v is not a valid prefix", f.name, p)
			case p.Addr().Zone() != "":
				bad("%s: %v: zones are not allowed", f.name, p)
			case p.Addr().Is4In6():
				bad("%s: %v: write IPv4 prefixes as IPv4 (%v/%d)", f.name, p, p.Addr().Unmap(), max(0, p.Bits()-96))
			case p != p.Masked():
				bad("%s: %v has bits set after the prefix length; did you mean %v?", f.name, p, p.Masked())
			}
		}
	}
	for _, f := range []struct {
		name string
		rs   []PortRange
	}{{"src_ports", r.SrcPorts}, {"dst_ports", r.DstPorts}} {
		for _, pr := range f.rs {
			if pr.From > pr.To {
				bad("%s: %d-%d: from is greater than to", f.name, pr.From, pr.To)
			}
		}
		if len(f.rs) > 0 && protoOK && !hasPorts(r.Proto) {
			if r.Proto == AnyProto {
				bad("%s: ports need proto tcp or udp (or sctp, dccp, udplite by number); proto is any", f.name)
			} else {
				bad("%s: proto %s has no ports; ports need tcp or udp (or sctp, dccp, udplite by number)", f.name, ProtoName(r.Proto))
			}
		}
	}
	fams := famsOf(r.Src) & famsOf(r.Dst)
	if fams == 0 {
		bad("src is %s only and dst %s only: the rule can never match", famName(famsOf(r.Src)), famName(famsOf(r.Dst)))
	}
	switch {
	case r.Proto == ProtoICMP && fams == fam6:
		bad("proto: icmp with IPv6 addresses only can never match; IPv6 uses icmpv6")
	case r.Proto == ProtoICMPv6 && fams == fam4:
		bad("proto: icmpv6 with IPv4 addresses only can never match; IPv4 uses icmp")
	}
	return probs
}

const (
	fam4    = 1
	fam6    = 2
	famBoth = fam4 | fam6
)

// famsOf is the families a list of prefixes lets through: both when empty.
func famsOf(ps []netip.Prefix) uint8 {
	if len(ps) == 0 {
		return famBoth
	}
	var f uint8
	for _, p := range ps {
		if p.Addr().Is4() {
			f |= fam4
		} else {
			f |= fam6
		}
	}
	return f
}

func famName(f uint8) string {
	switch f {
	case fam4:
		return "IPv4"
	case fam6:
		return "IPv6"
	}
	return "IPv4 and IPv6"
}

// String writes the rule the way the config would, on one line.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(r.Action.String())
	if r.Direction != Both {
		b.WriteString(" " + r.Direction.String())
	}
	if r.Proto != AnyProto {
		b.WriteString(" proto " + ProtoName(r.Proto))
	}
	list := func(name string, items []string) {
		if len(items) > 0 {
			b.WriteString(" " + name + " " + strings.Join(items, ","))
		}
	}
	list("src", prefixStrings(r.Src))
	list("src_ports", rangeStrings(r.SrcPorts))
	list("dst", prefixStrings(r.Dst))
	list("dst_ports", rangeStrings(r.DstPorts))
	if r.Comment != "" {
		b.WriteString(" # " + r.Comment)
	}
	return b.String()
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func rangeStrings(rs []PortRange) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}
