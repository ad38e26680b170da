package policy

import (
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
	if !rs.Equal(&want) {
		t.Errorf("got %+v\nwant %+v", rs, want)
	}
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
		if !rs.Equal(&back) {
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

// TestRulesetEqual: rulesets are equal when they say the same, wherever
// their rules were written.
func TestRulesetEqual(t *testing.T) {
	const rules = "rules:\n  - {action: deny, proto: tcp, dst_ports: [\"22\"], src: [10.0.0.0/8]}\n  - {action: allow}\n"
	a, moved := parseRuleset(t, rules), parseRuleset(t, "# a line more\n\n"+rules)
	if !a.Equal(&moved) {
		t.Error("the same rules on other lines are not equal")
	}
	for _, change := range []func(rs *Ruleset){
		func(rs *Ruleset) { rs.Default = Deny },
		func(rs *Ruleset) { rs.Rules = rs.Rules[:1] },
		func(rs *Ruleset) { rs.Rules[0], rs.Rules[1] = rs.Rules[1], rs.Rules[0] },
		func(rs *Ruleset) { rs.Rules[0].Action = Allow },
		func(rs *Ruleset) { rs.Rules[0].Direction = In },
		func(rs *Ruleset) { rs.Rules[0].Proto = ProtoUDP },
		func(rs *Ruleset) { rs.Rules[0].Src = nil },
		func(rs *Ruleset) { rs.Rules[1].Dst = pfx("fd00::/8") },
		func(rs *Ruleset) { rs.Rules[0].DstPorts[0].To = 23 },
		func(rs *Ruleset) { rs.Rules[1].SrcPorts = []PortRange{{1, 2}} },
		func(rs *Ruleset) { rs.Rules[1].Comment = "all" },
	} {
		b := parseRuleset(t, rules)
		change(&b)
		if a.Equal(&b) || b.Equal(&a) {
			t.Errorf("%v equals %v", b.Rules, a.Rules)
		}
	}
	var none *Ruleset
	if !none.Equal(nil) || none.Equal(&Ruleset{}) || (&Ruleset{}).Equal(nil) {
		t.Error("no ruleset and an empty one: want only nil equal to nil")
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
