package daemon

import (
	"fmt"

	"github.com/xdpswitch/xdpswitch/dataplane"
	"github.com/xdpswitch/xdpswitch/dhcpd"
)

// HostPortStatus says which kind of host port a network got, and why the
// preferred kinds were refused.
type HostPortStatus struct {
	Kind    string   `json:"kind"`
	Host    string   `json:"host"`
	Switch  string   `json:"switch"`
	Refused []string `json:"refused,omitempty"`
}

// NetworkStatus is a network as the daemon runs it.
type NetworkStatus struct {
	dataplane.NetworkInfo
	Gateway  string          `json:"gateway,omitempty"`
	Gateway6 string          `json:"gateway6,omitempty"`
	NAT      bool            `json:"nat"`
	HostPort *HostPortStatus `json:"host_port,omitempty"`
	DHCP     *dhcpd.Counters `json:"dhcp,omitempty"`
}

// Networks lists the networks in config order.
func (d *Daemon) Networks() []NetworkStatus {
	infos := map[string]dataplane.NetworkInfo{}
	for _, ni := range d.sw.Networks() {
		infos[ni.Name] = ni
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]NetworkStatus, 0, len(d.nets))
	for _, n := range d.nets {
		st := NetworkStatus{NetworkInfo: infos[n.cfg.Name], NAT: n.cfg.NAT}
		if n.cfg.Gateway.IsValid() {
			st.Gateway = n.cfg.Gateway.String()
		}
		if n.cfg.Gateway6.IsValid() {
			st.Gateway6 = n.cfg.Gateway6.String()
		}
		if hp := n.hostPort; hp != nil {
			st.HostPort = &HostPortStatus{Kind: hp.Kind.String(), Host: hp.Host, Switch: hp.Switch, Refused: hp.Refused}
		}
		if n.dhcp != nil {
			c := n.dhcp.Counters()
			st.DHCP = &c
		}
		out = append(out, st)
	}
	return out
}

// NetworkLease is a DHCP lease with its network.
type NetworkLease struct {
	Network string `json:"network"`
	dhcpd.Lease
}

// Leases lists the DHCP leases of one network, or of all when network is "".
func (d *Daemon) Leases(network string) ([]NetworkLease, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []NetworkLease
	found := network == ""
	for _, n := range d.nets {
		if network != "" && n.cfg.Name != network {
			continue
		}
		found = true
		if n.dhcp == nil {
			continue
		}
		for _, l := range n.dhcp.Leases() {
			out = append(out, NetworkLease{Network: n.cfg.Name, Lease: l})
		}
	}
	if !found {
		return nil, fmt.Errorf("no network %q: %w", network, dataplane.ErrNotFound)
	}
	return out, nil
}

// hostPortNetwork tells whether a port is a network's host port, and whose.
func (d *Daemon) hostPortNetwork(port string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.nets {
		if n.hostPort != nil && n.hostPort.Switch == port {
			return n.cfg.Name, true
		}
	}
	return "", false
}
