package daemon

import (
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/config"
	"github.com/xdpswitch/xdpswitch/dataplane"
)

// ErrNeedsRestart marks a reload refused because the new config changes
// what only a restart can: the UMEM's shape, the uplink, a network's host
// port and its services. Nothing of such a config is applied.
var ErrNeedsRestart = errors.New("needs a restart")

// Reload brings the running switch to cfg without a restart: networks
// come and go (a network that goes takes every port plugged into it,
// the API's too, with its host port, DHCP server and NAT), and within a
// network its rules and its ports from the config change, a port's rules
// in place, anything else about a port by plugging it in anew. Ports
// plugged in through the API are not the config's and stay. What cannot
// change while the switch runs (see ErrNeedsRestart) is refused before
// anything is applied; a step that fails (a device that is missing, say)
// is reported, and the others are applied.
func (d *Daemon) Reload(cfg *config.Config) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if err := d.reloadable(cfg); err != nil {
		return err
	}
	d.mu.Lock()
	running := slices.Clone(d.nets)
	d.mu.Unlock()
	var errs []error
	fail := func(err error) {
		d.log.Error("reload", "err", err)
		errs = append(errs, err)
	}
	wanted := map[string]config.Network{}
	for _, c := range cfg.Networks {
		wanted[c.Name] = c
	}
	// What goes, goes first: a port that moves to another network is
	// free by the time it is plugged in there.
	var kept []*network
	for _, n := range running {
		c, ok := wanted[n.cfg.Name]
		if !ok {
			if err := d.removeNetwork(n); err != nil {
				fail(fmt.Errorf("network %q: %w", n.cfg.Name, err))
			} else {
				d.log.Info("network removed by reload", "network", n.cfg.Name)
			}
			continue
		}
		for _, err := range d.unplugGone(n, c) {
			fail(fmt.Errorf("network %q: %w", c.Name, err))
		}
		kept = append(kept, n)
	}
	for _, n := range kept {
		for _, err := range d.changeNetwork(n, wanted[n.cfg.Name]) {
			fail(fmt.Errorf("network %q: %w", n.cfg.Name, err))
		}
	}
	have := map[string]bool{}
	for _, n := range running {
		have[n.cfg.Name] = true
	}
	for _, c := range cfg.Networks {
		if have[c.Name] {
			continue
		}
		if err := d.addNetwork(c); err != nil {
			fail(fmt.Errorf("network %q: %w", c.Name, err))
			continue
		}
		d.log.Info("network added by reload", "network", c.Name)
	}
	// The record of the API's ports loses those whose network went.
	d.recordPlugged(func(ps []api.AddPort) []api.AddPort { return ps })
	return errors.Join(errs...)
}

// reloadable refuses a config that changes what only a restart can.
func (d *Daemon) reloadable(cfg *config.Config) error {
	old, next := *d.cfg, *cfg
	var why []string
	// The uplink's program takes the port it was given at the start.
	tunnels := slices.ContainsFunc(next.Networks, func(n config.Network) bool { return n.VXLAN != nil })
	if old.Uplink != nil && tunnels && old.VXLANPort() != next.VXLANPort() {
		why = append(why, fmt.Sprintf("VXLAN port changed (the uplink takes %d)", old.VXLANPort()))
	}
	old.Networks, next.Networks = nil, nil
	for _, f := range changedFields(old, next) {
		why = append(why, f+" changed")
	}
	d.mu.Lock()
	running := map[string]config.Network{}
	for _, n := range d.nets {
		running[n.cfg.Name] = n.cfg
	}
	d.mu.Unlock()
	for _, c := range cfg.Networks {
		r, ok := running[c.Name]
		if !ok {
			continue
		}
		// Ports and rules change in place; the rest is the network's
		// host port and services, and its tunnel.
		a, b := r, c
		a.Ports, a.Rules, b.Ports, b.Rules = nil, nil, nil, nil
		for _, f := range changedFields(a, b) {
			why = append(why, fmt.Sprintf("network %q: %s changed", c.Name, f))
		}
	}
	for name, r := range running {
		if r.VXLAN != nil && !slices.ContainsFunc(cfg.Networks, func(c config.Network) bool { return c.Name == name }) {
			why = append(why, fmt.Sprintf("network %q, which has a VXLAN tunnel, removed", name))
		}
	}
	if len(why) > 0 {
		return fmt.Errorf("%w: %v", ErrNeedsRestart, why)
	}
	return nil
}

