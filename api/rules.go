package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"gopkg.in/yaml.v3"

	"github.com/xdpswitch/xdpswitch/policy"
)

// Ruleset is a network's or a port's rules, in the fields and spelling of
// the config file (see package policy), so that a file of rules can be
// sent as it is:
//
//	PUT /v1/networks/{name}/rules    {"default": "deny", "rules": [{"action": "allow", "proto": "icmp"}]}
//	PUT /v1/ports/{name}/rules
type Ruleset struct {
	Default string `json:"default,omitempty" yaml:"default,omitempty"`
	Rules   []Rule `json:"rules" yaml:"rules"`
}

// Rule is one rule; see policy.Rule.
type Rule struct {
	Action    string   `json:"action" yaml:"action"`
	Direction string   `json:"direction,omitempty" yaml:"direction,omitempty"`
	Proto     string   `json:"proto,omitempty" yaml:"proto,omitempty"`
	Src       []string `json:"src,omitempty" yaml:"src,omitempty"`
	SrcPorts  []string `json:"src_ports,omitempty" yaml:"src_ports,omitempty"`
	Dst       []string `json:"dst,omitempty" yaml:"dst,omitempty"`
	DstPorts  []string `json:"dst_ports,omitempty" yaml:"dst_ports,omitempty"`
	Comment   string   `json:"comment,omitempty" yaml:"comment,omitempty"`
}

// Rules is what GET /v1/networks/{name}/rules and /v1/ports/{name}/rules
// answer: the rules in force (none: everything is allowed) and, per rule
// and for the default, what they counted since they were put in force.
type Rules struct {
	Ruleset  *Ruleset      `json:"ruleset"`
	Counters []RuleCounter `json:"counters"`
	Default  RuleCounter   `json:"default_counter"`
}

// RuleCounter counts what one rule decided: Matches are lookups it won,
// Packets and Bytes the frames its verdict applied to, later fragments of
// a datagram included.
type RuleCounter struct {
	Matches uint64 `json:"matches"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Policy reads the ruleset the way the config reader does, so the API
// accepts and refuses exactly what a config file would, and reports every
// problem at once.
func (rs *Ruleset) Policy() (*policy.Ruleset, error) {
	b, err := yaml.Marshal(rs)
	if err != nil {
		return nil, err
	}
	var out policy.Ruleset
	if err := yaml.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if err := out.Check(); err != nil {
		return nil, err
	}
	return &out, nil
}

// RulesetOf is a policy ruleset in the API's form; nil stays nil.
func RulesetOf(p *policy.Ruleset) (*Ruleset, error) {
	if p == nil {
		return nil, nil
	}
	b, err := yaml.Marshal(p)
	if err != nil {
		return nil, err
	}
	var out Ruleset
	if err := yaml.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("ruleset: %w", err)
	}
	if out.Rules == nil {
		out.Rules = []Rule{}
	}
	return &out, nil
}

func rulesPath(kind, name string) string {
	return "/v1/" + kind + "/" + url.PathEscape(name) + "/rules"
}

// NetworkRules returns a network's rules and their counters.
func (c *Client) NetworkRules(ctx context.Context, network string) (Rules, error) {
	var out Rules
	return out, c.do(ctx, http.MethodGet, rulesPath("networks", network), nil, &out)
}

// PortRules returns a port's rules and their counters.
func (c *Client) PortRules(ctx context.Context, port string) (Rules, error) {
	var out Rules
	return out, c.do(ctx, http.MethodGet, rulesPath("ports", port), nil, &out)
}

// SetNetworkRules replaces a network's rules; nil removes them.
func (c *Client) SetNetworkRules(ctx context.Context, network string, rs *Ruleset) error {
	return c.setRules(ctx, rulesPath("networks", network), rs)
}

// SetPortRules replaces a port's rules; nil removes them.
func (c *Client) SetPortRules(ctx context.Context, port string, rs *Ruleset) error {
	return c.setRules(ctx, rulesPath("ports", port), rs)
}

func (c *Client) setRules(ctx context.Context, path string, rs *Ruleset) error {
	if rs == nil {
		return c.do(ctx, http.MethodDelete, path, nil, nil)
	}
	return c.do(ctx, http.MethodPut, path, rs, nil)
}
