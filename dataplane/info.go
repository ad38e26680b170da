package dataplane

import (
	"maps"
	"slices"
	"strings"

	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/policy"
)

// PortCounters are a port's counts summed over its queues. Rx counts frames
// the switch took from the port, Tx frames it handed to the port's device.
type PortCounters struct {
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	TxErrors  uint64            `json:"tx_errors"`
	Drops     map[string]uint64 `json:"drops"`
	// Kernel-side counts: the program's verdicts and the sockets'
	// XDP_STATISTICS (frames the kernel could not hand to the switch).
	XDPRedirected uint64           `json:"xdp_redirected"`
	XDPPassed     uint64           `json:"xdp_passed"`
	Socket        afxdp.Statistics `json:"socket"`
}

// Dropped is the total over every drop reason.
func (c PortCounters) Dropped() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// PortInfo describes a port.
type PortInfo struct {
	Name     string `json:"name"`
	Network  string `json:"network"`
	Ifindex  int    `json:"ifindex"`
	XDPMode  string `json:"xdp_mode"`
	BindMode string `json:"bind_mode"`
	Queues   int    `json:"queues"`
	Uplink   bool   `json:"uplink,omitempty"`
	MAC      string `json:"mac,omitempty"`
	Security bool   `json:"security"`
	// Addresses a secured port may send from (configured and leased); none
	// means any, until a lease is granted.
	AllowedIPv4 []string `json:"allowed_ipv4,omitempty"`
	// Rules is how many rules the port has, RulesDefault their default
	// ("" without rules).
	Rules        int          `json:"rules"`
	RulesDefault string       `json:"rules_default,omitempty"`
	Counters     PortCounters `json:"counters"`
}

// NetworkInfo describes a network.
type NetworkInfo struct {
	Name         string   `json:"name"`
	Ports        []string `json:"ports"`
	FDB          FDBStats `json:"fdb"`
	Rules        int      `json:"rules"`
	RulesDefault string   `json:"rules_default,omitempty"`
}

// rulesSummary is how many rules a table has and their default.
func rulesSummary(t *policy.Table) (int, string) {
	c := t.Load()
	if c == nil {
		return 0, ""
	}
	return c.Len(), c.Default().String()
}

// FDBEntry is one learned MAC.
type FDBEntry struct {
	MAC        string  `json:"mac"`
	Port       string  `json:"port"`
	AgeSeconds float64 `json:"age_seconds"`
	// VTEP is the remote host a MAC learned through the uplink is behind.
	VTEP string `json:"vtep,omitempty"`
}

func (p *Port) info() PortInfo {
	c := PortCounters{Drops: make(map[string]uint64, numDropReasons)}
	for _, r := range DropReasons() {
		c.Drops[r.String()] = 0
	}
	for _, pc := range p.counters {
		c.RxPackets += pc.rxPackets.Load()
		c.RxBytes += pc.rxBytes.Load()
		c.TxPackets += pc.txPackets.Load()
		c.TxBytes += pc.txBytes.Load()
		c.TxErrors += pc.txErrors.Load()
		for r := range pc.drops {
			c.Drops[DropReason(r).String()] += pc.drops[r].Load()
		}
	}
	switch prog := p.prog.(type) {
	case *bpf.Port:
		if st, err := prog.Stats(); err == nil {
			c.XDPRedirected, c.XDPPassed = st.Redirected, st.Passed
		}
	case *bpf.Uplink:
		if st, err := prog.Stats(); err == nil {
			c.XDPRedirected = st["decap_v4"] + st["decap_v6"] + st["frag_redirected"]
			for name, v := range st {
				if strings.HasPrefix(name, "pass_") || name == "frag_passed" {
					c.XDPPassed += v
				}
			}
		}
	}
	for _, sock := range p.socks {
		if sock == nil {
			continue
		}
		if st, err := sock.Statistics(); err == nil {
			c.Socket.RxDropped += st.RxDropped
			c.Socket.RxInvalidDescs += st.RxInvalidDescs
			c.Socket.TxInvalidDescs += st.TxInvalidDescs
			c.Socket.RxRingFull += st.RxRingFull
			c.Socket.RxFillRingEmptyDescs += st.RxFillRingEmptyDescs
			c.Socket.TxRingEmptyDescs += st.TxRingEmptyDescs
		}
	}
	var allowed []string
	if sec := p.sec.Load(); sec != nil {
		for _, a := range sec.v4 {
			allowed = append(allowed, a.String())
		}
	}
	var mac string
	if p.opts.MAC != nil {
		mac = p.opts.MAC.String()
	}
	rules, deflt := rulesSummary(p.rules)
	return PortInfo{
		Rules:        rules,
		RulesDefault: deflt,
		Uplink:       p.uplink,
		MAC:          mac,
		Security:     p.opts.Security,
		AllowedIPv4:  allowed,
		Name:         p.Name,
		Network:      p.networkName(),
		Ifindex:      p.Ifindex,
		XDPMode:      p.prog.Mode().String(),
		BindMode:     p.bindMode.String(),
		Queues:       len(p.socks),
		Counters:     c,
	}
}

// Ports lists the ports sorted by name.
func (s *Switch) Ports() []PortInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PortInfo, 0, len(s.ports))
	for _, name := range slices.Sorted(maps.Keys(s.ports)) {
		out = append(out, s.ports[name].info())
	}
	return out
}

// Port describes one port.
func (s *Switch) Port(name string) (PortInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.ports[name]
	if !ok {
		return PortInfo{}, notFoundf("no port %s", name)
	}
	return p.info(), nil
}

// Networks lists the networks sorted by name.
func (s *Switch) Networks() []NetworkInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NetworkInfo, 0, len(s.networks))
	for _, name := range slices.Sorted(maps.Keys(s.networks)) {
		n := s.networks[name]
		rules, deflt := rulesSummary(n.rules)
		out = append(out, NetworkInfo{Name: name, Ports: slices.Sorted(maps.Keys(n.ports)), FDB: n.fdb.Stats(), Rules: rules, RulesDefault: deflt})
	}
	return out
}

// FDB lists a network's learned MACs sorted by MAC.
func (s *Switch) FDB(network string) ([]FDBEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.networks[network]
	if !ok {
		return nil, notFoundf("no network %q", network)
	}
	recs := n.fdb.snapshot()
	out := make([]FDBEntry, 0, len(recs))
	for _, r := range recs {
		name := "?"
		if p, ok := s.byID[r.Port]; ok {
			name = p.Name
		}
		e := FDBEntry{MAC: r.MAC.String(), Port: name, AgeSeconds: r.Age.Seconds()}
		if r.VTEP.IsValid() {
			e.VTEP = r.VTEP.String()
		}
		out = append(out, e)
	}
	return out, nil
}
