package policy

import (
	"net/netip"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func parseRuleset(t *testing.T, src string) Ruleset {
	t.Helper()
	var rs Ruleset
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&rs); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return rs
}

// wantErrors checks that err has exactly the wanted messages, in order,
// each a substring of one line of the joined error.
func wantErrors(t *testing.T, err error, want ...string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("problem %d: %q does not say %q", i, lines[i], w)
		}
	}
}

func TestCheckReportsEverything(t *testing.T) {
	rs := parseRuleset(t, `
default: deny
rules:
  - {action: allow, proto: tcp, dst_ports: ["22", "8000-8080"], src: [10.0.0.0/8]}
  - {action: deny, src: [10.0.0.0/33]}
  - {action: deny, proto: tcp, dst_ports: ["9000-8000"]}
  - {action: deny, proto: icmp, dst_ports: [80]}
  - {action: deny, dst_ports: [80]}
  - {action: deny, proto: gre}
  - {action: deny, port: 22}
  - {proto: tcp}
  - {action: drop, direction: sideways}
  - {action: allow, dst: 10.1.2.3/8}
  - {action: allow, src: [10.0.0.0/8], dst: ["fd00::/8"]}
  - {action: allow, proto: icmp, dst: ["fd00::/8"]}
  - {action: allow, src_ports: ["http"], proto: udp}
  - {action: allow, proto: 256}
  - {action: allow, proto: 0}
  - {action: allow, src: ["::ffff:10.0.0.0/104"]}
  - {action: allow, action: deny}
  - just words
`)
	wantErrors(t, rs.Check(),
		`rules[1] (line 5): src: "10.0.0.0/33" is not an address or a prefix like 10.0.0.0/8`,
		`rules[2] (line 6): dst_ports: 9000-8000: from is greater than to`,
		`rules[3] (line 7): dst_ports: proto icmp has no ports`,
		`rules[4] (line 8): dst_ports: ports need proto tcp or udp`,
		`rules[5] (line 9): proto: "gre" is not any, tcp, udp, icmp, icmpv6 or a protocol number`,
		`rules[6] (line 10): unknown field "port"`,
		`rules[7] (line 11): action: missing`,
		`rules[8] (line 12): action: "drop" is not allow or deny`,
		`rules[8] (line 12): direction: "sideways" is not in, out or both`,
		`rules[9] (line 13): dst: 10.1.2.3/8 has bits set after the prefix length; did you mean 10.0.0.0/8?`,
		`rules[10] (line 14): src is IPv4 only and dst IPv6 only: the rule can never match`,
		`rules[11] (line 15): proto: icmp with IPv6 addresses only can never match`,
		`rules[12] (line 16): src_ports: "http" is not a port or a range`,
		`rules[13] (line 17): proto: "256" is not any`,
		`rules[14] (line 18): proto: "0" is not any`,
		`rules[15] (line 19): src: ::ffff:10.0.0.0/104: write IPv4 prefixes as IPv4 (10.0.0.0/8)`,
		`rules[16] (line 20): action: given twice`,
		`rules[17] (line 21): a rule is a mapping`,
	)
	if _, err := Compile(rs); err == nil {
		t.Error("Compile accepted a ruleset Check refuses")
	}
}

func TestCheckRuleset(t *testing.T) {
	rs := parseRuleset(t, "default: maybe\nrules: 3\nextra: 1\n")
	wantErrors(t, rs.Check(),
		`line 1: default: "maybe" is not allow or deny`,
		`line 2: rules: not a list of rules`,
		`line 3: unknown field "extra"; a ruleset has default and rules`,
	)
	rs = parseRuleset(t, "[1, 2]\n")
	wantErrors(t, rs.Check(), "a ruleset is a mapping")
}

func TestCheckProgrammatic(t *testing.T) {
	rs := Ruleset{Default: Action(7), Rules: []Rule{
		{Action: Action(3), Direction: Direction(5), Proto: -2},
		{Action: Deny, Src: []netip.Prefix{{}}},
		{Action: Deny, Proto: ProtoUDP, DstPorts: []PortRange{{From: 2, To: 1}}},
	}}
	wantErrors(t, rs.Check(),
		"default: action(7) is not allow or deny",
		"rules[0]: action: action(3) is not allow or deny",
		"rules[0]: direction: direction(5) is not in, out or both",
		"rules[0]: proto: -2 is not any (0) or a protocol number from 1 to 255",
		"rules[1]: src: invalid Prefix is not a valid prefix",
		"rules[2]: dst_ports: 2-1: from is greater than to",
	)
	r := Rule{Action: Deny, Proto: ProtoTCP, SrcPorts: []PortRange{{80, 80}}}
	wantErrors(t, r.Check())
	r.Proto = AnyProto
	wantErrors(t, r.Check(), "src_ports: ports need proto tcp or udp")
}

func TestCheckNetwork(t *testing.T) {
	rs := parseRuleset(t, `
rules:
  - {action: deny, direction: in, proto: tcp}
  - {action: deny, direction: both, proto: udp}
  - {action: deny, proto: udp, dst_ports: [53]}
`)
	wantErrors(t, rs.Check())
	wantErrors(t, rs.CheckNetwork(), "rules[0] (line 3): direction: in is for port rules")
}

func TestParsers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PortRange
		ok   bool
	}{
		{"22", PortRange{22, 22}, true},
		{"0", PortRange{0, 0}, true},
		{"65535", PortRange{65535, 65535}, true},
		{"8000-8080", PortRange{8000, 8080}, true},
		{" 1 - 2 ", PortRange{1, 2}, true},
		{"0-65535", PortRange{0, 65535}, true},
		{"65536", PortRange{}, false},
		{"-1", PortRange{}, false},
		{"1-", PortRange{}, false},
		{"+5", PortRange{}, false},
		{"1-2-3", PortRange{}, false},
		{"", PortRange{}, false},
	} {
		got, err := ParsePortRange(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePortRange(%q) = %v, %v", tc.in, got, err)
		}
	}
	for in, want := range map[string]int{"any": AnyProto, "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "47": 47, "255": 255, "1": 1} {
		if got, err := ParseProto(in); err != nil || got != want {
			t.Errorf("ParseProto(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"0", "256", "-1", "+6", "TCP", "", "6.0"} {
		if _, err := ParseProto(in); err == nil {
			t.Errorf("ParseProto(%q) accepted", in)
		}
	}
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1/32", "10.0.0.0/8": "10.0.0.0/8", "fd00::1": "fd00::1/128", "::/0": "::/0"} {
		if got, err := ParsePrefix(in); err != nil || got.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"fe80::1%eth0", "10.0.0.0/33", "10.0.0", "host"} {
		if _, err := ParsePrefix(in); err == nil {
			t.Errorf("ParsePrefix(%q) accepted", in)
		}
	}
}

func TestRuleString(t *testing.T) {
	r := Rule{Action: Deny, Direction: In, Proto: ProtoTCP, Src: pfx("10.0.0.0/8"), DstPorts: ports("22", "80-81"), Comment: "ssh"}
	if got, want := r.String(), "deny in proto tcp src 10.0.0.0/8 dst_ports 22,80-81 # ssh"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
