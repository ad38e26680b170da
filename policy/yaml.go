package policy

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// The YAML form of a ruleset:
//
//	default: deny
//	rules:
//	  - {action: allow, direction: in, proto: tcp, dst_ports: ["22", "8000-8080"], src: [10.0.0.0/8]}
//	  - {action: allow, proto: icmp}
//
// Reading never fails on what a rule says: every problem is kept and Check
// reports them all at once, with their lines, next to the problems only
// Check can see (a port range backwards, ports on icmp, ...).

// UnmarshalYAML reads a rule mapping, refusing unknown fields.
func (r *Rule) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	*r = Rule{Proto: AnyProto, line: n.Line}
	bad := func(format string, args ...any) { r.problems = append(r.problems, fmt.Sprintf(format, args...)) }
	if n.Kind != yaml.MappingNode {
		bad("a rule is a mapping like {action: deny, proto: tcp, dst_ports: [22]}")
		return nil
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		key := k.Value
		if seen[key] {
			bad("%s: given twice (line %d)", key, k.Line)
			continue
		}
		seen[key] = true
		switch key {
		case "action":
			switch s, ok := scalar(v); {
			case ok && s == "allow":
				r.Action = Allow
			case ok && s == "deny":
				r.Action = Deny
			default:
				bad("action: %s is not allow or deny", show(v))
			}
		case "direction":
			switch s, ok := scalar(v); {
			case ok && s == "in":
				r.Direction = In
			case ok && s == "out":
				r.Direction = Out
			case ok && s == "both":
				r.Direction = Both
			default:
				bad("direction: %s is not in, out or both", show(v))
			}
		case "proto":
			s, ok := scalar(v)
			if !ok {
				bad("proto: %s is not any, tcp, udp, icmp, icmpv6 or a protocol number", show(v))
				break
			}
			p, err := ParseProto(s)
			if err != nil {
				bad("proto: %v", err)
				break
			}
			r.Proto = p
		case "src", "dst":
			for _, item := range items(v, key, bad) {
				p, err := ParsePrefix(item)
				if err != nil {
					bad("%s: %v", key, err)
					continue
				}
				if key == "src" {
					r.Src = append(r.Src, p)
				} else {
					r.Dst = append(r.Dst, p)
				}
			}
		case "src_ports", "dst_ports":
			for _, item := range items(v, key, bad) {
				pr, err := ParsePortRange(item)
				if err != nil {
					bad("%s: %v", key, err)
					continue
				}
				if key == "src_ports" {
					r.SrcPorts = append(r.SrcPorts, pr)
				} else {
					r.DstPorts = append(r.DstPorts, pr)
				}
			}
		case "comment":
			s, ok := scalar(v)
			if !ok {
				bad("comment: %s is not a string", show(v))
			}
			r.Comment = s
		default:
			bad("unknown field %q (line %d); a rule has action, direction, proto, src, dst, src_ports, dst_ports and comment", key, k.Line)
		}
	}
	if !seen["action"] {
		bad("action: missing; every rule says allow or deny")
	}
	return nil
}

// MarshalYAML writes the rule in the form UnmarshalYAML reads.
func (r Rule) MarshalYAML() (any, error) {
	out := struct {
		Action    string   `yaml:"action"`
		Direction string   `yaml:"direction,omitempty"`
		Proto     string   `yaml:"proto,omitempty"`
		Src       []string `yaml:"src,omitempty,flow"`
		SrcPorts  []string `yaml:"src_ports,omitempty,flow"`
		Dst       []string `yaml:"dst,omitempty,flow"`
		DstPorts  []string `yaml:"dst_ports,omitempty,flow"`
		Comment   string   `yaml:"comment,omitempty"`
	}{
		Action:   r.Action.String(),
		Src:      prefixStrings(r.Src),
		SrcPorts: rangeStrings(r.SrcPorts),
		Dst:      prefixStrings(r.Dst),
		DstPorts: rangeStrings(r.DstPorts),
		Comment:  r.Comment,
	}
	if r.Direction != Both {
		out.Direction = r.Direction.String()
	}
	if r.Proto != AnyProto {
		out.Proto = ProtoName(r.Proto)
	}
	return out, nil
}

// UnmarshalYAML reads {default: allow|deny, rules: [...]}.
func (rs *Ruleset) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	*rs = Ruleset{}
	bad := func(format string, args ...any) { rs.problems = append(rs.problems, fmt.Sprintf(format, args...)) }
	if n.Kind != yaml.MappingNode {
		bad("line %d: a ruleset is a mapping like {default: deny, rules: [...]}", n.Line)
		return nil
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if seen[k.Value] {
			bad("line %d: %s: given twice", k.Line, k.Value)
			continue
		}
		seen[k.Value] = true
		switch k.Value {
		case "default":
			switch s, ok := scalar(v); {
			case ok && s == "allow":
				rs.Default = Allow
			case ok && s == "deny":
				rs.Default = Deny
			default:
				bad("line %d: default: %s is not allow or deny", v.Line, show(v))
			}
		case "rules":
			if isNull(v) {
				break
			}
			if v.Kind != yaml.SequenceNode {
				bad("line %d: rules: not a list of rules", v.Line)
				break
			}
			rs.Rules = make([]Rule, len(v.Content))
			for j, item := range v.Content {
				_ = rs.Rules[j].UnmarshalYAML(item) // never fails: problems stay in the rule
			}
		default:
			bad("line %d: unknown field %q; a ruleset has default and rules", k.Line, k.Value)
		}
	}
	return nil
}

// MarshalYAML writes the ruleset in the form UnmarshalYAML reads.
func (rs Ruleset) MarshalYAML() (any, error) {
	return struct {
		Default string `yaml:"default"`
		Rules   []Rule `yaml:"rules"`
	}{rs.Default.String(), rs.Rules}, nil
}

// deref follows aliases to the node they stand for.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func scalar(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return "", false
	}
	return n.Value, true
}

// items reads a list of scalars; a single scalar is a list of one and an
// empty value is the empty list.
func items(n *yaml.Node, key string, bad func(string, ...any)) []string {
	if isNull(n) {
		return nil
	}
	if s, ok := scalar(n); ok {
		return []string{s}
	}
	if n.Kind != yaml.SequenceNode {
		bad("%s: not a list (line %d)", key, n.Line)
		return nil
	}
	var out []string
	for _, c := range n.Content {
		c = deref(c)
		s, ok := scalar(c)
		if !ok {
			bad("%s: %s is not a single value (line %d)", key, show(c), c.Line)
			continue
		}
		out = append(out, s)
	}
	return out
}

// show quotes a node's text for a message.
func show(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return strings.TrimSpace(fmt.Sprint(n.Value))
}