// changedFields names, as the config file does, the fields in which two
// structs of the same type differ.
func changedFields[T any](a, b T) []string {
	av, bv := reflect.ValueOf(a), reflect.ValueOf(b)
	var names []string
	for i := range av.NumField() {
		if reflect.DeepEqual(av.Field(i).Interface(), bv.Field(i).Interface()) {
			continue
		}
		f := av.Type().Field(i)
		name := f.Tag.Get("yaml")
		if name == "" || name == "-" {
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// unplugGone unplugs the network's config ports that c no longer lists.
func (d *Daemon) unplugGone(n *network, c config.Network) []error {
	var errs []error
	var ports []config.Port
	for _, p := range n.cfg.Ports {
		if slices.ContainsFunc(c.Ports, func(q config.Port) bool { return q.Name == p.Name }) {
			ports = append(ports, p)
			continue
		}
		if err := d.sw.RemovePort(p.Name); err != nil && !errors.Is(err, dataplane.ErrNotFound) {
			errs = append(errs, err)
			ports = append(ports, p)
			continue
		}
		d.log.Info("port removed by reload", "port", p.Name, "network", c.Name)
	}
	d.mu.Lock()
	n.cfg.Ports = ports
	d.mu.Unlock()
	return errs
}

// changeNetwork applies a running network's new rules and config ports,
// and records what runs now: a port that could not change stays as it
// was, or is gone if it could not be plugged in anew.
func (d *Daemon) changeNetwork(n *network, c config.Network) []error {
	var errs []error
	rules := n.cfg.Rules
	if !rules.Equal(c.Rules) {
		if err := d.sw.SetNetworkRules(c.Name, c.Rules); err != nil {
			errs = append(errs, err)
		} else {
			rules = c.Rules
		}
	}
	old := map[string]config.Port{}
	for _, p := range n.cfg.Ports {
		old[p.Name] = p
	}
	var ports []config.Port
	for _, p := range c.Ports {
		was, plugged := old[p.Name]
		delete(old, p.Name)
		// A port whose device went (and maybe came back) is plugged in
		// like a new one: a reload converges on the config.
		plugged = plugged && d.inNetwork(p.Name, c.Name)
		now, err := d.changePort(c.Name, was, p, plugged)
		if err != nil {
			errs = append(errs, err) // the switch's errors name the port
		}
		if now != nil {
			ports = append(ports, *now)
		}
	}
	// Those unplugGone could not unplug.
	for _, was := range old {
		ports = append(ports, was)
	}
	d.mu.Lock()
	n.cfg.Rules, n.cfg.Ports = rules, ports
	d.mu.Unlock()
	return errs
}

// changePort brings a config port from was (if plugged) to p, and says
// how the port runs now: nil when it is not plugged in.
func (d *Daemon) changePort(network string, was, p config.Port, plugged bool) (*config.Port, error) {
	switch {
	case !plugged:
		if d.pluggedByAPI(p.Name) {
			return nil, fmt.Errorf("port %q is plugged in through the API, not by the config: detach it (vmctl detach) for the config to plug it in", p.Name)
		}
		if err := d.sw.AddPort(p.Name, network, portOptions(p)); err != nil {
			return nil, err
		}
		d.log.Info("port added by reload", "port", p.Name, "network", network)
	case sameButRules(was, p):
		if was.Rules.Equal(p.Rules) {
			break
		}
		if err := d.sw.SetPortRules(p.Name, p.Rules); err != nil {
			return &was, err
		}
	default:
		// Its MAC, security or addresses: plugged in anew.
		if err := d.sw.RemovePort(p.Name); err != nil {
			return &was, err
		}
		if err := d.sw.AddPort(p.Name, network, portOptions(p)); err != nil {
			return nil, err
		}
		d.log.Info("port plugged in anew by reload", "port", p.Name, "network", network)
	}
	return &p, nil
}

// inNetwork tells whether the switch has the port, in the network.
func (d *Daemon) inNetwork(port, network string) bool {
	p, err := d.sw.Port(port)
	return err == nil && p.Network == network
}

// sameButRules tells whether two config ports differ in their rules at
// most.
func sameButRules(a, b config.Port) bool {
	a.Rules, b.Rules = nil, nil
	return reflect.DeepEqual(a, b)
}

// removeNetwork unplugs every port of a network, undoes what it set up
// on the host and removes it; also a network set up only in part.
func (d *Daemon) removeNetwork(n *network) error {
	d.mu.Lock()
	d.nets = slices.DeleteFunc(d.nets, func(m *network) bool { return m == n })
	d.mu.Unlock()
	var errs []error
	if n.dhcp != nil {
		errs = append(errs, n.dhcp.Close())
	}
	for _, ni := range d.sw.Networks() {
		if ni.Name != n.cfg.Name {
			continue
		}
		for _, p := range ni.Ports {
			errs = append(errs, d.sw.RemovePort(p))
		}
	}
	for i := len(n.closers) - 1; i >= 0; i-- {
		errs = append(errs, n.closers[i]())
	}
	errs = append(errs, d.sw.RemoveNetwork(n.cfg.Name))
	return errors.Join(errs...)
}
