// Package daemon runs the switch as the daemon configures it: the dataplane,
// and for each network its host port, gateway address, DHCP server and NAT.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/config"
	"github.com/xdpswitch/xdpswitch/dataplane"
	"github.com/xdpswitch/xdpswitch/dhcpd"
	"github.com/xdpswitch/xdpswitch/nat"
	"github.com/xdpswitch/xdpswitch/netdev"
)

// Daemon is a running switch with its networks' host services.
type Daemon struct {
	cfg *config.Config
	log *slog.Logger
	sw  *dataplane.Switch

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	nets []*network

	plugged *plugged
	// reloadMu keeps reloads one at a time.
	reloadMu sync.Mutex
	// leaseMu keeps lease syncs one at a time, so that an older read of
	// the leases never replaces a newer one.
	leaseMu sync.Mutex
}

type network struct {
	cfg      config.Network
	hostPort *netdev.HostPort
	dhcp     *dhcpd.Server
	// closers undo, in reverse order, what the network set up on the
	// host, once its ports are unplugged.
	closers []func() error
}

// Start builds the switch and every configured network. On failure
// everything already made is undone.
func Start(cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	dp := cfg.Dataplane()
	dp.Logger = log
	sw, err := dataplane.New(dp)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{cfg: cfg, log: log, sw: sw, ctx: ctx, cancel: cancel,
		plugged: &plugged{path: filepath.Join(cfg.StateDir, pluggedFile)}}
	// Rules left by a daemon that crashed would go on masquerading its
	// subnets, and block ours: whatever this config says about NAT (a
	// reload may add it). The table belongs to xdpswitch alone, one daemon
	// per host. Without NAT in the config, a host without nftables is no
	// reason not to start.
	if err := nat.Cleanup(); err != nil {
		if slices.ContainsFunc(cfg.Networks, func(n config.Network) bool { return n.NAT }) {
			sw.Close()
			return nil, err
		}
		log.Warn("leftover NAT rules not checked", "err", err)
	}
	if u := cfg.Uplink; u != nil {
		if err := sw.AddUplink(u.Device, u.Address.Addr, cfg.VXLANPort()); err != nil {
			d.Close()
			return nil, fmt.Errorf("uplink: %w", err)
		}
	}
	for _, n := range cfg.Networks {
		if err := d.addNetwork(n); err != nil {
			d.Close()
			return nil, fmt.Errorf("network %q: %w", n.Name, err)
		}
	}
	d.restorePlugged()
	d.wg.Add(1)
	go d.syncLeases()
	return d, nil
}

// leaseSync is how often the switch learns which addresses the secured
// ports' MACs hold leases for, besides each change the DHCP server
// reports: it takes expired leases away.
const leaseSync = 500 * time.Millisecond

// syncLeases hands the DHCP servers' bound leases to the switch for port
// security. Polling keeps the DHCP server unaware of the switch, and
// expiry, which happens by time alone, needs no event.
func (d *Daemon) syncLeases() {
	defer d.wg.Done()
	tick := time.NewTicker(leaseSync)
	defer tick.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-tick.C:
		}
		d.mu.Lock()
		nets := slices.Clone(d.nets)
		d.mu.Unlock()
		for _, n := range nets {
			if n.dhcp != nil {
				d.syncLeasesOf(n)
			}
		}
	}
}

// syncLeasesOf gives port security the addresses a network's DHCP server
// has bound.
func (d *Daemon) syncLeasesOf(n *network) {
	d.leaseMu.Lock()
	defer d.leaseMu.Unlock()
	now := time.Now()
	bound := map[string][]netip.Addr{}
	for _, l := range n.dhcp.Leases() {
		if l.State == dhcpd.StateBound && l.Expiry.After(now) {
			bound[l.MAC.String()] = append(bound[l.MAC.String()], l.IP)
		}
	}
	if err := d.sw.SetLeases(n.cfg.Name, bound); err != nil {
		d.log.Warn("lease sync", "network", n.cfg.Name, "err", err)
	}
}

// Switch is the dataplane.
func (d *Daemon) Switch() *dataplane.Switch { return d.sw }

// addNetwork sets up a network with its host port, services and ports;
// on failure it undoes what it did.
func (d *Daemon) addNetwork(c config.Network) (err error) {
	if err := d.sw.AddNetwork(c.Name); err != nil {
		return err
	}
	n := &network{cfg: c}
	d.mu.Lock()
	d.nets = append(d.nets, n)
	d.mu.Unlock()
	defer func() {
		if err != nil {
			if uerr := d.removeNetwork(n); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing it: %w", uerr))
			}
		}
	}()
	if c.Rules != nil {
		// In force before any port is plugged in: no frame slips past.
		if err := d.sw.SetNetworkRules(c.Name, c.Rules); err != nil {
			return err
		}
	}
	if c.Gateway.IsValid() {
		if err := d.addHostPort(n); err != nil {
			return err
		}
	}
	for _, p := range c.Ports {
		if err := d.sw.AddPort(p.Name, c.Name, portOptions(p)); err != nil {
			return err
		}
	}
	// The tunnel last: the switch cannot take a network's tunnel away
	// again, so a network that fails before it is removed whole.
	if x := c.VXLAN; x != nil {
		var remotes []netip.Addr
		for _, r := range x.Remotes {
			remotes = append(remotes, r.Addr)
		}
		if err := d.sw.SetVXLAN(c.Name, x.VNI, remotes); err != nil {
			return err
		}
	}
	return nil
}

