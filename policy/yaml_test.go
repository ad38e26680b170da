package policy

import (
	"net/netip"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseExample(t *testing.T) {
	rs := parseRuleset(t, `
default: deny
rules:
  - {action: deny, direction: in, proto: tcp, dst_ports: ["22", "8000-8080"], src: [10.0.0.0/8], dst: [10.1.0.0/16, "fd00::/64"], comment: no ssh}
  - action: allow
    direction: out
    proto: udp
    src_ports: 53
    dst: 10.1.2.3
  - {action: allow, proto: icmpv6}
  - {action: allow, proto: 47, src: ~}
`)
	wantErrors(t, rs.Check())
	want := Ruleset{Default: Deny, Rules: []Rule{
		{Action: Deny, Direction: In, Proto: ProtoTCP, DstPorts: []PortRange{{22, 22}, {8000, 8080}},
			Src: pfx("10.0.0.0/8"), Dst: pfx("10.1.0.0/16", "fd00::/64"), Comment: "no ssh"},
		{Action: Allow, Direction: Out, Proto: ProtoUDP, SrcPorts: []PortRange{{53, 53}}, Dst: pfx("10.1.2.3/32")},
		{Action: Allow, Proto: ProtoICMPv6},
		{Action: Allow, Proto: 47},
	}}
	if !sameRuleset(rs, want) {
		t.Errorf("got %+v\nwant %+v", rs, want)
	}
}

// sameRuleset compares what rulesets say, not where they were read from.
func sameRuleset(a, b Ruleset) bool {
	strip := func(rs Ruleset) Ruleset {
		out := Ruleset{Default: rs.Default}
		for _, r := range rs.Rules {
			r.line, r.problems = 0, nil
			for _, l := range []*[]netip.Prefix{&r.Src, &r.Dst} {
				if len(*l) == 0 {
					*l = nil
				}
			}
			for _, l := range []*[]PortRange{&r.SrcPorts, &r.DstPorts} {
				if len(*l) == 0 {
					*l = nil
				}
			}
			out.Rules = append(out.Rules, r)
		}
		return out
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

func TestYAMLRoundTrip(t *testing.T) {
	for seed := range uint64(20) {
		rs := newGen(seed, seed%2 == 0).ruleset(50)
		for i := range rs.Rules {
			if i%3 == 0 {
				rs.Rules[i].Comment = "rule: #" + string(rune('a'+i%26))
			}
		}
		b, err := yaml.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		back := parseRuleset(t, string(b))
		if err := back.Check(); err != nil {
			t.Fatalf("seed %d: the written ruleset does not check: %v\n%s", seed, err, b)
		}
		if !sameRuleset(rs, back) {
			t.Fatalf("seed %d: round trip changed the ruleset:\n%s", seed, b)
		}
	}
	// And the form a person writes survives too.
	rs := parseRuleset(t, "rules:\n  - {action: allow, proto: tcp, dst_ports: [\"22\"]}\n")
	b, _ := yaml.Marshal(rs)
	if want := "default: allow\nrules:\n    - action: allow\n      proto: tcp\n      dst_ports: [\"22\"]\n"; string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
}

func TestYAMLInConfig(t *testing.T) {
	// How a config embeds rulesets: strict decoding of the outer document
	// still reaches the rules' own checks.
	var cfg struct {
		Policy Ruleset `yaml:"policy"`
	}
	err := yaml.Unmarshal([]byte("policy:\n  rules:\n    - {action: allow, colour: red}\n"), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	wantErrors(t, cfg.Policy.Check(), `rules[0] (line 3): unknown field "colour"`)
}
