package dataplane

import (
	"github.com/xdpswitch/xdpswitch/dataplane/frag"
	"github.com/xdpswitch/xdpswitch/policy"
)

// RulesInfo is the ruleset in force on a network or a port, and what its
// rules counted since it was put in force.
type RulesInfo struct {
	// Ruleset is nil when there are no rules: everything is allowed.
	Ruleset *policy.Ruleset
	// Stats has one entry per rule, in order; Default counts the frames
	// no rule matched.
	Stats   []policy.RuleStats
	Default policy.RuleStats
}

func rulesInfo(rs *policy.Ruleset, t *policy.Table) RulesInfo {
	info := RulesInfo{Ruleset: rs}
	info.Stats, info.Default = t.Load().Stats()
	return info
}

// compileRules compiles a ruleset outside the switch's lock: ten thousand
// rules take a moment. nil stays nil: no rules.
func compileRules(rs *policy.Ruleset, network bool) (*policy.Classifier, error) {
	if rs == nil {
		return nil, nil
	}
	if network {
		if err := rs.CheckNetwork(); err != nil {
			return nil, err
		}
	}
	return policy.Compile(*rs)
}

// SetNetworkRules puts a network's rules in force, replacing the ones
// before whole (their counters start again); nil removes them. Every frame
// forwarded within the network is judged by the old rules or by the new,
// never by a mix.
func (s *Switch) SetNetworkRules(network string, rs *policy.Ruleset) error {
	c, err := compileRules(rs, true)
	if err != nil {
		return invalidf(err, "network %s: rules", network)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.networks[network]
	if !ok {
		return notFoundf("no network %q", network)
	}
	n.rules.Swap(c)
	n.ruleset = rs
	s.log.Info("network rules set", "network", network, "rules", c.Len(), "default", c.Default())
	return s.refreshMatchers(func(l *loop) {
		if ln := l.nets[n]; ln != nil {
			ln.rules.Begin()
		}
		l.rulesChanged()
	})
}

// SetPortRules puts a port's rules in force, as SetNetworkRules does for a
// network.
func (s *Switch) SetPortRules(port string, rs *policy.Ruleset) error {
	c, err := compileRules(rs, false)
	if err != nil {
		return invalidf(err, "port %s: rules", port)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.ports[port]
	if !ok {
		return notFoundf("no port %s", port)
	}
	if p.uplink {
		return unfitf("port %s is the uplink: give rules to the networks its tunnels carry", port)
	}
	p.rules.Swap(c)
	p.ruleset = rs
	s.log.Info("port rules set", "port", port, "rules", c.Len(), "default", c.Default())
	return s.refreshMatchers(func(l *loop) {
		if int(p.ID) < len(l.ports) && l.ports[p.ID] != nil {
			l.ports[p.ID].rules.Begin()
		}
		l.rulesChanged()
	})
}

// refreshMatchers has every loop pick up swapped rules now, between two
// batches, rather than at its next use of them.
func (s *Switch) refreshMatchers(fn func(l *loop)) error {
	for _, l := range s.loops {
		if err := l.do(func() { fn(l) }); err != nil {
			return err
		}
	}
	return nil
}

// NetworkRules is the ruleset in force on a network and its counters.
func (s *Switch) NetworkRules(network string) (RulesInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.networks[network]
	if !ok {
		return RulesInfo{}, notFoundf("no network %q", network)
	}
	return rulesInfo(n.ruleset, n.rules), nil
}

// PortRules is the ruleset in force on a port and its counters.
func (s *Switch) PortRules(port string) (RulesInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.ports[port]
	if !ok {
		return RulesInfo{}, notFoundf("no port %s", port)
	}
	return rulesInfo(p.ruleset, p.rules), nil
}

// FragmentStats adds up the fragment trackers of every loop: fragments
// judged by their first fragment's verdict, held, and dropped by reason.
func (s *Switch) FragmentStats() frag.TrackerStats {
	sum := frag.TrackerStats{Dropped: map[string]uint64{}, DroppedDatagrams: map[string]uint64{}}
	for _, l := range s.loops {
		sum.Add(l.filter.tracker.Stats())
	}
	return sum
}