func portOptions(p config.Port) dataplane.PortOptions {
	o := dataplane.PortOptions{MAC: p.MAC.HardwareAddr, Security: p.Secured(), Rules: p.Rules}
	for _, a := range p.IPv4 {
		o.IPv4 = append(o.IPv4, a.Addr)
	}
	for _, pr := range p.IPv6 {
		o.IPv6 = append(o.IPv6, pr.Prefix)
	}
	return o
}

// addHostPort connects the network to the host's stack: a host port whose
// host side carries the gateway address, and the services listening there.
func (d *Daemon) addHostPort(n *network) error {
	c := n.cfg
	gw := c.Gateway.Prefix
	hostName, swName := c.HostPortNames()
	hp, err := netdev.CreateHostPort(hostName, swName)
	if err != nil {
		return err
	}
	n.hostPort = hp
	n.closers = append(n.closers, hp.Delete)
	d.log.Info("host port", "network", c.Name, "kind", hp.Kind, "host", hp.Host, "switch", hp.Switch, "refused", hp.Refused)

	// Plugged in before the gateway address goes on: for a single netkit
	// device the host side is the switch port, and the switch refuses
	// devices the host has addresses on.
	if err := d.sw.AddPort(hp.Switch, c.Name, dataplane.PortOptions{}); err != nil {
		return err
	}
	link, err := netlink.LinkByName(hp.Host)
	if err != nil {
		return err
	}
	if err := addAddr(link, gw); err != nil {
		return err
	}
	if c.Gateway6.IsValid() {
		if err := addAddr(link, c.Gateway6.Prefix); err != nil {
			return err
		}
	}
	if c.NAT {
		m, err := nat.Enable(c.Name, gw.Masked(), hp.Host)
		if err != nil {
			return err
		}
		n.closers = append(n.closers, m.Close)
		d.log.Info("NAT", "network", c.Name, "subnet", gw.Masked(), "not_out_of", hp.Host)
	}
	if c.DHCP != nil {
		if err := d.startDHCP(n); err != nil {
			return err
		}
	}
	return nil
}

func addAddr(link netlink.Link, p netip.Prefix) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		// The host port is the only device on its segment that can own
		// the gateway; waiting for duplicate detection only delays it.
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %v to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

func (d *Daemon) startDHCP(n *network) error {
	c := n.cfg
	gw := c.Gateway.Prefix
	cfg := dhcpd.Config{
		Network:    c.Name,
		Interface:  n.hostPort.Host,
		ServerIP:   gw.Addr(),
		Subnet:     gw.Masked(),
		RangeStart: c.DHCP.Range[0].Addr,
		RangeEnd:   c.DHCP.Range[1].Addr,
		Router:     gw.Addr(),
		Domain:     c.DHCP.Domain,
		MTU:        c.DHCP.MTU,
		LeaseTime:  time.Duration(c.DHCP.LeaseTime),
		StateDir:   d.cfg.StateDir,
		Logger:     d.log,
	}
	for _, a := range c.DHCP.DNS {
		cfg.DNS = append(cfg.DNS, a.Addr)
	}
	for _, r := range c.DHCP.Reserved {
		cfg.Reservations = append(cfg.Reservations, dhcpd.Reservation{MAC: r.MAC.HardwareAddr, IP: r.IP.Addr, Hostname: r.Hostname})
	}
	// A new address reaches port security before the client has it; the
	// periodic sync still handles expiry. n.dhcp is set before Serve runs.
	cfg.OnLeases = func() { d.syncLeasesOf(n) }
	srv, err := dhcpd.New(cfg)
	if err != nil {
		return err
	}
	n.dhcp = srv
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := srv.Serve(d.ctx); err != nil && !errors.Is(err, dhcpd.ErrClosed) {
			d.log.Error("DHCP server stopped", "network", c.Name, "err", err)
		}
	}()
	return nil
}

// Close stops the services, unplugs every port (detaching every XDP
// program), then undoes what each network set up on the host.
func (d *Daemon) Close() error {
	d.mu.Lock()
	nets := d.nets
	d.nets = nil
	d.mu.Unlock()
	var errs []error
	for _, n := range nets {
		if n.dhcp != nil {
			errs = append(errs, n.dhcp.Close())
		}
	}
	d.cancel()
	d.wg.Wait()
	errs = append(errs, d.sw.Close())
	for _, n := range nets {
		for i := len(n.closers) - 1; i >= 0; i-- {
			errs = append(errs, n.closers[i]())
		}
	}
	return errors.Join(errs...)
}
