package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/policy"
)

// rules shows, replaces or removes a network's or a port's rules.
func rules(e *env, args []string) error {
	fs := e.flags("rules")
	network := fs.String("network", "", "the network `NET`'s rules")
	port := fs.String("port", "", "the port `PORT`'s rules")
	set := fs.String("set", "", "replace the rules with those in `FILE` (YAML as in the config: default and rules; - reads stdin)")
	clear := fs.Bool("clear", false, "remove the rules: everything is allowed")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	switch {
	case (*network == "") == (*port == ""):
		return cmdUsagef("rules", "give one of --network NET and --port PORT")
	case *set != "" && *clear:
		return cmdUsagef("rules", "--set and --clear exclude each other")
	}
	c := e.client()
	var err error
	switch {
	case *set != "":
		var rs *api.Ruleset
		if rs, err = e.readRules(*set); err != nil {
			return err
		}
		if *network != "" {
			err = c.SetNetworkRules(e.ctx, *network, rs)
		} else {
			err = c.SetPortRules(e.ctx, *port, rs)
		}
	case *clear:
		if *network != "" {
			err = c.SetNetworkRules(e.ctx, *network, nil)
		} else {
			err = c.SetPortRules(e.ctx, *port, nil)
		}
	}
	if err != nil {
		return apiError(err)
	}
	var r api.Rules
	what := "network " + *network
	if *network != "" {
		r, err = c.NetworkRules(e.ctx, *network)
	} else {
		r, err = c.PortRules(e.ctx, *port)
		what = "port " + *port
	}
	if err != nil {
		return apiError(err)
	}
	if *asJSON {
		return e.printJSON(r)
	}
	if r.Ruleset == nil {
		_, err := fmt.Fprintf(e.stdout, "%s has no rules: everything is allowed\n", what)
		return err
	}
	// The rules read back through the config's reader print as the
	// config would write them.
	pr, err := r.Ruleset.Policy()
	if err != nil {
		return err
	}
	rows := make([][]string, 0, len(pr.Rules)+1)
	for i, rule := range pr.Rules {
		var k api.RuleCounter
		if i < len(r.Counters) {
			k = r.Counters[i]
		}
		rows = append(rows, append([]string{strconv.Itoa(i), rule.String()}, ruleCounts(k)...))
	}
	rows = append(rows, append([]string{"-", pr.Default.String() + " (default)"}, ruleCounts(r.Default)...))
	return e.table([]string{"#", "RULE", "MATCHES", "PACKETS", "BYTES"}, rows)
}

func ruleCounts(k api.RuleCounter) []string {
	return []string{strconv.FormatUint(k.Matches, 10), strconv.FormatUint(k.Packets, 10), strconv.FormatUint(k.Bytes, 10)}
}

// readRules reads a ruleset file as the daemon's config reader would,
// so that its problems are told here, with their lines.
func (e *env) readRules(path string) (*api.Ruleset, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var rs policy.Ruleset
	if err := yaml.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := rs.Check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return api.RulesetOf(&rs)
}
